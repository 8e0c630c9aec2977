"""Real-process faults on real databases: an import killed mid-way, two imports at once.

Each test writes a canonical JSON lines file of messages and events (every
fourth message comes *after* its events, and some events name their message by
``provider`` + ``provider_message_id``), imports it in separate Python
processes (the ``commhistory import`` command when it exists, else a short
script doing what the command does), and checks the database afterwards with
plain SQL: every record stored exactly once, every event linked to its message,
and reports that add up.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from commhistory.convert import dumps
from commhistory.crypto import Keyring
from commhistory.model import Channel, Direction, Event, EventType, Message, Purpose
from commhistory.store.kpi import Outcome
from tests.conftest import pg_variant_url

SQL_BACKENDS = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.postgres),
    pytest.param("postgresql-partitioned", marks=pytest.mark.postgres),
]
T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
EVENTS_PER_MESSAGE = 5

# What ``commhistory import FILE --format json`` does; BARRIER (optional) is a
# path to wait for, so that two processes start ingesting at the same moment.
IMPORT_SCRIPT = """
import json, os, sys, time
from commhistory.convert import read_records
from commhistory.crypto import Keyring
from commhistory.facade import CommHistory, open_repository
path, url, keyring, batch_size, barrier = sys.argv[1:6]
with open_repository(url, Keyring.load(keyring), batch_size=int(batch_size)) as repo:
    if barrier:
        open(barrier + "." + str(os.getpid()), "w").close()
        while not os.path.exists(barrier):
            time.sleep(0.005)
    report = repo.ingest(read_records(path), source=os.path.basename(path))
print(json.dumps({"total": report.total, "inserted": report.inserted,
                  "duplicates": report.duplicates, "rejected": report.rejected,
                  "linked": report.linked}))
"""

# Rounds of recording messages to the same brand-new contacts as the other
# process (in the opposite order), the two processes released together each round.
CONTACTS_SCRIPT = """
import json, os, sys, time
from datetime import UTC, datetime
from commhistory.crypto import Keyring
from commhistory.model import Channel, Direction, Message
from commhistory.store import IngestReport
from commhistory.facade import CommHistory, open_repository
url, keyring, tag, other, rounds, size, workdir = sys.argv[1:8]
order = range(int(size)) if tag == "a" else range(int(size) - 1, -1, -1)
when = datetime(2026, 4, 1, tzinfo=UTC)
total = IngestReport()
with open_repository(url, Keyring.load(keyring), batch_size=100_000) as repo:
    for r in range(int(rounds)):
        batch = [
            Message(message_id=f"{tag}-{r}-{i}", channel=Channel.EMAIL,
                    direction=Direction.OUTBOUND, contact_id=f"r{r}-c{i}",
                    address=f"r{r}-user{i}@example.com", sent_at=when)
            for i in order
        ]
        open(os.path.join(workdir, f"ready.{r}.{tag}"), "w").close()
        while not os.path.exists(os.path.join(workdir, f"ready.{r}.{other}")):
            if os.path.exists(os.path.join(workdir, f"failed.{other}")):
                sys.exit("the other process failed")
            time.sleep(0.0002)
        try:
            total += repo.record_messages(batch)
        except BaseException:
            open(os.path.join(workdir, f"failed.{tag}"), "w").close()
            raise
print(json.dumps({"inserted": total.inserted, "duplicates": total.duplicates,
                  "rejected": total.rejected}))
"""


# ---------------------------------------------------------------- input


def history(n_messages: int, n_contacts: int = 97) -> list[Message | Event]:
    """Messages with five events each, in provider-like order."""
    out: list[Message | Event] = []
    for n in range(n_messages):
        contact = n % n_contacts
        mid = f"m{n:06d}"
        message = Message(
            message_id=mid,
            channel=Channel.EMAIL,
            direction=Direction.OUTBOUND,
            contact_id=f"c{contact:03d}",
            address=f"user{contact}@example.com",
            sent_at=T0 + timedelta(seconds=n),
            purpose=Purpose.MARKETING,
            campaign_id="spring",
            variant="AB"[n % 2],
            subject=f"Spring sale {n}",
            body=f"Hello customer {contact}, here is your coupon {n}.",
            provider="sendgrid",
            provider_message_id=f"sg-{n:06d}",
        )
        events = [
            Event(
                event_id=f"e{n:06d}-{k}",
                type=(EventType.DELIVERED, EventType.OPENED, EventType.CLICKED)[k % 3],
                occurred_at=T0 + timedelta(seconds=n, minutes=k + 1),
                # The last event names its message the way provider webhooks do.
                message_id=None if k == EVENTS_PER_MESSAGE - 1 else mid,
                provider="sendgrid",
                provider_message_id=f"sg-{n:06d}",
                provider_event_id=f"sg-ev-{n:06d}-{k}",
                url=f"https://shop.example.com/c/{n}?t={k}",
                user_agent="Mozilla/5.0 (X11; Linux x86_64)",
                ip=f"198.51.100.{(n + k) % 250 + 1}",
            )
            for k in range(EVENTS_PER_MESSAGE)
        ]
        if n % 4 == 3:  # the provider's events arrive before the sender's log
            out.extend(events)
            out.append(message)
        else:
            out.append(message)
            out.extend(events)
    return out


def record_id(record: Message | Event) -> str:
    return record.message_id if isinstance(record, Message) else record.event_id


def write_jsonl(path: Path, records: list[Message | Event]) -> Path:
    path.write_text("".join(dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# ---------------------------------------------------------------- processes


@functools.cache
def cli_import_available() -> bool:
    probe = subprocess.run(
        [sys.executable, "-m", "commhistory", "import", "--help"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def import_command(path: Path, url: str, keyring: Path, batch_size: int) -> list[str]:
    """The ``commhistory import`` command, or the equivalent script when it is not wired."""
    if cli_import_available():
        return [
            sys.executable, "-m", "commhistory", "import", str(path), "--db", url,
            "--keyring", str(keyring), "--batch-size", str(batch_size), "--format", "json",
        ]  # fmt: skip
    return script_command(path, url, keyring, batch_size)


def script_command(
    path: Path, url: str, keyring: Path, batch_size: int, barrier: Path | None = None
) -> list[str]:
    return [
        sys.executable, "-c", IMPORT_SCRIPT, str(path), url, str(keyring), str(batch_size),
        "" if barrier is None else str(barrier),
    ]  # fmt: skip


def start(command: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy()
    )


def reports_of(*processes: subprocess.Popen[str], timeout: float = 60) -> list[dict[str, int]]:
    """Wait for the processes; fail with every failed one's error output; return their reports."""
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=timeout))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    failed = [
        f"process {n} exited {p.returncode}:\n{err[-2500:]}"
        for n, (p, (_, err)) in enumerate(zip(processes, outputs, strict=True))
        if p.returncode != 0
    ]
    assert not failed, "\n".join(failed)
    return [json.loads(out[out.index("{") :]) for out, _ in outputs]


def report_of(process: subprocess.Popen[str]) -> dict[str, int]:
    return reports_of(process)[0]


# ---------------------------------------------------------------- database checks


@pytest.fixture(params=SQL_BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return pg_variant_url(request, request.param)


@pytest.fixture
def keyring_file(tmp_path: Path) -> Path:
    path = tmp_path / "test.keyring"
    Keyring.generate().save(path)
    return path


@pytest.fixture
def db(url: str) -> Iterator[sa.Engine]:
    """A plain engine on the same database, for checking from outside the store."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    yield engine
    engine.dispose()


def scalars(engine: sa.Engine, sql: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.exec_driver_sql(sql).scalars())


def stored_ids(engine: sa.Engine) -> list[str]:
    """Every message and event id stored, duplicates included."""
    return scalars(engine, "SELECT message_id FROM messages") + scalars(
        engine, "SELECT event_id FROM events"
    )


def stored_count(engine: sa.Engine) -> int:
    """Messages plus events stored; 0 while the schema does not exist yet."""
    try:
        with engine.connect() as conn:
            return int(
                conn.exec_driver_sql(
                    "SELECT (SELECT count(*) FROM messages) + (SELECT count(*) FROM events)"
                ).scalar_one()
            )
    except sa.exc.DBAPIError:
        return 0


def assert_complete(engine: sa.Engine, records: list[Message | Event]) -> None:
    """Every record stored exactly once, every event linked to its message's contact."""
    messages = [r for r in records if isinstance(r, Message)]
    events = [r for r in records if isinstance(r, Event)]
    ids = stored_ids(engine)
    assert len(ids) == len(records)
    assert sorted(ids) == sorted(record_id(r) for r in records)
    assert scalars(engine, "SELECT count(DISTINCT message_id) FROM messages") == [len(messages)]
    assert scalars(engine, "SELECT count(DISTINCT event_id) FROM events") == [len(events)]
    assert scalars(engine, "SELECT count(*) FROM events WHERE contact_id IS NULL") == [0]
    assert scalars(engine, "SELECT count(*) FROM events WHERE message_id IS NULL") == [0]
    # Each event sits with its own message's contact.
    assert scalars(
        engine,
        "SELECT count(*) FROM events e JOIN messages m ON m.message_id = e.message_id "
        "WHERE m.contact_id = e.contact_id",
    ) == [len(events)]
    contacts = {m.contact_id for m in messages}
    assert scalars(engine, "SELECT count(*) FROM contacts") == [len(contacts)]
    assert scalars(engine, "SELECT count(*) FROM dead_letters") == [0]
    # Each message's KPI outcomes hold all its events (delivered, opened, clicked),
    # wherever they came from: before it, after it, from either process.
    seen = Outcome.OPENED | Outcome.HUMAN_OPENED | Outcome.CLICKED | Outcome.HUMAN_CLICKED
    assert scalars(engine, "SELECT DISTINCT outcomes FROM messages") == [int(seen)]


# ---------------------------------------------------------------- tests


def test_import_killed_midway_then_rerun_stores_everything_once(
    tmp_path: Path, url: str, keyring_file: Path, db: sa.Engine
) -> None:
    batch_size = 200
    records = history(2000)  # 12,000 lines: a couple of seconds of importing
    n = len(records)
    path = write_jsonl(tmp_path / "history.jsonl", records)
    command = import_command(path, url, keyring_file, batch_size)

    victim = start(command)
    try:
        deadline = time.monotonic() + 60
        while stored_count(db) < 3 * batch_size:
            assert victim.poll() is None, "the import ended before it could be killed"
            assert time.monotonic() < deadline, "the import committed nothing for a minute"
            time.sleep(0.005)
        victim.send_signal(signal.SIGKILL)
    finally:
        victim.kill()
        victim.communicate()
    assert victim.returncode == -signal.SIGKILL

    # What survived is exactly the first k whole batches: no partial batch.
    ids = stored_ids(db)
    assert len(ids) % batch_size == 0
    committed = len(ids)
    assert 3 * batch_size <= committed < n, "killed too late to test anything"
    assert sorted(ids) == sorted(record_id(r) for r in records[:committed])

    report = report_of(start(command))

    assert report["total"] == n
    assert report["inserted"] + report["duplicates"] == n
    assert report["duplicates"] == committed
    assert report["inserted"] == n - committed
    assert report["rejected"] == 0
    assert_complete(db, records)


def test_two_processes_importing_overlapping_files_store_each_record_once(
    tmp_path: Path, url: str, keyring_file: Path, db: sa.Engine
) -> None:
    batch_size = 100
    # Few contacts: both processes create the same new contacts at the same time.
    records = history(1000, n_contacts=13)  # 6,000 records
    n = len(records)
    cut_a, cut_b = n * 6 // 10, n * 4 // 10  # A: [0, 60%), B: [40%, 100%)
    overlap = cut_a - cut_b
    file_a = write_jsonl(tmp_path / "a.jsonl", records[:cut_a])
    file_b = write_jsonl(tmp_path / "b.jsonl", records[cut_b:])
    barrier = tmp_path / "go"
    # Create the schema first, so both processes start on equal terms.
    report_of(start(script_command(write_jsonl(tmp_path / "empty.jsonl", []), url,
                                   keyring_file, batch_size)))  # fmt: skip

    a = start(script_command(file_a, url, keyring_file, batch_size, barrier))
    b = start(script_command(file_b, url, keyring_file, batch_size, barrier))
    deadline = time.monotonic() + 60
    while (
        len(list(tmp_path.glob("go.*"))) < 2  # until both have opened the repository
        and a.poll() is None
        and b.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.005)
    barrier.touch()
    report_a, report_b = reports_of(a, b)

    assert report_a["total"] == cut_a
    assert report_b["total"] == n - cut_b
    assert report_a["rejected"] == report_b["rejected"] == 0
    assert report_a["inserted"] + report_b["inserted"] == n
    assert report_a["duplicates"] + report_b["duplicates"] == overlap
    assert_complete(db, records)


def test_two_processes_creating_the_same_new_contacts_at_once(
    tmp_path: Path, url: str, keyring_file: Path, db: sa.Engine
) -> None:
    # SQLite serializes writers (BEGIN IMMEDIATE), so a few rounds show it; PostgreSQL
    # runs both transactions at once, and needs more rounds to meet every interleaving.
    rounds, size = (8 if url.startswith("postgresql") else 3), 800
    # Create the schema first, so both processes start on equal terms.
    report_of(start(script_command(write_jsonl(tmp_path / "empty.jsonl", []), url,
                                   keyring_file, 10)))  # fmt: skip

    def worker(tag: str, other: str) -> subprocess.Popen[str]:
        args = (url, str(keyring_file), tag, other, str(rounds), str(size), str(tmp_path))
        return start([sys.executable, "-c", CONTACTS_SCRIPT, *args])

    report_a, report_b = reports_of(worker("a", "b"), worker("b", "a"))

    assert report_a == report_b == {"inserted": rounds * size, "duplicates": 0, "rejected": 0}
    assert scalars(db, "SELECT count(*) FROM contacts") == [rounds * size]
    assert scalars(db, "SELECT count(*) FROM messages") == [2 * rounds * size]
    assert scalars(db, "SELECT count(*) FROM addresses") == [rounds * size]
    # Both processes used the one data key that won: every message decrypts.
    assert scalars(
        db,
        "SELECT count(*) FROM messages m JOIN contacts c ON c.contact_id = m.contact_id",
    ) == [2 * rounds * size]
