"""Result rows, targets and their text/Markdown rendering."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MiB = 1024 * 1024

#: Target ratios (ours / baseline, medians), for the real model and the import benchmark.
TARGETS = {"a": 1.05, "b": 0.85, "c": 1.10, "d": 1.15, "e": 1.20, "e2": 1.20}
#: (b)'s memory target: model + what the collection adds <= 1.15 x (model + results).
MEMORY_TARGET = 1.15


@dataclass
class Row:
    """One benchmark on one model: medians of interleaved runs."""

    model: str
    key: str
    title: str
    ours_s: float
    baseline_s: float
    ours_cpu_s: float
    baseline_cpu_s: float
    repeats: int
    ours_peak_mib: float
    baseline_peak_mib: float
    target: float | None
    max_abs_diff: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """Wall time, ours / baseline (what the target is about)."""
        return self.ours_s / self.baseline_s

    @property
    def cpu_ratio(self) -> float:
        """CPU time of the process, ours / baseline (less sensitive to a busy machine)."""
        return self.ours_cpu_s / self.baseline_cpu_s if self.baseline_cpu_s else float("nan")

    @property
    def status(self) -> str:
        if self.target is None:
            return "info"
        return "PASS" if self.ratio <= self.target else "MISS"


@dataclass
class MemoryRow:
    """Peak RSS of benchmark (b), one variant, measured in its own process.

    ``loaded``: RSS once the model is loaded and one batch has run (imports, model, warm
    caches); ``peak``: the highest RSS during the whole collection. What the collection adds to
    the loaded process is ``peak - loaded``; the target is that the model plus this stays within
    15% of the model plus the results that must be held.
    """

    model: str
    variant: str
    base_mib: float
    loaded_mib: float
    peak_mib: float
    model_mib: float
    results_mib: float
    target: float | None

    @property
    def ratio(self) -> float:
        """(model + peak - loaded) / (model + results)."""
        return (self.model_mib + self.peak_mib - self.loaded_mib) / (self.model_mib + self.results_mib)

    @property
    def status(self) -> str:
        if self.target is None:
            return "info"
        return "PASS" if self.ratio <= self.target else "MISS"


def environment() -> dict[str, str]:
    """Machine and versions."""
    from importlib.metadata import version

    import torch

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "nproc": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "cpu": cpu,
        "python": platform.python_version(),
    }
    for package in ("torch", "transformers", "nnsight", "nnterp-core", "nnterp-interventions"):
        try:
            info[package] = version(package)
        except Exception:  # noqa: BLE001 - reported as missing
            info[package] = "not installed"
    info["load average at start"] = load_average()
    return info


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def seconds_text(value: float) -> str:
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def target_text(target: float | None) -> str:
    return "-" if target is None else f"<= {target:.2f}"


def print_report(rows: list[Row], memory: list[MemoryRow]) -> None:
    """The result table, then one machine-readable line per ratio."""
    print()
    print(
        f"{'model':<5} {'bench':<9} {'ours':>10} {'baseline':>10} {'ratio':>6} {'target':>7} {'':<4} "
        f"{'cpu':>6}  {'peak+ ours':>10} {'peak+ base':>10} {'n':>3}  title"
    )
    for row in rows:
        print(
            f"{row.model:<5} {row.key:<9} {seconds_text(row.ours_s):>10} {seconds_text(row.baseline_s):>10} "
            f"{row.ratio:>6.3f} {target_text(row.target):>7} {row.status:<4} {row.cpu_ratio:>6.3f}  "
            f"{row.ours_peak_mib:>6.1f} MiB {row.baseline_peak_mib:>6.1f} MiB {row.repeats:>3}  {row.title}"
        )
        if row.max_abs_diff is not None:
            print(f"{'':<16}- ours vs baseline: max |diff| {row.max_abs_diff:.2g}")
        for note in row.notes:
            print(f"{'':<16}- {note}")
    if memory:
        print()
        print("Peak RSS of (b), each run in its own process; ratio = (model + peak - loaded) / (model + results)")
        for entry in memory:
            print(
                f"{entry.model:<5} b-memory {entry.variant:<8} before load {entry.base_mib:6.0f} MiB, "
                f"loaded {entry.loaded_mib:6.0f} MiB, peak {entry.peak_mib:6.0f} MiB, model {entry.model_mib:5.0f} MiB, "
                f"results {entry.results_mib:5.1f} MiB: ratio {entry.ratio:.3f} {target_text(entry.target)} {entry.status}"
            )
    print()
    for row in rows:
        print(f"RATIO {row.model} {row.key} {row.ratio:.3f} {row.status}")
    for entry in memory:
        print(f"MEMORY {entry.model} b {entry.variant} {entry.ratio:.3f} {entry.status}")


def markdown(rows: list[Row], memory: list[MemoryRow], env: dict[str, str]) -> str:
    """The same tables in Markdown, for docs/benchmarks.md."""
    lines = [
        "| model | benchmark | ours | baseline | ratio | target | result | CPU-time ratio | extra peak RSS ours / baseline |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.model} | ({row.key}) {row.title} | {seconds_text(row.ours_s)} | {seconds_text(row.baseline_s)} | "
            f"{row.ratio:.3f} | {target_text(row.target)} | {row.status} | {row.cpu_ratio:.3f} | "
            f"{row.ours_peak_mib:.1f} / {row.baseline_peak_mib:.1f} MiB |"
        )
    if memory:
        lines += [
            "",
            (
                "| model | (b) variant | RSS before load | RSS loaded | peak RSS | model | results | "
                "(model + peak - loaded) / (model + results) | target | result |"
            ),
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for entry in memory:
            lines.append(
                f"| {entry.model} | {entry.variant} | {entry.base_mib:.0f} MiB | {entry.loaded_mib:.0f} MiB | "
                f"{entry.peak_mib:.0f} MiB | {entry.model_mib:.0f} MiB | {entry.results_mib:.1f} MiB | "
                f"{entry.ratio:.3f} | {target_text(entry.target)} | {entry.status} |"
            )
    lines += ["", "| | |", "|---|---|"] + [f"| {key} | {value} |" for key, value in env.items()]
    return "\n".join(lines) + "\n"


def as_json(rows: list[Row], memory: list[MemoryRow], env: dict[str, str]) -> dict[str, Any]:
    return {
        "environment": env,
        "rows": [asdict(row) | {"ratio": row.ratio, "cpu_ratio": row.cpu_ratio, "status": row.status} for row in rows],
        "memory": [asdict(entry) | {"ratio": entry.ratio, "status": entry.status} for entry in memory],
    }
