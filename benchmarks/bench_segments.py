"""A 5-condition segment against a hand-written SQL query and against fetch-and-filter in Python.

The segment (``segments.sqlite.*``, and ``segments.postgres.*`` when the server answers)::

    attr("tier") == "gold"
    & opened(within_days=30)                       # human opens or clicks, outbound messages
    & (activity("purchase", within_days=90).count() == 0)
    & consent("email", "marketing")
    & ~suppressed("email", "marketing")

* **Data (untimed)**: N contacts (default 20,000; ``--full``: 200,000, the issue's goal
  contacts, about 1.1M events; ``$COMMHISTORY_BENCH_SEGMENT_CONTACTS``), each with a
  ``tier``, two outbound emails and about five events per contact in all (deliveries,
  opens, a quarter of them machine opens, clicks), a purchase for a third of them, a
  marketing consent grant for
  80 % (withdrawn again for 10 %), an address, and a suppression for 5 % of addresses.
  Rows are written straight into the schema's tables on a schema made by
  ``open_repository``; then ``ANALYZE`` (SQLite) or ``VACUUM ANALYZE`` (PostgreSQL).
* **Candidate**: ``repo.segment_members(tree, at=AT)`` (the tree is checked against the
  declared schema, compiled, run; the sorted ids come back).
* **Baseline ``vs_sql``**: the same logic written by hand as one SQL statement (the
  same ``IN`` / ``NOT IN`` shape, the consent grant that overrides an opt-out included,
  the tier in force at ``AT``), on a raw driver cursor. Goal: candidate <= 1.5x.
* **Baseline ``vs_python``**: fetching the rows each condition needs (current tiers,
  human opens in the window with their message's direction, purchases, the consent
  ledger, suppressions joined to addresses) and filtering in Python. Goal: candidate
  >= 20x faster (ratio <= 0.05).

Every run checks that the three give the same ids. Run:
``python -m benchmarks.bench_segments [--full]``.
"""

from __future__ import annotations

import atexit
import os
import random
import sys
import tempfile
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa

from benchmarks._harness import Benchmark, Goal, main
from commhistory import criteria as c
from commhistory.contacts import AttributeDefinition
from commhistory.crypto import Keyring
from commhistory.facade import CommHistory, open_repository
from commhistory.normalize.time import to_micros
from commhistory.store import SQLRepository

PG_ENV: Final = "COMMHISTORY_TEST_POSTGRES_URL"
SIZE_ENV: Final = "COMMHISTORY_BENCH_SEGMENT_CONTACTS"
AT: Final = datetime(2026, 6, 15, tzinfo=UTC)
DAY: Final = 86_400_000_000
AT_US: Final = to_micros(AT)

TREE: Final = (
    (c.attr("tier") == "gold")
    & c.opened(within_days=30)
    & (c.activity("purchase", within_days=90).count() == 0)
    & c.consent("email", "marketing")
    & ~c.suppressed("email", "marketing")
)

HAND_SQL: Final = """
SELECT u.contact_id FROM contacts u
WHERE u.erased_at IS NULL
AND u.contact_id IN (
  SELECT contact_id FROM contact_attributes
  WHERE name = {p} AND value_type = {p} AND valid_from <= {p}
    AND (valid_to IS NULL OR valid_to > {p}) AND value_text = {p})
AND u.contact_id IN (
  SELECT m.contact_id FROM events e JOIN messages m ON m.message_id = e.message_id
  WHERE m.direction = {p} AND e.type IN ({p}, {p}) AND e.machine = {false}
    AND e.occurred_at >= {p} AND e.occurred_at <= {p})
AND u.contact_id NOT IN (
  SELECT contact_id FROM activities
  WHERE name = {p} AND occurred_at >= {p} AND occurred_at <= {p})
AND u.contact_id IN (
  SELECT contact_id FROM consent_events
  WHERE channel = {p} AND purpose = {p} AND occurred_at <= {p}
  GROUP BY contact_id
  HAVING MAX(CASE WHEN action = {p} THEN occurred_at END)
       > COALESCE(MAX(CASE WHEN action = {p} THEN occurred_at END), -1))
AND u.contact_id NOT IN (
  SELECT a.contact_id FROM suppressions s
  JOIN addresses a ON a.kind = s.kind AND a.blind_index = s.blind_index
  LEFT JOIN (
    SELECT contact_id, MAX(CASE WHEN action = {p} THEN occurred_at END) AS g
    FROM consent_events WHERE channel = {p} AND purpose = {p} AND occurred_at <= {p}
    GROUP BY contact_id
    HAVING MAX(CASE WHEN action = {p} THEN occurred_at END)
         > COALESCE(MAX(CASE WHEN action = {p} THEN occurred_at END), -1)
  ) g ON g.contact_id = a.contact_id
  WHERE s.kind = {p} AND s.channel = {p} AND s.since <= {p}
    AND (s.lifted_at IS NULL OR s.lifted_at > {p})
    AND (s.purpose IS NULL OR s.purpose = {p})
    AND NOT (s.reason IN ({p}, {p}, {p}, {p}, {p}) AND g.g IS NOT NULL AND g.g > s.since))
ORDER BY u.contact_id
"""
CONSENT_REASONS: Final = ("complaint", "erasure", "line_unfollow", "sms_keyword", "unsubscribe")
HAND_PARAMS: Final = (
    "tier", "enum", AT_US, AT_US, "gold",
    "outbound", "opened", "clicked", AT_US - 30 * DAY, AT_US,
    "purchase", AT_US - 90 * DAY, AT_US,
    "email", "marketing", AT_US, "grant", "withdraw",
    "grant", "email", "marketing", AT_US, "grant", "withdraw",
    "email", "email", AT_US, AT_US, "marketing", *CONSENT_REASONS,
)  # fmt: skip


FULL: Final = 200_000
"""Contacts with ``--full``."""


def contact_count() -> int:
    """The number of contacts: ``$COMMHISTORY_BENCH_SEGMENT_CONTACTS``, or 20,000."""
    return int(os.environ.get(SIZE_ENV, "20000"))


def _rows(n: int, rng: random.Random) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = {
        k: [] for k in ("contacts", "attrs", "messages", "events", "activities", "consents",
                        "addresses", "suppressions")
    }  # fmt: skip
    ev = 0
    for i in range(n):
        cid = f"c{i:07d}"
        out["contacts"].append((cid,))
        tier = rng.choice(("gold", "silver", "bronze", "bronze"))
        out["attrs"].append((cid, "tier", 0, "enum", tier, 0))
        for j in range(2):
            mid = f"m{i:07d}-{j}"
            sent = AT_US - rng.randrange(60 * DAY)
            out["messages"].append((mid, cid, "email", "outbound", "marketing", "spring", sent))
            ev += 1
            out["events"].append((f"e{ev}", mid, cid, "delivered", sent + 1000, False))
            for _ in range(rng.choice((0, 1, 2, 3))):
                ev += 1
                t = min(AT_US, sent + rng.randrange(5 * DAY))
                out["events"].append((f"e{ev}", mid, cid, "opened", t, rng.random() < 0.25))
            if rng.random() < 0.2:
                ev += 1
                out["events"].append((f"e{ev}", mid, cid, "clicked", sent + 9000, False))
        if rng.random() < 0.33:
            t = AT_US - rng.randrange(180 * DAY)
            out["activities"].append((f"a{i}", cid, "purchase", t))
        if rng.random() < 0.8:
            t = AT_US - rng.randrange(365 * DAY)
            out["consents"].append((f"k{i}", cid, "email", "marketing", "grant", "web_form", t))
            if rng.random() < 0.1:
                out["consents"].append(
                    (f"w{i}", cid, "email", "marketing", "withdraw", "one_click", t + DAY)
                )
        digest = rng.randbytes(16)
        out["addresses"].append(("email", digest, cid, "k1", b"x", 0))
        if rng.random() < 0.05:
            reason = rng.choice(("hard_bounce", "unsubscribe", "complaint"))
            since = AT_US - rng.randrange(400 * DAY)
            out["suppressions"].append(
                (f"s{i}", "email", digest, "k1", "email", None, reason, since, 0)
            )
    return out


INSERTS: Final = {
    "contacts": "INSERT INTO contacts (contact_id, created_at) VALUES ({p}, 0)",
    "attrs": "INSERT INTO contact_attributes (contact_id, name, valid_from, value_type, "
    "value_text, recorded_at) VALUES ({p}, {p}, {p}, {p}, {p}, {p})",
    "messages": "INSERT INTO messages (message_id, contact_id, channel, direction, purpose, "
    "campaign_id, sent_at, address, outcomes) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, 0)",
    "events": "INSERT INTO events (event_id, message_id, contact_id, type, occurred_at, machine) "
    "VALUES ({p}, {p}, {p}, {p}, {p}, {p})",
    "activities": "INSERT INTO activities (activity_id, contact_id, name, occurred_at) "
    "VALUES ({p}, {p}, {p}, {p})",
    "consents": "INSERT INTO consent_events (consent_id, contact_id, channel, purpose, action, "
    "method, occurred_at) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p})",
    "addresses": "INSERT INTO addresses (kind, blind_index, contact_id, index_key_id, address, "
    "created_at) VALUES ({p}, {p}, {p}, {p}, {p}, {p})",
    "suppressions": "INSERT INTO suppressions (suppression_id, kind, blind_index, index_key_id, "
    "channel, purpose, reason, since, created_at) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, "
    "{p})",
}


def _load(repo: CommHistory[SQLRepository], url: str, rows: dict[str, list[Any]]) -> None:
    repo.declare_attributes(
        [AttributeDefinition(name="tier", type="enum", values=("gold", "silver", "bronze"))]
    )
    repo.declare_activities({"purchase": []})
    ph = repo.store.backend.ph
    with repo.store.transaction() as conn:
        cur: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        for table, sql in INSERTS.items():
            data = rows[table]
            if table == "messages":
                data = [(*r, b"x") for r in data]
            cur.executemany(sql.format(p=ph), data)
        cur.close()
    if repo.store.dialect == "postgresql":
        maintenance = sa.create_engine(url, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
        with maintenance.connect() as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
        maintenance.dispose()
    else:
        with repo.store.transaction() as conn:
            conn.exec_driver_sql("ANALYZE")


def _hand(repo: CommHistory[SQLRepository]) -> list[str]:
    ph = repo.store.backend.ph
    false = "0" if repo.store.dialect == "sqlite" else "false"
    sql = HAND_SQL.format(p=ph, false=false)
    with repo.store.transaction(read=True) as conn:
        cur: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cur.execute(sql, HAND_PARAMS)
            return [r[0] for r in cur.fetchall()]
        finally:
            cur.close()


def _python(repo: CommHistory[SQLRepository]) -> list[str]:
    """Fetch what each condition needs and filter in Python."""
    ph = repo.store.backend.ph
    with repo.store.transaction(read=True) as conn:
        cur: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]

        def rows(sql: str, params: Sequence[Any] = ()) -> list[Any]:
            cur.execute(sql.format(p=ph), tuple(params))
            return list(cur.fetchall())

        universe = {r[0] for r in rows("SELECT contact_id FROM contacts WHERE erased_at IS NULL")}
        tiers = rows(
            "SELECT contact_id, value_type, value_text, valid_from, valid_to "
            "FROM contact_attributes WHERE name = {p}",
            ("tier",),
        )
        gold = {
            cid
            for cid, kind, v, frm, to in tiers
            if kind == "enum" and v == "gold" and frm <= AT_US and (to is None or to > AT_US)
        }
        direction = dict(rows("SELECT message_id, direction FROM messages"))
        opened = {
            cid
            for mid, cid, kind, t, machine in rows(
                "SELECT message_id, contact_id, type, occurred_at, machine FROM events"
            )
            if kind in {"opened", "clicked"}
            and not machine
            and AT_US - 30 * DAY <= t <= AT_US
            and direction.get(mid) == "outbound"
        }
        bought = {
            cid
            for cid, name, t in rows("SELECT contact_id, name, occurred_at FROM activities")
            if name == "purchase" and AT_US - 90 * DAY <= t <= AT_US
        }
        best: dict[str, tuple[int, bool, str]] = {}
        grant_at: dict[str, int] = {}
        for cid, ch, pu, action, t, kid in rows(
            "SELECT contact_id, channel, purpose, action, occurred_at, consent_id "
            "FROM consent_events"
        ):
            if ch != "email" or pu != "marketing" or t > AT_US:
                continue
            key = (t, action == "withdraw", kid)
            if cid not in best or key > best[cid]:
                best[cid] = key
            if action == "grant":
                grant_at[cid] = max(t, grant_at.get(cid, t))
        granted = {cid for cid, key in best.items() if not key[1]}
        addresses: dict[tuple[str, bytes], list[str]] = {}
        for kind, digest, cid in rows("SELECT kind, blind_index, contact_id FROM addresses"):
            addresses.setdefault((kind, bytes(digest)), []).append(cid)
        blocked = set()
        for kind, digest, channel, purpose, reason, since, lifted in rows(
            "SELECT kind, blind_index, channel, purpose, reason, since, lifted_at "
            "FROM suppressions"
        ):
            if kind != "email" or channel != "email" or since > AT_US:
                continue
            if (lifted is not None and lifted <= AT_US) or purpose not in (None, "marketing"):
                continue
            for cid in addresses.get((kind, bytes(digest)), ()):
                g = grant_at.get(cid) if cid in granted else None
                if reason in CONSENT_REASONS and g is not None and g > since:
                    continue
                blocked.add(cid)
        cur.close()
    keep = (universe & gold & opened & granted) - bought - blocked
    return sorted(keep)


def _setup(name: str, url: str, rows: dict[str, list[Any]], n: int) -> list[Benchmark]:
    repo = open_repository(url, Keyring.generate())
    _load(repo, url, rows)

    def candidate() -> list[str]:
        return repo.segment_members(TREE, at=AT)

    expected = candidate()
    assert _hand(repo) == expected, "the hand-written query disagrees"
    assert _python(repo) == expected, "the Python filter disagrees"

    def extra() -> dict[str, Any]:
        return {"contacts": n, "events": len(rows["events"]), "members": len(expected)}

    return [
        Benchmark(
            name=f"segments.{name}.vs_sql",
            candidate=candidate,
            baseline=lambda: _hand(repo),
            goal=Goal(text="<= 1.5x the hand-written SQL", max_ratio=1.5),
            repeats=5,
            extra=extra,
            items=n,
        ),
        Benchmark(
            name=f"segments.{name}.vs_python",
            candidate=candidate,
            baseline=lambda: _python(repo),
            goal=Goal(text=">= 20x faster than fetch-and-filter", max_ratio=0.05),
            repeats=3,
            extra=extra,
            items=n,
        ),
    ]


def benchmarks() -> list[Benchmark]:
    """Build the segment benchmarks (writes N contacts and about 5 N events per database)."""
    n = contact_count()
    rows = _rows(n, random.Random(11))
    tmp = Path(tempfile.mkdtemp(prefix="bench-segments-"))
    out = _setup("sqlite", f"sqlite:///{tmp / 'segments.db'}", rows, n)
    pg = os.environ.get(PG_ENV)
    if pg:
        base = "postgresql+psycopg://" + pg.removeprefix("postgresql://")
        schema = f"bench_seg_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(base, poolclass=sa.NullPool)
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        atexit.register(_drop_schema, admin, schema)
        sep = "&" if "?" in base else "?"
        out += _setup("postgres", f"{base}{sep}options=-csearch_path%3D{schema}", rows, n)
    return out


def _drop_schema(admin: sa.Engine, schema: str) -> None:
    with admin.begin() as conn:
        conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    admin.dispose()


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--full" in args:
        args.remove("--full")
        os.environ[SIZE_ENV] = str(FULL)
    sys.exit(main([benchmarks], args))
