"""Masked addresses: stored at ingest, shown to masked readers, deleted by erasure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic import command

from commhistory.audit import masked_timeline
from commhistory.cli import main
from commhistory.crypto import Keyring
from commhistory.errors import InvalidInputError
from commhistory.facade import CommHistory, open_repository
from commhistory.model import Channel, EventType
from commhistory.store import (
    MaskBackfillReport,
    SQLRepository,
    backfill_masks,
    head_revision,
    upgrade,
)
from commhistory.store._engine import create_engine
from commhistory.store.migrate import _config
from tests.test_cli_store import EXAMPLES
from tests.test_consent_support import ev, msg, repo

__all__ = ["repo"]

LINE_ID = "U" + "0123456789abcdef" * 2
VOICE = "+81312345678"


def _history(repo: Any) -> None:
    repo.record_messages(
        [
            msg("m1", "c1", address="taro@example.com", day=1),
            msg("s1", "c1", channel=Channel.SMS, day=2),
            msg("v1", "c1", channel=Channel.VOICE, address=VOICE, day=3),
            msg("l1", "c1", channel=Channel.LINE, day=4),
            msg("p1", "c1", channel=Channel.PUSH, address="fcm:token-0123456789", day=5),
            msg("o1", "c1", channel=Channel.POSTAL, address="1-2-3 Chiyoda, Tokyo", day=6),
            msg("m2", "c2", day=1),
        ]
    )
    repo.record_events(
        [
            ev("e1", "m1", EventType.DELIVERED, day=1.1),
            ev("e2", "m1", EventType.OPENED, day=1.2),
            ev("e3", "s1", EventType.DELIVERED, day=2.1),
            ev("e4", "m2", EventType.CLICKED, day=1.3),
        ]
    )


C1_MASKS = [
    "t***@example.com",
    "+81 90-****-5678",
    "+81 31-****-5678",
    "U***cdef",
    None,  # a push token has no mask
    None,  # nor has a postal address
]


def _stored_masks(repo: CommHistory[SQLRepository], contact_id: str) -> list[str | None]:
    ph = repo.store.backend.ph
    with repo.store.transaction(read=True) as conn:
        return [
            r[0]
            for r in conn.exec_driver_sql(
                f"SELECT address_masked FROM messages WHERE contact_id = {ph} "
                "ORDER BY sent_at, message_id",
                (contact_id,),
            )
        ]


def test_masked_timeline_shows_the_same_masks_on_every_repository(repo: Any) -> None:
    _history(repo)
    entries = masked_timeline(repo.store, "c1")
    assert [e.message.address for e in entries] == C1_MASKS
    assert [e.message.address for e in masked_timeline(repo.store, "c2")] == ["c***@example.com"]
    if isinstance(repo.store, SQLRepository):
        assert _stored_masks(repo, "c1") == C1_MASKS


def test_duplicates_keep_the_first_mask(repo: Any) -> None:
    repo.record_messages([msg("m1", "c1", day=1)])
    repo.record_messages([msg("m1", "c1", day=1, address="other@example.org")])
    assert [e.message.address for e in masked_timeline(repo.store, "c1")] == ["c***@example.com"]


def _kpis(repo: Any) -> Any:
    return repo.kpis(by=("campaign_id", "variant"))


def test_erasure_deletes_the_masks_and_keeps_kpis(repo: Any) -> None:
    _history(repo)
    before = _kpis(repo)

    report = repo.erase_subject("c1")

    destroyed = {item.what: item for item in report.destroyed}
    assert destroyed["masked_addresses"].count == 4  # email, SMS, voice, LINE
    assert _kpis(repo) == before
    assert masked_timeline(repo.store, "c1") == []
    assert [e.message.address for e in masked_timeline(repo.store, "c2")] == ["c***@example.com"]
    if isinstance(repo.store, SQLRepository):
        assert _stored_masks(repo, "c1") == [None] * 6
        assert _stored_masks(repo, "c2") == ["c***@example.com"]
    again = repo.erase_subject("c1")
    assert {i.what: i.count for i in again.destroyed}["masked_addresses"] == 0


def _files(directory: Path, stem: str) -> bytes:
    return b"".join(p.read_bytes() for p in directory.iterdir() if p.name.startswith(stem))


def test_sqlite_file_and_wal_hold_masks_never_addresses_and_no_mask_after_erasure(
    tmp_path: Path,
) -> None:
    masks = [m.encode() for m in C1_MASKS if m is not None]
    addresses = [b"taro@example.com", b"+819012345678", VOICE.encode(), LINE_ID.encode()]
    with open_repository(f"sqlite:///{tmp_path / 'e.db'}", Keyring.generate()) as repo:
        _history(repo)
        stored = _files(tmp_path, "e.db")
        assert all(m in stored for m in masks)  # the masks are there, in the clear
        assert not any(a in stored for a in addresses)

        repo.erase_subject("c1")

        # Still open: the erasure overwrote the rows and truncated the WAL.
        after = _files(tmp_path, "e.db")
        assert not any(m in after for m in masks)
        assert b"c***@example.com" in after  # c2's mask stays: the scan does see masks
    closed = _files(tmp_path, "e.db")
    assert not any(m in closed for m in masks)
    assert b"c***@example.com" in closed
    assert not any(a in closed for a in addresses)


# ---------------------------------------------------------------------- backfill


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'b.db'}"
    pg: str = request.getfixturevalue("pg_url")
    return pg


def _back_to_0004_and_up(url: str) -> None:
    """Make every stored message a pre-0005 row: drop the column, add it back empty."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            command.downgrade(_config(conn), "0004")
            conn.commit()
    finally:
        engine.dispose()
    assert upgrade(url) == head_revision()


def _pre_0005_history(url: str, keyring: Keyring) -> None:
    with open_repository(url, keyring) as repo:
        _history(repo)
        repo.record_messages([msg("m3", "c3", day=1)])
        repo.erase_subject("c3")
    _back_to_0004_and_up(url)


def test_backfill_masks_rows_stored_before_0005_and_skips_erased_contacts(url: str) -> None:
    keyring = Keyring.generate()
    _pre_0005_history(url, keyring)
    with open_repository(url, keyring) as repo:
        assert [e.message.address for e in masked_timeline(repo.store, "c1")] == [None] * 6
        seen: list[int] = []

        report = backfill_masks(repo.store, batch_size=2, progress=seen.append)

        assert report == MaskBackfillReport(masked=5, batches=3)  # c1: 4, c2: 1
        assert seen == [2, 4, 5]
        assert [e.message.address for e in masked_timeline(repo.store, "c1")] == C1_MASKS
        assert _stored_masks(repo, "c2") == ["c***@example.com"]
        assert _stored_masks(repo, "c3") == [None]  # erased: nothing to decrypt, nothing shown
        assert backfill_masks(repo.store) == MaskBackfillReport()  # nothing left: writes nothing


class _InterruptedError(Exception):
    pass


def test_an_interrupted_backfill_keeps_its_batches_and_resumes(url: str) -> None:
    keyring = Keyring.generate()
    _pre_0005_history(url, keyring)

    def stop(done: int) -> None:
        raise _InterruptedError

    with open_repository(url, keyring) as repo:
        with pytest.raises(_InterruptedError):
            backfill_masks(repo.store, batch_size=3, progress=stop)
        first = _stored_masks(repo, "c1") + _stored_masks(repo, "c2")
        assert sum(m is not None for m in first) == 3  # the first batch was committed

        assert backfill_masks(repo.store, batch_size=3) == MaskBackfillReport(masked=2, batches=1)
        assert _stored_masks(repo, "c1") == C1_MASKS


def test_backfill_refuses_a_bad_batch_size(url: str) -> None:
    with (
        open_repository(url, Keyring.generate()) as repo,
        pytest.raises(InvalidInputError) as info,
    ):
        backfill_masks(repo.store, batch_size=0)
    assert info.value.field == "batch_size"


def test_backfill_masks_command(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--db", url, "--keyring", str(tmp_path / "k.keyring")]
    assert main(["import", str(EXAMPLES / "history.jsonl"), *args]) == 0
    _back_to_0004_and_up(url)
    capsys.readouterr()

    assert main(["backfill-masks", *args, "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    with open_repository(url, Keyring.load(tmp_path / "k.keyring")) as repo:
        ph = repo.store.backend.ph
        with repo.store.transaction(read=True) as conn:
            masks: dict[str, str | None] = dict(
                conn.exec_driver_sql(
                    f"SELECT message_id, address_masked FROM messages WHERE contact_id = {ph}",
                    ("c-1003",),
                ).all()
            )
            stored = conn.exec_driver_sql(
                "SELECT COUNT(address_masked) FROM messages"
            ).scalar_one()
    assert stored > 2
    assert out == f"{stored} masked addresses stored in {(stored + 1) // 2} batches\n"
    assert set(masks.values()) == {"h***@example.net"}

    assert main(["backfill-masks", *args]) == 0
    assert capsys.readouterr().out == "0 masked addresses stored in 0 batches\n"
    with (
        open_repository(url, Keyring.load(tmp_path / "k.keyring")) as repo,
        repo.store.engine.begin() as conn,
    ):
        conn.exec_driver_sql(
            "UPDATE messages SET address_masked = NULL WHERE message_id = 'm-0002'"
        )
    assert main(["backfill-masks", *args]) == 0
    assert capsys.readouterr().out == "1 masked address stored in 1 batch\n"
