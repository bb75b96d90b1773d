"""Virtual blocks: blocks nnterp builds where a model has no one module per block.

Two shapes of forward, both given one standard ``layers[i]`` per block:

* A loop over parallel module lists (XLM runs ``attentions[i]``, ``layer_norm1[i]``,
  ``ffns[i]``, ``layer_norm2[i]`` for each ``i``; the spec's `nnterp.spec.VirtualBlocks`).
* Block modules that each run several blocks in a row (LongCat-Flash's decoder layer runs two
  attention/MLP sub-blocks; the spec's `nnterp.spec.SubBlocks`).

For each block nnterp builds:

* a `VirtualBlock`, a torch module holding the block's parts under their part names
  (``self_attn``, ``mlp``, ...), mounted at the spec's ``layers`` path as a plain attribute
  (`mount`). It is outside the model's module tree: the model's ``state_dict``,
  ``named_modules`` and forward are unchanged, and it is never called. Its forward hooks are
  set on its parts and stream points, so plain-torch checks read it like a block module.
* a `VirtualBlockEnvoy`, the block inside a trace (`install`): ``.input`` and ``.output`` read
  and write the streams entering and leaving it where the forward computes them (a
  `StreamPoint`: a module's output or input, or a value the block module's forward binds), and
  its parts are the parts' NNsight envoys. Accessors built on ``model.layers[i]`` work unchanged.

Example:
    >>> model = StandardizedTransformer(hf_xlm, tokenizer=tok)      # spec with virtual_blocks=...
    >>> with model.trace("Hello"):
    ...     model.layers_input[1] = model.layers_input[1] * 0.5     # the stream entering attentions[1]
    ...     out = model.layers_output[1].save()                       # layer_norm2[1]'s output
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch

from nnterp.errors import LayerIndexError, RenamingError, UnavailableComponentError
from nnterp.spec import SubBlocks, VirtualBlocks

if TYPE_CHECKING:
    from nnterp.layer_structure import LayerStructure
    from nnterp.spec import ArchitectureSpec
    from nnterp.standardized_transformer import StandardizedTransformer

__all__ = ["StreamPoint", "VirtualBlock", "VirtualBlockEnvoy", "VirtualLayers", "install", "mount"]

#: The kinds of `StreamPoint`.
POINT_KINDS = ("output", "input", "bound")


@dataclass(frozen=True)
class StreamPoint:
    """Where a stream between blocks is read and written.

    Attributes:
        path: Module path from the root.
        kind: ``"output"`` (what the module returns), ``"input"`` (its first argument: a block
            module's, through which its forward reads the stream) or ``"bound"`` (the value
            ``label``, an assignment in the module's forward, binds).
        label: For ``"bound"``: the NNsight ``.source`` operation of the assignment.
        consumer: For ``"bound"``: path from the root of the module whose first argument that
            value is next (where plain torch hooks read it).
        copy_written: The forward edits the stream in place after this point (XLM multiplies
            it by the padding mask): a written tensor is copied first, so the caller's tensor
            is left alone (and a leaf that requires grad can be written).
    """

    path: str
    kind: str
    label: str | None = None
    consumer: str | None = None
    copy_written: bool = False

    def read(self, envoy: Any) -> Any:
        """The stream, inside a trace (``envoy``: the NNsight envoy at ``path``)."""
        if self.kind == "bound":
            return getattr(envoy.source, str(self.label)).output
        return envoy.output if self.kind == "output" else envoy.input

    def write(self, envoy: Any, value: Any) -> None:
        """Replace the stream, inside a trace, for everything the forward computes from it."""
        if self.copy_written and isinstance(value, torch.Tensor):
            value = value.clone()
        if self.kind == "bound":
            getattr(envoy.source, str(self.label)).output = value
        elif self.kind == "output":
            envoy.output = value
        else:
            envoy.input = value

    def hook(self, root: torch.nn.Module, callback: Callable[[Any], Any], prepend: bool = False) -> Any:
        """A torch hook calling ``callback(stream)`` where the stream is computed; a value it
        returns replaces the stream (not possible at a ``"bound"`` point: a typed error)."""
        if self.kind == "output":
            return root.get_submodule(self.path).register_forward_hook(
                lambda module, args, output: callback(output), prepend=prepend
            )

        def entering(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            replaced = callback(_first_argument(args, kwargs))
            if replaced is None:
                return None
            if self.kind == "bound":
                raise UnavailableComponentError(
                    f"a plain torch hook cannot replace the stream {self.label} of {self.path} (a variable of "
                    "its forward): write it with model.layers_output[i] / layers_input[i] inside a trace"
                )
            return ((replaced, *args[1:]), kwargs) if args else (args, {**kwargs, next(iter(kwargs)): replaced})

        target = self.consumer if self.kind == "bound" else self.path
        return root.get_submodule(str(target)).register_forward_pre_hook(entering, prepend=prepend, with_kwargs=True)


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
    """One block nnterp built: its parts as children, under their part names, and the points
    where the streams entering and leaving it are computed.

    Never called: the model's forward runs the parts. Its hooks are set on its parts and
    points (`register_forward_hook`, `register_forward_pre_hook`), so ``layer_module(i)`` serves
    plain torch checks as a block module does.

    Args:
        parts: ``{part name: module}`` in the order the forward calls them; the first receives
            the stream entering the block.
        entering, leaving: Where the streams entering and leaving the block are computed.
        root: The model (to find the points' modules; not a child).
        description: What the block is made of, for ``print(model)``.
    """

    def __init__(
        self,
        parts: dict[str, torch.nn.Module],
        entering: StreamPoint,
        leaving: StreamPoint,
        root: torch.nn.Module,
        description: str = "",
    ) -> None:
        super().__init__()
        for name, module in parts.items():
            self.add_module(name, module)
        self.entry_part = next(iter(parts))
        self.entering = entering
        self.leaving = leaving
        self.description = description or "VirtualBlock"
        object.__setattr__(self, "_root", root)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise UnavailableComponentError(
            "a virtual block is a view of modules the model's own forward calls; it cannot be called "
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
        ``with_kwargs``) when the stream leaving the block is computed; a value it returns
        replaces that stream. The input is what the block's first part receives. ``prepend``
        orders it before the other hooks of the module computing that stream; ``always_call``
        is not supported (the block never raises itself)."""
        entered: list[Any] = []

        def capture(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            entered[:] = [_first_argument(args, kwargs)]

        def finish(output: Any) -> Any:
            stream = entered[0] if entered else None
            return hook(self, (stream,), {}, output) if with_kwargs else hook(self, (stream,), output)

        entry = self.get_submodule(self.entry_part)
        return _Handles(
            entry.register_forward_pre_hook(capture, with_kwargs=True),
            self.leaving.hook(self.__dict__["_root"], finish, prepend),
        )

    def register_forward_pre_hook(  # type: ignore[override]
        self, hook: Callable[..., Any], *, prepend: bool = False, with_kwargs: bool = False
    ) -> _Handles:
        """Call ``hook(block, (stream entering it,))`` (with ``{}`` as kwargs when
        ``with_kwargs``) where that stream is computed; new arguments it returns replace it."""

        def entering(stream: Any) -> Any:
            result = hook(self, (stream,), {}) if with_kwargs else hook(self, (stream,))
            if result is None:
                return None
            if with_kwargs:
                result = result[0]
            return result[0] if isinstance(result, tuple) else result

        return _Handles(self.entering.hook(self.__dict__["_root"], entering, prepend))


class _VirtualBlockList(torch.nn.ModuleList):
    """The mounted list of `VirtualBlock` (a ``ModuleList`` nnterp recognises as its own)."""


def _list_blocks(hf_model: torch.nn.Module, virtual: VirtualBlocks) -> list[VirtualBlock]:
    """XLM's shape: block ``i`` is the ``i``-th module of each list."""
    lists = {part: list(cast(torch.nn.ModuleList, hf_model.get_submodule(path))) for part, path in virtual.parts}
    lengths = {part: len(modules) for part, modules in lists.items()}
    if len(set(lengths.values())) != 1:
        raise RenamingError(f"the virtual blocks' lists differ in length: {lengths}")
    output_list = dict(virtual.parts)[virtual.output]
    copied = virtual.stream_edited_in_place
    description = f"VirtualBlock of {', '.join(f'{path}[i]' for _, path in virtual.parts)}"
    entering = StreamPoint(virtual.stream_source, "output", copy_written=copied)
    blocks = []
    for index in range(next(iter(lengths.values()))):
        leaving = StreamPoint(f"{output_list}.{index}", "output", copy_written=copied)
        parts = {part: modules[index] for part, modules in lists.items()}
        blocks.append(VirtualBlock(parts, entering, leaving, hf_model, description))
        entering = leaving
    return blocks


def _sub_blocks(hf_model: torch.nn.Module, virtual: SubBlocks) -> list[VirtualBlock]:
    """LongCat's shape: block module ``m`` runs sub-blocks ``0 .. len(parts) - 1``."""
    count = len(virtual.parts)
    description = f"VirtualBlock: sub-block i % {count} of {virtual.blocks}[i // {count}]"
    blocks = []
    for index, module in enumerate(cast(torch.nn.ModuleList, hf_model.get_submodule(virtual.blocks))):
        path = f"{virtual.blocks}.{index}"
        entering = StreamPoint(path, "input")
        for sub, parts in enumerate(virtual.parts):
            if sub + 1 < len(virtual.parts):
                consumer = f"{path}.{virtual.parts[sub + 1][0][1]}"
                leaving = StreamPoint(path, "bound", virtual.between[sub], consumer)
            else:
                leaving = StreamPoint(path, "output")
            modules = {name: module.get_submodule(part) for name, part in parts}
            blocks.append(VirtualBlock(modules, entering, leaving, hf_model, description))
            entering = leaving
    return blocks


def mount(hf_model: torch.nn.Module, spec: ArchitectureSpec) -> None:
    """Build ``hf_model``'s `VirtualBlock` list from ``spec.virtual_blocks`` and set it, as a
    plain attribute (no registered child), at the path ``spec.layers``.

    Raises:
        RenamingError: a module the spec names is missing, the lists differ in length, or the
            mount path is a native attribute of the model.
    """
    virtual = spec.virtual_blocks
    if virtual is None or not isinstance(spec.layers, str):
        raise RenamingError(f"spec {spec.name!r}: virtual_blocks needs a single layers path to mount them at")
    parent_path, _, name = spec.layers.rpartition(".")
    try:
        parent = hf_model.get_submodule(parent_path)
        if isinstance(virtual, SubBlocks):
            blocks = _sub_blocks(hf_model, virtual)
        else:
            hf_model.get_submodule(virtual.stream_source)
            blocks = _list_blocks(hf_model, virtual)
    except (AttributeError, TypeError, RenamingError) as error:
        raise RenamingError(
            f"spec {spec.name!r}: {type(hf_model).__name__} does not have the blocks its virtual_blocks "
            f"describe ({error}); fix the spec's virtual_blocks"
        ) from error
    current = parent.__dict__.get(name)
    if name in parent._modules or (hasattr(parent, name) and not isinstance(current, _VirtualBlockList)):
        raise RenamingError(
            f"spec {spec.name!r}: {spec.layers} is a native attribute of {type(hf_model).__name__}; "
            "mount the virtual blocks at a free name"
        )
    object.__setattr__(parent, name, _VirtualBlockList(blocks))


class VirtualBlockEnvoy:
    """A `VirtualBlock` inside a trace: ``input`` / ``inputs`` read and write the stream
    entering the block where the forward computes it, ``output`` the stream leaving it,
    ``skip(x)`` makes ``x`` that stream; parts are their NNsight envoys.

    Args:
        module: The block (``None`` once unpickled on another side of a remote trace).
        parts: ``{part name: NNsight envoy}``.
        entering, leaving: ``(point, NNsight envoy at the point's path)`` of the streams.
    """

    __slots__ = ("_entering", "_leaving", "_module", "_parts")

    def __init__(
        self,
        module: VirtualBlock | None,
        parts: dict[str, Any],
        entering: tuple[StreamPoint, Any],
        leaving: tuple[StreamPoint, Any],
    ) -> None:
        object.__setattr__(self, "_module", module)
        object.__setattr__(self, "_parts", parts)
        object.__setattr__(self, "_entering", entering)
        object.__setattr__(self, "_leaving", leaving)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled (a remote trace) as its parts' envoys and points; the block module stays on
        # this side (a remote server resolves envoys from its own model).
        return (VirtualBlockEnvoy, (None, self._parts, self._entering, self._leaving))

    def __getattr__(self, name: str) -> Any:
        parts = object.__getattribute__(self, "_parts")
        if name in ("input", "inputs", "output"):
            point, envoy = object.__getattribute__(self, "_leaving" if name == "output" else "_entering")
            value = point.read(envoy)
            return ((value,), {}) if name == "inputs" else value
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
        if name in ("input", "inputs"):
            point, envoy = self._entering
            point.write(envoy, _first_argument(*value) if name == "inputs" else value)
        elif name == "output":
            point, envoy = self._leaving
            point.write(envoy, value)
        else:
            raise AttributeError(f"a virtual block's {name!r} cannot be set (only input, inputs and output)")

    def skip(self, replacement: Any) -> None:
        """Make ``replacement`` the stream leaving the block. Its parts still run (and fill the
        key/value cache) but their outputs no longer reach the stream, except where the
        forward adds a part's output after the block (LongCat-Flash's shortcut MoE, computed in
        the first sub-block, is still added by the second)."""
        self.output = replacement

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
    built on the NNsight envoys of its parts and points (set on the instance, like NNsight's
    aliases)."""
    from nnterp.accessors import child_envoy

    hf = model._module
    modules: Any = hf.get_submodule(str(model.paths["layers"]))
    paths = {id(module): name for name, module in hf.named_modules()}
    blocks: list[VirtualBlockEnvoy] = []
    for block in modules:
        parts = {name: child_envoy(model, paths[id(part)]) for name, part in block.named_children()}
        entering = (block.entering, child_envoy(model, block.entering.path))
        leaving = (block.leaving, child_envoy(model, block.leaving.path))
        _prepare(*leaving)
        blocks.append(VirtualBlockEnvoy(block, parts, entering, leaving))
    model.__dict__["layers"] = VirtualLayers(blocks)
    virtual = model.spec.virtual_blocks
    if isinstance(virtual, SubBlocks) and virtual.mlp_contributions:
        model.layer_structure = _with_sub_block_contributions(model.layer_structure, virtual)


def _prepare(point: StreamPoint, envoy: Any) -> None:
    """Instrument the forward a ``"bound"`` point reads now, outside any trace: NNsight builds a
    module's ``.source`` when it is first read, which inside a trace may be after the module's
    forward has begun (its input is read first).

    Raises:
        RenamingError: the forward has no operation of that name.
    """
    if point.kind != "bound":
        return
    from nnterp.nnsight_seams import compiled_operations

    operations, _, _ = compiled_operations(envoy.source)
    if point.label not in operations:
        raise RenamingError(
            f"{point.path}'s forward has no operation {point.label!r} binding the stream between its "
            f"sub-blocks (its operations: {', '.join(operations)}); fix the spec's SubBlocks between"
        )


def _with_sub_block_contributions(structure: LayerStructure, virtual: SubBlocks) -> LayerStructure:
    """``structure`` with each sub-block's MLP contribution as ``virtual.mlp_contributions`` says."""
    mlps = list(structure.mlps)
    for layer, site in enumerate(mlps):
        contribution = virtual.mlp_contributions[layer % len(virtual.parts)]
        if site is not None and contribution is not None:
            mlps[layer] = dataclasses.replace(site, contribution=contribution)
    return dataclasses.replace(structure, mlps=tuple(mlps))
