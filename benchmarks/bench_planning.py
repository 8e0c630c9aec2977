"""``plan_send`` with caps and quiet hours against one hand-written SQL query.

The store holds ``$COMMHISTORY_BENCH_PLANNING_CONTACTS`` contacts (default
20,000; ``--full``: 200,000, the issue's size), each with one to three
marketing emails over the ten days before the planning instant and a ``tz``
attribute (80 % Asia/Tokyo, 20 % America/New_York); 70 % granted marketing
consent, one in seven of those withdrew it, 2 % of addresses hard-bounced.

The candidate is :meth:`CommHistory.plan_send` over every contact, email
marketing, with a cap of 2 per 7 days and quiet hours 21:00-08:00 (defer),
each in the contact's zone, ids only (``addresses=False``), as a send list is
planned before it is handed to a sender. The baseline is one SQL statement
that computes the same send-now set: the latest consent (a window function),
``NOT IN`` suppressed, an address exists, a correlated count of recent sends
against the window start of the contact's zone, and the zones in quiet hours,
with the two zones' window starts and quiet verdicts worked out by hand in
Python (the baseline knows the data has two zones; ``plan_send`` does not).

``plan_send.addresses.*`` also decrypts the address of each send, and so does
its baseline: the same statement also returns each send's address ciphertext
and its contact's wrapped data key, and a lean loop written with
``cryptography`` directly (:func:`decrypt_addresses`) derives the wrapping
subkey once per root key (HKDF-SHA256), then per row unwraps the data key
(AES-256-GCM, the contact bound in the AAD) and decrypts the address under it
(AES-256-GCM, table, column and row bound in the AAD), keeping the first
address per contact in sort order, as ``plan_send`` does. (Until the planfast
change this baseline returned the ids only, not the same job.)

Goal: at most 2x the baseline.

``plan_send.segment.*`` is the issue's own line: ``plan_send`` over a segment
(``repo.plan_send(SEGMENT, ...)``, the tree evaluated inside the plan) with the
same cap and quiet hours, against ``repo.segment_members(SEGMENT)`` alone, in
the same run on the same data. The segment (``SEGMENT``) keeps the contacts
with a zone, sent an email within 30 days, with marketing consent and not
suppressed. Goal: at most 2x the segment alone.

On SQLite the database works in this process, so each line also reports the
best CPU time (``time.process_time``) of each side and their ratio
(``candidate_cpu_s``, ``baseline_cpu_s``, ``cpu_ratio``): on a shared, loaded
machine the wall times move with the other processes, the CPU times much less.

Run: ``python -m benchmarks.bench_planning [--full] [--contacts N]``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time as clock
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from benchmarks._harness import Benchmark, Goal, main
from benchmarks.bench_can_send import _fresh_pg_schema, postgres_reachable
from commhistory import criteria as c
from commhistory.contacts import AttributeDefinition, AttributeType
from commhistory.crypto import Keyring
from commhistory.facade import CommHistory, open_repository
from commhistory.model import (
    BounceClass,
    Channel,
    ConsentAction,
    ConsentEvent,
    ConsentMethod,
    ContactUpdate,
    Direction,
    Event,
    EventType,
    Message,
    Purpose,
)
from commhistory.normalize.time import to_micros
from commhistory.segments.planning import FrequencyCap, PlanConfig, QuietHours
from commhistory.store import SQLRepository

CONTACTS_ENV = "COMMHISTORY_BENCH_PLANNING_CONTACTS"
FULL = 200_000
GOAL = Goal(text="<= 2x one hand-written SQL query of the same send-now set", max_ratio=2.0)
SEGMENT_GOAL = Goal(text="<= 2x the segment alone (segment_members, same tree)", max_ratio=2.0)
AT = datetime(2026, 6, 10, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo, 23:00 in New York
ZONES = ("Asia/Tokyo", "America/New_York")
CONFIG = PlanConfig(
    caps=(FrequencyCap(channel="email", purpose="marketing", limit=2, days=7),),
    quiet_hours=(QuietHours(channel="email", purpose="marketing", start=time(21), end=time(8)),),
    zone_attribute="tz",
    default_zone="Asia/Tokyo",
)

SEGMENT = (
    c.attr("tz").is_set()
    & c.sent(channel="email", within_days=30)
    & c.consent("email", "marketing")
    & ~c.suppressed("email", "marketing")
)
"""The segment of ``plan_send.segment.*``."""

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
),
zone AS (
  SELECT contact_id, value_text AS tz FROM contact_attributes
  WHERE name = 'tz' AND valid_from <= {ph} AND (valid_to IS NULL OR valid_to > {ph})
)
SELECT r.contact_id{columns}
FROM ranked r
JOIN contacts k ON k.contact_id = r.contact_id{join}
LEFT JOIN zone z ON z.contact_id = r.contact_id
WHERE r.rn = 1 AND r.action = 'grant'
  AND (k.erased_at IS NULL OR k.erased_at > {ph})
  AND r.contact_id NOT IN (
    SELECT a.contact_id FROM suppressions s JOIN addresses a
      ON a.kind = s.kind AND a.blind_index = s.blind_index
    WHERE s.channel = 'email' AND s.since <= {ph}
      AND (s.lifted_at IS NULL OR s.lifted_at > {ph})
      AND (s.purpose IS NULL OR s.purpose = 'marketing'))
  AND EXISTS (SELECT 1 FROM addresses a WHERE a.contact_id = r.contact_id AND a.kind = 'email')
  AND (SELECT COUNT(*) FROM messages m
       WHERE m.contact_id = r.contact_id AND m.channel = 'email'
         AND m.purpose = 'marketing' AND m.direction = 'outbound' AND m.sent_at <= {ph}
         AND m.sent_at >= CASE COALESCE(z.tz, 'Asia/Tokyo')
                            WHEN 'America/New_York' THEN {ph} ELSE {ph} END) < 2
"""


ADDRESS_COLUMNS = ", a.blind_index, a.address, k.data_key"
ADDRESS_JOIN = "\nJOIN addresses a ON a.contact_id = r.contact_id AND a.kind = 'email'"


def decrypt_addresses(keyring: Keyring, rows: Any) -> dict[str, str]:
    """The baseline's decryption, written with ``cryptography`` directly.

    *rows* are ``(contact_id, blind_index, address ciphertext, wrapped data key)``.
    The envelope formats are those of ``commhistory.crypto.fields``: a header
    (format byte, length, key id or key reference), a 12-byte nonce, the
    ciphertext and tag; the wrapping subkey is HKDF-SHA256 of the root key with
    ``info = b"commhistory/v1/data-key-wrap"``. Returns the first address in
    sort order per contact.
    """
    unwrappers: dict[bytes, Any] = {}
    out: dict[str, str] = {}
    column = b"\x00\x00\x00\x09addresses\x00\x00\x00\x07address"
    for cid, bidx, stored, stored_key in rows:
        wrapped, blob = bytes(stored_key), bytes(stored)
        end = 2 + wrapped[1]
        header = wrapped[:end]
        unwrap = unwrappers.get(header)
        if unwrap is None:
            root = keyring.root_key(header[2:].decode("ascii"))
            info = b"commhistory/v1/data-key-wrap"
            subkey = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(root)
            unwrap = unwrappers[header] = AESGCM(subkey).decrypt
        aad = header + b"contacts.data_key\x00" + cid.encode()
        data_key = unwrap(wrapped[end : end + 12], wrapped[end + 12 :], aad)
        start = 2 + blob[1]
        row = b"email:" + bytes(bidx).hex().encode()
        aad = blob[:start] + column + len(row).to_bytes(4, "big") + row
        text = AESGCM(data_key).decrypt(blob[start : start + 12], blob[start + 12 :], aad).decode()
        old = out.get(cid)
        if old is None or text < old:
            out[cid] = text
    return out


def contact_count() -> int:
    """Contacts in the store: ``$COMMHISTORY_BENCH_PLANNING_CONTACTS`` or 20,000."""
    return int(os.environ.get(CONTACTS_ENV, "20000"))


def populate(repo: CommHistory[SQLRepository], n: int) -> None:
    """Store the synthetic history (see the module docs)."""
    repo.declare_attributes([AttributeDefinition(name="tz", type=AttributeType.STR)])
    repo.record_messages(
        Message(
            message_id=f"m{i}-{k}",
            channel=Channel.EMAIL,
            direction=Direction.OUTBOUND,
            contact_id=f"c{i}",
            address=f"user{i}@example.com",
            sent_at=AT - timedelta(days=1 + (i * 7 + k * 3) % 10, seconds=i % 3600),
            purpose=Purpose.MARKETING,
            campaign_id="bench",
        )
        for i in range(n)
        for k in range(1 + i % 3)
    )
    consents = []
    for i in range(n):
        if i % 10 < 7:
            consents.append(_consent(i, ConsentAction.GRANT, 30))
            if i % 7 == 0:
                consents.append(_consent(i, ConsentAction.WITHDRAW, 20))
    repo.record_consent(consents)
    repo.record_events(
        Event(
            event_id=f"b{i}",
            message_id=f"m{i}-0",
            type=EventType.BOUNCED,
            occurred_at=AT - timedelta(hours=1),
            bounce=BounceClass.HARD,
            status_code="5.1.1",
        )
        for i in range(0, n, 50)
    )
    repo.record_contacts(
        ContactUpdate(
            contact_id=f"c{i}",
            attributes={"tz": ZONES[1] if i % 5 == 0 else ZONES[0]},
            at=AT - timedelta(days=40),
        )
        for i in range(n)
    )


def _consent(i: int, action: ConsentAction, days_before: int) -> ConsentEvent:
    return ConsentEvent(
        contact_id=f"c{i}", channel=Channel.EMAIL, purpose=Purpose.MARKETING, action=action,
        occurred_at=AT - timedelta(days=days_before), method=ConsentMethod.WEB_FORM,
    )  # fmt: skip


_OPEN: dict[tuple[str, int], tuple[CommHistory[SQLRepository], Keyring]] = {}
"""The filled databases and their keyrings, by backend and size."""


class PlanningBench:
    """One database: filled once at the first setup."""

    def __init__(self, backend: str, n: int, *, addresses: bool = False) -> None:
        self.backend = backend
        self.n = n
        self.addresses = addresses
        self.ids = [f"c{i}" for i in range(n)]
        self.repo: CommHistory[SQLRepository] | None = None
        self.keyring: Keyring | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.candidate_result: list[str] = []
        self.baseline_result: list[str] = []
        self.deferred = 0
        self.cpu: dict[str, float] = {}

    def setup(self) -> None:
        """Open and fill the database once per backend (untimed; shared by both benchmarks)."""
        if self.repo is not None:
            return
        shared = _OPEN.get((self.backend, self.n))
        if shared is None:
            if self.backend == "sqlite":
                self._tmp = tempfile.TemporaryDirectory()
                url = f"sqlite:///{Path(self._tmp.name) / 'plan.db'}"
            else:
                url = _fresh_pg_schema()
            keyring = Keyring.generate()
            repo = open_repository(url, keyring)
            populate(repo, self.n)
            with repo.store.transaction() as conn:  # fresh statistics for both contenders
                conn.exec_driver_sql("ANALYZE")
            shared = _OPEN[(self.backend, self.n)] = (repo, keyring)
        self.repo, self.keyring = shared

    def _cpu(self, key: str, started: float) -> None:
        """Keep the best CPU time of one side (SQLite only: PostgreSQL works elsewhere)."""
        if self.backend == "sqlite":
            spent = clock.process_time() - started
            self.cpu[key] = min(self.cpu.get(key, spent), spent)

    def _cpu_figures(self) -> dict[str, float]:
        if "candidate_cpu_s" not in self.cpu or not self.cpu.get("baseline_cpu_s"):
            return {}
        out = {k: round(v, 3) for k, v in self.cpu.items()}
        out["cpu_ratio"] = round(self.cpu["candidate_cpu_s"] / self.cpu["baseline_cpu_s"], 3)
        return out

    def candidate(self) -> None:
        """Plan the whole list."""
        started = clock.process_time()
        self._candidate()
        self._cpu("candidate_cpu_s", started)

    def baseline(self) -> None:
        """Answer with the one hand-written query."""
        started = clock.process_time()
        self._baseline()
        self._cpu("baseline_cpu_s", started)

    def _candidate(self) -> None:
        assert self.repo is not None
        plan = self.repo.plan_send(
            self.ids, channel="email", purpose="marketing", at=AT, config=CONFIG,
            addresses=self.addresses,
        )  # fmt: skip
        self.candidate_result = plan.send_ids
        self.deferred = len(plan.deferred)
        self.plan = plan

    def _baseline(self) -> None:
        assert self.repo is not None
        ph = self.repo.store.backend.ph
        at = to_micros(AT)
        cap = CONFIG.caps[0]
        tokyo, new_york = (to_micros(cap.window_start(AT, ZoneInfo(z))) for z in ZONES)
        rule = CONFIG.quiet_hours[0]
        quiet = [z for z in ZONES if rule.quiet(AT.astimezone(ZoneInfo(z)).time())]
        sql = BASELINE_SQL.replace("{ph}", ph)
        sql = sql.replace("{columns}", ADDRESS_COLUMNS if self.addresses else "")
        sql = sql.replace("{join}", ADDRESS_JOIN if self.addresses else "")
        if quiet:
            sql += f"  AND COALESCE(z.tz, 'Asia/Tokyo') NOT IN ({', '.join([ph] * len(quiet))})"
        params = (at, at, at, at, at, at, at, new_york, tokyo, *quiet)
        with self.repo.store.transaction(read=True) as conn:
            rows = conn.exec_driver_sql(sql, params).all()
        if self.addresses:  # the same job: each send's address, decrypted
            assert self.keyring is not None
            found = decrypt_addresses(self.keyring, rows)
            self.baseline_result = [cid for cid in self.ids if cid in found]
            self.baseline_addresses = found
        else:
            allowed = {r[0] for r in rows}
            self.baseline_result = [cid for cid in self.ids if cid in allowed]

    def extra(self) -> dict[str, Any]:
        """Report the sizes and whether both answers agree."""
        return {
            "contacts": self.n,
            "send_now": len(self.candidate_result),
            "deferred": self.deferred,
            "same_answer": self.candidate_result == self.baseline_result
            and (not self.addresses or self._same_addresses()),
            **self._cpu_figures(),
        }

    def _same_addresses(self) -> bool:
        """Whether both decrypted the same address for every send."""
        mine = {s.contact_id: s.address for s in self.plan.send}
        return mine == getattr(self, "baseline_addresses", None)


class SegmentPlanningBench(PlanningBench):
    """``plan_send`` over :data:`SEGMENT` against ``segment_members(SEGMENT)`` alone."""

    def _candidate(self) -> None:
        """Plan the segment's members."""
        assert self.repo is not None
        plan = self.repo.plan_send(
            SEGMENT, channel="email", purpose="marketing", at=AT, config=CONFIG,
            addresses=False,
        )  # fmt: skip
        self.candidate_result = plan.send_ids
        self.deferred = len(plan.deferred)
        self.planned = len(plan.send) + len(plan.deferred) + len(plan.excluded)

    def _baseline(self) -> None:
        """Evaluate the segment alone."""
        assert self.repo is not None
        self.baseline_result = self.repo.segment_members(SEGMENT, at=AT)

    def extra(self) -> dict[str, Any]:
        """Report the sizes; every member is planned."""
        return {
            "contacts": self.n,
            "members": len(self.baseline_result),
            "send_now": len(self.candidate_result),
            "deferred": self.deferred,
            "all_planned": getattr(self, "planned", -1) == len(self.baseline_result),
            **self._cpu_figures(),
        }


def benchmarks() -> list[Benchmark]:
    """The planning benchmarks (SQLite, and PostgreSQL when reachable)."""
    n = contact_count()
    backends = ["sqlite"] + (["postgres"] if postgres_reachable() else [])
    out = []
    for backend in backends:
        for addresses in (False, True):
            bench = PlanningBench(backend, n, addresses=addresses)
            kind = "addresses" if addresses else "ids"
            out.append(
                Benchmark(
                    name=f"plan_send.{kind}.{backend}",
                    candidate=bench.candidate,
                    baseline=bench.baseline,
                    setup=bench.setup,
                    goal=GOAL,
                    repeats=3,
                    extra=bench.extra,
                    items=n,
                )
            )
        seg = SegmentPlanningBench(backend, n)
        out.append(
            Benchmark(
                name=f"plan_send.segment.{backend}",
                candidate=seg.candidate,
                baseline=seg.baseline,
                setup=seg.setup,
                goal=SEGMENT_GOAL,
                repeats=3,
                extra=seg.extra,
                items=n,
            )
        )
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--full" in args:
        args.remove("--full")
        os.environ[CONTACTS_ENV] = str(FULL)
    if "--contacts" in args:
        i = args.index("--contacts")
        os.environ[CONTACTS_ENV] = args[i + 1]
        del args[i : i + 2]
    sys.exit(main([benchmarks], args))
