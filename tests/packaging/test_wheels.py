"""Build the four wheels (and the example plugin's), install them into a fresh virtual
environment, core alone first and then everything, and import every reference path."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["nnterp-core", "nnterp-interventions", "nnterp-display", "nnterp-models-contrib"]

CORE_ONLY = """
import warnings; warnings.simplefilter("ignore")
from nnterp import StandardizedTransformer
from nnterp.nnsight_utils import get_token_activations, collect_token_activations_batched
from nnterp.testing import tiny_model, tiny_tokenizer
model = StandardizedTransformer(tiny_model("llama"), tiny_tokenizer())
print("layers", model.num_layers, get_token_activations(model, ["Hello"]).shape[0])
import importlib.util
for name in ("nnterp.interventions", "nnterp.prompt_utils", "nnterp.display", "nnterp.contrib"):
    print("spec", name, importlib.util.find_spec(name))
    try:
        __import__(name)
    except ImportError as error:
        print("missing", name, "->", str(error).split("Install it with")[1].strip())
"""

EVERYTHING = """
import warnings; warnings.simplefilter("ignore")
from nnterp import StandardizedTransformer
from nnterp.nnsight_utils import get_token_activations, collect_token_activations_batched
from nnterp.prompt_utils import Prompt, run_prompts
from nnterp.interventions import logit_lens, patchscope_lens, TargetPrompt, repeat_prompt, steer
from nnterp.display import plot_topk_tokens, prompts_to_df
from nnterp.plugins import get_registry
registry = get_registry()
print("plugins-ok", {"contrib", "core", "interventions", "toy"} <= {p.name for p in registry.plugins if p.error is None})
print("contrib-specs", sum(1 for _, p in registry.architectures if p.name == "contrib") > 10)
print("interventions", "logit_lens" in registry.interventions, "residual_norms" in registry.interventions)
"""


def _run(command: list[str], cwd: Path = ROOT) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheels")
    sources = [ROOT / "packages" / name for name in PACKAGES] + [ROOT / "examples" / "nnterp-toy-plugin"]
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), *map(str, sources)])
    return out


@pytest.mark.slow
def test_four_wheels_build_with_their_own_metadata(wheelhouse):
    wheels = sorted(path.name for path in wheelhouse.glob("*.whl"))
    for name in PACKAGES:
        assert any(wheel.startswith(name.replace("-", "_") + "-2.0.0-") for wheel in wheels), wheels
    contrib = next(wheelhouse.glob("nnterp_models_contrib-*.whl"))
    with zipfile.ZipFile(contrib) as archive:
        names = archive.namelist()
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "nnterp/contrib/status.json" in names
    assert "nnterp/contrib/py.typed" in names
    assert not any(name == "nnterp/__init__.py" for name in names), "only core owns nnterp/__init__.py"
    assert "[nnterp]" in entry_points and "nnterp.contrib.plugin" in entry_points
    core = next(wheelhouse.glob("nnterp_core-*.whl"))
    with zipfile.ZipFile(core) as archive:
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith("METADATA"))).decode()
        assert "nnterp/py.typed" in archive.namelist()
    for extra in ("interventions", "display", "contrib", "all"):
        assert f"Provides-Extra: {extra}" in metadata


@pytest.mark.slow
def test_core_alone_then_everything_in_a_fresh_environment(wheelhouse, tmp_path):
    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = str(env_dir / "bin" / "python")
    pip = [python, "-m", "pip", "install", "-q", "--find-links", str(wheelhouse)]
    _run([*pip, "torch==2.13.0"])
    _run([*pip, str(next(wheelhouse.glob("nnterp_core-*.whl")))])
    output = _run([python, "-c", CORE_ONLY], cwd=tmp_path)
    assert "layers 2 2" in output
    assert "missing nnterp.interventions -> `pip install nnterp-interventions`" in output
    assert "missing nnterp.display -> `pip install nnterp-display`" in output
    assert "missing nnterp.contrib -> `pip install nnterp-models-contrib`" in output
    for name in ("nnterp.interventions", "nnterp.prompt_utils", "nnterp.display", "nnterp.contrib"):
        assert f"spec {name} None" in output  # the usual optional-dependency check

    _run([*pip, "nnterp-core[all]==2.0.0", "nnterp-toy-plugin"])
    output = _run([python, "-c", EVERYTHING], cwd=tmp_path)
    assert "plugins-ok True" in output
    assert "contrib-specs True" in output
    assert "interventions True True" in output
    listing = _run([str(env_dir / "bin" / "nnterp"), "plugins"], cwd=tmp_path)
    for plugin in ("core", "contrib", "interventions", "toy"):
        assert f"{plugin}  (" in listing
