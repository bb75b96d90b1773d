"""Unrolled stacks: models whose forward calls a block module several times.

A looped transformer (Dory) runs its middle blocks ``n_recurrent_loops`` times, so the
module ``model.layers[m]`` has several *calls* in one forward. The standard tree wants one
block per index; an unrolled stack gives it one per **block call**: ``layers[j]`` is the
``j``-th block call the forward makes, ``layers_output[j]`` the stream that call returns,
and ``num_layers`` the number of calls.

The mapping ``j -> (module index m, call k)`` is spec data (`nnterp.spec.Unrolled`, a list
of `nnterp.spec.Segment`), read from the config. Inside a trace, ``layers[j]`` is a
`CallEnvoy`: the NNsight envoy of module ``m`` with every read and write of ``.input`` /
``.inputs`` / ``.output`` (and those of its submodules, which run once per call of their
block) bound to call ``k``, through NNsight's occurrence pinning (``tracer.iter[k]``,
`nnsight.intervention.iterator.Iterations`). Accessors built on ``model.layers[j]``
(LayerAccessor, ContributionAccessor, attention sites) therefore work unchanged, as long as a
trace reads block calls in forward order.

`StandardizedTransformer` installs it when its spec has ``unrolled`` set (`install`).
Generation is refused (`UnavailableComponentError`): the occurrence pin counts calls from the
start of the run, so only the first forward of a generation would be read right.

Example:
    >>> model = StandardizedTransformer(hf_dory, tokenizer=tok)   # spec with unrolled=...
    >>> with model.trace("Hello"):
    ...     second_loop = model.layers_output[5].save()   # a recurrent block, its 2nd call
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from nnsight.intervention.envoy import Envoy
from nnsight.intervention.iterator import Iterations
from nnsight.intervention.source import Source, SourceEnvoy

from nnterp.errors import LayerIndexError, RenamingError
from nnterp.spec import Bound, Loop, Segment, Unrolled, resolve_bound

if TYPE_CHECKING:
    from nnterp.layer_structure import LayerStructure
    from nnterp.standardized_transformer import StandardizedTransformer

__all__ = [
    "Bound",
    "CallEnvoy",
    "Loop",
    "Segment",
    "Unrolled",
    "UnrolledLayers",
    "call_schedule",
    "install",
    "recorded_block_calls",
    "resolve_bound",
    "unroll_structure",
]


def call_schedule(calls: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """``(block index, call number)`` of each block call, the call number counting the earlier
    calls of the same block: ``[0, 1, 1, 2]`` -> ``((0, 0), (1, 0), (1, 1), (2, 0))``."""
    seen: dict[int, int] = {}
    schedule = []
    for block in calls:
        schedule.append((block, seen.get(block, 0)))
        seen[block] = seen.get(block, 0) + 1
    return tuple(schedule)


def pinned(call: int, action: Callable[[], Any]) -> Any:
    """Run ``action`` (a read or write of an envoy's value) bound to occurrence ``call`` of the
    location it touches, with NNsight's ``tracer.iter[call]`` pinning; the requests after the
    first in ``action`` follow the forward (later locations, same call)."""
    for _ in Iterations()[call]:
        return action()
    return None


_PINNED = ("input", "inputs", "output")

#: What a `CallEnvoy` wraps: module envoys and the operation views of their forwards, whose
#: values all occur once per call of the module.
_PER_CALL = (Envoy, Source, SourceEnvoy)


def _per_call(value: Any, call: int) -> Any:
    return CallEnvoy(value, call) if isinstance(value, _PER_CALL) else value


class CallEnvoy:
    """One call of a module that a forward calls several times: the module's envoy with reads
    and writes of ``input`` / ``inputs`` / ``output`` and ``skip`` bound to call ``call``.

    Submodules (``.self_attn``, ``.mlp.down_proj``) and operations of the forward
    (``.source.attention_interface_0``) come back as `CallEnvoy` of the same call: each runs
    once per call of its block. Every other attribute is the envoy's own.

    Args:
        envoy: The NNsight envoy of the module.
        call: Which call of it (0 = the first in the forward).
    """

    __slots__ = ("_call", "_envoy")

    def __init__(self, envoy: Envoy, call: int) -> None:
        object.__setattr__(self, "_envoy", envoy)
        object.__setattr__(self, "_call", call)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled (a remote trace) as its envoy and call number.
        return (CallEnvoy, (self._envoy, self._call))

    def __getattr__(self, name: str) -> Any:
        envoy = object.__getattribute__(self, "_envoy")
        call = object.__getattribute__(self, "_call")
        if name in _PINNED:
            return pinned(call, lambda: getattr(envoy, name))
        shadowed = envoy.__dict__.get(f"{Envoy.OVERLOAD_PREFIX}{name}")
        return _per_call(shadowed if isinstance(shadowed, Envoy) else getattr(envoy, name), call)

    def __setattr__(self, name: str, value: Any) -> None:
        envoy, call = self._envoy, self._call
        if name in _PINNED:
            pinned(call, lambda: setattr(envoy, name, value))
            return
        setattr(envoy, name, value)

    def __getitem__(self, index: int) -> Any:
        return _per_call(self._envoy[index], self._call)

    def __iter__(self) -> Iterator[Any]:
        for value in self._envoy:
            yield _per_call(value, self._call)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._envoy(*args, **kwargs)

    def skip(self, replacement: Any) -> None:
        """Skip this call of the module, returning ``replacement`` as its output."""
        pinned(self._call, lambda: self._envoy.skip(replacement))

    @property
    def envoy(self) -> Envoy:
        """The module's own envoy (every call of it)."""
        return self._envoy

    @property
    def call(self) -> int:
        """Which call of the module this is."""
        return self._call

    def __repr__(self) -> str:
        return f"<call {self._call} of {getattr(self._envoy, 'path', self._envoy)!r}>"


class UnrolledLayers(Sequence):
    """The standard ``layers``: one `CallEnvoy` per block call, in forward order.

    Args:
        blocks: The envoys of the model's blocks (the spec's ``layers``, then any unrolled ``stacks``).
        schedule: ``(block index, call number)`` per block call (`call_schedule`).
    """

    def __init__(self, blocks: Any, schedule: Sequence[tuple[int, int]]) -> None:
        self._blocks = blocks
        self.schedule = tuple(schedule)

    def __len__(self) -> int:
        return len(self.schedule)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise LayerIndexError(
                f"layer {index} out of range: the unrolled stack has {len(self)} block calls "
                f"(layers[-{len(self)}] .. layers[{len(self) - 1}])"
            )
        block, call = self.schedule[index]
        return CallEnvoy(self._blocks[block], call)

    def __iter__(self) -> Iterator[CallEnvoy]:
        for index in range(len(self)):
            yield self[index]

    def __repr__(self) -> str:
        return f"<{len(self)} block calls over {len(self._blocks)} blocks: {[b for b, _ in self.schedule]}>"


def unroll_structure(structure: LayerStructure, calls: Sequence[int]) -> LayerStructure:
    """``structure`` (one entry per block module) with one entry per block call."""

    def per_call(values: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(values[block] for block in calls) if values else values

    return dataclasses.replace(
        structure,
        mixers=per_call(structure.mixers),
        mlps=per_call(structure.mlps),
        norms=per_call(structure.norms),
        required_inputs=per_call(structure.required_inputs),
        side_attentions=per_call(structure.side_attentions),
    )


def recorded_block_calls(hf_model: torch.nn.Module, blocks_path: str, *args: Any, **kwargs: Any) -> list[int]:
    """Run ``hf_model(*args, **kwargs)`` with plain torch hooks and return the block index of
    every block call, in order: what a spec's `Unrolled` must reproduce."""
    blocks: Any = hf_model.get_submodule(blocks_path)
    order: list[int] = []
    handles = [
        block.register_forward_hook(lambda module, args, output, index=index: order.append(index))
        for index, block in enumerate(blocks)
    ]
    try:
        with torch.no_grad():
            hf_model(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return order


#: Where `install` keeps, on the model's instance dict, the envoys of the blocks, their HF
#: modules (the spec's ``layers`` then the unrolled ``stacks``) and the ``(block index, call
#: number)`` of every block call.
BLOCKS_KEY = "_nnterp_blocks"
BLOCK_MODULES_KEY = "_nnterp_block_modules"
SCHEDULE_KEY = "_nnterp_schedule"


def _stack_envoy(model: StandardizedTransformer, path: str) -> Any:
    envoy: Any = model
    for name in path.split("."):
        envoy = getattr(envoy, name)
    return envoy


def _joined(structures: list[LayerStructure]) -> LayerStructure:
    """One `LayerStructure` over the blocks of several lists, in order (per-block tuples
    concatenated; the optional ones, empty where no block needs them, filled with ``None``)."""
    first = structures[0]
    if len(structures) == 1:
        return first

    def joined(name: str) -> tuple[Any, ...]:
        parts = [getattr(structure, name) for structure in structures]
        if not any(parts):
            return ()
        return tuple(
            value
            for structure, part in zip(structures, parts)
            for value in (part or (None,) * len(structure.mixers))
        )

    return dataclasses.replace(
        first,
        mixers=joined("mixers"),
        mlps=joined("mlps"),
        norms=joined("norms"),
        required_inputs=joined("required_inputs"),
        side_attentions=joined("side_attentions"),
    )


def install(model: StandardizedTransformer, unrolled: Unrolled) -> None:
    """Give ``model`` its per-call stack: ``layers`` becomes an `UnrolledLayers` over the block
    calls ``unrolled`` lists, ``ln_final`` the call of the final norm that feeds ``lm_head``
    (``unrolled.ln_final_call``), and ``layer_structure`` one entry per block call.

    NNsight bound ``layers`` and ``ln_final`` as aliases on the instance (a class attribute
    would shadow them), so they are swapped there, once the envoy tree and the per-block
    structure exist and before any accessor or load-time check reads them.

    Raises:
        RenamingError: a segment names a block the model's block list lacks.
    """
    from nnterp.layer_structure import resolve_layer_structure

    config = model._module.config
    calls = unrolled.block_calls(config)
    hf = model._module
    blocks = [*model.__dict__["layers"]]
    modules = [*hf.get_submodule(str(model.paths["layers"]))]
    structures = [model.layer_structure]
    for stack in unrolled.stacks:
        try:
            stack_modules = [*hf.get_submodule(stack)]
        except AttributeError as error:
            raise RenamingError(
                f"spec {model.spec.name!r}: its unrolled stack {stack!r} is no module list of "
                f"{type(hf).__name__}; fix the spec's Unrolled stacks"
            ) from error
        blocks += [*_stack_envoy(model, stack)]
        modules += stack_modules
        structures.append(resolve_layer_structure(hf, model.spec, {**model.paths, "layers": stack}))
    count = len(blocks)
    outside = sorted({block for block in calls if not 0 <= block < count})
    if outside or not calls:
        raise RenamingError(
            f"spec {model.spec.name!r}: its unrolled segments {unrolled.segments} give the block calls "
            f"{list(calls)}, but {model.paths['layers']} (and its stacks {unrolled.stacks}) hold {count} blocks"
            + (f" (no block {outside})" if outside else " (no call at all)")
            + "; fix the spec's Unrolled segments to name the config's keys"
        )
    model.__dict__[BLOCKS_KEY] = blocks
    model.__dict__[BLOCK_MODULES_KEY] = modules
    model.__dict__[SCHEDULE_KEY] = call_schedule(calls)
    model.__dict__["layers"] = UnrolledLayers(blocks, model.__dict__[SCHEDULE_KEY])
    norm = model.__dict__.get("ln_final")
    if unrolled.ln_final_call is not None and norm is not None:
        model.__dict__["ln_final"] = CallEnvoy(norm, resolve_bound(config, unrolled.ln_final_call))
    model.layer_structure = unroll_structure(_joined(structures), calls)
