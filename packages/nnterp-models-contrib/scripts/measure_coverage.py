"""Measure how many of transformers' causal-LM model types nnterp standardizes.

For every model type of ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`` (or those given), in a subprocess
with a timeout: build ``nnterp.testing.tiny_model(type)`` and run a plain forward ("built"),
wrap it in ``StandardizedTransformer(..., enable_attention_probs=True)`` and, if that fails,
again with ``enable_attention_probs=False`` ("standardized", "probs"), then check that a logit
lens of the last layer output equals the model's logits ("lens").

Usage::

    python scripts/measure_coverage.py                 # every type, 2 workers
    python scripts/measure_coverage.py gpt_neox opt    # some types
    python scripts/measure_coverage.py --json out.json --timeout 60 --workers 2

This is a developer tool for the contrib specs; the official sweep is ``nnterp run_tests --all``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

_MARK = "@@RESULT@@"


def _short(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return " ".join(text.split())[:400]


def measure_one(model_type: str) -> dict:
    """Build, wrap and check one model type in this process; a result row."""
    import warnings

    warnings.filterwarnings("ignore")
    import torch

    from nnterp import StandardizedTransformer
    from nnterp.errors import RenamingError, UnavailableComponentError
    from nnterp.testing import tiny_model, tiny_tokenizer

    row = {"type": model_type, "built": False, "standardized": False, "probs": False, "lens": None, "error": None}
    try:
        hf_model = tiny_model(model_type)
        ids = torch.tensor([[5, 6, 7, 8]])
        with torch.no_grad():
            hf_model(input_ids=ids, attention_mask=torch.ones_like(ids))
        row["class"] = type(hf_model).__name__
        row["built"] = True
    except Exception as error:  # noqa: BLE001 - measured, not handled
        row["error"] = "build: " + _short(error)
        return row
    try:
        model = StandardizedTransformer(hf_model, tiny_tokenizer(), enable_attention_probs=True)
        row["probs"] = True
    except (RenamingError, UnavailableComponentError) as error:
        row["probs_error"] = _short(error)
        try:
            model = StandardizedTransformer(tiny_model(model_type), tiny_tokenizer())
        except Exception as second:  # noqa: BLE001
            row["error"] = "wrap: " + _short(second)
            return row
    except Exception as error:  # noqa: BLE001
        row["error"] = "wrap: " + _short(error)
        return row
    row["standardized"] = True
    row["spec"] = model.spec.name
    try:
        with model.trace("The cat sat on the mat"):
            lens = model.project_on_vocab(model.layers_output[-1]).save()
            logits = model.logits.save()
        row["lens"] = bool(torch.allclose(lens, logits, atol=1e-5))
    except Exception as error:  # noqa: BLE001
        row["lens_error"] = _short(error)
        row["lens"] = False
    return row


def _run_isolated(model_type: str, timeout: float) -> dict:
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--one", model_type],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"type": model_type, "built": False, "standardized": False, "probs": False,
                "error": f"timeout after {timeout:.0f} s", "seconds": timeout}
    lines = [line for line in done.stdout.splitlines() if line.startswith(_MARK)]
    if lines:
        row = json.loads(lines[-1][len(_MARK):])
    else:
        tail = " ".join(done.stderr.split()[-40:])
        row = {"type": model_type, "built": False, "standardized": False, "probs": False,
               "error": f"crashed (exit {done.returncode}): {tail}"[:400]}
    row["seconds"] = round(time.monotonic() - started, 1)
    return row


def main(argv: list[str] | None = None) -> int:
    """Measure the given model types (default: all), print a table and totals."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("types", nargs="*", help="model types (default: every causal-LM type)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--json", help="write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.one:
        print(_MARK + json.dumps(measure_one(args.one)), flush=True)
        return 0

    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    types = args.types or list(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    rows = []
    with ThreadPoolExecutor(max_workers=min(args.workers, 2)) as pool:
        for row in pool.map(lambda t: _run_isolated(t, args.timeout), types):
            rows.append(row)
            flags = "".join(
                mark if row.get(key) else "-"
                for key, mark in (("built", "B"), ("standardized", "S"), ("probs", "P"), ("lens", "L"))
            )
            reason = row.get("error") or row.get("probs_error") or ""
            print(f"{row['type']:32} {flags} {row.get('seconds', 0):5}s {reason[:220]}", flush=True)
    totals = {key: sum(bool(row.get(key)) for row in rows) for key in ("built", "standardized", "probs", "lens")}
    print(
        f"\nbuilt {totals['built']} / standardized {totals['standardized']} / attention probs "
        f"{totals['probs']} / lens == logits {totals['lens']} / total {len(rows)}"
    )
    if args.json:
        with open(args.json, "w") as stream:
            json.dump({"totals": totals, "total": len(rows), "rows": rows}, stream, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
