"""What the audit log costs: a guarded view against the bare repository, same work, same run.

What is measured, on SQLite (``audit.*.sqlite``) and PostgreSQL (``audit.*.postgres``)
when the server answers:

* **timeline**: ``view.timeline(contact)`` through a guarded view (an actor
  holding ``read_personal``: the permission check, the decryption, and one
  audit entry appended in the read's own transaction) against
  ``repo.timeline(contact)`` on the same open repository. Three contacts of
  10, 100 and 1,000 messages (five events each, every personal field
  encrypted), among 20,000 other messages and 100,000 other events. One
  timed call reads the contact's timeline ``reads`` times (200, 50, 5), so a
  call lasts long enough to time. Best of 7, interleaved.
  Goal: the guarded read costs <= 1.10x the bare one.
* **ingest**: ``record_messages`` + ``record_events`` of 20,000 messages and
  100,000 events (``--events`` or ``$COMMHISTORY_BENCH_AUDIT_EVENTS``) into a
  fresh database through a guarded view (an ``operator``: one audit entry per
  5,000-item batch, written in the batch's transaction, naming the
  suppressions and consents the batch changed) against the same calls on the
  bare repository. Best of 3. Goal: <= 1.05x.

Run: ``python -m benchmarks audit`` or
``python -m benchmarks.bench_audit --events 20000``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from benchmarks import _data
from benchmarks._harness import Benchmark, Goal, main
from benchmarks.bench_ingest_sqlite import parse_size
from benchmarks.bench_timeline import postgres_reachable, postgres_url
from commhistory.audit import Actor
from commhistory.crypto import Keyring
from commhistory.facade import CommHistory, GuardedRepository, open_repository
from commhistory.store import SQLRepository

EVENTS_ENV: Final = "COMMHISTORY_BENCH_AUDIT_EVENTS"
DEFAULT_EVENTS: Final = 100_000
EVENTS_PER_MESSAGE: Final = 5
NOISE_MESSAGES: Final = 20_000
NOISE_CONTACTS: Final = 1000
SIZES: Final = ((10, 200), (100, 50), (1000, 5))  # (messages of the contact, reads per call)
TIMELINE_GOAL: Final = Goal(text="<= 1.10x the bare timeline()", max_ratio=1.10)
INGEST_GOAL: Final = Goal(text="<= 1.05x the bare ingest", max_ratio=1.05)


class _Databases:
    """Fresh databases on one backend, each dropped at exit."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self._close: list[Callable[[], object]] = []
        atexit.register(self.close)

    def new_url(self) -> str:
        """Return the URL of a new, empty database."""
        if self.backend == "sqlite":
            workdir = Path(tempfile.mkdtemp(prefix="commhistory-bench-audit-"))
            self._close.append(lambda: shutil.rmtree(workdir, ignore_errors=True))
            return f"sqlite:///{workdir / 'audit.db'}"
        import psycopg

        server = postgres_url()
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f"CREATE SCHEMA {schema}")

        def drop() -> None:
            with psycopg.connect(server, autocommit=True) as admin:
                admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

        self._close.append(drop)
        sep = "&" if "?" in server else "?"
        return f"{server}{sep}options={quote(f'-csearch_path={schema}', safe='')}"

    def open(self, keyring: Keyring) -> CommHistory[SQLRepository]:
        """Open a repository on a new database; it is closed before its database is dropped."""
        repo = open_repository(self.new_url(), keyring)
        self._close.insert(0, repo.close)
        return repo

    def close(self) -> None:
        """Close repositories and drop the databases."""
        while self._close:
            self._close.pop(0)()


class TimelineAudit:
    """One database with three measured contacts; bare and guarded reads of each."""

    def __init__(self, backend: str) -> None:
        self.dbs = _Databases(backend)
        self.keyring = Keyring.generate()
        self.repo: CommHistory[SQLRepository] | None = None
        self.view: GuardedRepository | None = None
        self.contacts: dict[int, str] = {}
        self.checked: dict[int, bool] = {}

    def setup(self) -> None:
        """Store the history once and open the view."""
        if self.repo is not None:
            return
        self.repo = repo = self.dbs.open(self.keyring)
        noise = _data.HistorySpec(
            n_messages=NOISE_MESSAGES, n_contacts=NOISE_CONTACTS, prefix="n-", seed=11
        )
        repo.record_messages(_data.messages(noise))
        repo.record_events(_data.events(noise))
        for size, _reads in SIZES:
            focus = _data.HistorySpec(
                n_messages=size,
                events_per_message=EVENTS_PER_MESSAGE,
                n_contacts=1,
                prefix=f"t{size}-",
                seed=size,
            )
            repo.record_messages(_data.messages(focus))
            repo.record_events(_data.events(focus))
            self.contacts[size] = focus.contact_id(0)
        self.view = repo.as_actor(Actor("bench-1", ["privacy_officer"]), purpose="benchmark")
        for size, _reads in SIZES:  # warm both paths
            cid = self.contacts[size]
            self.checked[size] = self.view.timeline(cid) == repo.timeline(cid)

    def bare(self, size: int, reads: int) -> Callable[[], None]:
        """Read the contact's timeline *reads* times on the repository."""

        def call() -> None:
            assert self.repo is not None
            for _ in range(reads):
                self.repo.timeline(self.contacts[size])

        return call

    def guarded(self, size: int, reads: int) -> Callable[[], None]:
        """Read it *reads* times through the guarded view (one audit entry per read)."""

        def call() -> None:
            assert self.view is not None
            for _ in range(reads):
                self.view.timeline(self.contacts[size])

        return call

    def extra(self, size: int) -> Callable[[], dict[str, Any]]:
        """Figures: results equal, the chain intact, the source revision."""

        def figures() -> dict[str, Any]:
            assert self.repo is not None
            report = self.repo.audit_log.verify_chain()
            return {
                "messages": size,
                "events": size * EVENTS_PER_MESSAGE,
                "results_equal": self.checked.get(size),
                "audit_entries": report.entries,
                "chain_intact": report.intact,
                "source_revision": _data.source_revision(),
            }

        return figures


class IngestAudit:
    """Fresh databases; the same history written bare and through a guarded view."""

    def __init__(self, backend: str, n_events: int) -> None:
        self.dbs = _Databases(backend)
        self.keyring = Keyring.generate()
        self.spec = _data.HistorySpec.for_events(n_events, prefix="i-", seed=5)
        self.messages = list(_data.messages(self.spec))
        self.events = list(_data.events(self.spec))
        self.repo: CommHistory[SQLRepository] | None = None
        self.entries = 0

    def setup(self) -> None:
        """Open a repository on a new, empty database."""
        if self.repo is not None:
            self.repo.close()
        self.repo = self.dbs.open(self.keyring)

    def bare(self) -> None:
        """Write the history on the repository."""
        assert self.repo is not None
        self.repo.record_messages(self.messages)
        self.repo.record_events(self.events)

    def guarded(self) -> None:
        """Write it through a guarded view (one audit entry per batch)."""
        assert self.repo is not None
        view = self.repo.as_actor(Actor("svc-import", ["operator"]), purpose="benchmark")
        view.record_messages(self.messages)
        view.record_events(self.events)
        self.entries = self.repo.audit_log.verify_chain().entries

    def extra(self) -> dict[str, Any]:
        """Figures: the sizes and the audit entries the guarded run wrote."""
        return {
            "messages": self.spec.n_messages,
            "events": self.spec.n_events,
            "audit_entries_per_guarded_run": self.entries,
            "source_revision": _data.source_revision(),
        }


def benchmarks() -> list[Benchmark]:
    """The audit-cost benchmarks; data is stored at the first setup, not here."""
    n_events = int(os.environ.get(EVENTS_ENV, DEFAULT_EVENTS))
    backends = ["sqlite"] + (["postgres"] if postgres_reachable() else [])
    out = []
    for backend in backends:
        reads = TimelineAudit(backend)
        for size, count in SIZES:
            out.append(
                Benchmark(
                    name=f"audit.timeline.{backend}.{size}",
                    candidate=reads.guarded(size, count),
                    baseline=reads.bare(size, count),
                    setup=reads.setup,
                    goal=TIMELINE_GOAL,
                    repeats=7,
                    extra=reads.extra(size),
                    items=count,
                )
            )
        writes = IngestAudit(backend, n_events)
        out.append(
            Benchmark(
                name=f"audit.ingest.{backend}",
                candidate=writes.guarded,
                baseline=writes.bare,
                setup=writes.setup,
                goal=INGEST_GOAL,
                repeats=3,
                extra=writes.extra,
                items=writes.spec.n_messages + writes.spec.n_events,
            )
        )
    return out


if __name__ == "__main__":
    sys.exit(main([benchmarks], parse_size(sys.argv[1:], EVENTS_ENV)))
