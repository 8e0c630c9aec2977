"""Run every ``bench_*.py`` module: ``python -m benchmarks [NAME...]``.

``NAME`` filters by substring of the module name (``normalize``) or of a
benchmark's name (``normalize.distinct``). Exits 0 even when goals are missed.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Callable, Sequence

import benchmarks
from benchmarks._harness import Benchmark, main


def discover() -> list[Callable[[], Sequence[Benchmark]]]:
    """Import each ``benchmarks.bench_*`` module and return its ``benchmarks`` factory."""
    factories: list[Callable[[], Sequence[Benchmark]]] = []
    for info in sorted(pkgutil.iter_modules(benchmarks.__path__), key=lambda m: m.name):
        if info.name.startswith("bench_"):
            module = importlib.import_module(f"benchmarks.{info.name}")
            factories.append(module.benchmarks)
    return factories


if __name__ == "__main__":
    sys.exit(main(discover(), sys.argv[1:]))
