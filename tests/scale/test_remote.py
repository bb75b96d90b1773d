"""Every nnterp function that runs the model takes ``remote=``; with ``remote="local"`` (NNsight's
offline simulation of an NDIF request) it gives what the local run gives, through at least one
simulated request. Run as a script (remote_script.py), as researchers run remote code: pytest's
own frames cannot be serialized."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("remote_script.py")
EXPECTED = {
    "logit_lens", "patchscope_lens", "patchscope_generate", "get_token_activations",
    "collect_token_activations_batched", "collect_last_token_activations_session",
    "compute_next_token_probs", "next_token_probs", "steer_generate", "generate_with", "run_prompts",
    "compute_gradients", "cache_activations", "evaluate_metric", "run_with_patches", "activation_patching",
    "head_patching", "attention_pattern_patching", "attribution_patching", "every_block_patching",
    "path_patching", "path_patching_heads", "decompose_residual", "logit_attribution", "accumulated_resid",
}


def test_every_function_runs_remote_local_with_the_local_result():
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    verdicts = {}
    for line in result.stdout.splitlines():
        name, verdict, *rest = line.split(" ", 2)
        verdicts[name] = (verdict, rest[0] if rest else "")
    assert EXPECTED <= set(verdicts), sorted(EXPECTED - set(verdicts))
    failing = {name: v for name, v in verdicts.items() if v[0] != "equal" or int(v[1]) < 1}
    assert not failing, failing
