"""Peak memory of ``commhistory import``: a 1M-event JSON lines file against a 100k one.

What is measured (``import_memory.small`` then ``import_memory.large``):

* **Input**: canonical JSON lines from :mod:`benchmarks._data`, each message
  followed by its five events (three encrypted fields each); the large file has
  N events (default 1,000,000, ``--events`` or ``$COMMHISTORY_BENCH_IMPORT_EVENTS``)
  and N/5 messages, 1.2 million lines; the small file a tenth of that.
* **Run**: ``python -m commhistory import FILE --db sqlite:///NEW.db --keyring K
  --format json`` as a child of a *fresh* parent process per run; the parent
  does nothing but run the import and report
  ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``, so the figure is the peak
  resident set of that one import process. While the ``import`` command is not
  wired into the command line yet, a short script doing what the command does
  (``read_records`` -> ``open_repository(...).ingest``) stands in; the JSON
  says which ran (``driver``).
* **Also reported**: the peak RSS of a process that only imports the modules
  the command needs (the floor no import can go below), the wall time (so the
  import's throughput), and the import report, checked against the line count.

Goals (reported, never asserted): peak RSS <= 150 MB for the large file, and
the large file's peak within 1.2x of the small file's.

Run: ``python -m benchmarks import_memory`` or
``python -m benchmarks.bench_import_memory --events 100000``.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Final

from benchmarks import _data
from benchmarks._harness import Benchmark, main
from benchmarks.bench_ingest_sqlite import parse_size
from commhistory.crypto import Keyring

EVENTS_ENV: Final = "COMMHISTORY_BENCH_IMPORT_EVENTS"
DEFAULT_EVENTS: Final = 1_000_000
RSS_GOAL_MB: Final = 150.0
RATIO_GOAL: Final = 1.2

_PARENT: Final = """
import json, resource, subprocess, sys
child = subprocess.run(sys.argv[1:], capture_output=True, text=True)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"returncode": child.returncode, "maxrss_kib": usage.ru_maxrss,
                  "stdout": child.stdout, "stderr": child.stderr[-2000:]}))
"""
"""The fresh parent: runs its arguments as one child and reports the child's peak RSS."""

_IMPORT_SCRIPT: Final = """
import json, os, sys
from commhistory.convert import read_records
from commhistory.crypto import Keyring
from commhistory.facade import CommHistory, open_repository
path, url, keyring = sys.argv[1:4]
with open_repository(url, Keyring.load(keyring)) as repo:
    report = repo.ingest(read_records(path), source=os.path.basename(path))
print(json.dumps({"total": report.total, "inserted": report.inserted,
                  "duplicates": report.duplicates, "rejected": report.rejected,
                  "linked": report.linked}))
"""
"""What ``commhistory import FILE --format json`` does, for when the command is not wired."""

_FLOOR_SCRIPT: Final = (
    "import commhistory.convert, commhistory.crypto, commhistory.store, commhistory.cli"
)


def event_count() -> int:
    """The large file's events: ``$COMMHISTORY_BENCH_IMPORT_EVENTS`` or 1,000,000."""
    return int(os.environ.get(EVENTS_ENV, DEFAULT_EVENTS))


def cli_available() -> bool:
    """Whether ``python -m commhistory import`` exists."""
    probe = subprocess.run(
        [sys.executable, "-m", "commhistory", "import", "--help"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def peak_rss(command: list[str]) -> dict[str, Any]:
    """Run *command* as the only child of a fresh parent; return its figures."""
    parent = subprocess.run(
        [sys.executable, "-c", _PARENT, *command], capture_output=True, text=True, check=True
    )
    figures: dict[str, Any] = json.loads(parent.stdout.strip().splitlines()[-1])
    return figures


class ImportMemory:
    """Files, keyring and results of the import memory benchmark.

    Args:
        n_events: Events in the large file (the small one has a tenth).
    """

    def __init__(self, n_events: int) -> None:
        self.sizes = {"small": max(5, n_events // 10), "large": n_events}
        self.workdir = Path(tempfile.mkdtemp(prefix="commhistory-bench-import-"))
        atexit.register(shutil.rmtree, self.workdir, True)
        self.keyring_path = self.workdir / "bench.keyring"
        self.files: dict[str, tuple[Path, int, int]] = {}
        self.results: dict[str, dict[str, Any]] = {}
        self.driver: str | None = None
        self.floor_mb: float | None = None

    def prepare(self, size: str) -> None:
        """Write the file of *size* and a fresh database path (untimed)."""
        if self.driver is None:
            self.driver = "cli" if cli_available() else "script"
            Keyring.generate().save(self.keyring_path)
            floor = peak_rss([sys.executable, "-c", _FLOOR_SCRIPT])
            self.floor_mb = floor["maxrss_kib"] / 1024
        if size not in self.files:
            path = self.workdir / f"history-{size}.jsonl"
            spec = _data.HistorySpec.for_events(
                self.sizes[size], n_contacts=max(1, self.sizes[size] // 100)
            )
            lines, nbytes = _data.write_jsonl(path, spec)
            self.files[size] = (path, lines, nbytes)
        db = self.workdir / f"{size}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)

    def command(self, size: str) -> list[str]:
        """The import command for the file of *size*."""
        path = self.files[size][0]
        url = f"sqlite:///{self.workdir / f'{size}.db'}"
        if self.driver == "cli":
            return [
                sys.executable, "-m", "commhistory", "import", str(path),
                "--db", url, "--keyring", str(self.keyring_path), "--format", "json",
            ]  # fmt: skip
        return [sys.executable, "-c", _IMPORT_SCRIPT, str(path), url, str(self.keyring_path)]

    def run(self, size: str) -> None:
        """Import the file of *size* in a fresh parent and keep its figures."""
        figures = peak_rss(self.command(size))
        if figures["returncode"] not in (0, 1):
            raise RuntimeError(f"the import failed: {figures['stderr']}")
        self.results[size] = figures

    def extra(self, size: str) -> dict[str, Any]:
        """The figures of the run of *size* (and the goals, after the large run)."""
        figures = self.results[size]
        _path, lines, nbytes = self.files[size]
        report = json.loads(figures["stdout"])
        peak_mb = figures["maxrss_kib"] / 1024
        out: dict[str, Any] = {
            "source_revision": _data.source_revision(),
            "driver": self.driver,
            "events": self.sizes[size],
            "lines": lines,
            "file_mb": round(nbytes / 1e6, 1),
            "peak_rss_mb": round(peak_mb, 1),
            "module_floor_rss_mb": None if self.floor_mb is None else round(self.floor_mb, 1),
            "report": {k: report.get(k) for k in ("total", "inserted", "duplicates", "rejected")},
            "all_lines_inserted": report.get("inserted") == lines,
        }
        if size == "large":
            out["goal_peak_rss_le_150mb"] = "PASS" if peak_mb <= RSS_GOAL_MB else "MISS"
            small = self.results.get("small")
            if small is not None:
                ratio = figures["maxrss_kib"] / small["maxrss_kib"]
                out["rss_ratio_large_to_small"] = round(ratio, 3)
                out["goal_ratio_le_1_2"] = "PASS" if ratio <= RATIO_GOAL else "MISS"
        return out


def benchmarks() -> list[Benchmark]:
    """The import memory benchmarks; files are written at the first setup, not here."""
    state = ImportMemory(event_count())
    return [
        Benchmark(
            name=f"import_memory.{size}",
            candidate=functools.partial(state.run, size),
            setup=functools.partial(state.prepare, size),
            repeats=1,
            extra=functools.partial(state.extra, size),
            items=state.sizes[size],
        )
        for size in ("small", "large")
    ]


if __name__ == "__main__":
    sys.exit(main([benchmarks], parse_size(sys.argv[1:], EVENTS_ENV)))
