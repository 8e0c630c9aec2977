"""A tiny benchmark harness: best-of-N timing against a baseline, a table, a JSON line.

A :class:`Benchmark` times a *candidate* callable (our code) and, optionally, a
*baseline* (the same work done the obvious way) with :func:`time.perf_counter`,
keeping the best of ``repeats`` runs of each, interleaved so drift hits both
alike. A ``setup`` callable runs untimed before every timed run (to clear
caches, for instance).

``ratio`` is candidate seconds / baseline seconds: 0.2 means five times
faster, 1.2 means 20 % slower. A :class:`Goal` is a maximum ratio (or a
maximum number of seconds without a baseline); it is reported, never asserted.

:func:`main` prints a human table and then, as the **last line**, one JSON
object holding every figure, for CI and for comparing runs.
"""

from __future__ import annotations

import gc
import json
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

__all__ = [
    "Benchmark",
    "Goal",
    "Result",
    "best_of",
    "main",
    "measure_peak_rss",
    "peak_rss_bytes",
    "print_report",
    "run",
]


@attrs.frozen(kw_only=True)
class Goal:
    """What counts as good enough.

    Attributes:
        max_ratio: The largest acceptable candidate/baseline time ratio.
        max_seconds: The largest acceptable candidate time, when there is no baseline.
        text: The goal as people say it (``">= 5x faster than direct calls"``).
    """

    text: str
    max_ratio: float | None = None
    max_seconds: float | None = None

    def met(self, seconds: float, ratio: float | None) -> bool:
        """Return whether a measured time (and ratio) meets this goal."""
        if self.max_ratio is not None and (ratio is None or ratio > self.max_ratio):
            return False
        return self.max_seconds is None or seconds <= self.max_seconds


@attrs.frozen(kw_only=True)
class Benchmark:
    """One thing to time.

    Attributes:
        name: A short, unique, dotted name (``"normalize.repeated"``).
        candidate: Our code; called with no arguments, its result is discarded.
        baseline: The same work done directly, to compare against.
        setup: Runs untimed before each timed call of either callable.
        goal: The goal to report.
        repeats: How many timed runs of each callable; the best is kept.
        extra: Called once after timing; returns more figures for the report.
        items: How many items one call processes (for a per-item figure).
    """

    name: str
    candidate: Callable[[], object]
    baseline: Callable[[], object] | None = None
    setup: Callable[[], object] | None = None
    goal: Goal | None = None
    repeats: int = 3
    extra: Callable[[], dict[str, Any]] | None = None
    items: int | None = None


@attrs.frozen(kw_only=True)
class Result:
    """The figures of one benchmark."""

    name: str
    seconds: float
    baseline_seconds: float | None
    ratio: float | None
    goal: str | None
    passed: bool | None
    items: int | None
    extra: dict[str, Any] = attrs.field(factory=dict)

    def as_json(self) -> dict[str, Any]:
        """Return the figures as a JSON-serialisable dict."""
        data = attrs.asdict(self)
        if self.items:
            data["us_per_item"] = self.seconds / self.items * 1e6
        if self.ratio:
            data["speedup"] = 1 / self.ratio
        return data


def best_of(
    function: Callable[[], object], repeats: int, setup: Callable[[], object] | None = None
) -> float:
    """Return the best wall time, in seconds, of *repeats* calls of *function*.

    The garbage collector is collected before and disabled during each call.
    """
    best = float("inf")
    for _ in range(repeats):
        best = min(best, _time_once(function, setup))
    return best


def _time_once(function: Callable[[], object], setup: Callable[[], object] | None) -> float:
    if setup is not None:
        setup()
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        function()
        return time.perf_counter() - start
    finally:
        gc.enable()


def peak_rss_bytes() -> int:
    """Return this process's peak resident set size so far, in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def _reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark (Linux >= 4.0); False when not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _proc_status_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def measure_peak_rss(function: Callable[[], object]) -> int | None:
    """Return how far the resident set rose above its starting size while *function* ran.

    Uses ``/proc/self/status`` (``VmRSS``, ``VmHWM``) after resetting the
    high-water mark; returns None where that is not available (macOS).
    """
    gc.collect()
    if not _reset_peak_rss():
        return None
    before = _proc_status_kib("VmRSS")
    function()
    peak = _proc_status_kib("VmHWM")
    if before is None or peak is None:
        return None
    return max(0, peak - before) * 1024


def run(benchmark: Benchmark) -> Result:
    """Time one benchmark and return its figures."""
    best = float("inf")
    best_baseline = float("inf")
    for _ in range(benchmark.repeats):
        best = min(best, _time_once(benchmark.candidate, benchmark.setup))
        if benchmark.baseline is not None:
            best_baseline = min(best_baseline, _time_once(benchmark.baseline, benchmark.setup))
    baseline = best_baseline if benchmark.baseline is not None else None
    ratio = best / baseline if baseline else None
    goal = benchmark.goal
    return Result(
        name=benchmark.name,
        seconds=best,
        baseline_seconds=baseline,
        ratio=ratio,
        goal=goal.text if goal else None,
        passed=goal.met(best, ratio) if goal else None,
        items=benchmark.items,
        extra=benchmark.extra() if benchmark.extra else {},
    )


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_report(results: Sequence[Result]) -> None:
    """Print a human table, then the JSON line (always the last line)."""
    header = f"{'benchmark':<28} {'ours s':>9} {'direct s':>9} {'ratio':>7} {'speedup':>8}  goal"
    print(header)
    print("-" * len(header))
    for result in results:
        verdict = {True: "PASS", False: "MISS", None: ""}[result.passed]
        speedup = 1 / result.ratio if result.ratio else None
        print(
            f"{result.name:<28} {result.seconds:>9.3f} {_fmt(result.baseline_seconds, '9.3f'):>9}"
            f" {_fmt(result.ratio, '7.3f'):>7} {_fmt(speedup, '7.2f') + 'x':>8}"
            f"  {verdict} {result.goal or ''}".rstrip()
        )
        for key, value in result.extra.items():
            print(f"    {key}: {value}")
    summary = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "results": [result.as_json() for result in results],
    }
    sys.stdout.flush()
    print(json.dumps(summary, sort_keys=True))


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return not patterns or any(pattern in name for pattern in patterns)


def main(
    factories: Sequence[Callable[[], Sequence[Benchmark]]], argv: Sequence[str] | None = None
) -> int:
    """Build, filter, run and report benchmarks; return the exit status (always 0).

    Args:
        factories: Callables returning benchmarks (``bench_*.benchmarks``);
            called only when needed, since building inputs can be slow.
        argv: Substrings of benchmark names to run; all when empty.

    Returns:
        0: missed goals are reported, not failures.
    """
    patterns = list(sys.argv[1:] if argv is None else argv)
    results: list[Result] = []
    for factory in factories:
        module_name = getattr(factory, "__module__", "")
        if patterns and not any(p in module_name for p in patterns):
            selected = [b for b in factory() if _matches(b.name, patterns)]
        else:
            selected = list(factory())
        for benchmark in selected:
            print(f"running {benchmark.name} ...", file=sys.stderr, flush=True)
            results.append(run(benchmark))
    print_report(results)
    return 0
