"""Virtual blocks: models whose forward loops over parallel module lists, with no block module.

XLM's forward runs, for each layer ``i``, ``attentions[i]``, ``layer_norm1[i]``, ``ffns[i]``
and ``layer_norm2[i]``: four module lists of the root, and a Python variable carrying the
stream between them. No module holds one block, so the standard ``layers[i]`` has nothing
to name. A spec's `nnterp.spec.VirtualBlocks` says which lists make a block and where the
stream between blocks is computed; nnterp then gives each ``i`` a block of its own:

* `VirtualBlock`, a torch module grouping the lists' ``i``-th modules under their part
  names (``self_attn``, ``mlp``, ...), mounted at the spec's ``layers`` path as a plain
  attribute (`mount`). It is outside the model's module tree: the model's ``state_dict``,
  ``named_modules`` and forward are unchanged, and it is never called. Its forward hooks are
  the hooks of its parts, so plain-torch checks read it like a block module.
* `VirtualBlockEnvoy`, the block inside a trace (`install`): ``.input`` reads and writes the
  stream where the forward computes it (the output of block ``i - 1``'s output part, or of
  the spec's ``stream_source`` for block 0), ``.output`` the output of block ``i``'s output
  part, and its parts are the parts' NNsight envoys. Accessors built on ``model.layers[i]``
  work unchanged.

Example:
    >>> model = StandardizedTransformer(hf_xlm, tokenizer=tok)      # spec with virtual_blocks=...
    >>> with model.trace("Hello"):
    ...     model.layers_input[1] = model.layers_input[1] * 0.5     # the stream entering attentions[1]
    ...     out = model.layers_output[1].save()                       # layer_norm2[1]'s output
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

import torch

from nnterp.errors import LayerIndexError, RenamingError, UnavailableComponentError

if TYPE_CHECKING:
    from nnterp.spec import ArchitectureSpec
    from nnterp.standardized_transformer import StandardizedTransformer

__all__ = ["VirtualBlock", "VirtualBlockEnvoy", "VirtualLayers", "install", "mount"]


class _Handles:
    """Removes several torch hook handles at once (what `VirtualBlock`'s hooks return)."""

    def __init__(self, *handles: Any) -> None:
        self._handles = handles

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()

    def __enter__(self) -> _Handles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def _first_argument(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return args[0] if args else next(iter(kwargs.values()), None)


class VirtualBlock(torch.nn.Module):
    """One block of a model without block modules: its parts (the ``i``-th module of each of
    the spec's lists) as children, under their part names.

    Never called: the model's own loop runs the parts. Its hooks are its parts' hooks
    (`register_forward_hook`, `register_forward_pre_hook`), so ``layer_module(i)`` serves plain
    torch checks as a block module does.

    Args:
        parts: ``{part name: module}`` in the order the forward calls them.
        output: The part whose output is the block's output.
        stream_source: The module whose output is the stream entering the block.
    """

    def __init__(self, parts: dict[str, torch.nn.Module], output: str, stream_source: torch.nn.Module) -> None:
        super().__init__()
        for name, module in parts.items():
            self.add_module(name, module)
        self.output_part = output
        self.entry_part = next(iter(parts))
        # Not a child: the source is another block's part, or a module of the model's root.
        object.__setattr__(self, "stream_source", stream_source)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise UnavailableComponentError(
            "a virtual block is a view of modules the model's own loop calls; it cannot be called "
            "itself: run the model, or call its parts"
        )

    def register_forward_hook(  # type: ignore[override]
        self,
        hook: Callable[..., Any],
        *,
        prepend: bool = False,
        with_kwargs: bool = False,
        always_call: bool = False,
    ) -> _Handles:
        """Call ``hook(block, (stream entering it,), output)`` (with ``{}`` as kwargs when
        ``with_kwargs``) when the block's output part returns; a value it returns replaces the
        block's output. The input is what the block's first part receives."""
        entered: list[Any] = []

        def capture(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            entered[:] = [_first_argument(args, kwargs)]

        def finish(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> Any:
            stream = entered[0] if entered else None
            return hook(self, (stream,), {}, output) if with_kwargs else hook(self, (stream,), output)

        entry = self.get_submodule(self.entry_part)
        return _Handles(
            entry.register_forward_pre_hook(capture, with_kwargs=True),
            self.get_submodule(self.output_part).register_forward_hook(
                finish, prepend=prepend, always_call=always_call
            ),
        )

    def register_forward_pre_hook(  # type: ignore[override]
        self, hook: Callable[..., Any], *, prepend: bool = False, with_kwargs: bool = False
    ) -> _Handles:
        """Call ``hook(block, (stream entering it,))`` (with ``{}`` as kwargs when
        ``with_kwargs``) where that stream is computed (the stream source's output); new
        arguments it returns replace the stream."""

        def entering(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> Any:
            result = hook(self, (output,), {}) if with_kwargs else hook(self, (output,))
            if result is None:
                return None
            if with_kwargs:
                result = result[0]
            return result[0] if isinstance(result, tuple) else result

        source: torch.nn.Module = self.__dict__["stream_source"]
        return _Handles(source.register_forward_hook(entering, prepend=prepend))


def mount(hf_model: torch.nn.Module, spec: ArchitectureSpec) -> None:
    """Build ``hf_model``'s `VirtualBlock` list from ``spec.virtual_blocks`` and set it, as a
    plain attribute (no registered child), at the path ``spec.layers``.

    Raises:
        RenamingError: a list or the stream source is missing, the lists differ in length, or
            the mount path is a native attribute of the model.
    """
    virtual = spec.virtual_blocks
    if virtual is None or not isinstance(spec.layers, str):
        raise RenamingError(f"spec {spec.name!r}: virtual_blocks needs a single layers path to mount them at")
    parent_path, _, name = spec.layers.rpartition(".")
    try:
        parent = hf_model.get_submodule(parent_path)
        lists = {part: list(cast(torch.nn.ModuleList, hf_model.get_submodule(path))) for part, path in virtual.parts}
        source = hf_model.get_submodule(virtual.stream_source)
    except (AttributeError, TypeError) as error:
        raise RenamingError(
            f"spec {spec.name!r}: {type(hf_model).__name__} lacks a module its virtual_blocks name ({error}); "
            "fix the spec's VirtualBlocks parts and stream_source"
        ) from error
    current = parent.__dict__.get(name)
    if name in parent._modules or (hasattr(parent, name) and not isinstance(current, _VirtualBlockList)):
        raise RenamingError(
            f"spec {spec.name!r}: {spec.layers} is a native attribute of {type(hf_model).__name__}; "
            "mount the virtual blocks at a free name"
        )
    lengths = {part: len(modules) for part, modules in lists.items()}
    if len(set(lengths.values())) != 1:
        raise RenamingError(f"spec {spec.name!r}: the virtual blocks' lists differ in length: {lengths}")
    blocks: list[VirtualBlock] = []
    for index in range(next(iter(lengths.values()))):
        entering = source if not blocks else blocks[-1].get_submodule(virtual.output)
        blocks.append(VirtualBlock({part: modules[index] for part, modules in lists.items()}, virtual.output, entering))
    object.__setattr__(parent, name, _VirtualBlockList(blocks))


class _VirtualBlockList(torch.nn.ModuleList):
    """The mounted list of `VirtualBlock` (a ``ModuleList`` nnterp recognises as its own)."""


class VirtualBlockEnvoy:
    """A `VirtualBlock` inside a trace: ``input`` / ``inputs`` read and write the stream
    entering the block where the forward computes it, ``output`` the block output part's
    output, ``skip(x)`` sets that output to ``x``; parts are their NNsight envoys.

    Args:
        module: The block.
        parts: ``{part name: NNsight envoy}``.
        output: The part whose output is the block's output.
        source: The envoy whose output is the stream entering the block.
    """

    __slots__ = ("_module", "_output", "_parts", "_source")

    def __init__(self, module: VirtualBlock, parts: dict[str, Any], output: str, source: Any) -> None:
        object.__setattr__(self, "_module", module)
        object.__setattr__(self, "_parts", parts)
        object.__setattr__(self, "_output", output)
        object.__setattr__(self, "_source", source)

    def __getattr__(self, name: str) -> Any:
        parts = object.__getattribute__(self, "_parts")
        if name == "input":
            return object.__getattribute__(self, "_source").output
        if name == "inputs":
            return ((object.__getattribute__(self, "_source").output,), {})
        if name == "output":
            return parts[object.__getattribute__(self, "_output")].output
        if name in parts:
            return parts[name]
        if name == "__dict__":
            return {}
        if name == "source":
            raise UnavailableComponentError(
                "a virtual block has no forward of its own to trace; use the .source of one of its "
                f"parts ({', '.join(parts)})"
            )
        raise AttributeError(f"virtual block has no part {name!r} (its parts: {', '.join(parts)})")

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "input":
            self._source.output = value
        elif name == "inputs":
            self._source.output = _first_argument(*value)
        elif name == "output":
            self._parts[self._output].output = value
        else:
            raise AttributeError(f"a virtual block's {name!r} cannot be set (only input, inputs and output)")

    def skip(self, replacement: Any) -> None:
        """Make ``replacement`` the block's output (its parts still run; nothing reads them)."""
        self._parts[self._output].output = replacement

    def __repr__(self) -> str:
        return f"<virtual block of {', '.join(f'{name}={envoy.path}' for name, envoy in self._parts.items())}>"


class VirtualLayers(Sequence):
    """The standard ``layers`` of a model with `VirtualBlock` s: one `VirtualBlockEnvoy` each."""

    def __init__(self, blocks: Sequence[VirtualBlockEnvoy]) -> None:
        self._blocks = tuple(blocks)

    def __len__(self) -> int:
        return len(self._blocks)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return list(self._blocks[index])
        if not -len(self) <= index < len(self):
            raise LayerIndexError(
                f"layer {index} out of range: the model has {len(self)} layers "
                f"(layers[-{len(self)}] .. layers[{len(self) - 1}])"
            )
        return self._blocks[index]

    def __iter__(self) -> Iterator[VirtualBlockEnvoy]:
        return iter(self._blocks)

    def __repr__(self) -> str:
        return f"<{len(self)} virtual blocks>"


def install(model: StandardizedTransformer) -> None:
    """Give ``model`` its standard ``layers``: a `VirtualBlockEnvoy` per mounted `VirtualBlock`,
    built on the NNsight envoys of the parts (set on the instance, like NNsight's aliases)."""
    from nnterp.accessors import child_envoy

    virtual = model.spec.virtual_blocks
    assert virtual is not None
    lists = {part: child_envoy(model, path) for part, path in virtual.parts}
    modules: Any = model._module.get_submodule(str(model.paths["layers"]))
    source = child_envoy(model, virtual.stream_source)
    blocks: list[VirtualBlockEnvoy] = []
    for index, module in enumerate(modules):
        parts = {part: envoys[index] for part, envoys in lists.items()}
        entering = source if not blocks else blocks[-1]._parts[virtual.output]
        blocks.append(VirtualBlockEnvoy(module, parts, virtual.output, entering))
    model.__dict__["layers"] = VirtualLayers(blocks)
