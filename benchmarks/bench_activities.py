"""Activity ingest against event ingest, per record, same run, SQLite and PostgreSQL.

What is measured (``activities.sqlite`` and ``activities.postgres``):

* **Input**: N events (default 100,000; ``--events`` or
  ``$COMMHISTORY_BENCH_ACTIVITIES``) from :mod:`benchmarks._data`, five per
  message, each with three encrypted personal fields (``url``, ``user_agent``,
  ``ip``), and N activities of the same contacts: 4 names, 60 % purchases with
  revenue, each with two plain properties (``sku``, ``category``, from a
  catalogue of 5,000 products) and one personal property (a gift message,
  encrypted as one envelope).
* **Untimed setup, before every timed run**: a fresh database holding the
  N/5 messages (so every contact exists with its data key), the repository
  opened (``open_repository``, the facade) and the activity names declared.
* **Timed (candidate)**: one ``repo.record_activities(activities)``: the
  declaration check of every activity (names, plain values screened for
  email addresses and phone numbers), batching, the id lookups, encryption and
  one transaction per batch of 5,000.
* **Timed (baseline)**: one ``repo.record_events(events)`` of the same size,
  on the same kind of fresh database, in the same run.

``ratio`` = activity seconds / event seconds. Goal: activity ingest as fast per
record as event ingest, throughput >= 0.9x (time ratio <= 1.11).

Run: ``python -m benchmarks activities`` or
``python -m benchmarks.bench_activities --events 100000``. PostgreSQL comes
from ``$COMMHISTORY_TEST_POSTGRES_URL`` (else ``postgresql://postgres@127.0.0.1:5432/test``).
"""

from __future__ import annotations

import atexit
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from benchmarks import _data
from benchmarks._harness import Benchmark, Goal, main
from benchmarks.bench_ingest_postgres import Schemas, server_url
from benchmarks.bench_ingest_sqlite import BATCH_SIZE, build_events, parse_size
from commhistory.crypto import Keyring
from commhistory.facade import CommHistory, open_repository
from commhistory.model import Activity, Event
from commhistory.store import IngestReport, SQLRepository

COUNT_ENV: Final = "COMMHISTORY_BENCH_ACTIVITIES"
DEFAULT_COUNT: Final = 100_000
GOAL: Final = Goal(
    text="activity ingest >= 0.9x event ingest throughput (time ratio <= 1.11)",
    max_ratio=1 / 0.9,
)
DECLARED: Final = {
    "purchase": ["sku", "category"],
    "cart_abandoned": ["sku", "category"],
    "page_view": ["url_path"],
    "signup": [],
}
_NAMES: Final = (("purchase", 60), ("cart_abandoned", 15), ("page_view", 20), ("signup", 5))
_CATEGORIES: Final = ("shoes", "bags", "outerwear", "tops", "accessories", "kids", "sale")


def count() -> int:
    """How many records of each kind: ``$COMMHISTORY_BENCH_ACTIVITIES`` or 100,000."""
    return int(os.environ.get(COUNT_ENV, DEFAULT_COUNT))


def build_activities(spec: _data.HistorySpec, n: int, seed: int = 7) -> list[Activity]:
    """N activities spread over the spec's contacts, after their messages."""
    rng = random.Random(seed)
    names = [name for name, _ in _NAMES]
    weights = [w for _, w in _NAMES]
    out = []
    for i in range(n):
        name = rng.choices(names, weights)[0]
        product = rng.randrange(5000)
        properties: dict[str, Any]
        if name == "page_view":
            properties = {"url_path": f"/products/{product}", "referrer": "newsletter"}
        elif name == "signup":
            properties = {"how_found": "a friend told me"}
        else:
            properties = {
                "sku": f"SKU-{product:05d}",
                "category": _CATEGORIES[product % len(_CATEGORIES)],
                "gift_message": "Happy birthday! " + " ".join(rng.sample(_data._WORDS, 4)),
            }
        revenue = Decimal(rng.randrange(500, 50000)) if name == "purchase" else None
        out.append(
            Activity(
                activity_id=f"act{i:09d}",
                contact_id=spec.contact_id(rng.randrange(spec.n_contacts)),
                name=name,
                occurred_at=spec.start + timedelta(days=1, seconds=i),
                revenue=revenue,
                currency=None if revenue is None else "JPY",
                properties=properties,
            )
        )
    return out


class Ingest:
    """Fresh stores holding the messages, for alternating activity and event runs.

    Subclasses give :meth:`fresh_url`: a new database holding the messages, and
    a function that drops it.

    Args:
        n: Records of each kind.
        name: The backend's name in the benchmark's name.
    """

    def __init__(self, n: int, name: str) -> None:
        self.n = n
        self.name = name
        self.keyring = Keyring.generate()
        self.spec: _data.HistorySpec | None = None
        self.events: list[Event] = []
        self.activities: list[Activity] = []
        self.repo: CommHistory[SQLRepository] | None = None
        self.drop: Callable[[], None] | None = None
        self.reports: dict[str, IngestReport] = {}

    def prepare(self) -> None:
        """Build the inputs, once (untimed)."""
        if self.spec is None:
            self.spec, self.events = build_events(self.n)
            self.activities = build_activities(self.spec, self.n)

    def fresh_url(self) -> tuple[str, Callable[[], None]]:
        """Return a new database holding the messages, and a function that drops it."""
        raise NotImplementedError

    def setup(self) -> None:
        """A fresh database with the messages stored, opened, the names declared."""
        self.prepare()
        self.close()
        url, self.drop = self.fresh_url()
        self.repo = open_repository(url, self.keyring, batch_size=BATCH_SIZE)
        self.repo.declare_activities(DECLARED)

    def close(self) -> None:
        """Close the repository and drop its database."""
        if self.repo is not None:
            self.repo.close()
            self.repo = None
        if self.drop is not None:
            self.drop()
            self.drop = None

    def candidate(self) -> None:
        """Ingest the activities through the facade."""
        assert self.repo is not None
        self.reports["activities"] = self.repo.record_activities(self.activities)

    def baseline(self) -> None:
        """Ingest as many events through the facade."""
        assert self.repo is not None
        self.reports["events"] = self.repo.record_events(self.events)

    def extra(self) -> dict[str, Any]:
        """Close the last database; return the counts of both kinds."""
        self.close()
        out: dict[str, Any] = {"records": self.n, "batch_size": BATCH_SIZE}
        for kind, report in self.reports.items():
            out[kind] = {"inserted": report.inserted, "rejected": report.rejected}
        return out


class SQLiteIngest(Ingest):
    """SQLite: a template file with the messages, copied before each run."""

    def __init__(self, n: int) -> None:
        super().__init__(n, "sqlite")
        self.workdir = Path(tempfile.mkdtemp(prefix="commhistory-bench-activities-"))
        self.template = self.workdir / "template.db"
        self.counter = 0
        atexit.register(shutil.rmtree, self.workdir, ignore_errors=True)

    def prepare(self) -> None:
        """Build the inputs and the template file with the messages, once."""
        fresh = self.spec is None
        super().prepare()
        if fresh:
            assert self.spec is not None
            with open_repository(f"sqlite:///{self.template}", self.keyring) as repo:
                repo.record_messages(_data.messages(self.spec))

    def fresh_url(self) -> tuple[str, Callable[[], None]]:
        """Copy the template to a new file."""
        self.counter += 1
        path = self.workdir / f"run{self.counter}.db"
        shutil.copyfile(self.template, path)

        def drop() -> None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)

        return f"sqlite:///{path}", drop


class PostgresIngest(Ingest):
    """PostgreSQL: a fresh schema per run, the messages stored into it (untimed)."""

    def __init__(self, n: int) -> None:
        super().__init__(n, "postgres")
        self.schemas = Schemas(server_url())

    def fresh_url(self) -> tuple[str, Callable[[], None]]:
        """Create a schema and store the messages in it."""
        assert self.spec is not None
        name = self.schemas.create()
        url = self.schemas.sqlalchemy_url(name)
        with open_repository(url, self.keyring) as repo:
            repo.record_messages(_data.messages(self.spec))
        return url, lambda: self.schemas.drop(name)


def benchmarks() -> list[Benchmark]:
    """Activity vs event ingest on SQLite and PostgreSQL; inputs built at first setup."""
    n = count()
    out = []
    for state in (SQLiteIngest(n), PostgresIngest(n)):
        out.append(
            Benchmark(
                name=f"activities.{state.name}",
                candidate=state.candidate,
                baseline=state.baseline,
                setup=state.setup,
                goal=GOAL,
                repeats=3,
                extra=state.extra,
                items=n,
            )
        )
    return out


if __name__ == "__main__":
    sys.exit(main([benchmarks], parse_size(sys.argv[1:], COUNT_ENV)))
