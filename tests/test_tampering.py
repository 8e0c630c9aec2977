"""Values written behind the library's back give typed errors or reports, never tracebacks.

Issue 12, item 9: a TEXT value in a ciphertext column, a MAC stored as TEXT, a
NULL data key on a contact that was never erased.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from commhistory.audit import Actor
from commhistory.crypto import Keyring
from commhistory.errors import DecryptionError, StorageError
from commhistory.facade import CommHistory, open_repository
from commhistory.model import EventType
from commhistory.store import SQLRepository
from tests.test_audit_log import drop_guards
from tests.test_consent_support import ev, msg


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CommHistory[SQLRepository]]:
    url = (
        f"sqlite:///{tmp_path / 't.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    with open_repository(url, Keyring.generate()) as r:
        r.record_messages([msg("m1", "c1", body="private"), msg("m2", "c2")])
        r.record_events([ev("e1", "m1", EventType.DELIVERED)])
        yield r


def _sql(repo: CommHistory[SQLRepository], sql: str) -> None:
    with repo.store.engine.begin() as conn:
        conn.exec_driver_sql(sql)


def test_text_in_a_ciphertext_column_is_a_decryption_error(
    repo: CommHistory[SQLRepository],
) -> None:
    if repo.store.dialect != "sqlite":
        pytest.skip("PostgreSQL stores a text literal in a bytea column as bytes")
    _sql(repo, "UPDATE messages SET body = 'hello' WHERE message_id = 'm1'")
    repo.store.forget_cached_keys()
    with pytest.raises(DecryptionError, match=r"messages\.body holds a str, not a ciphertext"):
        repo.timeline("c1")
    assert [e.message.message_id for e in repo.timeline("c2")] == ["m2"]  # others unaffected


def test_text_as_a_data_key_is_a_decryption_error(repo: CommHistory[SQLRepository]) -> None:
    if repo.store.dialect != "sqlite":
        pytest.skip("PostgreSQL stores a text literal in a bytea column as bytes")
    _sql(repo, "UPDATE contacts SET data_key = 'not a key' WHERE contact_id = 'c1'")
    repo.store.forget_cached_keys()
    with pytest.raises(DecryptionError, match=r"contacts\.data_key holds a str"):
        repo.timeline("c1")
    with pytest.raises(DecryptionError, match=r"contacts\.data_key holds a str"):
        repo.record_messages([msg("m3", "c1", day=1)])


def test_a_null_data_key_without_an_erasure_is_an_error_not_an_empty_timeline(
    repo: CommHistory[SQLRepository],
) -> None:
    _sql(repo, "UPDATE contacts SET data_key = NULL WHERE contact_id = 'c1'")
    repo.store.forget_cached_keys()
    with pytest.raises(StorageError, match="was never erased"):
        repo.timeline("c1")
    repo.erase_subject("c2")
    assert repo.timeline("c2") == []  # a real erasure still reads as empty


def test_a_mac_stored_as_text_is_reported_as_tampering(repo: CommHistory[SQLRepository]) -> None:
    view = repo.as_actor(Actor("dpo-1", ["privacy_officer"]), purpose="ticket 1")
    view.timeline("c1")
    view.timeline("c2")
    with repo.store.engine.begin() as conn:
        drop_guards(conn)
        if conn.dialect.name == "sqlite":
            conn.execute(sa.text("UPDATE audit_log SET mac = 'forged' WHERE seq = 2"))
        else:  # bytea: the closest is a MAC that is the text's bytes
            conn.execute(sa.text("UPDATE audit_log SET mac = 'forged'::bytea WHERE seq = 2"))
    report = repo.audit_log.verify_chain()
    assert not report.intact
    assert report.first_bad == 2
