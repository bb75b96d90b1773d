"""Timing and memory measurement shared by the benchmarks.

Timing: the two variants of a benchmark run alternately (ours, baseline, ours, baseline, ...)
after a warm-up of each, so that a slow patch of a shared machine hits both; the reported
figure is the median of each side.

Memory (Linux): the kernel's peak resident set size ``VmHWM`` of ``/proc/self/status`` can be
reset to the current RSS by writing ``5`` to ``/proc/self/clear_refs``. Resetting it just before
a run and reading it just after gives the run's own peak RSS, including every allocation
torch makes outside Python's allocator (which tracemalloc would miss).
"""

from __future__ import annotations

import gc
import os
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

MiB = 1024 * 1024


def cpu_count() -> int:
    """Cores this process may run on (the torch thread count the benchmarks use)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as status:
        match = re.search(rf"^{key}:\s+(\d+) kB", status.read(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {key}")
    return int(match.group(1))


def rss_bytes() -> int:
    """Current resident set size of this process."""
    return _status_kib("VmRSS") * 1024


def peak_rss_bytes() -> int:
    """Peak resident set size since the process started or the last `reset_peak_rss`."""
    return _status_kib("VmHWM") * 1024


def reset_peak_rss() -> None:
    """Make the peak RSS equal to the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


@dataclass
class Measured:
    """Seconds and extra peak RSS (bytes above the RSS when the run started) of each run."""

    seconds: list[float] = field(default_factory=list)
    extra_peak: list[int] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.seconds)

    @property
    def median_extra_peak(self) -> int:
        return int(statistics.median(self.extra_peak))

    @property
    def median_cpu_seconds(self) -> float:
        return statistics.median(self.cpu_seconds) if self.cpu_seconds else float("nan")


def measure_once(function: Callable[[], object], record: Measured) -> object:
    """Run ``function`` once, appending its wall time, CPU time (all threads of this process)
    and extra peak RSS to ``record``."""
    gc.collect()
    start_rss = rss_bytes()
    reset_peak_rss()
    cpu_started = time.process_time()
    started = time.perf_counter()
    result = function()
    record.seconds.append(time.perf_counter() - started)
    record.cpu_seconds.append(time.process_time() - cpu_started)
    record.extra_peak.append(max(0, peak_rss_bytes() - start_rss))
    return result


def interleaved(
    ours: Callable[[], object],
    baseline: Callable[[], object],
    plan: Plan,
    warmup: int = 1,
) -> tuple[Measured, Measured]:
    """Time ``ours`` and ``baseline`` alternately, after ``warmup`` runs of each: at least
    ``plan.least`` pairs, then more while ``plan.budget_s`` seconds are not spent, at most
    ``plan.most`` pairs."""
    for _ in range(warmup):
        ours()
        baseline()
    ours_record, baseline_record = Measured(), Measured()
    started = time.perf_counter()
    while plan.wants_more(len(ours_record.seconds), time.perf_counter() - started):
        measure_once(ours, ours_record)
        measure_once(baseline, baseline_record)
    return ours_record, baseline_record


@dataclass(frozen=True)
class Plan:
    """How many interleaved pairs to run: ``least`` always, then more while the time spent is
    under ``budget_s``, never more than ``most``."""

    least: int
    most: int
    budget_s: float

    def wants_more(self, done: int, spent_s: float, next_pair_s: float = 0.0) -> bool:
        if done < self.least:
            return True
        return done < self.most and spent_s + next_pair_s <= self.budget_s
