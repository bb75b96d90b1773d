"""Every file nnterp reads is validated: a bad one is reported once and ignored or rebuilt, and
the load that reads it (an unrelated one, for a plugin's status file) still gives the right values.

One table per file kind, one row per way the file can be damaged:

- status files registered by a plugin (``register_status_files``),
- validation records (``<cache root>/validation/<key>.json``),
- the converted default model (``<cache root>/smollm2-135m-instruct``; the Gemma-3 cache is
  served by the same engine). These rows work on a byte copy of the real cache in a temporary
  cache root: the real cache in ``~/.cache/nnterp`` is never written (checked at the end).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from nnterp import StandardizedTransformer, plugins, status, validation_cache
from nnterp.hookspecs import hookimpl
from nnterp.testing import tiny_model, tiny_tokenizer

IDS = torch.tensor([[5, 17, 3, 42, 8, 11]])


def _plain_logits(hf_model: torch.nn.Module, ids: torch.Tensor = IDS) -> torch.Tensor:
    with torch.no_grad():
        return hf_model(input_ids=ids).logits


def _nnterp_logits(model: StandardizedTransformer, ids: torch.Tensor = IDS) -> torch.Tensor:
    with model.trace(ids):
        logits = model.logits.save()
    return logits


def _load_recording(hf_model: torch.nn.Module, **kwargs) -> tuple[StandardizedTransformer, list]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = StandardizedTransformer(hf_model, tiny_tokenizer(), **kwargs)
    return model, list(caught)


# --------------------------------------------------------------------------- status files


class _StatusFilePlugin:
    """A third-party plugin whose only hook registers one status file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @hookimpl
    def register_status_files(self, register) -> None:
        register(str(self.path))


def _truncated_json(versions: dict[str, str]) -> bytes:
    whole = json.dumps({"versions": versions, "models": {"gpt2": {"class_name": "GPT2LMHeadModel", "status": "pass"}}})
    return whole[: len(whole) // 2].encode()


STATUS_ROWS = {
    "truncated JSON": (_truncated_json, "not valid JSON"),
    "not UTF-8": (lambda versions: b"\xff\xfe{\x00", "cannot be read"),
    "a list, not an object": (lambda versions: b"[1, 2]", "a list, not an object"),
    "versions is a list": (lambda versions: json.dumps({"versions": ["5.24"], "models": {}}).encode(), '"versions"'),
    "models is a string": (lambda versions: json.dumps({"versions": versions, "models": "all"}).encode(), '"models"'),
    "entry is a string": (
        lambda versions: json.dumps({"versions": versions, "models": {"llama": "pass"}}).encode(),
        'models["llama"] is a str',
    ),
    "checks is a list": (
        lambda versions: json.dumps(
            {"versions": versions, "models": {"llama": {"class_name": "LlamaForCausalLM", "checks": ["renaming"]}}}
        ).encode(),
        'models["llama"].checks is a list',
    ),
    "class_name is a number": (
        lambda versions: json.dumps({"versions": versions, "models": {"llama": {"class_name": 7}}}).encode(),
        'models["llama"].class_name is a int',
    ),
}


@pytest.fixture
def plugin_registry(tmp_path, monkeypatch):
    """Install a registry built from two third-party plugins: ``broken`` (its status file is
    written by the test) and ``good`` (a valid file saying LlamaForCausalLM passed on the
    installed versions). Entry-point plugins are left out."""
    monkeypatch.setenv(plugins.DISABLE_ENV_VAR, "1")
    broken_file = tmp_path / "broken-status.json"
    good_file = tmp_path / "good-status.json"
    good_file.write_text(json.dumps({
        "versions": status.installed_versions(),
        "models": {"llama": {"class_name": "LlamaForCausalLM", "status": "pass", "checks": {}, "error": None}},
    }))
    extra = [
        (_StatusFilePlugin(broken_file), plugins.PluginInfo("broken", "nnterp-broken-status", "0.1")),
        (_StatusFilePlugin(good_file), plugins.PluginInfo("good", "nnterp-good-status", "0.1")),
    ]
    # Only the plugin's file under test: not core's own status, not this machine's user registry.
    monkeypatch.setattr(status, "CORE_STATUS_FILE", tmp_path / "no-core-status.json")
    monkeypatch.setenv(status.USER_REGISTRY_ENV, "0")
    monkeypatch.setattr(plugins, "_reported", set())
    monkeypatch.setattr(plugins, "_registry", plugins.build_registry(extra))
    status._known_classes.cache_clear()
    status._warned.clear()
    yield broken_file
    status._known_classes.cache_clear()
    status._warned.clear()


@pytest.mark.parametrize("row", list(STATUS_ROWS))
def test_a_malformed_status_file_is_reported_once_and_ignored(plugin_registry, row):
    content, reason = STATUS_ROWS[row]
    plugin_registry.write_bytes(content(status.installed_versions()))

    loads = []
    for model_type in ("llama", "llama", "gpt2"):
        hf_model = tiny_model(model_type)
        model, caught = _load_recording(hf_model)
        loads.append(caught)
        assert torch.equal(_nnterp_logits(model), _plain_logits(hf_model))

    reports = [w for caught in loads for w in caught if issubclass(w.category, plugins.PluginWarning)]
    assert len(reports) == 1, [str(w.message) for w in reports]
    message = str(reports[0].message)
    assert "'broken'" in message and "nnterp-broken-status" in message
    assert str(plugin_registry) in message
    assert reason in message
    assert "reinstall nnterp-broken-status" in message
    untested = [
        str(w.message) for caught in loads for w in caught if issubclass(w.category, status.UntestedArchitectureWarning)
    ]
    # The good plugin's file still counts: Llama passed, GPT-2 (listed only in the broken file) is untested.
    assert untested == [
        (
            "GPT2LMHeadModel is not in nnterp's status registry (untested); run "
            "`python -m nnterp run_tests --class-names GPT2LMHeadModel` to test it here."
        )
    ]


# --------------------------------------------------------------------------- validation records


def _structure_from_hooks(hf_model: torch.nn.Module) -> dict:
    """What validation should find, read with a plain forward hook on layer 0."""
    seen = []
    hook = hf_model.model.layers[0].register_forward_hook(lambda _m, _i, output: seen.append(output))
    with torch.no_grad():
        hf_model(input_ids=IDS)
    hook.remove()
    output = seen[0]
    is_tuple = isinstance(output, tuple)
    return {"layer_returns_tuple": is_tuple, "layer_tuple_length": len(output) if is_tuple else 1}


def _with(record: dict, **changes) -> dict:
    return {**record, **changes}


RECORD_ROWS = {
    "truncated JSON": (lambda record: json.dumps(record)[:20], "not valid JSON"),
    "a list": (lambda record: json.dumps([record]), "a list, not an object"),
    "unexpected top-level field": (lambda record: json.dumps(_with(record, checked_by="me")), "unexpected fields ['checked_by']"),
    "validated missing": (lambda record: json.dumps({k: v for k, v in record.items() if k != "validated"}), "missing fields ['validated']"),
    "validated is a string": (lambda record: json.dumps(_with(record, validated="yes")), '"validated" is a str'),
    "output_structure is a list": (lambda record: json.dumps(_with(record, output_structure=[True, 1])), '"output_structure" is a list'),
    "unexpected structure field": (
        lambda record: json.dumps(_with(record, output_structure={**record["output_structure"], "extra": 1})),
        "unexpected fields ['extra']",
    ),
    "structure field missing": (
        lambda record: json.dumps(_with(record, output_structure={"layer_tuple_length": 1})),
        "missing fields ['layer_returns_tuple']",
    ),
    "structure flag is a string": (
        lambda record: json.dumps(_with(record, output_structure={**record["output_structure"], "layer_returns_tuple": "false"})),
        '"output_structure.layer_returns_tuple" is a str',
    ),
    "tuple length is a float": (
        lambda record: json.dumps(_with(record, output_structure={**record["output_structure"], "layer_tuple_length": 1.0})),
        '"output_structure.layer_tuple_length" is a float',
    ),
}


@pytest.fixture
def cache_on(tmp_path, monkeypatch):
    """The validation cache turned on, in an empty temporary cache root."""
    monkeypatch.setenv("NNTERP_VALIDATION_CACHE", "1")
    monkeypatch.setenv("NNTERP_CACHE_DIR", str(tmp_path))
    return tmp_path / "validation"


def _forwards(hf_model: torch.nn.Module) -> tuple[list, object]:
    calls: list = []
    handle = hf_model.get_input_embeddings().register_forward_hook(lambda *_: calls.append(1))
    return calls, handle


@pytest.mark.parametrize("row", list(RECORD_ROWS))
def test_a_malformed_validation_record_is_reported_once_then_revalidated_and_rewritten(cache_on, row):
    corrupt, reason = RECORD_ROWS[row]
    _load_recording(tiny_model("llama"))
    (record_path,) = cache_on.glob("*.json")
    expected_structure = _structure_from_hooks(tiny_model("llama"))
    assert json.loads(record_path.read_text()) == {
        "format": validation_cache.RECORD_FORMAT, "validated": True, "output_structure": expected_structure,
    }
    good_record = record_path.read_text()
    record_path.write_text(corrupt(json.loads(good_record)))

    hf_model = tiny_model("llama", seed=1)
    calls, handle = _forwards(hf_model)
    model, caught = _load_recording(hf_model)
    handle.remove()
    reports = [str(w.message) for w in caught if issubclass(w.category, validation_cache.ValidationCacheWarning)]
    assert len(reports) == 1, reports
    assert str(record_path) in reports[0] and reason in reports[0]
    assert len(calls) == 1, "the model was validated again (one probe forward)"
    assert json.loads(record_path.read_text()) == json.loads(good_record), "the record was rewritten"
    assert model.output_structure.layer_returns_tuple == expected_structure["layer_returns_tuple"]
    assert torch.equal(_nnterp_logits(model), _plain_logits(hf_model))

    again = tiny_model("llama", seed=2)
    calls, handle = _forwards(again)
    model, caught = _load_recording(again)
    handle.remove()
    assert [w for w in caught if issubclass(w.category, validation_cache.ValidationCacheWarning)] == []
    assert calls == [], "the rewritten record is used"
    assert torch.equal(_nnterp_logits(model), _plain_logits(again))


# --------------------------------------------------------------------------- the default model

FRANCE = "The capital of France is"


@pytest.fixture(scope="module")
def real_cache():
    """The real default-model cache and a snapshot of it, to check it is never written."""
    from nnterp.default_model import default_model_path

    path = default_model_path()
    snapshot = _snapshot(path)
    yield path
    assert _snapshot(path) == snapshot, "the real cache in ~/.cache/nnterp was modified"


def _snapshot(directory: Path) -> dict[str, tuple[int, int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size) for p in directory.iterdir()}


@pytest.fixture(scope="module")
def gguf_reference():
    """Plain transformers on the GGUF file itself (no nnterp cache): token ids and logits."""
    from nnterp.default_model import gguf_source
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_source()
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, local_files_only=True, dtype=torch.float32
    )
    model.eval()
    ids = tokenizer(FRANCE, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    return ids, logits


def _byte_copy(real: Path, root: Path) -> Path:
    """A copy of the real cache with its own bytes (no hard links: the rows write into it)."""
    from nnterp.default_model import CACHE_NAME

    target = root / CACHE_NAME
    shutil.copytree(real, target, copy_function=shutil.copy2)
    return target


def _truncate(path: Path) -> None:
    with path.open("r+b") as stream:
        stream.truncate(path.stat().st_size // 2)


def _flip_middle_bytes(path: Path) -> None:
    with path.open("r+b") as stream:
        stream.seek(path.stat().st_size // 2)
        chunk = stream.read(64)
        stream.seek(-len(chunk), os.SEEK_CUR)
        stream.write(bytes(byte ^ 0xFF for byte in chunk))


def _drop_recorded_files(target: Path) -> None:
    """Make the marker look like one written before sizes and hashes were recorded."""
    from nnterp.default_model import MARKER_NAME, VERIFIED_NAME

    marker = json.loads((target / MARKER_NAME).read_text())
    marker.pop("files")
    (target / MARKER_NAME).write_text(json.dumps(marker))
    (target / VERIFIED_NAME).unlink(missing_ok=True)


def _older_marker_and_truncated_weights(target: Path) -> None:
    _drop_recorded_files(target)
    _truncate(target / "model.safetensors")


def _marker_is_a_list(target: Path) -> None:
    from nnterp.default_model import MARKER_NAME

    (target / MARKER_NAME).write_text(json.dumps([json.loads((target / MARKER_NAME).read_text())]))


DEFAULT_MODEL_ROWS = {
    "weights truncated, marker intact": (lambda target: _truncate(target / "model.safetensors"), "model.safetensors has"),
    "weights altered, same size": (lambda target: _flip_middle_bytes(target / "model.safetensors"), "SHA-256 mismatch"),
    "older marker, weights truncated": (_older_marker_and_truncated_weights, "its header describes"),
    "marker is a list": (_marker_is_a_list, "its marker nnterp-source.json is malformed"),
}


@pytest.mark.slow
@pytest.mark.parametrize("row", list(DEFAULT_MODEL_ROWS))
def test_a_damaged_default_model_cache_is_rebuilt_once_and_gives_the_gguf_logits(
    real_cache, gguf_reference, tmp_path, monkeypatch, capsys, row
):
    from nnterp import load_default_model

    damage, reason = DEFAULT_MODEL_ROWS[row]
    target = _byte_copy(real_cache, tmp_path)
    damage(target)
    monkeypatch.setenv("NNTERP_CACHE_DIR", str(tmp_path))
    capsys.readouterr()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_default_model()
    stderr = capsys.readouterr().err
    assert stderr.count("is not usable") == 1, stderr
    assert reason in stderr and "converting it again" in stderr
    assert stderr.count("one-time conversion") == 1

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = load_default_model()
    stderr = capsys.readouterr().err
    assert "is not usable" not in stderr and "one-time conversion" not in stderr, stderr

    ids, expected = gguf_reference
    for loaded in (model, again):
        with loaded.trace(ids):
            logits = loaded.logits.save()
        torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    assert (target / "model.safetensors").stat().st_size == (real_cache / "model.safetensors").stat().st_size


def _counting_sha256(monkeypatch) -> list[str]:
    from nnterp import default_model

    hashed: list[str] = []
    real = default_model.file_sha256

    def counting(path):
        hashed.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(default_model, "file_sha256", counting)
    return hashed


@pytest.mark.slow
def test_each_cached_file_is_hashed_once_per_size_and_modification_time(real_cache, tmp_path, monkeypatch):
    from nnterp.default_model import MARKER_NAME, VERIFIED_NAME, default_model_path

    target = _byte_copy(real_cache, tmp_path)
    (target / VERIFIED_NAME).unlink(missing_ok=True)
    recorded = set(json.loads((target / MARKER_NAME).read_text())["files"])
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= recorded
    hashed = _counting_sha256(monkeypatch)

    assert default_model_path(tmp_path) == target
    assert sorted(hashed) == sorted(recorded), "each file hashed once (the GGUF file's time still matches)"
    hashed.clear()
    assert default_model_path(tmp_path) == target
    assert hashed == []

    weights = target / "model.safetensors"
    later = weights.stat().st_mtime_ns + 10**9
    os.utime(weights, ns=(later, later))
    assert default_model_path(tmp_path) == target
    assert hashed == ["model.safetensors"]
    hashed.clear()
    assert default_model_path(tmp_path) == target
    assert hashed == []


@pytest.mark.slow
def test_an_older_intact_cache_is_adopted_with_sizes_and_hashes_not_rebuilt(real_cache, tmp_path, monkeypatch, capsys):
    from nnterp import default_model
    from nnterp.default_model import MARKER_NAME, default_model_path

    target = _byte_copy(real_cache, tmp_path)
    _drop_recorded_files(target)

    def must_not_convert(source):
        raise AssertionError("an intact older cache was converted again")

    monkeypatch.setattr(default_model, "_convert", must_not_convert)
    capsys.readouterr()
    assert default_model_path(tmp_path) == target
    assert "is not usable" not in capsys.readouterr().err
    files = json.loads((target / MARKER_NAME).read_text())["files"]
    weights = target / "model.safetensors"
    assert files["model.safetensors"] == {
        "size": weights.stat().st_size,
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
    }
    assert files["config.json"]["sha256"] == hashlib.sha256((target / "config.json").read_bytes()).hexdigest()
