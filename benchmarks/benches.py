"""The benchmarks (a) to (e): correctness check first, then interleaved timing."""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import harness
import workloads as w
from report import MemoryRow, MiB, Row

TITLES = {
    "a": "one trace, every layer's output at the last token",
    "a/nnsight": "(a) nnterp / the same trace in plain nnsight (native paths)",
    "b": "last-token activations, all layers, {count} prompts, batch 16",
    "c": "logit lens, 16 prompts, last token",
    "d": "load with validation (+ tokenizer), validation cache on",
    "d/cold": "load with validation (+ tokenizer), every load validates (cache off)",
    "e": "import nnterp / import nnsight",
    "e2": "from nnterp import StandardizedTransformer / from nnsight.modeling.transformers import TransformersModel",
}
IMPORTS = {
    "e": ("import nnterp", "import nnsight"),
    "e2": (
        "from nnterp import StandardizedTransformer",
        "from nnsight.modeling.transformers import TransformersModel",
    ),
}
_HERE = Path(__file__).resolve().parent


def make_row(kind: str, key: str, title: str, ours: harness.Measured, base: harness.Measured,
             target: float | None, difference: float | None = None) -> Row:
    return Row(
        model=kind,
        key=key,
        title=title,
        ours_s=ours.median_seconds,
        baseline_s=base.median_seconds,
        ours_cpu_s=ours.median_cpu_seconds,
        baseline_cpu_s=base.median_cpu_seconds,
        repeats=len(ours.seconds),
        ours_peak_mib=ours.median_extra_peak / MiB,
        baseline_peak_mib=base.median_extra_peak / MiB,
        target=target,
        max_abs_diff=difference,
    )


# -- in-process benchmarks ---------------------------------------------------------------------


def _checked_pair(kind: str, key: str, ours: Callable[[], Any], baseline: Callable[[], Any],
                  plan: harness.Plan, target: float | None) -> Row:
    """Check that both sides give the same tensor, then time them interleaved."""
    difference = w.check_close(key, ours(), baseline())
    ours_time, base_time = harness.interleaved(ours, baseline, plan)
    return make_row(kind, key, TITLES[key], ours_time, base_time, target, difference)


def bench_a(kind: str, ours_model: Any, baseline: tuple[Any, Any], plan: harness.Plan, target: float | None) -> Row:
    hf_model, tokenizer = baseline
    prompt = w.SINGLE_PROMPT
    return _checked_pair(
        kind, "a",
        lambda: w.last_token_all_layers_ours(ours_model, prompt),
        lambda: w.last_token_all_layers_baseline(hf_model, tokenizer, prompt),
        plan, target,
    )


def bench_a_nnsight(kind: str, ours_model: Any, plain: Any, plan: harness.Plan) -> Row:
    """Informational: nnterp's trace against the same trace in nnsight alone."""
    prompt = w.SINGLE_PROMPT
    return _checked_pair(
        kind, "a/nnsight",
        lambda: w.last_token_all_layers_ours(ours_model, prompt),
        lambda: w.last_token_all_layers_nnsight(plain, prompt),
        plan, None,
    )


def bench_c(kind: str, ours_model: Any, baseline: tuple[Any, Any], plan: harness.Plan, target: float | None) -> Row:
    hf_model, tokenizer = baseline
    prompts = w.LENS_PROMPTS
    return _checked_pair(
        kind, "c",
        lambda: w.logit_lens_ours(ours_model, prompts),
        lambda: w.logit_lens_baseline(hf_model, tokenizer, prompts),
        plan, target,
    )


def bench_d(source: w.ModelSource, plan: harness.Plan, target: float | None) -> list[Row]:
    """(d) twice: with nnterp's validation cache (the first, warm-up load stores the record;
    later loads of the same setup reuse it), and cold (``NNTERP_VALIDATION_CACHE=0``: every
    load runs the validation forward, as the first load of a model on a machine does)."""
    rows = []
    for key, cache in (("d", "1"), ("d/cold", "0")):
        before = w.OFFLOADED_LOADS[0]
        with _environment("NNTERP_VALIDATION_CACHE", cache):
            ours, base = harness.interleaved(lambda: w.load_ours(source), lambda: w.load_baseline(source), plan)
        row = make_row(source.kind, key, TITLES[key], ours, base, target)
        offloaded = w.OFFLOADED_LOADS[0] - before
        if offloaded:
            row.notes.append(
                f"WARNING: {offloaded} of nnterp's loads left weights offloaded to disk by accelerate "
                "(device_map='auto' with little free RAM): those loads and their validation forwards are slow"
            )
        rows.append(row)
    return rows


@contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            del os.environ[name]
        else:
            os.environ[name] = previous


def check_b_same_batches(ours_model: Any, baseline: tuple[Any, Any], prompts: list[str]) -> float:
    """(b)'s computation is the plain loop's: batched in the same order (no sorting), nnterp's
    collection equals it within atol 1e-4, absolute. Checked on the first 64 prompts."""
    hf_model, tokenizer = baseline
    sample = prompts[: 4 * w.BATCH_SIZE]
    return w.check_close(
        "b (same batches)",
        w.collect_ours(ours_model, sample, sort_by_length=False),
        w.collect_baseline(hf_model, tokenizer, sample),
    )


# -- (b): one process per run --------------------------------------------------------------------


def collect_worker(args: argparse.Namespace) -> int:
    """Child process: load one variant, warm up on one batch, then time the whole collection
    and record the RSS before loading, once loaded, and at its peak."""
    import torch

    torch.set_num_threads(args.threads)
    source = w.ModelSource(args.kind, args.path)
    if args.variant == "ours":
        import nnterp.nnsight_utils
        import nnterp.standardized_transformer  # noqa: F401

        base_rss = harness.rss_bytes()
        model = w.load_ours(source)
        module = model._module
        run = lambda prompts: w.collect_ours(model, prompts)
    else:
        import transformers  # noqa: F401

        base_rss = harness.rss_bytes()
        hf_model, tokenizer = w.load_baseline(source)
        module = hf_model
        run = lambda prompts: w.collect_baseline(hf_model, tokenizer, prompts)
    prompts = json.loads(Path(args.prompts_file).read_text())
    run(prompts[: w.BATCH_SIZE])
    gc.collect()
    loaded_rss = harness.rss_bytes()
    harness.reset_peak_rss()
    cpu_started = time.process_time()
    started = time.perf_counter()
    result = run(prompts)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    peak_rss = harness.peak_rss_bytes()
    if args.save:
        torch.save(result, args.save)
    report = {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "base_rss": base_rss,
        "loaded_rss": loaded_rss,
        "peak_rss": peak_rss,
        "model_bytes": w.model_bytes(module),
        "result_bytes": result.numel() * result.element_size(),
        "offloaded": w.offloaded(module),
    }
    print("RESULT " + json.dumps(report), flush=True)
    return 0


def _run_collect(variant: str, source: w.ModelSource, threads: int, prompts_file: Path, save: Path | None) -> dict[str, Any]:
    command = [
        sys.executable, str(_HERE / "run.py"), "--worker", "collect", "--variant", variant,
        "--threads", str(threads), "--kind", source.kind, "--path", source.path,
        "--prompts-file", str(prompts_file),
    ]
    if save is not None:
        command += ["--save", str(save)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark (b) {variant} worker failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(lines[-1][len("RESULT "):])


def bench_b(
    source: w.ModelSource,
    prompts: list[str],
    threads: int,
    plan: harness.Plan,
    target: float | None,
    memory_target: float | None,
    workdir: Path,
) -> tuple[Row, list[MemoryRow]]:
    import torch

    prompts_file = workdir / f"prompts-{source.kind}.json"
    prompts_file.write_text(json.dumps(prompts))
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "baseline": []}
    saved = {variant: workdir / f"b-{source.kind}-{variant}.pt" for variant in runs}
    started = time.perf_counter()
    last_pair_s = 0.0
    while plan.wants_more(len(runs["ours"]), time.perf_counter() - started, last_pair_s):
        pair_started = time.perf_counter()
        first = not runs["ours"]
        for variant, reports in runs.items():
            reports.append(_run_collect(variant, source, threads, prompts_file, saved[variant] if first else None))
        last_pair_s = time.perf_counter() - pair_started
    ours_result, baseline_result = torch.load(saved["ours"]), torch.load(saved["baseline"])
    difference = w.check_close("b", ours_result, baseline_result, per_vector=True)
    scaled = w.scaled_difference(ours_result, baseline_result)
    ours, base = harness.Measured(), harness.Measured()
    for record, reports in ((ours, runs["ours"]), (base, runs["baseline"])):
        record.seconds = [report["seconds"] for report in reports]
        record.cpu_seconds = [report["cpu_seconds"] for report in reports]
        record.extra_peak = [report["peak_rss"] - report["loaded_rss"] for report in reports]
    row = make_row(source.kind, "b", TITLES["b"].format(count=len(prompts)), ours, base, target, difference)
    lengths = [len(ids) for ids in w.load_tokenizer(source)(prompts)["input_ids"]]
    row.notes.append(f"prompt lengths {min(lengths)}-{max(lengths)} tokens, mean {sum(lengths) / len(lengths):.1f}")
    row.notes.append(
        f"ours (length-sorted) vs plain loop: max |diff| {difference:.2g} = {scaled:.2g} x the activation "
        "vector's largest entry (checked <= 1e-4 x that scale)"
    )
    if any(report["offloaded"] for reports in runs.values() for report in reports):
        row.notes.append("WARNING: some runs had weights offloaded to disk by accelerate (little free RAM)")
    memory = []
    for variant, reports in runs.items():
        worst = max(reports, key=lambda report: report["peak_rss"] - report["loaded_rss"])
        memory.append(
            MemoryRow(
                model=source.kind,
                variant=variant,
                base_mib=worst["base_rss"] / MiB,
                loaded_mib=worst["loaded_rss"] / MiB,
                peak_mib=worst["peak_rss"] / MiB,
                model_mib=worst["model_bytes"] / MiB,
                results_mib=worst["result_bytes"] / MiB,
                target=memory_target if variant == "ours" else None,
            )
        )
    return row, memory


# -- (e): imports in fresh processes -----------------------------------------------------------

_IMPORT_PROBE = """\
import time
cpu_started = time.process_time()
started = time.perf_counter()
{statement}
seconds = time.perf_counter() - started
cpu_seconds = time.process_time() - cpu_started
import re
peak = int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
print("RESULT", seconds, cpu_seconds, peak)
"""


def _time_import(statement: str) -> tuple[float, float, int]:
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE.format(statement=statement)], capture_output=True, text=True, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"`{statement}` failed in a fresh process:\n{done.stderr}")
    _, seconds, cpu_seconds, peak = lines[-1].split()
    return float(seconds), float(cpu_seconds), int(peak)


def bench_e(key: str, plan: harness.Plan, target: float | None) -> Row:
    ours_statement, baseline_statement = IMPORTS[key]
    if plan.most > 1:  # warm the file cache
        _time_import(ours_statement)
        _time_import(baseline_statement)
    ours, base = harness.Measured(), harness.Measured()
    started = time.perf_counter()
    while plan.wants_more(len(ours.seconds), time.perf_counter() - started):
        for statement, record in ((ours_statement, ours), (baseline_statement, base)):
            seconds, cpu_seconds, peak = _time_import(statement)
            record.seconds.append(seconds)
            record.cpu_seconds.append(cpu_seconds)
            record.extra_peak.append(peak)
    row = make_row("-", key, TITLES[key], ours, base, target)
    row.notes.append("peak RSS here = the whole fresh process")
    return row
