"""``repo.kpis(by=("campaign_id", "variant"))`` against hand-written SQL and Python aggregation.

What is measured (``kpi.sqlite.*``, and ``kpi.postgres.*`` when the server answers):

* **Data (untimed)**: 200,000 outbound messages (4 campaigns x 2 variants) and
  1,000,000 events (``$COMMHISTORY_BENCH_KPI_EVENTS``): deliveries, bounces,
  opens (some machine), clicks, conversions with JPY revenue. Rows are written
  straight into the schema's tables (no personal fields: KPI queries never read
  them), on a schema made by ``open_repository``.
* **Candidate**: ``repo.kpis(by=("campaign_id", "variant"))``.
* **Outcomes (untimed)**: the rows bypass ingest, so after loading,
  ``kpi_store.rebuild_outcomes()`` folds the events into each message's
  outcome columns (schema revision 0008), as ingest would have; the numbers
  of the candidate are checked against both hand-written queries and the
  Python fold, which read events.
* **Baseline ``vs_sql``**: a hand-written query computing the same numbers
  from events (per-message flags from events grouped by message, then summed
  per group), on a raw driver connection, on PostgreSQL without parallel
  workers (its fastest plan). Goal: candidate <= 1.5x.
* **Baseline ``vs_sql_flags``**: a hand-written query over the same tables
  the candidate reads: the outcome columns of ``messages`` summed per group,
  plus the count of unlinked events the table reports. Goal: candidate
  <= 1.0x: the library adds nothing over the query a person would write.
* **Baseline ``vs_python``**: fetching the messages' keys and the events'
  message id, type, bounce, machine flag, revenue and currency, and
  aggregating in Python (counts and revenue per currency). Goal: candidate
  >= 8x faster (ratio <= 0.125).
* The schema (migration 0003) has the covering index ``ix_events_kpi`` on
  ``events (message_id, type, machine, bounce, revenue_micros, currency)``;
  after loading, ``ANALYZE`` (SQLite) or ``VACUUM ANALYZE`` of both tables (PostgreSQL, so
  index-only scans need no heap visits, as autovacuum would arrange).

Run: ``python -m benchmarks.bench_kpi``.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa

from benchmarks._harness import Benchmark, Goal, main
from commhistory.crypto import Keyring
from commhistory.facade import CommHistory, open_repository
from commhistory.store import SQLRepository

EVENTS: Final = int(os.environ.get("COMMHISTORY_BENCH_KPI_EVENTS", "1000000"))
MESSAGES: Final = EVENTS // 5
PG_ENV: Final = "COMMHISTORY_TEST_POSTGRES_URL"

HAND_SQL: Final = """
SELECT m.campaign_id, m.variant, COUNT(*) AS sent,
  SUM(CASE WHEN COALESCE(e.b, 0) = 0 AND COALESCE(e.f, 0) = 0 THEN 1 ELSE 0 END),
  SUM(COALESCE(e.b, 0)), SUM(COALESCE(e.hb, 0)),
  SUM(CASE WHEN COALESCE(e.b, 0) = 0 THEN COALESCE(e.f, 0) ELSE 0 END),
  SUM(CASE WHEN COALESCE(e.b, 0) = 0 AND COALESCE(e.f, 0) = 0
           AND (e.o = 1 OR e.c = 1) THEN 1 ELSE 0 END),
  SUM(CASE WHEN COALESCE(e.b, 0) = 0 AND COALESCE(e.f, 0) = 0 THEN e.c ELSE 0 END),
  SUM(CASE WHEN COALESCE(e.b, 0) = 0 AND COALESCE(e.f, 0) = 0 THEN e.cv ELSE 0 END),
  SUM(CASE WHEN COALESCE(e.b, 0) = 0 AND COALESCE(e.f, 0) = 0 THEN e.u ELSE 0 END),
  SUM(CASE WHEN COALESCE(e.b, 0) = 0 AND COALESCE(e.f, 0) = 0 THEN e.cp ELSE 0 END),
  SUM(CASE WHEN COALESCE(e.b, 0) = 0 AND COALESCE(e.f, 0) = 0 THEN e.rev END)
FROM messages m LEFT JOIN (
  SELECT message_id,
    MAX(CASE WHEN type = 'rejected' THEN 1 ELSE 0 END) AS rj,
    MAX(CASE WHEN type = 'bounced' THEN 1 ELSE 0 END) AS b,
    MAX(CASE WHEN type = 'bounced' AND bounce = 'hard' THEN 1 ELSE 0 END) AS hb,
    MAX(CASE WHEN type = 'failed' THEN 1 ELSE 0 END) AS f,
    MAX(CASE WHEN type = 'opened' AND NOT machine THEN 1 ELSE 0 END) AS o,
    MAX(CASE WHEN type = 'clicked' AND NOT machine THEN 1 ELSE 0 END) AS c,
    MAX(CASE WHEN type = 'converted' AND NOT machine THEN 1 ELSE 0 END) AS cv,
    MAX(CASE WHEN type = 'unsubscribed' AND NOT machine THEN 1 ELSE 0 END) AS u,
    MAX(CASE WHEN type = 'complained' AND NOT machine THEN 1 ELSE 0 END) AS cp,
    SUM(CASE WHEN type = 'converted' AND NOT machine THEN revenue_micros END) AS rev
  FROM events GROUP BY message_id
) e ON e.message_id = m.message_id
WHERE m.direction = 'outbound' AND COALESCE(e.rj, 0) = 0
GROUP BY m.campaign_id, m.variant
"""

HAND_FLAGS_SQL: Final = """
SELECT campaign_id, variant, conversion_currency, COUNT(*),
  SUM(CASE WHEN outcomes & 10 = 0 THEN 1 ELSE 0 END),
  SUM(CASE WHEN outcomes & 2 <> 0 THEN 1 ELSE 0 END),
  SUM(CASE WHEN outcomes & 4 <> 0 THEN 1 ELSE 0 END),
  SUM(CASE WHEN outcomes & 10 = 8 THEN 1 ELSE 0 END),
  SUM(CASE WHEN outcomes & 10 = 0 AND outcomes & 1536 <> 0 THEN 1 ELSE 0 END),
  SUM(CASE WHEN outcomes & 10 = 0 AND outcomes & 1024 <> 0 THEN 1 ELSE 0 END),
  SUM(CASE WHEN outcomes & 10 = 0 AND outcomes & 2048 <> 0 THEN 1 ELSE 0 END),
  SUM(CASE WHEN outcomes & 10 = 0 AND outcomes & 4096 <> 0 THEN 1 ELSE 0 END),
  SUM(CASE WHEN outcomes & 10 = 0 AND outcomes & 8192 <> 0 THEN 1 ELSE 0 END),
  SUM(CASE WHEN outcomes & 10 = 0 THEN human_revenue_micros END)
FROM messages
WHERE direction = 'outbound' AND outcomes & 1 = 0
GROUP BY campaign_id, variant, conversion_currency
"""
"""The same numbers from the per-message outcome columns (schema revision 0008), by hand:
bits 1 rejected, 2 bounced, 4 hard, 8 failed, 512/1024/2048/4096/8192 human open, click,
conversion, unsubscribe, complaint."""


def _rows(rng: random.Random) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    messages, events = [], []
    base = 1_711_929_600_000_000
    eid = 0
    for i in range(MESSAGES):
        mid = f"m{i}"
        sent = base + i * 1_000_000
        messages.append(
            (mid, f"c{i % 50_000}", "email", "outbound", "marketing", f"camp{i % 4}",
             "AB"[i % 2], "sendgrid", f"p{i}", sent, b"x")
        )  # fmt: skip
        kinds: list[tuple[str, str | None, bool, int | None]] = []
        if rng.random() < 0.03:
            kinds.append(("bounced", "hard" if rng.random() < 0.5 else "soft", False, None))
        else:
            kinds.append(("delivered", None, False, None))
        while len(kinds) < 5:
            x = rng.random()
            if x < 0.5:
                kinds.append(("opened", None, rng.random() < 0.4, None))
            elif x < 0.9:
                kinds.append(("clicked", None, rng.random() < 0.2, None))
            else:
                kinds.append(("converted", None, False, rng.choice((1980, 4980)) * 1_000_000))
        for kind, bounce, machine, rev in kinds:
            eid += 1
            events.append(
                (f"e{eid}", mid, f"c{i % 50_000}", kind, sent + eid, bounce, machine,
                 None if rev is None else str(rev // 1_000_000), rev,
                 None if rev is None else "JPY")
            )  # fmt: skip
    return messages, events


_M_COLS: Final = (
    "message_id, contact_id, channel, direction, purpose, campaign_id, variant, provider, "
    "provider_message_id, sent_at, address"
)
_E_COLS: Final = (
    "event_id, message_id, contact_id, type, occurred_at, bounce, machine, revenue, "
    "revenue_micros, currency"
)


def _load(
    repo: CommHistory[SQLRepository], url: str, messages: list[Any], events: list[Any]
) -> None:
    ph = repo.store.backend.ph
    with repo.store.transaction() as conn:
        raw: Any = conn.connection.driver_connection
        cur = raw.cursor()
        contacts = sorted({m[1] for m in messages})
        cur.executemany(
            f"INSERT INTO contacts (contact_id, created_at) VALUES ({ph}, 0)",
            [(c,) for c in contacts],
        )
        cur.executemany(
            f"INSERT INTO messages ({_M_COLS}) VALUES ({', '.join([ph] * 11)})", messages
        )
        cur.executemany(f"INSERT INTO events ({_E_COLS}) VALUES ({', '.join([ph] * 10)})", events)
        cur.close()
    # What ingest keeps on each message, folded from the events just written
    # (the rows bypassed ingest); the equality checks below compare the result
    # with the hand-written queries and the Python fold, which read events.
    repo.store.kpi_store.rebuild_outcomes()
    if repo.store.dialect == "postgresql":
        maintenance = sa.create_engine(url, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
        with maintenance.connect() as conn:
            conn.exec_driver_sql("VACUUM ANALYZE events, messages")
        maintenance.dispose()
    else:
        with repo.store.transaction() as conn:
            conn.exec_driver_sql("ANALYZE")


def _fetch_python(
    repo: CommHistory[SQLRepository],
) -> dict[tuple[str, str], tuple[list[int], dict[str, int]]]:
    with repo.store.transaction(read=True) as conn:
        keys = {
            mid: (c, v)
            for mid, c, v in conn.exec_driver_sql(
                "SELECT message_id, campaign_id, variant FROM messages "
                "WHERE direction = 'outbound'"
            )
        }
        flags: dict[str, set[str]] = {}
        revenue: dict[str, dict[str, int]] = {}
        for mid, kind, bounce, machine, rev, cur in conn.exec_driver_sql(
            "SELECT message_id, type, bounce, machine, revenue_micros, currency FROM events"
        ):
            if machine and kind in ("opened", "clicked", "converted"):
                continue
            s = flags.setdefault(mid, set())
            s.add(kind)
            if kind == "bounced" and bounce == "hard":
                s.add("hard")
            if kind == "converted" and rev is not None:
                per = revenue.setdefault(mid, {})
                per[cur] = per.get(cur, 0) + rev
    out: dict[tuple[str, str], tuple[list[int], dict[str, int]]] = {}
    for mid, key in keys.items():
        s = flags.get(mid, set())
        if "rejected" in s:
            continue
        row, money = out.setdefault(key, ([0] * 10, {}))
        b = "bounced" in s
        f = not b and "failed" in s
        d = not b and not f
        row[0] += 1
        row[1] += d
        row[2] += b
        row[3] += "hard" in s
        row[4] += f
        row[5] += d and ("opened" in s or "clicked" in s)
        row[6] += d and "clicked" in s
        row[7] += d and "converted" in s
        row[8] += d and "unsubscribed" in s
        row[9] += d and "complained" in s
        if d and "converted" in s:
            for cur, amount in revenue.get(mid, {}).items():
                money[cur] = money.get(cur, 0) + amount
    return out


def _setup(name: str, url: str, messages: list[Any], events: list[Any]) -> list[Benchmark]:
    repo = open_repository(url, Keyring.generate())
    _load(repo, url, messages, events)

    def hand() -> Sequence[Any]:
        with repo.store.transaction(read=True) as conn:
            if repo.store.dialect == "postgresql":
                conn.exec_driver_sql("SET LOCAL max_parallel_workers_per_gather = 0")
            return conn.exec_driver_sql(HAND_SQL).all()

    def hand_flags() -> tuple[Sequence[Any], int]:
        with repo.store.transaction(read=True) as conn:
            rows = conn.exec_driver_sql(HAND_FLAGS_SQL).all()
            orphans = conn.exec_driver_sql(
                "SELECT COUNT(*) FROM events WHERE contact_id IS NULL"
            ).scalar_one()
            return rows, int(orphans)

    def candidate() -> object:
        return repo.kpis(("campaign_id", "variant"))

    # The candidate's numbers must equal the hand-written query's.
    table = repo.kpis(("campaign_id", "variant"))
    hand_rows = {(r[0], r[1]): [int(x or 0) for x in r[2:]] for r in hand()}
    flag_rows: dict[tuple[str, str], list[int]] = {}
    for r in hand_flags()[0]:  # one row per currency (NULL: no revenue)
        have = flag_rows.setdefault((r[0], r[1]), [0] * 11)
        for i, x in enumerate(r[3:]):
            have[i] += int(x or 0)
    assert flag_rows == hand_rows
    py_rows = _fetch_python(repo)
    for row in table.rows:
        key = (str(row.group["campaign_id"]), str(row.group["variant"]))
        assert hand_rows[key][:10] == py_rows[key][0] == [
            row.sent, row.delivered, row.bounced, row.hard_bounced, row.failed,
            row.unique_opens, row.unique_clicks, row.conversions, row.unsubscribes,
            row.complaints,
        ], key  # fmt: skip
        # All revenue is JPY here, so the hand query's single sum is comparable.
        assert {"JPY": hand_rows[key][10]} == py_rows[key][1], key
        assert {c: int(v * 1_000_000) for c, v in row.revenue.items()} == py_rows[key][1], key

    sql_goal = Goal(text="<= 1.5x hand-written SQL over events", max_ratio=1.5)
    flags_goal = Goal(text="<= 1.0x hand-written SQL over the outcome columns", max_ratio=1.0)
    py_goal = Goal(text=">= 8x faster than fetch + Python", max_ratio=0.125)

    def make(suffix: str) -> list[Benchmark]:
        return [
            Benchmark(
                name=f"kpi.{name}.vs_sql{suffix}",
                candidate=candidate,
                baseline=hand,
                goal=sql_goal,
                repeats=3,
                items=len(events),
            ),
            Benchmark(
                name=f"kpi.{name}.vs_sql_flags{suffix}",
                candidate=candidate,
                baseline=hand_flags,
                goal=flags_goal,
                repeats=5,
                items=len(events),
            ),
            Benchmark(
                name=f"kpi.{name}.vs_python{suffix}",
                candidate=candidate,
                baseline=lambda: _fetch_python(repo),
                goal=py_goal,
                repeats=2,
                items=len(events),
            ),
        ]

    return make("")


def benchmarks() -> list[Benchmark]:
    """Build the KPI benchmarks (slow: writes 1M events per database)."""
    rng = random.Random(7)
    messages, events = _rows(rng)
    tmp = Path(tempfile.mkdtemp(prefix="bench-kpi-"))
    out = _setup("sqlite", f"sqlite:///{tmp / 'kpi.db'}", messages, events)
    pg = os.environ.get(PG_ENV)
    if pg:
        base = "postgresql+psycopg://" + pg.removeprefix("postgresql://")
        schema = f"bench_kpi_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(base, poolclass=sa.NullPool)
        try:
            with admin.begin() as conn:
                conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
            sep = "&" if "?" in base else "?"
            out += _setup(
                "postgres", f"{base}{sep}options=-csearch_path%3D{schema}", messages, events
            )
        except sa.exc.OperationalError:
            print("PostgreSQL unreachable; skipping", file=sys.stderr)
        _drop: Callable[[], None] = lambda: _drop_schema(admin, schema)  # noqa: E731
        import atexit

        atexit.register(_drop)
    return out


def _drop_schema(admin: sa.Engine, schema: str) -> None:
    with admin.begin() as conn:
        conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    admin.dispose()


if __name__ == "__main__":
    sys.exit(main([benchmarks]))
