"""``filter_sendable`` for a 100k-contact send list against one hand-written SQL query.

The store holds ``$COMMHISTORY_BENCH_CAN_SEND_CONTACTS`` contacts (default
100,000), one marketing email each; 70 % granted marketing consent, one in
seven of those withdrew it later, 2 % of addresses hard-bounced (fed into the
suppression list at ingest). The candidate decides every contact with
:meth:`SQLRepository.filter_sendable`; the baseline is one SQL statement (a
window function for the latest consent, ``NOT EXISTS`` over suppressions)
returning the same ids. Goal: at most 2x the baseline.

Run: ``python -m benchmarks.bench_can_send [--contacts N]``.
"""

from __future__ import annotations

import atexit
import os
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks._harness import Benchmark, Goal, main
from commhistory.crypto import Keyring
from commhistory.facade import CommHistory, open_repository
from commhistory.model import (
    BounceClass,
    Channel,
    ConsentAction,
    ConsentEvent,
    ConsentMethod,
    Direction,
    Event,
    EventType,
    Message,
    Purpose,
)
from commhistory.normalize.time import to_micros
from commhistory.store import SQLRepository

CONTACTS_ENV = "COMMHISTORY_BENCH_CAN_SEND_CONTACTS"
URL_ENV = "COMMHISTORY_TEST_POSTGRES_URL"
GOAL = Goal(text="<= 2x one hand-written SQL query", max_ratio=2.0)
T0 = datetime(2026, 1, 1, tzinfo=UTC)
AT = T0 + timedelta(days=60)

BASELINE_SQL = """
WITH ranked AS (
  SELECT contact_id, action,
         ROW_NUMBER() OVER (
           PARTITION BY contact_id
           ORDER BY occurred_at DESC,
                    CASE action WHEN 'withdraw' THEN 1 ELSE 0 END DESC,
                    consent_id DESC) AS rn
  FROM consent_events
  WHERE channel = 'email' AND purpose = 'marketing' AND occurred_at <= {ph}
)
SELECT r.contact_id FROM ranked r JOIN contacts k ON k.contact_id = r.contact_id
WHERE r.rn = 1 AND r.action = 'grant'
  AND (k.erased_at IS NULL OR k.erased_at > {ph})
  AND r.contact_id NOT IN (
    SELECT a.contact_id FROM suppressions s JOIN addresses a
      ON a.kind = s.kind AND a.blind_index = s.blind_index
    WHERE s.channel = 'email' AND s.since <= {ph}
      AND (s.lifted_at IS NULL OR s.lifted_at > {ph})
      AND (s.purpose IS NULL OR s.purpose = 'marketing'))
"""


def contact_count() -> int:
    """Contacts in the store: ``$COMMHISTORY_BENCH_CAN_SEND_CONTACTS`` or 100,000."""
    return int(os.environ.get(CONTACTS_ENV, "100000"))


def populate(repo: CommHistory[SQLRepository], n: int) -> None:
    """Store the synthetic history (see the module docs)."""
    repo.record_messages(
        Message(
            message_id=f"m{i}",
            channel=Channel.EMAIL,
            direction=Direction.OUTBOUND,
            contact_id=f"c{i}",
            address=f"user{i}@example.com",
            sent_at=T0 + timedelta(days=20, seconds=i),
            purpose=Purpose.MARKETING,
            campaign_id="bench",
        )
        for i in range(n)
    )
    consents = []
    for i in range(n):
        if i % 10 < 7:
            consents.append(_consent(i, ConsentAction.GRANT, 1))
            if i % 7 == 0:
                consents.append(_consent(i, ConsentAction.WITHDRAW, 30))
    repo.record_consent(consents)
    repo.record_events(
        Event(
            event_id=f"b{i}",
            message_id=f"m{i}",
            type=EventType.BOUNCED,
            occurred_at=T0 + timedelta(days=21),
            bounce=BounceClass.HARD,
            status_code="5.1.1",
        )
        for i in range(0, n, 50)
    )


def _consent(i: int, action: ConsentAction, day: int) -> ConsentEvent:
    return ConsentEvent(
        contact_id=f"c{i}", channel=Channel.EMAIL, purpose=Purpose.MARKETING, action=action,
        occurred_at=T0 + timedelta(days=day), method=ConsentMethod.WEB_FORM,
    )  # fmt: skip


class CanSendBench:
    """One database: filled once at the first setup."""

    def __init__(self, backend: str, n: int) -> None:
        self.backend = backend
        self.n = n
        self.ids = [f"c{i}" for i in range(n)]
        self.repo: CommHistory[SQLRepository] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.candidate_result: list[str] = []
        self.baseline_result: list[str] = []

    def setup(self) -> None:
        """Open and fill the database once (untimed)."""
        if self.repo is not None:
            return
        if self.backend == "sqlite":
            self._tmp = tempfile.TemporaryDirectory()
            url = f"sqlite:///{Path(self._tmp.name) / 'cs.db'}"
        else:
            url = _fresh_pg_schema()
        self.repo = open_repository(url, Keyring.generate())
        populate(self.repo, self.n)
        with self.repo.store.transaction() as conn:  # fresh statistics for both contenders
            conn.exec_driver_sql("ANALYZE")

    def candidate(self) -> None:
        """Decide the whole list with filter_sendable."""
        assert self.repo is not None
        self.candidate_result = self.repo.filter_sendable(self.ids, "email", "marketing", AT)

    def baseline(self) -> None:
        """Answer with the one hand-written query."""
        assert self.repo is not None
        ph = self.repo.store.backend.ph
        at = to_micros(AT)
        with self.repo.store.transaction(read=True) as conn:
            rows = conn.exec_driver_sql(BASELINE_SQL.replace("{ph}", ph), (at, at, at, at))
            allowed = {r[0] for r in rows}
        self.baseline_result = [cid for cid in self.ids if cid in allowed]

    def extra(self) -> dict[str, Any]:
        """Report the sizes and whether both answers agree."""
        same = self.candidate_result == self.baseline_result
        return {
            "contacts": self.n,
            "sendable": len(self.candidate_result),
            "same_answer": same,
        }


def _fresh_pg_schema() -> str:
    import uuid

    import psycopg

    base = os.environ.get(URL_ENV) or "postgresql://postgres@127.0.0.1:5432/test"
    base = base.replace("postgresql+psycopg://", "postgresql://")
    name = f"bench_cs_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    atexit.register(_drop_pg_schema, base, name)
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{name}"


def _drop_pg_schema(base: str, name: str) -> None:
    """Leave the test database as the benchmark found it."""
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def postgres_reachable() -> bool:
    """Whether the PostgreSQL server answers."""
    try:
        import psycopg

        base = os.environ.get(URL_ENV) or "postgresql://postgres@127.0.0.1:5432/test"
        with psycopg.connect(
            base.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=3
        ):
            return True
    except Exception:  # any failure means: skip PostgreSQL
        return False


def benchmarks() -> list[Benchmark]:
    """The can_send benchmarks (SQLite, and PostgreSQL when reachable)."""
    n = contact_count()
    backends = ["sqlite"] + (["postgres"] if postgres_reachable() else [])
    out = []
    for backend in backends:
        bench = CanSendBench(backend, n)
        out.append(
            Benchmark(
                name=f"can_send.bulk.{backend}",
                candidate=bench.candidate,
                baseline=bench.baseline,
                setup=bench.setup,
                goal=GOAL,
                repeats=3,
                extra=bench.extra,
                items=n,
            )
        )
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--contacts" in args:
        i = args.index("--contacts")
        os.environ[CONTACTS_ENV] = args[i + 1]
        del args[i : i + 2]
    sys.exit(main([benchmarks], args))
