"""``repo.timeline()`` against a hand-written SELECT plus decrypt of the same rows.

What is measured (``timeline.sqlite``, and ``timeline.postgres`` when the
server answers):

* **Data (untimed)**: one contact with 1,000 messages and 5,000 events (five
  per message; ``--messages`` or ``$COMMHISTORY_BENCH_TIMELINE_MESSAGES``), every
  message with an encrypted address, subject and body, every event with three
  encrypted fields (``url``, ``user_agent``, ``ip``); plus 20,000 messages and
  100,000 events of 1,000 other contacts, so the indexes have work to do.
* **Candidate**: ``repo.timeline(contact_id)`` on an open repository.
* **Baseline**: the same result built by hand on a raw driver connection
  (:mod:`sqlite3` or psycopg), opened before the clock starts: one SELECT of the
  contact's wrapped data key, unwrapped once with
  :func:`~commhistory.crypto.unwrap_data_key` into a
  :class:`~commhistory.crypto.FieldCipher`; one SELECT of the contact's
  messages ordered by ``sent_at``, one of its events ordered by
  ``occurred_at``; each personal field decrypted; the same
  :class:`~commhistory.Message`, :class:`~commhistory.Event` and
  :class:`~commhistory.store.TimelineEntry` records built. The two results are
  compared for equality.

Best of 7 runs of each, interleaved. Goal: candidate time <= 2x the baseline.

The repository rebuilds records read back from the store without re-running
their validators (they were validated on the way in; the ciphertexts
authenticate) and decrypts with the bulk ``FieldCipher.text_opener``, while the
plain hand-written baseline calls ``decrypt_text`` and the constructors, as code
written by hand would. ``timeline.*.tight`` compares against a stricter
baseline that uses the same two shortcuts, so it shows the repository's own
overhead.

Run: ``python -m benchmarks timeline`` or
``python -m benchmarks.bench_timeline --messages 200``.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import quote

from benchmarks import _data
from benchmarks._harness import Benchmark, Goal, main
from benchmarks.bench_ingest_sqlite import parse_size
from commhistory.crypto import FieldCipher, Keyring, unwrap_data_key
from commhistory.facade import CommHistory, open_repository
from commhistory.model import (
    BounceClass,
    Channel,
    Direction,
    Event,
    EventType,
    Message,
    Purpose,
)
from commhistory.store import SQLRepository, TimelineEntry
from commhistory.store.layout import DATA_KEY_REF

MESSAGES_ENV: Final = "COMMHISTORY_BENCH_TIMELINE_MESSAGES"
DEFAULT_MESSAGES: Final = 1000
EVENTS_PER_MESSAGE: Final = 5
NOISE_MESSAGES: Final = 20_000
NOISE_CONTACTS: Final = 1000
REPEATS: Final = 7
URL_ENV: Final = "COMMHISTORY_TEST_POSTGRES_URL"
DEFAULT_URL: Final = "postgresql://postgres@127.0.0.1:5432/test"
GOAL: Final = Goal(text="<= 2x hand-written SELECT + decrypt", max_ratio=2.0)

_MESSAGE_COLUMNS: Final = (
    "message_id, contact_id, channel, direction, purpose, campaign_id, variant, provider, "
    "provider_message_id, sent_at, address, subject, body, metadata"
)
_EVENT_COLUMNS: Final = (
    "event_id, message_id, provider, provider_message_id, provider_event_id, type, "
    "occurred_at, status_code, bounce, machine, revenue, currency, address, reason, url, "
    "user_agent, ip, metadata"
)

Row = tuple[Any, ...]
_R = TypeVar("_R", Message, Event)
Query = Callable[[str, tuple[Any, ...]], list[Row]]


def message_count() -> int:
    """Messages of the measured contact: ``$COMMHISTORY_BENCH_TIMELINE_MESSAGES`` or 1,000."""
    return int(os.environ.get(MESSAGES_ENV, DEFAULT_MESSAGES))


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(value: int) -> datetime:
    """The aware UTC datetime of the store's integer microseconds."""
    return _EPOCH + timedelta(microseconds=value)


def _unvalidated(cls: type[_R], **values: Any) -> _R:
    """Build a frozen record without running its validators (the values were checked once)."""
    record = object.__new__(cls)
    for name, value in values.items():
        object.__setattr__(record, name, value)
    return record


def hand_timeline(
    query: Query, ph: str, keyring: Keyring, contact_id: str, *, tight: bool = False
) -> list[TimelineEntry]:
    """Build a contact's timeline with plain SELECTs and one unwrapped data key.

    Args:
        query: Runs one SQL statement with parameters and returns its rows.
        ph: The driver's placeholder (``?`` or ``%s``).
        keyring: The keyring.
        contact_id: The contact.
        tight: ``False``: decrypt with :meth:`FieldCipher.decrypt_text` and build
            records with their constructors (validators run), as code written
            by hand would. ``True``: decrypt with the bulk
            :meth:`FieldCipher.text_opener` and build records without running
            the validators again, as the repository does for rows it validated
            on the way in.

    Returns:
        The timeline, as :meth:`SQLRepository.timeline` returns it.
    """
    (wrapped,) = query(f"SELECT data_key FROM contacts WHERE contact_id = {ph}", (contact_id,))[0]
    cipher = FieldCipher(
        unwrap_data_key(keyring, bytes(wrapped), contact_id=contact_id), key_ref=DATA_KEY_REF
    )
    message_cls: Callable[..., Message] = partial(_unvalidated, Message) if tight else Message
    event_cls: Callable[..., Event] = partial(_unvalidated, Event) if tight else Event

    def opener(table: str, column: str) -> Callable[[Any, str], str | None]:
        if tight:
            return cipher.text_opener(table, column)

        def decrypt(blob: Any, row_id: str) -> str | None:
            if blob is None:
                return None
            return cipher.decrypt_text(bytes(blob), table=table, column=column, row_id=row_id)

        return decrypt

    def meta(blob: Any, table: str, row_id: str) -> dict[str, Any]:
        if blob is None:
            return {}
        plain = cipher.decrypt(bytes(blob), table=table, column="metadata", row_id=row_id)
        return {} if plain is None else dict(json.loads(plain))

    e_address, e_reason, e_url, e_agent, e_ip = (
        opener("events", column) for column in ("address", "reason", "url", "user_agent", "ip")
    )
    m_address, m_subject, m_body = (
        opener("messages", column) for column in ("address", "subject", "body")
    )
    events: dict[str, list[Event]] = {}
    for r in query(
        f"SELECT {_EVENT_COLUMNS} FROM events WHERE contact_id = {ph} "
        "ORDER BY occurred_at, event_id",
        (contact_id,),
    ):
        eid = r[0]
        events.setdefault(r[1], []).append(
            event_cls(
                event_id=eid,
                message_id=r[1],
                provider=r[2],
                provider_message_id=r[3],
                provider_event_id=r[4],
                type=EventType(r[5]),
                occurred_at=_micros(r[6]),
                status_code=r[7],
                bounce=None if r[8] is None else BounceClass(r[8]),
                machine=bool(r[9]),
                revenue=None if r[10] is None else Decimal(r[10]),
                currency=r[11],
                address=e_address(r[12], eid),
                reason=e_reason(r[13], eid),
                url=e_url(r[14], eid),
                user_agent=e_agent(r[15], eid),
                ip=e_ip(r[16], eid),
                metadata=meta(r[17], "events", eid),
            )
        )
    out: list[TimelineEntry] = []
    for r in query(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE contact_id = {ph} "
        "ORDER BY sent_at, message_id",
        (contact_id,),
    ):
        mid = r[0]
        message = message_cls(
            message_id=mid,
            contact_id=r[1],
            channel=Channel(r[2]),
            direction=Direction(r[3]),
            purpose=Purpose(r[4]),
            campaign_id=r[5],
            variant=r[6],
            provider=r[7],
            provider_message_id=r[8],
            sent_at=_micros(r[9]),
            address=m_address(r[10], mid) or "",
            subject=m_subject(r[11], mid),
            body=m_body(r[12], mid),
            metadata=meta(r[13], "messages", mid),
        )
        out.append(TimelineEntry(message=message, events=tuple(events.get(mid, ()))))
    return out


def _specs(n_messages: int) -> tuple[_data.HistorySpec, _data.HistorySpec]:
    focus = _data.HistorySpec(
        n_messages=n_messages,
        events_per_message=EVENTS_PER_MESSAGE,
        n_contacts=1,
        prefix="t-",
        seed=7,
    )
    noise = _data.HistorySpec(
        n_messages=NOISE_MESSAGES,
        events_per_message=EVENTS_PER_MESSAGE,
        n_contacts=NOISE_CONTACTS,
        prefix="n-",
        seed=11,
    )
    return focus, noise


class TimelineBench:
    """One database with the measured contact, and both ways to read its timeline.

    Args:
        backend: ``"sqlite"`` or ``"postgres"``.
        n_messages: Messages of the measured contact.
    """

    def __init__(self, backend: str, n_messages: int) -> None:
        self.backend = backend
        self.n_messages = n_messages
        self.keyring = Keyring.generate()
        self.focus, self.noise = _specs(n_messages)
        self.contact_id = self.focus.contact_id(0)
        self.repo: CommHistory[SQLRepository] | None = None
        self.query: Query | None = None
        self.ph = "?"
        self._close: list[Callable[[], object]] = []
        self.last: dict[str, list[TimelineEntry]] = {}
        atexit.register(self.close)

    def _url_and_query(self) -> tuple[str, Query]:
        if self.backend == "sqlite":
            workdir = Path(tempfile.mkdtemp(prefix="commhistory-bench-timeline-"))
            self._close.append(lambda: shutil.rmtree(workdir, ignore_errors=True))
            path = workdir / "timeline.db"
            url = f"sqlite:///{path}"
            return url, self._sqlite_query(path)
        import psycopg

        server = postgres_url()
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f"CREATE SCHEMA {schema}")

        def drop() -> None:
            with psycopg.connect(server, autocommit=True) as admin:
                admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

        self._close.append(drop)
        self.ph = "%s"
        sep = "&" if "?" in server else "?"
        url = f"{server}{sep}options={quote(f'-csearch_path={schema}', safe='')}"
        conn = psycopg.connect(server, options=f"-csearch_path={schema}", autocommit=True)
        self._close.insert(0, conn.close)

        def query(sql: str, params: tuple[Any, ...]) -> list[Row]:
            with conn.transaction():
                return conn.execute(sql, params).fetchall()

        return url, query

    def _sqlite_query(self, path: Path) -> Query:
        conn: sqlite3.Connection | None = None

        def query(sql: str, params: tuple[Any, ...]) -> list[Row]:
            nonlocal conn
            if conn is None:
                conn = sqlite3.connect(path, isolation_level=None)
                conn.execute("PRAGMA busy_timeout = 60000")
                self._close.insert(0, conn.close)
            return conn.execute(sql, params).fetchall()

        return query

    def setup(self) -> None:
        """Store the history and open both readers, once."""
        if self.repo is not None:
            return
        url, self.query = self._url_and_query()
        self.repo = open_repository(url, self.keyring)
        self._close.insert(0, self.repo.close)
        self.repo.record_messages(_data.messages(self.noise))
        self.repo.record_events(_data.events(self.noise))
        self.repo.record_messages(_data.messages(self.focus))
        self.repo.record_events(_data.events(self.focus))
        # Warm both paths once (connection, page cache, cipher cache) before timing.
        self.candidate()
        self.baseline()

    def candidate(self) -> None:
        """Read the timeline through the repository."""
        assert self.repo is not None
        self.last["repo"] = self.repo.timeline(self.contact_id)

    def baseline(self) -> None:
        """Read the timeline by hand, building records with their constructors."""
        assert self.query is not None
        self.last["hand"] = hand_timeline(self.query, self.ph, self.keyring, self.contact_id)

    def baseline_tight(self) -> None:
        """Read the timeline by hand with the bulk decryptor, without re-running validators."""
        assert self.query is not None
        self.last["hand"] = hand_timeline(
            self.query, self.ph, self.keyring, self.contact_id, tight=True
        )

    def extra(self) -> dict[str, Any]:
        """Check both results are equal and complete."""
        repo, hand = self.last.get("repo", []), self.last.get("hand", [])
        out = {
            "messages": len(repo),
            "events": sum(len(entry.events) for entry in repo),
            "background_messages": self.noise.n_messages,
            "background_events": self.noise.n_events,
            "results_equal": repo == hand,
            "source_revision": _data.source_revision(),
        }
        self.last.clear()
        return out

    def close(self) -> None:
        """Close connections and remove the database."""
        while self._close:
            self._close.pop(0)()
        self.repo = None


def postgres_url() -> str:
    """The PostgreSQL server's libpq URL."""
    url = os.environ.get(URL_ENV) or DEFAULT_URL
    if url.startswith("postgresql+psycopg://"):
        url = "postgresql://" + url.removeprefix("postgresql+psycopg://")
    return url


def postgres_reachable() -> bool:
    """Whether the PostgreSQL server answers within a few seconds."""
    try:
        import psycopg

        with psycopg.connect(postgres_url(), connect_timeout=3):
            return True
    except Exception:  # any failure means: skip the PostgreSQL run
        return False


def benchmarks() -> list[Benchmark]:
    """The timeline benchmarks; data is stored at the first setup, not here."""
    n_messages = message_count()
    backends = ["sqlite"] + (["postgres"] if postgres_reachable() else [])
    out = []
    for backend in backends:
        bench = TimelineBench(backend, n_messages)
        for suffix, baseline in (
            ("", bench.baseline),
            (".tight", bench.baseline_tight),
        ):
            out.append(
                Benchmark(
                    name=f"timeline.{backend}{suffix}",
                    candidate=bench.candidate,
                    baseline=baseline,
                    setup=bench.setup,
                    goal=GOAL,
                    repeats=REPEATS,
                    extra=bench.extra,
                    items=n_messages * (1 + EVENTS_PER_MESSAGE),
                )
            )
    return out


if __name__ == "__main__":
    sys.exit(main([benchmarks], parse_size(sys.argv[1:], MESSAGES_ENV, "--messages")))
