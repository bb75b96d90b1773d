"""nnterp against hand-written PyTorch/transformers code: time ratios, peak memory, PASS/MISS.

Run from the repository root (CPU, float32, torch threads = cores by default):

    python benchmarks/run.py                 # tiny model, imports, then the real SmolLM2-135M
    python benchmarks/run.py --quick --tiny  # the smoke run the tests use (well under a minute)
    python benchmarks/run.py --real --only a,c --markdown table.md --json results.json

Benchmarks (ours / baseline):
  a  one trace reading every layer's output at the last token / forward hooks on the HF layers
     (a/nnsight, informational: the same trace, nnterp / plain nnsight)
  b  last-token activations of all layers, 1,000 prompts of 5-60 tokens, batch 16:
     collect_token_activations_batched / the plain loop. Each run in its own process, which
     also measures its peak memory
  c  logit lens of 16 prompts at the last token / hidden states -> final norm -> lm_head -> softmax
  d  load with validation / AutoModelForCausalLM + AutoTokenizer of the same directory
  e  import time in fresh processes: import nnterp / import nnsight (e2: the model classes)

Each pair runs alternately (ours, baseline, ours, ...) after a warm-up; ratios are of medians.
Targets apply to the real model and the imports; tiny-model rows are informational (they show
the fixed per-call cost on a model whose forward costs almost nothing). Every pair's results
are checked equal (atol 1e-4) before any timing, and the script fails if they are not.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
import report

Plan = harness.Plan
# Interleaved pairs per benchmark: (full run, --quick). Plan(least, most, budget_s): at least
# `least` pairs, more while the benchmark has spent under `budget_s`, at most `most`.
PLANS = {
    "tiny": {
        "a": (Plan(10, 201, 8), Plan(3, 3, 0)),
        "a/nnsight": (Plan(10, 201, 4), Plan(3, 3, 0)),
        "c": (Plan(5, 51, 8), Plan(2, 2, 0)),
        "d": (Plan(3, 21, 8), Plan(1, 1, 0)),
        "b": (Plan(1, 3, 20), Plan(1, 1, 0)),
    },
    "-": {"e": (Plan(3, 9, 20), Plan(1, 1, 0))},
    "real": {
        "a": (Plan(5, 41, 40), Plan(3, 3, 0)),
        "a/nnsight": (Plan(5, 41, 20), Plan(3, 3, 0)),
        "c": (Plan(3, 15, 50), Plan(2, 2, 0)),
        "d": (Plan(3, 11, 30), Plan(1, 1, 0)),
        # (b) runs last and gets what is left of --budget (one pair at least).
        "b": (Plan(1, 3, 0), Plan(1, 1, 0)),
    },
}
QUICK_PROMPTS = 64
FULL_PROMPTS = 1000
BENCHMARKS = ("a", "b", "c", "d", "e")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/run.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--tiny", action="store_true", help="only the tiny model (and the imports)")
    which.add_argument("--real", action="store_true", help="only the real SmolLM2-135M (and the imports)")
    parser.add_argument("--quick", action="store_true", help="few repetitions, 64 prompts for (b): a smoke run")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset of a,b,c,d,e")
    parser.add_argument("--prompts", type=int, default=None, help=f"prompts for (b) (default {FULL_PROMPTS}; {QUICK_PROMPTS} with --quick)")
    parser.add_argument("--repeats", type=int, default=None, help="exactly this many interleaved pairs everywhere")
    parser.add_argument("--budget", type=float, default=570, help="seconds the whole run aims at (default 570); "
                        "the real model's (b) runs last and repeats only while this leaves room")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument("--markdown", type=Path, help="also write the result tables as Markdown")
    for hidden in ("--worker", "--variant", "--kind", "--path", "--save", "--prompts-file"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _plan(args: argparse.Namespace, kind: str, key: str) -> harness.Plan:
    if args.repeats is not None:
        return harness.Plan(args.repeats, args.repeats, 0)
    full, quick = PLANS[kind][key]
    return quick if args.quick else full


def _lens_available() -> bool:
    try:
        from nnterp.interventions import logit_lens  # noqa: F401
    except ImportError as error:
        print(f"(c) skipped: nnterp.interventions.logit_lens is not importable ({error})")
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.threads = args.threads or harness.cpu_count()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.simplefilter("ignore")
    import torch

    torch.set_num_threads(int(args.threads))
    import benches

    if args.worker == "collect":
        args.threads = int(args.threads)
        return benches.collect_worker(args)

    started = time.perf_counter()

    def progress(message: str) -> None:
        print(f"   {message} ({time.perf_counter() - started:.0f} s)", flush=True)

    env = report.environment()
    for key, value in env.items():
        print(f"{key}: {value}")
    wanted = {key.strip() for key in args.only.split(",") if key.strip()}
    if wanted - set(BENCHMARKS):
        raise SystemExit(f"unknown benchmarks {sorted(wanted - set(BENCHMARKS))}: choose among {BENCHMARKS}")
    kinds = ["tiny"] if args.tiny else ["real"] if args.real else ["tiny", "real"]
    rows: list[report.Row] = []
    memory: list[report.MemoryRow] = []
    workdir = Path(tempfile.mkdtemp(prefix="nnterp-bench-"))
    try:
        for kind in kinds:
            if kind == "real" and "e" in wanted:
                _imports(args, rows, progress)
            _one_model(args, kind, wanted, workdir, rows, memory, progress, deadline=started + args.budget)
        if kinds == ["tiny"] and "e" in wanted:
            _imports(args, rows, progress)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    env["load average at end"] = report.load_average()
    env["total wall time"] = f"{time.perf_counter() - started:.0f} s"
    report.print_report(rows, memory)
    print(f"\nCORRECTNESS OK: every ours/baseline pair agreed (atol 1e-4). Load average at end "
          f"{env['load average at end']}; total {env['total wall time']}.")
    if args.markdown:
        args.markdown.write_text(report.markdown(rows, memory, env))
    if args.json:
        args.json.write_text(json.dumps(report.as_json(rows, memory, env), indent=1))
    return 0


def _imports(args: argparse.Namespace, rows: list[report.Row], progress) -> None:
    import benches

    for key in ("e", "e2"):
        rows.append(benches.bench_e(key, _plan(args, "-", "e"), report.TARGETS[key]))
    progress("e done")


def _one_model(args, kind, wanted, workdir, rows, memory, progress, deadline) -> None:
    """Benchmarks a-d on one model; (b) last, repeated while the run's deadline allows."""
    import benches
    import workloads as w

    source = w.real_source() if kind == "real" else w.tiny_source(str(workdir / "tiny-model"))

    def target(key: str) -> float | None:
        return report.TARGETS[key] if kind == "real" else None

    print(f"\n== {kind} model: {source.path}", flush=True)
    prompts: list[str] = []
    if "b" in wanted:
        prompts = w.mixed_prompts(w.load_tokenizer(source), args.prompts or (QUICK_PROMPTS if args.quick else FULL_PROMPTS))
    same_batches = None
    if wanted & {"a", "b", "c"}:
        ours_model, baseline = w.load_ours(source), w.load_baseline(source)
        if "a" in wanted:
            rows.append(benches.bench_a(kind, ours_model, baseline, _plan(args, kind, "a"), target("a")))
            plain = w.load_plain_nnsight(source)
            rows.append(benches.bench_a_nnsight(kind, ours_model, plain, _plan(args, kind, "a/nnsight")))
            del plain
            progress(f"{kind} a done")
        if "c" in wanted and _lens_available():
            rows.append(benches.bench_c(kind, ours_model, baseline, _plan(args, kind, "c"), target("c")))
            progress(f"{kind} c done")
        if "b" in wanted:
            same_batches = benches.check_b_same_batches(ours_model, baseline, prompts)
        del ours_model, baseline
    if "d" in wanted:
        rows.extend(benches.bench_d(source, _plan(args, kind, "d"), target("d")))
        progress(f"{kind} d done")
    if "b" in wanted:
        plan = _plan(args, kind, "b")
        if kind == "real" and args.repeats is None and not args.quick:
            plan = harness.Plan(plan.least, plan.most, max(0.0, deadline - time.perf_counter()))
        row, row_memory = benches.bench_b(
            source, prompts, args.threads, plan, target("b"),
            report.MEMORY_TARGET if kind == "real" else None, workdir,
        )
        row.notes.append(
            f"same batches as the plain loop (sort_by_length=False, first 64 prompts): max |diff| {same_batches:.2g}"
        )
        rows.append(row)
        memory += row_memory
        progress(f"{kind} b done")


if __name__ == "__main__":
    sys.exit(main())
