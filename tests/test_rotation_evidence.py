"""Key rotation carries the consent evidence kept after an erasure over to the new key."""

from __future__ import annotations

from pathlib import Path

import pytest

from commhistory.crypto import Keyring
from commhistory.facade import open_repository
from commhistory.store import rotate_keys
from tests.test_consent_support import msg


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'evidence.db'}"
    pg: str = request.getfixturevalue("pg_url")
    return pg


def _erase_with_evidence(url: str, keyring: Keyring) -> None:
    with open_repository(url, keyring) as repo:
        repo.record_messages([msg("m1", "c1"), msg("m2", "c2")])
        repo.consent.grant(
            "c1", "email", "marketing", method="web_form", ip="198.51.100.7", user_agent="UA/1"
        )
        repo.consent.grant("c2", "email", "marketing", method="web_form", ip="198.51.100.8")
        repo.erase_subject("c1")
        repo.erase_subject("c2")


def test_retained_evidence_survives_rotation_and_retirement(url: str) -> None:
    keyring = Keyring.generate()
    old = keyring.current_key_id
    _erase_with_evidence(url, keyring)
    keyring.rotate(index=True)
    with open_repository(url, keyring) as repo:
        report = rotate_keys(repo.store, keyring, batch_size=1, reindex=True)
        assert report.evidence == 2
        assert report.batches == 2  # one consent event per batch; no data keys left
        assert rotate_keys(repo.store, keyring).evidence == 0  # nothing left under the old key
    keyring.retire(old)
    with open_repository(url, keyring) as repo:
        kept = repo.export_subject("c1")
    assert "198.51.100.7" in str(kept)
    assert "UA/1" in str(kept)
    with open_repository(url, keyring) as repo:
        # The erased people's opt-outs still match their addresses.
        assert repo.suppression.check("email", "c1@example.com")
        assert not repo.can_send("c2", "email", "marketing", address="c2@example.com").allowed
