"""Campaign costs in KPI tables: what costs add to ``repo.kpis``, and the SQL sum of costs.

What is measured (``costs.sqlite.*``, and ``costs.postgres.*`` when the server answers):

* **Data (untimed)**: 40,000 outbound messages (20 campaigns x 2 variants, April
  2024) with 200,000 events, written straight into the schema's tables as
  ``bench_kpi`` does; and 20,000 costs (``$COMMHISTORY_BENCH_COSTS``) recorded
  through ``repo.record_costs`` (per campaign, variant or channel, per day or
  per month, JPY).
* ``costs.<db>.kpis``: candidate ``repo.kpis(("campaign_id", "variant"))`` with
  costs; baseline the same call with ``costs=False``. Goal: costs add at most
  25 % (ratio <= 1.25).
* ``costs.<db>.totals``: candidate ``repo.cost_store.totals()`` (one ``GROUP BY``
  in the database); baseline fetching every cost (``repo.costs()``) and summing
  in Python (:func:`commhistory.store.costs.total_costs`). Goal: >= 2x faster
  (ratio <= 0.5). Both give the same totals (checked before timing).
* ``costs.<db>.record``: recording the same 20,000 costs again (all duplicates),
  one transaction; no baseline, reported in seconds.

Run: ``python -m benchmarks costs``.
"""

from __future__ import annotations

import atexit
import os
import random
import sys
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa

from benchmarks._harness import Benchmark, Goal, main
from commhistory.crypto import Keyring
from commhistory.facade import CommHistory, open_repository
from commhistory.kpi import Cost
from commhistory.store import SQLRepository
from commhistory.store.costs import total_costs

COSTS: Final = int(os.environ.get("COMMHISTORY_BENCH_COSTS", "20000"))
MESSAGES: Final = 40_000
PG_ENV: Final = "COMMHISTORY_TEST_POSTGRES_URL"
APRIL: Final = datetime(2024, 4, 1, tzinfo=UTC)


def _rows(rng: random.Random) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    base = 1_711_929_600_000_000  # 2024-04-01 UTC
    messages, events = [], []
    for i in range(MESSAGES):
        mid = f"m{i}"
        sent = base + i * 60_000_000
        messages.append(
            (mid, f"c{i % 10_000}", "email", "outbound", "marketing", f"camp{i % 20}",
             "AB"[i % 2], "sendgrid", f"p{i}", sent, b"x")
        )  # fmt: skip
        for k in range(5):
            kind = "delivered" if k == 0 else rng.choice(("opened", "clicked", "converted"))
            rev = 1980_000_000 if kind == "converted" else None
            events.append(
                (f"e{i}-{k}", mid, f"c{i % 10_000}", kind, sent + k, None, False,
                 None if rev is None else "1980", rev, None if rev is None else "JPY")
            )  # fmt: skip
    return messages, events


def _costs(rng: random.Random) -> list[Cost]:
    out = []
    for i in range(COSTS):
        day = APRIL + timedelta(days=rng.randrange(30))
        monthly = rng.random() < 0.2
        out.append(
            Cost(
                cost_id=f"k{i}",
                campaign_id=f"camp{rng.randrange(20)}",
                variant=rng.choice((None, "A", "B")),
                channel=rng.choice((None, None, "email")),
                amount=Decimal(rng.randrange(100, 100_000)),
                currency="JPY",
                starts_at=APRIL if monthly else day,
                ends_at=datetime(2024, 5, 1, tzinfo=UTC) if monthly else day + timedelta(days=1),
            )
        )
    return out


_M_COLS: Final = (
    "message_id, contact_id, channel, direction, purpose, campaign_id, variant, provider, "
    "provider_message_id, sent_at, address"
)
_E_COLS: Final = (
    "event_id, message_id, contact_id, type, occurred_at, bounce, machine, revenue, "
    "revenue_micros, currency"
)


def _load(repo: CommHistory[SQLRepository], messages: list[Any], events: list[Any]) -> None:
    ph = repo.store.backend.ph
    with repo.store.transaction() as conn:
        raw: Any = conn.connection.driver_connection
        cur = raw.cursor()
        cur.executemany(
            f"INSERT INTO contacts (contact_id, created_at) VALUES ({ph}, 0)",
            [(c,) for c in sorted({m[1] for m in messages})],
        )
        cur.executemany(
            f"INSERT INTO messages ({_M_COLS}) VALUES ({', '.join([ph] * 11)})", messages
        )
        cur.executemany(f"INSERT INTO events ({_E_COLS}) VALUES ({', '.join([ph] * 10)})", events)
        cur.close()
        conn.exec_driver_sql("ANALYZE")


def _setup(name: str, url: str, data: tuple[list[Any], list[Any], list[Cost]]) -> list[Benchmark]:
    messages, events, costs = data
    repo = open_repository(url, Keyring.generate())
    _load(repo, messages, events)
    report = repo.record_costs(costs)
    assert report.inserted == len(costs)
    store = repo.store.cost_store
    assert set(store.totals()) == set(total_costs(repo.costs()))
    with_costs = repo.kpis(("campaign_id", "variant"))
    assert with_costs.total().cost == {"JPY": sum((c.amount for c in costs), Decimal(0))}
    by = ("campaign_id", "variant")
    return [
        Benchmark(
            name=f"costs.{name}.kpis",
            candidate=lambda: repo.kpis(by),
            baseline=lambda: repo.kpis(by, costs=False),
            goal=Goal(text="costs add <= 25% to repo.kpis", max_ratio=1.25),
            repeats=5,
            items=len(costs),
        ),
        Benchmark(
            name=f"costs.{name}.totals",
            candidate=store.totals,
            baseline=lambda: total_costs(repo.costs()),
            goal=Goal(text=">= 2x faster than fetch + Python", max_ratio=0.5),
            repeats=5,
            items=len(costs),
        ),
        Benchmark(
            name=f"costs.{name}.record",
            candidate=lambda: repo.record_costs(costs),
            repeats=3,
            items=len(costs),
        ),
    ]


def benchmarks() -> list[Benchmark]:
    """Build the cost benchmarks on SQLite (and PostgreSQL when it answers)."""
    rng = random.Random(16)
    messages, events = _rows(rng)
    data = (messages, events, _costs(rng))
    tmp = Path(tempfile.mkdtemp(prefix="bench-costs-"))
    out = _setup("sqlite", f"sqlite:///{tmp / 'costs.db'}", data)
    pg = os.environ.get(PG_ENV)
    if pg:
        base = "postgresql+psycopg://" + pg.removeprefix("postgresql://")
        schema = f"bench_costs_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(base, poolclass=sa.NullPool)
        try:
            with admin.begin() as conn:
                conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
            sep = "&" if "?" in base else "?"
            out += _setup("postgres", f"{base}{sep}options=-csearch_path%3D{schema}", data)
        except sa.exc.OperationalError:
            print("PostgreSQL unreachable; skipping", file=sys.stderr)
        atexit.register(_drop_schema, admin, schema)
    return out


def _drop_schema(admin: sa.Engine, schema: str) -> None:
    with admin.begin() as conn:
        conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    admin.dispose()


if __name__ == "__main__":
    sys.exit(main([benchmarks]))
