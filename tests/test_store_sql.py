"""SQL-only behaviour: encryption at rest, keys, rotation, real database faults, concurrency."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from commhistory.crypto import Keyring
from commhistory.errors import (
    DecryptionError,
    KeyNotFoundError,
    StorageError,
)
from commhistory.facade import CommHistory, open_repository
from commhistory.model import Channel
from commhistory.store import IngestReport, SQLRepository, rotate_keys
from tests.conftest import pg_variant_url
from tests.test_store_contract import LINE_ID, consent, event, full_event, message

SQL_BACKENDS = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.postgres),
    pytest.param("postgresql-partitioned", marks=pytest.mark.postgres),
]


@pytest.fixture(params=SQL_BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return pg_variant_url(request, request.param)


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.generate()


@pytest.fixture
def repo(url: str, keyring: Keyring) -> Iterator[CommHistory[SQLRepository]]:
    with open_repository(url, keyring, batch_size=3) as r:
        yield r


def _scalar(repo: CommHistory[SQLRepository], sql: str) -> Any:
    with repo.store.engine.connect() as conn:
        return conn.exec_driver_sql(sql).scalar()


def _fill(repo: CommHistory[SQLRepository]) -> None:
    repo.record_messages([message(n, contact=f"c{n % 4}") for n in range(1, 9)])
    repo.record_events([full_event(1, "m1"), event(2, "m2"), event(3, "m-later")])
    repo.record_events(["junk"])  # type: ignore[list-item]
    repo.record_consent([consent()])


# ---------------------------------------------------------------- faults


def test_database_error_midway_rolls_back_the_whole_batch(
    repo: CommHistory[SQLRepository],
) -> None:
    repo.record_messages([message(1)])
    with repo.store.engine.begin() as conn:
        if repo.store.dialect == "sqlite":
            conn.exec_driver_sql(
                "CREATE TRIGGER boom BEFORE INSERT ON events WHEN NEW.event_id = 'e5' "
                "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
            )
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.event_id = 'e5' THEN RAISE EXCEPTION 'injected failure'; END IF; "
                "RETURN NEW; END $$"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER boom BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION boom()"
            )
    # Batch size 3: e1-e3 commit; the batch e4, e5, e6 and message m2 fail together.
    items = [event(n) for n in range(1, 7)]
    with pytest.raises(StorageError) as info:
        repo.ingest(
            [*(_line(i, e) for i, e in enumerate(items[:3], 1)), _line(4, message(2)),
             *(_line(i, e) for i, e in enumerate(items[3:], 5))],
            source="f",
        )  # fmt: skip
    assert "injected" not in str(info.value)  # database messages are not passed on
    assert _scalar(repo, "SELECT count(*) FROM events") == 3
    assert _scalar(repo, "SELECT count(*) FROM messages") == 1
    assert [e.event_id for e in repo.timeline("c1")[0].events] == ["e1", "e2", "e3"]
    with repo.store.engine.begin() as conn:
        conn.exec_driver_sql(
            "DROP TRIGGER boom" + (" ON events" if repo.store.dialect != "sqlite" else "")
        )
    # The failed batch left no stale cache: retrying stores it completely.
    assert repo.record_messages([message(2)]) == IngestReport(inserted=1)
    assert repo.record_events(items) == IngestReport(inserted=3, duplicates=3)


def test_a_failure_inside_a_large_batch_rolls_it_back_whole(url: str, keyring: Keyring) -> None:
    # Batches of 600 events: on PostgreSQL large enough to be copied straight into
    # events (no lookup first), so the failure happens inside that COPY.
    with open_repository(url, keyring, batch_size=600) as repo:
        repo.record_messages([message(1)])
        _boom_on(repo, "e900")
        items = [event(n) for n in range(1200)]
        with pytest.raises(StorageError):
            repo.record_events(items)
        assert _scalar(repo, "SELECT count(*) FROM events") == 600
        assert _scalar(repo, "SELECT count(*) FROM events WHERE event_id = 'e599'") == 1
        assert _scalar(repo, "SELECT count(*) FROM events WHERE event_id = 'e600'") == 0
        _drop_boom(repo)
        assert repo.record_events(items) == IngestReport(inserted=600, duplicates=600)


def _boom_on(repo: CommHistory[SQLRepository], event_id: str) -> None:
    with repo.store.engine.begin() as conn:
        if repo.store.dialect == "sqlite":
            conn.exec_driver_sql(
                f"CREATE TRIGGER boom BEFORE INSERT ON events WHEN NEW.event_id = '{event_id}' "
                "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
            )
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF NEW.event_id = '{event_id}' THEN RAISE EXCEPTION 'injected failure'; "
                "END IF; RETURN NEW; END $$"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER boom BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION boom()"
            )


def _drop_boom(repo: CommHistory[SQLRepository]) -> None:
    with repo.store.engine.begin() as conn:
        conn.exec_driver_sql(
            "DROP TRIGGER boom" + (" ON events" if repo.store.dialect != "sqlite" else "")
        )


def _line(n: int, record: Any) -> Any:
    from commhistory.convert import ParsedLine, dumps

    return ParsedLine(line=n, raw=dumps(record), record=record)


def test_an_address_row_is_written_once_and_only_remembered_once_committed(
    repo: CommHistory[SQLRepository],
) -> None:
    # Batches of 3: c1's address comes in three batches and is stored once.
    repo.record_messages([message(n, contact="c1") for n in range(1, 10)])
    assert _scalar(repo, "SELECT count(*) FROM addresses WHERE contact_id = 'c1'") == 1
    # A batch that fails after writing c7's address row teaches nothing: the next
    # message of c7 writes the row again, so c7 is found by its address.
    _boom_on(repo, "e-x")
    with pytest.raises(StorageError):
        repo.ingest(
            [_line(1, message(20, contact="c7")), _line(2, event("-x", "m20"))], source="f"
        )
    _drop_boom(repo)
    assert repo.record_messages([message(21, contact="c7")]) == IngestReport(inserted=1)
    assert repo.find_contacts(email="userc7@example.com") == ["c7"]


def test_storage_errors_do_not_leak_values(repo: CommHistory[SQLRepository]) -> None:
    repo.close()
    with pytest.raises(StorageError, match="closed"):
        repo.timeline("c1")


# ---------------------------------------------------------------- encryption at rest


def test_no_plaintext_personal_values_in_sqlite_file(tmp_path: Path, keyring: Keyring) -> None:
    db = tmp_path / "scan.db"
    secrets_ = [
        "userc1@example.com",
        "+819012345678",
        LINE_ID,
        "Dear customer 1",
        "件名 1",
        "203.0.113.9",
        "user unknown",
        "t=secret",
        "secret agent",
        "198.51.100.7",
        "ConsentBrowser",
        "not json at all",
        "vip",
    ]
    with open_repository(f"sqlite:///{db}", keyring) as repo:
        repo.record_messages(
            [
                message(1),
                message(2, channel=Channel.SMS, address="+819012345678"),
                message(3, channel=Channel.LINE, address=LINE_ID),
            ]
        )
        repo.record_events([full_event(1), full_event(2, "m-orphan")])
        repo.record_consent([consent()])
        repo.ingest([_bad_line()], source="scan")
        # Scan while the WAL still holds the pages, then after the checkpoint.
        blobs = [p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("scan.db")]
    blobs += [p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("scan.db")]
    assert any(len(b) for b in blobs)
    for value in secrets_:
        for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
            needle = value.encode(encoding)
            assert not any(needle in b for b in blobs), (value, encoding)


def _bad_line() -> Any:
    from commhistory.convert import ParsedLine
    from commhistory.errors import PayloadError

    return ParsedLine(
        line=1, raw="not json at all", error=PayloadError(field="<line>", reason="not JSON")
    )


def test_ciphertext_moved_to_another_row_fails_to_decrypt(
    repo: CommHistory[SQLRepository],
) -> None:
    repo.record_messages([message(1), message(2)])
    with repo.store.engine.begin() as conn:
        body = conn.exec_driver_sql("SELECT body FROM messages WHERE message_id = 'm1'").scalar()
        ph = repo.store.backend.ph
        conn.exec_driver_sql(f"UPDATE messages SET body = {ph} WHERE message_id = 'm2'", (body,))
    with pytest.raises(DecryptionError) as info:
        repo.timeline("c1")
    assert "Dear customer" not in str(info.value)


def test_orphans_are_encrypted_and_linked(repo: CommHistory[SQLRepository]) -> None:
    repo.record_events([full_event(1, "m1")])
    assert _scalar(repo, "SELECT count(*) FROM events WHERE contact_id IS NULL") == 1
    assert _scalar(repo, "SELECT orphan_key_id FROM events") == repo.store.keyring.current_key_id
    assert repo.record_messages([message(1)]).linked == 1
    assert _scalar(repo, "SELECT count(*) FROM events WHERE orphan_key_id IS NULL") == 1
    assert repo.timeline("c1")[0].events == (full_event(1, "m1"),)


def test_revenue_is_stored_exactly_for_sql_sums(repo: CommHistory[SQLRepository]) -> None:
    from decimal import Decimal

    repo.record_messages([message(1)])
    amounts = ["0.1", "0.2", "4980", "-0.3", "12.345678"]
    repo.record_events(
        [event(n, revenue=Decimal(a), currency="USD") for n, a in enumerate(amounts)]
    )
    total = _scalar(repo, "SELECT sum(revenue_micros) FROM events")
    assert Decimal(total) / 1_000_000 == sum(Decimal(a) for a in amounts)


# ---------------------------------------------------------------- keys


def test_wrong_keyring_names_the_key_id(url: str, keyring: Keyring) -> None:
    with open_repository(url, keyring) as repo:
        _fill(repo)
    with pytest.raises(KeyNotFoundError) as info:
        open_repository(url, Keyring.generate())
    assert info.value.key_id == keyring.current_key_id
    assert keyring.current_key_id in str(info.value)


def test_retired_key_before_rewrap_names_the_key_id(url: str, keyring: Keyring) -> None:
    old = keyring.current_key_id
    with open_repository(url, keyring) as repo:
        _fill(repo)
    keyring.rotate(index=True)
    open_repository(url, keyring).close()  # the database learns the new key id
    keyring.retire(old)  # ... but nothing was re-wrapped
    with open_repository(url, keyring) as repo, pytest.raises(KeyNotFoundError) as info:
        repo.timeline("c1")
    assert info.value.key_id == old
    assert old in str(info.value)


def test_only_retired_keys_left_says_retired(url: str, keyring: Keyring) -> None:
    old = keyring.current_key_id
    with open_repository(url, keyring) as repo:
        _fill(repo)
    keyring.rotate(index=True)
    keyring.retire(old)
    with pytest.raises(KeyNotFoundError) as info:
        open_repository(url, keyring)
    assert info.value.key_id == old
    assert "retired" in str(info.value)


def test_rotation_rewraps_everything_and_reads_keep_working(url: str, keyring: Keyring) -> None:
    old = keyring.current_key_id
    with open_repository(url, keyring) as repo:
        _fill(repo)
        before = repo.timeline("c1")
        letters = repo.dead_letters()
        new = keyring.rotate(index=True)
        # Writes work mid-rotation: new contacts are wrapped under the new key.
        repo.record_messages([message(20, contact="c-new")])

        report = rotate_keys(repo.store, keyring, batch_size=2, reindex=True)

        assert report.key_id == new
        assert report.rewrapped == 4  # c0..c3; c-new was already under the new key
        assert report.orphans == 1
        assert report.dead_letters == 1
        assert report.reindexed == 4
        assert report.batches == 2 + 1 + 1 + 2
        assert _scalar(repo, f"SELECT count(*) FROM contacts WHERE wrap_key_id <> '{new}'") == 0
        assert rotate_keys(repo.store, keyring).batches == 0  # nothing left to do
    keyring.retire(old)
    with open_repository(url, keyring) as repo:
        assert repo.timeline("c1") == before
        assert [d.raw for d in repo.dead_letters()] == [d.raw for d in letters]
        assert repo.record_messages([message(30, message_id="m-later", contact="c9")]).linked == 1
        assert repo.find_contacts(email="userc1@example.com") == ["c1"]


def test_interrupted_rotation_resumes(url: str, keyring: Keyring) -> None:
    with open_repository(url, keyring) as repo:
        _fill(repo)
        keyring.rotate()

        class StopError(Exception):
            pass

        def stop_after_first(step: str, done: int) -> None:
            raise StopError

        with pytest.raises(StopError):
            rotate_keys(repo.store, keyring, batch_size=1, progress=stop_after_first)
        moved = _scalar(
            repo, f"SELECT count(*) FROM contacts WHERE wrap_key_id = '{keyring.current_key_id}'"
        )
        assert moved == 1
        rest = rotate_keys(repo.store, keyring, batch_size=1)
        assert rest.rewrapped == 3
        assert repo.timeline("c1")


def test_reindex_after_index_key_change(url: str, keyring: Keyring) -> None:
    old = keyring.current_key_id
    with open_repository(url, keyring) as repo:
        repo.record_messages(
            [
                message(1, contact="c1", address="taro@example.com"),
                message(2, contact="c2", channel=Channel.SMS, address="+819012345678"),
            ]
        )
        new = keyring.rotate(index=True)
        # Before reindexing, rows under the old index key are still found.
        assert repo.find_contacts(email="taro@example.com") == ["c1"]
        repo.record_messages([message(3, contact="c3", address="taro@example.com")])

        report = rotate_keys(repo.store, keyring, reindex=True)

        assert report.reindexed == 2
        assert _scalar(repo, f"SELECT count(*) FROM addresses WHERE index_key_id <> '{new}'") == 0
    keyring.retire(old)
    with open_repository(url, keyring) as repo:
        assert repo.find_contacts(email="taro@example.com") == ["c1", "c3"]
        assert repo.find_contacts(phone="+819012345678") == ["c2"]


def test_key_metadata_records_key_ids_only(
    repo: CommHistory[SQLRepository], keyring: Keyring
) -> None:
    with repo.store.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT key_id, is_current, is_index FROM key_metadata").all()
    assert [(r[0], bool(r[1]), bool(r[2])) for r in rows] == [(keyring.current_key_id, True, True)]


# ---------------------------------------------------------------- concurrency


def _ingest_range(url: str, keyring_path: str, start: int, stop: int) -> tuple[int, int]:
    keyring = Keyring.load(keyring_path)
    with open_repository(url, keyring, batch_size=25) as repo:
        r1 = repo.record_messages(message(n, contact=f"c{n % 13}") for n in range(start, stop))
        r2 = repo.record_events(event(n, f"m{n % 300}") for n in range(start, stop))
    return r1.inserted + r2.inserted, r1.duplicates + r2.duplicates


def test_two_processes_ingesting_overlapping_input(
    url: str, keyring: Keyring, tmp_path: Path
) -> None:
    path = tmp_path / "kr.json"
    keyring.save(path)
    open_repository(url, keyring).close()  # schema first, as `commhistory init` does
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = pool.starmap(
            _ingest_range, [(url, str(path), 0, 200), (url, str(path), 100, 300)]
        )
    inserted = sum(r[0] for r in results)
    duplicates = sum(r[1] for r in results)
    assert inserted == 300 + 300
    assert duplicates == 100 + 100
    with open_repository(url, keyring) as repo:
        assert _scalar(repo, "SELECT count(*) FROM messages") == 300
        assert _scalar(repo, "SELECT count(*) FROM events") == 300
        assert _scalar(repo, "SELECT count(*) FROM events WHERE contact_id IS NULL") == 0
        assert _scalar(repo, "SELECT count(*) FROM contacts") == 13
        assert sum(len(e.events) for e in repo.timeline("c1")) == sum(
            1 for n in range(300) if (n % 300) % 13 == 1
        )


def _bulk_event(n: int) -> Any:
    """An event with a provider id; every seventh names a message that never arrives."""
    return full_event(n, "mx99" if n % 7 == 0 else f"m{n % 20}")


def test_large_batches_skip_stored_and_repeated_events(url: str, keyring: Keyring) -> None:
    # Batches of 1,000: on PostgreSQL large batches are copied straight into events
    # until one meets stored events (its COPY fails, the batch goes through the
    # staging table), after which batches look their events up first.
    with open_repository(url, keyring, batch_size=1000) as repo:
        repo.record_messages([message(n, contact=f"c{n % 3}") for n in range(20)])
        assert repo.record_events([_bulk_event(n) for n in range(500, 800)]) == IngestReport(
            inserted=300
        )
        renamed = event("x9", "m1", provider="sendgrid", provider_event_id="sg-ev-2060")
        base = [_bulk_event(n) for n in range(3000)]  # e500-e799 stored already
        items = [
            *base[:2100],
            _bulk_event(2050),  # repeated in its batch (the third, copied straight in)
            renamed,  # another id for the provider event of e2060, in the same batch
            *base[2100:],
        ]
        report = repo.record_events(items)
        assert report == IngestReport(inserted=2700, duplicates=302)
        assert repo.record_events(items) == IngestReport(duplicates=3002)
        assert repo.record_events([_bulk_event(n) for n in range(3000, 4200)]) == IngestReport(
            inserted=1200
        )
        assert _scalar(repo, "SELECT count(*) FROM events") == 4200
        assert _scalar(repo, "SELECT count(*) FROM events WHERE contact_id IS NULL") == 600
        assert _scalar(repo, "SELECT count(*) FROM events WHERE event_id = 'ex9'") == 0
        # The orphans are linked when their message arrives.
        assert repo.record_messages([message("x99", contact="c9")]).linked == 600
        assert len(repo.timeline("c9")[0].events) == 600
        events = [e for entry in repo.timeline("c1") for e in entry.events]
        assert {e.url for e in events} == {"https://example.com/?t=secret"}


def _bulk_range(url: str, keyring_path: str, reverse: bool) -> tuple[int, int]:
    keyring = Keyring.load(keyring_path)
    items = [_bulk_event(n) for n in range(3000)]
    with open_repository(url, keyring, batch_size=1000) as repo:
        report = repo.record_events(reversed(items) if reverse else items)
    return report.inserted, report.duplicates


def test_two_bulk_writers_racing_over_the_same_events(
    url: str, keyring: Keyring, tmp_path: Path
) -> None:
    path = tmp_path / "kr.json"
    keyring.save(path)
    with open_repository(url, keyring) as repo:
        repo.record_messages([message(n, contact=f"c{n % 3}") for n in range(20)])
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = pool.starmap(_bulk_range, [(url, str(path), False), (url, str(path), True)])
    assert sum(r[0] for r in results) == 3000
    assert sum(r[1] for r in results) == 3000
    with open_repository(url, keyring) as repo:
        assert _scalar(repo, "SELECT count(*) FROM events") == 3000
        assert _scalar(repo, "SELECT count(DISTINCT event_id) FROM events") == 3000
        stored = sum(len(entry.events) for c in ("c0", "c1", "c2") for entry in repo.timeline(c))
        assert stored == 3000 - 429  # all but the orphans (every seventh)


def test_postgres_url_scheme_maps_to_psycopg() -> None:
    from commhistory.store._engine import normalize_url

    assert normalize_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:///x.db").drivername == "sqlite"
    with pytest.raises(StorageError):
        normalize_url("mysql://u@h/db")
    assert normalize_url("postgres://u@h/db").get_backend_name() == "postgresql"
