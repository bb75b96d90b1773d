"""Sparse autoencoders (SAEs) attached to standardized sites: read features, splice, ablate, steer.

An SAE maps an activation ``x`` (..., d_in) to sparse features ``f`` (..., d_sae) and back::

    pre = (x - b_dec if apply_b_dec_to_input else x) @ W_enc + b_enc
    f   = relu(pre)                          # "standard"
        = relu(pre) * (pre > threshold)      # "jumprelu"
        = relu of the k largest pre, 0 else  # "topk"
    x̂  = f @ W_dec + b_dec

`load_sae` reads a local SAELens-format directory (``cfg.json`` + ``sae_weights.safetensors``);
`save_sae` writes one. The SAE's TransformerLens hook name (``"blocks.3.hook_resid_post"``)
names a standard site of any architecture (``"layers_output.3"``, see `sae_site`), through
the one table of TransformerLens names in `nnterp.cache`.

Inside ``model.trace``, `sae_features` reads the features at the SAE's site and `splice_sae`
replaces the site with the reconstruction (plus the error ``x - x̂`` by default, so the forward
is unchanged until features are edited by `ablate_features` / `steer_features`). Per-head sites
(``heads_output``, TransformerLens ``hook_z``) are flattened to (batch, seq, heads * head_dim).

Example:
    >>> from nnterp.interventions.saes import load_sae, splice_sae, ablate_features
    >>> sae = load_sae("/saes/blocks.3.hook_resid_post")
    >>> with model.trace("The capital of France is"):
    ...     features = splice_sae(model, sae, edit=ablate_features([12, 40])).save()
    ...     logits = model.logits.save()
    >>> features.shape                                   # (1, seq, d_sae)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from nnterp.cache import Site, canonical_site_name, read_site, site_key, write_site
from nnterp.errors import InvalidInputError, LayerIndexError, ModelLoadError
from nnterp.inputs import normalize_index
from nnterp.sites import site_info

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer

#: The architectures `SparseAutoencoder` computes.
ARCHITECTURES = ("standard", "jumprelu", "topk")
#: File names of the SAELens format.
CONFIG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
#: A feature edit: (..., d_sae) features -> edited features of the same shape.
FeatureEdit = Callable[[torch.Tensor], torch.Tensor]

_HOOK_NAME = re.compile(r"^blocks\.(-?\d+)\.(?:[A-Za-z_0-9]+\.)*hook_([A-Za-z_0-9]+)$")
_MODEL_HOOK_NAME = re.compile(r"^(?:[A-Za-z_0-9]+\.)*hook_([A-Za-z_0-9]+)$")


class SparseAutoencoder(torch.nn.Module):
    """A sparse autoencoder: ``encode`` (..., d_in) -> (..., d_sae), ``decode`` back.

    Args:
        W_enc: (d_in, d_sae) encoder weights.
        b_enc: (d_sae,) encoder bias.
        W_dec: (d_sae, d_in) decoder weights (one row per feature's direction).
        b_dec: (d_in,) decoder bias.
        architecture: ``"standard"`` (ReLU), ``"jumprelu"`` (needs ``threshold``) or ``"topk"``
            (needs ``k``).
        threshold: (d_sae,) JumpReLU thresholds.
        k: how many features a "topk" SAE keeps per activation.
        apply_b_dec_to_input: subtract ``b_dec`` from the input before encoding.
        hook_name: the site it was trained on: a TransformerLens hook name
            (``"blocks.3.hook_resid_post"``) or a standard site key (``"layers_output.3"``).
        cfg: extra configuration kept as it was loaded (written back by `save_sae`).

    Raises:
        InvalidInputError: mismatched shapes, an unknown architecture, a missing threshold or k.

    Example:
        >>> sae = SparseAutoencoder(W_enc, b_enc, W_dec, b_dec, hook_name="blocks.0.hook_resid_post")
        >>> sae.encode(torch.randn(2, 5, sae.d_in)).shape
        torch.Size([2, 5, 64])
    """

    W_enc: torch.nn.Parameter
    b_enc: torch.nn.Parameter
    W_dec: torch.nn.Parameter
    b_dec: torch.nn.Parameter
    threshold: torch.nn.Parameter | None

    def __init__(
        self,
        W_enc: torch.Tensor,
        b_enc: torch.Tensor,
        W_dec: torch.Tensor,
        b_dec: torch.Tensor,
        *,
        architecture: str = "standard",
        threshold: torch.Tensor | None = None,
        k: int | None = None,
        apply_b_dec_to_input: bool = True,
        hook_name: str | None = None,
        cfg: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise InvalidInputError(
                f"unknown SAE architecture {architecture!r}: use one of {', '.join(ARCHITECTURES)}."
            )
        tensors = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
        if threshold is not None:
            tensors["threshold"] = threshold
        for name, tensor in tensors.items():
            if not isinstance(tensor, torch.Tensor):
                raise InvalidInputError(
                    f"SAE weight {name} must be a torch.Tensor, got {type(tensor).__name__}."
                )
        if W_enc.dim() != 2:
            raise InvalidInputError(
                f"SAE W_enc must be (d_in, d_sae), got shape {tuple(W_enc.shape)}."
            )
        d_in, d_sae = W_enc.shape
        expected = {
            "b_enc": (d_sae,),
            "W_dec": (d_sae, d_in),
            "b_dec": (d_in,),
            "threshold": (d_sae,),
        }
        for name, tensor in tensors.items():
            if name != "W_enc" and tuple(tensor.shape) != expected[name]:
                raise InvalidInputError(
                    f"SAE weight {name} has shape {tuple(tensor.shape)} but W_enc is (d_in={d_in}, "
                    f"d_sae={d_sae}), so {name} must be {expected[name]}."
                )
        if architecture == "jumprelu" and threshold is None:
            raise InvalidInputError(
                "a 'jumprelu' SAE needs threshold= (d_sae,) tensor."
            )
        if architecture == "topk" and (
            isinstance(k, bool) or not isinstance(k, int) or not 0 < k <= d_sae
        ):
            raise InvalidInputError(
                f"a 'topk' SAE needs k=, an int in 1..d_sae={d_sae}; got {k!r}."
            )
        self.architecture = architecture
        self.k = k
        self.apply_b_dec_to_input = bool(apply_b_dec_to_input)
        self.hook_name = hook_name
        self.cfg = dict(cfg or {})
        for name, tensor in tensors.items():
            self.register_parameter(
                name, torch.nn.Parameter(tensor.detach().clone(), requires_grad=False)
            )
        if threshold is None:
            self.register_parameter("threshold", None)

    @property
    def d_in(self) -> int:
        """Width of the activations the SAE reads."""
        return int(self.W_enc.shape[0])

    @property
    def d_sae(self) -> int:
        """Number of features."""
        return int(self.W_enc.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype (inputs are cast to it)."""
        return self.W_enc.dtype

    @property
    def device(self) -> torch.device:
        """Where the weights live (inputs are moved there)."""
        return self.W_enc.device

    def _check_width(self, x: torch.Tensor, width: int, what: str) -> None:
        if x.shape[-1] != width:
            raise InvalidInputError(
                f"{what} has last dimension {x.shape[-1]} but this SAE expects {width}."
            )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations of ``x``: (..., d_in) -> (..., d_sae), in the SAE's dtype.

        Example:
            >>> sae.encode(torch.randn(3, sae.d_in)).shape       # (3, d_sae)
        """
        self._check_width(x, self.d_in, "the SAE input")
        x = x.to(device=self.device, dtype=self.dtype)
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        pre = x @ self.W_enc + self.b_enc
        if self.architecture == "jumprelu":
            assert self.threshold is not None
            return torch.relu(pre) * (pre > self.threshold).to(pre.dtype)
        if self.architecture == "topk":
            assert self.k is not None
            top = pre.topk(self.k, dim=-1)
            return torch.zeros_like(pre).scatter(
                -1, top.indices, torch.relu(top.values)
            )
        return torch.relu(pre)

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """The reconstruction of ``features``: (..., d_sae) -> (..., d_in).

        Example:
            >>> sae.decode(sae.encode(x)).shape == x.shape
            True
        """
        self._check_width(features, self.d_sae, "the features")
        return (
            features.to(device=self.device, dtype=self.dtype) @ self.W_dec + self.b_dec
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``decode(encode(x))``: (..., d_in) -> (..., d_in)."""
        return self.decode(self.encode(x))

    def fold_decoder_norm(self) -> SparseAutoencoder:
        """This SAE rescaled so every decoder row has unit norm, the reconstruction unchanged.

        Feature ``j`` is multiplied by ``||W_dec[j]||`` (and its threshold with it), the
        convention in which feature activations compare across features.

        Example:
            >>> folded = sae.fold_decoder_norm()
            >>> folded.W_dec.norm(dim=-1)                        # all ones
        """
        norms = self.W_dec.norm(dim=-1)
        if bool((norms == 0).any()):
            raise InvalidInputError(
                "cannot fold decoder norms: some decoder rows are zero."
            )
        return SparseAutoencoder(
            self.W_enc * norms,
            self.b_enc * norms,
            self.W_dec / norms[:, None],
            self.b_dec,
            architecture=self.architecture,
            threshold=None if self.threshold is None else self.threshold * norms,
            k=self.k,
            apply_b_dec_to_input=self.apply_b_dec_to_input,
            hook_name=self.hook_name,
            cfg=self.cfg,
        )

    def extra_repr(self) -> str:
        return f"d_in={self.d_in}, d_sae={self.d_sae}, architecture={self.architecture!r}, hook_name={self.hook_name!r}"


# -- the SAELens format -------------------------------------------------------------------


def _read_config(directory: Path) -> dict[str, Any]:
    file = directory / CONFIG_FILE
    if not file.is_file():
        raise ModelLoadError(
            f"SAE directory {str(directory)!r} has no {CONFIG_FILE}: an SAELens-format directory holds "
            f"{CONFIG_FILE} (d_in, d_sae, hook_name, architecture) and {WEIGHTS_FILE}."
        )
    try:
        cfg = json.loads(file.read_text())
    except (OSError, ValueError) as error:
        raise ModelLoadError(
            f"{file} is not valid JSON ({error}): rewrite it as an SAELens cfg.json."
        ) from None
    if not isinstance(cfg, dict):
        raise ModelLoadError(
            f"{file} must hold a JSON object of SAE settings, got {type(cfg).__name__}."
        )
    return cfg


def _config_value(cfg: dict[str, Any], key: str) -> Any:
    # SAELens 6 moved the hook name and a few others under "metadata".
    if key in cfg:
        return cfg[key]
    metadata = cfg.get("metadata")
    return metadata.get(key) if isinstance(metadata, dict) else None


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = directory / WEIGHTS_FILE
    if not file.is_file():
        raise ModelLoadError(
            f"SAE directory {str(directory)!r} has no {WEIGHTS_FILE}: save the weights (W_enc, b_enc, "
            "W_dec, b_dec, optional threshold) there with safetensors."
        )
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelLoadError(
            f"{file} is not a readable safetensors file ({error})."
        ) from None


def _refuse_unsupported(cfg: dict[str, Any], file: Path) -> None:
    # Settings that change what the weights compute; ignoring them would give wrong features.
    normalize = _config_value(cfg, "normalize_activations")
    if normalize not in (None, "none"):
        raise ModelLoadError(
            f"{file}: normalize_activations={normalize!r} rescales inputs by a statistic nnterp does not "
            "compute; only SAEs with normalize_activations 'none' load (fold the scale into W_enc/b_dec first)."
        )
    head = _config_value(cfg, "hook_head_index")
    if head is not None:
        raise ModelLoadError(
            f"{file}: hook_head_index={head!r} (an SAE on one head) is not supported yet; SAEs on "
            "every head of hook_z (heads_output) load."
        )


def load_sae(
    path: str | Path,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
) -> SparseAutoencoder:
    """Load an SAE from a local SAELens-format directory.

    The directory holds ``cfg.json`` (``d_in``, ``d_sae``, ``hook_name``, and optionally
    ``architecture`` (default ``"standard"``), ``apply_b_dec_to_input`` (default true), ``k``,
    ``dtype``) and ``sae_weights.safetensors`` (``W_enc`` (d_in, d_sae), ``b_enc`` (d_sae,),
    ``W_dec`` (d_sae, d_in), ``b_dec`` (d_in,), and ``threshold`` (d_sae,) for JumpReLU; a
    ``log_threshold`` is exponentiated).

    Args:
        path: the directory.
        device: where to put the weights (default: CPU).
        dtype: the weights' dtype (default: the config's ``dtype``, else as stored).

    Raises:
        ModelLoadError: a missing directory, file or tensor; unreadable files; shapes that
            disagree with the config; an unknown architecture.

    Example:
        >>> sae = load_sae("/saes/gemma-scope-layer-3", device="cuda")
        >>> sae.hook_name, sae.d_sae
        ('blocks.3.hook_resid_post', 16384)
    """
    directory = Path(path)
    if not directory.is_dir():
        raise ModelLoadError(
            f"SAE path {str(path)!r} is not a directory: give the folder holding {CONFIG_FILE} and {WEIGHTS_FILE}."
        )
    cfg = _read_config(directory)
    weights = _read_weights(directory)
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        if name not in weights:
            raise ModelLoadError(
                f"{directory / WEIGHTS_FILE} has no tensor {name!r} (it holds {', '.join(sorted(weights)) or 'none'}): "
                "an SAELens SAE stores W_enc, b_enc, W_dec and b_dec."
            )
    architecture = _config_value(cfg, "architecture") or "standard"
    if architecture not in ARCHITECTURES:
        raise ModelLoadError(
            f"{directory / CONFIG_FILE}: unknown architecture {architecture!r}; nnterp computes "
            f"{', '.join(ARCHITECTURES)}."
        )
    threshold = weights.get("threshold")
    if threshold is None and "log_threshold" in weights:
        threshold = weights["log_threshold"].exp()
    if architecture == "jumprelu" and threshold is None:
        raise ModelLoadError(
            f"{directory / WEIGHTS_FILE} has no tensor 'threshold' (or 'log_threshold'), which the "
            "'jumprelu' architecture of its cfg.json needs."
        )
    k = _config_value(cfg, "k")
    if k is None and isinstance(cfg.get("activation_fn_kwargs"), dict):
        k = cfg["activation_fn_kwargs"].get("k")
    for key in ("d_in", "d_sae"):
        value = _config_value(cfg, key)
        actual = (
            weights["W_enc"].shape[0 if key == "d_in" else 1]
            if weights["W_enc"].dim() == 2
            else None
        )
        if value is not None and value != actual:
            raise ModelLoadError(
                f"{directory / CONFIG_FILE} says {key}={value} but W_enc in {WEIGHTS_FILE} has shape "
                f"{tuple(weights['W_enc'].shape)} (d_in, d_sae): fix the config or the weights."
            )
    _refuse_unsupported(cfg, directory / CONFIG_FILE)
    stored_dtype = _config_value(cfg, "dtype")
    chosen = dtype if dtype is not None else stored_dtype
    if isinstance(chosen, str):
        chosen = getattr(torch, chosen.removeprefix("torch."), None)
        if not isinstance(chosen, torch.dtype):
            raise ModelLoadError(
                f"{directory / CONFIG_FILE}: dtype {stored_dtype!r} is not a torch dtype."
            )
    try:
        sae = SparseAutoencoder(
            weights["W_enc"],
            weights["b_enc"],
            weights["W_dec"],
            weights["b_dec"],
            architecture=architecture,
            threshold=threshold,
            k=int(k) if k is not None else None,
            apply_b_dec_to_input=bool(
                _config_value(cfg, "apply_b_dec_to_input") is not False
            ),
            hook_name=_config_value(cfg, "hook_name"),
            cfg=cfg,
        )
    except InvalidInputError as error:
        raise ModelLoadError(f"SAE at {str(directory)!r}: {error}") from None
    return sae.to(device=device or "cpu", dtype=chosen)


def save_sae(sae: SparseAutoencoder, path: str | Path) -> Path:
    """Write ``sae`` as an SAELens-format directory (created if needed); returns it.

    Example:
        >>> save_sae(sae, "/tmp/my_sae")
        >>> load_sae("/tmp/my_sae").d_sae == sae.d_sae
        True
    """
    from safetensors.torch import save_file

    if not isinstance(sae, SparseAutoencoder):
        raise InvalidInputError(
            f"save_sae needs a SparseAutoencoder, got {type(sae).__name__}."
        )
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = {
        **sae.cfg,
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "hook_name": sae.hook_name,
        "architecture": sae.architecture,
        "apply_b_dec_to_input": sae.apply_b_dec_to_input,
        "dtype": str(sae.dtype).removeprefix("torch."),
    }
    if sae.k is not None:
        cfg["k"] = sae.k
    (directory / CONFIG_FILE).write_text(json.dumps(cfg, indent=2))
    names = ("W_enc", "b_enc", "W_dec", "b_dec") + (
        ("threshold",) if sae.threshold is not None else ()
    )
    save_file(
        {name: getattr(sae, name).detach().cpu().contiguous() for name in names},
        str(directory / WEIGHTS_FILE),
    )
    return directory


# -- sites --------------------------------------------------------------------------------


def hook_site_key(hook_name: str | tuple[str, int | None], num_layers: int) -> str:
    """The standard site key a TransformerLens hook name means (or a site key, normalized).

    ``"blocks.3.hook_resid_post"`` -> ``"layers_output.3"``, ``"blocks.0.attn.hook_z"`` ->
    ``"heads_output.0"``, ``"blocks.2.mlp.hook_post"`` -> ``"mlps_hidden.2"``, ``"hook_embed"``
    -> ``"token_embeddings"``; ``"layers_output.-1"`` and other keys `site_key` takes pass
    through.

    Raises:
        InvalidInputError: a name that is neither a known hook name nor a site key.
        LayerIndexError: a layer out of range.

    Example:
        >>> hook_site_key("blocks.3.hook_resid_pre", num_layers=12)
        'layers_input.3'
    """
    if isinstance(hook_name, tuple):
        return site_key(hook_name, num_layers)
    if not isinstance(hook_name, str) or not hook_name:
        raise InvalidInputError(
            f"the SAE's hook name must be a string like 'blocks.3.hook_resid_post', got {hook_name!r}: "
            "set sae.hook_name or pass site=."
        )
    fix = "pass site= (a standard site such as 'layers_output.3') to say where the SAE reads."
    match = _HOOK_NAME.match(hook_name)
    if match is not None:
        layer, name = int(match.group(1)), match.group(2)
        try:
            info = site_info(canonical_site_name(name))
        except InvalidInputError:
            raise InvalidInputError(
                f"SAE hook {hook_name!r}: hook_{name} names no standard site; {fix}"
            ) from None
        if not info.per_layer:
            raise InvalidInputError(
                f"SAE hook {hook_name!r}: {info.name} has no layers; {fix}"
            )
        return site_key((info.name, layer), num_layers)
    match = _MODEL_HOOK_NAME.match(hook_name)
    if match is not None:
        try:
            info = site_info(canonical_site_name(match.group(1)))
        except InvalidInputError:
            raise InvalidInputError(
                f"SAE hook {hook_name!r} names no standard site; {fix}"
            ) from None
        if info.per_layer:
            raise InvalidInputError(
                f"SAE hook {hook_name!r}: {info.name} needs a layer ('blocks.L.'); {fix}"
            )
        return info.name
    try:
        return site_key(hook_name, num_layers)
    except LayerIndexError:
        raise
    except InvalidInputError:
        raise InvalidInputError(
            f"SAE hook name {hook_name!r} names no standard site; {fix}"
        ) from None


def _widths(model: StandardizedTransformer, name: str) -> tuple[int, int] | None:
    """(last dimension, flattened width of the trailing per-head dims) of site ``name``,
    where they follow from the model's sizes; ``None`` where only the forward says."""
    shape = site_info(name).shape
    if shape[-1] == "hidden" and "heads" not in shape:
        return model.hidden_size, model.hidden_size
    if shape[-2:] == ("heads", "head_dim"):
        from nnterp.heads import attention_layout

        layout = attention_layout(model)
        return layout.head_dim, layout.head_dim * layout.num_heads
    return None


def sae_site(
    model: StandardizedTransformer, sae: SparseAutoencoder, site: Any = None
) -> str:
    """The standard site key ``sae`` reads on ``model``: from its hook name, or ``site``.

    Args:
        model: a `StandardizedTransformer`.
        sae: the SAE.
        site: an override: any cache key (``"layers_output.3"``, ``("resid_post", 3)``) or
            hook name (``"blocks.3.hook_resid_post"``).

    Raises:
        InvalidInputError: no hook name and no ``site``, a name naming no site, or ``d_in``
            different from the site's width (its last dimension, or heads * head_dim for
            per-head sites).

    Example:
        >>> sae_site(model, load_sae("/saes/blocks.3.hook_resid_post"))
        'layers_output.3'
    """
    if not isinstance(sae, SparseAutoencoder):
        raise InvalidInputError(
            f"sae must be a SparseAutoencoder (see load_sae), got {type(sae).__name__}."
        )
    key = hook_site_key(sae.hook_name if site is None else site, model.num_layers)  # type: ignore[arg-type]
    widths = _widths(model, key.partition(".")[0])
    if widths is not None and sae.d_in not in widths:
        raise InvalidInputError(
            f"SAE d_in={sae.d_in} does not match site {key} of this model (width "
            f"{' or '.join(str(width) for width in sorted(set(widths)))}): pass the site it was trained on with site=."
        )
    return key


def site_activations(value: torch.Tensor, sae: SparseAutoencoder, key: str) -> torch.Tensor:
    """Site ``key``'s value as the (batch, seq, d_in) activations ``sae`` reads: unchanged, or
    per-head values (batch, seq, heads, head_dim) flattened.

    Raises:
        InvalidInputError: the site's width is not the SAE's ``d_in``.
    """
    if value.shape[-1] == sae.d_in:
        return value
    is_head = site_info(key.partition(".")[0]).kind == "head"
    if is_head and value.dim() >= 2 and value.shape[-1] * value.shape[-2] == sae.d_in:
        return value.flatten(-2)
    raise InvalidInputError(
        f"site {key} holds activations of shape {tuple(value.shape)} but the SAE has d_in={sae.d_in}: "
        "pass the site it was trained on with site=."
    )


def sae_features(
    model: StandardizedTransformer, sae: SparseAutoencoder, site: Any = None
) -> torch.Tensor:
    """The SAE's feature activations at its site; call inside ``model.trace``.

    Returns:
        (batch, seq, d_sae) features in the SAE's dtype (save them to use after the trace).

    Raises:
        InvalidInputError: see `sae_site`.

    Example:
        >>> with model.trace(["The cat sat", "Hello"]):
        ...     features = sae_features(model, sae).save()
    """
    key = sae_site(model, sae, site)
    (parsed,) = Site.parse(key, model.num_layers)
    return sae.encode(site_activations(read_site(model, parsed), sae, key))


def splice_sae(
    model: StandardizedTransformer,
    sae: SparseAutoencoder,
    site: Any = None,
    *,
    keep_error: bool = True,
    edit: FeatureEdit | None = None,
) -> torch.Tensor:
    """Replace the SAE's site with its reconstruction; call inside ``model.trace``.

    The site becomes ``decode(edit(f))``, plus the error term ``x - decode(f)`` when
    ``keep_error``, where ``x`` is the site's value and ``f = encode(x)``. With the error
    term and no edit the forward is exactly unchanged; gradients of later values reach the
    returned features (attribution to features: ``grad @ W_dec.T`` per feature) and pass the
    site unchanged, as in the model without the SAE. Without the error term the
    reconstruction replaces the site, and gradients flow through the SAE.

    Args:
        model: a `StandardizedTransformer` being traced.
        sae: the SAE.
        site: override of the site the SAE's hook name gives (see `sae_site`).
        keep_error: add the reconstruction error back.
        edit: ``(features) -> features`` applied before decoding: `ablate_features`,
            `steer_features`, or any function keeping the (batch, seq, d_sae) shape.

    Returns:
        The (batch, seq, d_sae) features spliced in (after ``edit``); gradients of later
        values flow to them.

    Raises:
        InvalidInputError: see `sae_site`; an edit that changes the features' shape.

    Example:
        >>> with model.trace("The capital of France is"):
        ...     features = splice_sae(model, sae, edit=steer_features([7], [10.0])).save()
        ...     logits = model.logits.save()
        >>> with model.trace("The capital of France is"):     # feature attribution
        ...     features = splice_sae(model, sae)
        ...     metric = model.logits[0, -1, paris_id]
        ...     grad = torch.autograd.grad(metric, features)[0].save()
        >>> attribution = grad * features                         # (1, seq, d_sae)
    """
    key = sae_site(model, sae, site)
    (parsed,) = Site.parse(key, model.num_layers)
    current = read_site(model, parsed)
    x = site_activations(current, sae, key).to(device=sae.device, dtype=sae.dtype)
    # With the error term the SAE is a detour: features read a detached x, and the site is
    # x + (decode(edit(f)) - decode(f)) with the subtracted term detached, so the forward is
    # exactly x without an edit, gradients reach the features, and flow past the site as if
    # no SAE were there.
    features = sae.encode(x.detach() if keep_error else x)
    if keep_error and torch.is_grad_enabled():
        features.requires_grad_(True)
    spliced = features if edit is None else _edited(edit, features)
    reconstruction = sae.decode(features)
    if keep_error:
        decoded = reconstruction if edit is None else sae.decode(spliced)
        value = x + (decoded - reconstruction.detach())
    else:
        value = reconstruction if edit is None else sae.decode(spliced)
    write_site(
        model,
        parsed,
        value.reshape(current.shape).to(device=current.device, dtype=current.dtype),
    )
    return spliced


def _edited(edit: FeatureEdit, features: torch.Tensor) -> torch.Tensor:
    edited = edit(features)
    if not isinstance(edited, torch.Tensor) or tuple(edited.shape) != tuple(
        features.shape
    ):
        shape = (
            tuple(edited.shape)
            if isinstance(edited, torch.Tensor)
            else type(edited).__name__
        )
        raise InvalidInputError(
            f"the SAE edit returned {shape} for features of shape {tuple(features.shape)}: return the "
            "edited features with the same shape."
        )
    return edited


# -- feature edits ------------------------------------------------------------------------


def _feature_indices(indices: int | Sequence[int], name: str) -> list[int]:
    values = [indices] if isinstance(indices, int) else list(indices)
    if not values:
        raise InvalidInputError(f"{name} is empty: give at least one feature index.")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInputError(
                f"{name} must hold ints (feature indices), got {value!r}."
            )
    return values


def _columns(features: torch.Tensor, indices: list[int], name: str) -> torch.Tensor:
    size = features.shape[-1]
    return torch.tensor(
        [normalize_index(index, size, name) for index in indices],
        device=features.device,
    )


def ablate_features(indices: int | Sequence[int]) -> FeatureEdit:
    """An edit setting features ``indices`` to zero (for `splice_sae`'s ``edit=``).

    Raises:
        InvalidInputError: no index, or not ints; LayerIndexError (when applied): an index
            outside 0..d_sae-1 (negatives count from the end).

    Example:
        >>> with model.trace("Hi"):
        ...     splice_sae(model, sae, edit=ablate_features([3, 17]))
    """
    chosen = _feature_indices(indices, "ablate_features indices")

    def ablate(features: torch.Tensor) -> torch.Tensor:
        columns = _columns(features, chosen, "ablated feature")
        return features.index_fill(-1, columns, 0.0)

    return ablate


def steer_features(
    indices: int | Sequence[int],
    values: float | Sequence[float] | torch.Tensor,
    *,
    add: bool = False,
) -> FeatureEdit:
    """An edit clamping features ``indices`` to ``values`` (or adding them, ``add=True``).

    ``values`` is one number for every index or one per index.

    Raises:
        InvalidInputError: no index, or a number of values different from the indices.

    Example:
        >>> with model.trace("Hi"):
        ...     splice_sae(model, sae, edit=steer_features([3], [25.0]))
    """
    chosen = _feature_indices(indices, "steer_features indices")
    amounts = torch.as_tensor(values, dtype=torch.float32).flatten()
    if amounts.numel() == 1:
        amounts = amounts.expand(len(chosen))
    if amounts.numel() != len(chosen) or not bool(torch.isfinite(amounts).all()):
        raise InvalidInputError(
            f"steer_features got {amounts.numel()} values for {len(chosen)} indices: give one finite "
            "value, or one per index."
        )

    def steer(features: torch.Tensor) -> torch.Tensor:
        columns = _columns(features, chosen, "steered feature")
        amount = amounts.to(device=features.device, dtype=features.dtype).expand(
            *features.shape[:-1], -1
        )
        base = features.index_select(-1, columns) if add else torch.zeros_like(amount)
        return features.index_copy(-1, columns, base + amount)

    return steer


__all__ = [
    "ARCHITECTURES",
    "FeatureEdit",
    "SparseAutoencoder",
    "ablate_features",
    "hook_site_key",
    "load_sae",
    "sae_features",
    "sae_site",
    "save_sae",
    "site_activations",
    "splice_sae",
    "steer_features",
]
