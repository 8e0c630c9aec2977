"""Masked reads: plain columns only, no decryption; the masking of addresses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commhistory.audit import (
    Actor,
    mask_email,
    mask_line_user_id,
    mask_phone,
    masked_timeline,
)
from commhistory.crypto import Keyring
from commhistory.errors import NormalizationError, NotFoundError, PermissionDenied
from commhistory.facade import CommHistory, open_repository
from commhistory.model import BounceClass, Event, EventType
from commhistory.normalize import normalize_email, normalize_phone
from tests.strategies import email_addresses, jp_mobile_numbers, line_user_ids
from tests.test_consent_support import at, ev, msg


class CountingKeyring:
    """A key provider that counts how often a root key is asked for (every unwrap does)."""

    def __init__(self) -> None:
        self.inner = Keyring.generate()
        self.calls = 0

    @property
    def current_key_id(self) -> str:
        return self.inner.current_key_id

    @property
    def index_key_id(self) -> str:
        return self.inner.index_key_id

    def key_ids(self) -> tuple[str, ...]:
        return self.inner.key_ids()

    def root_key(self, key_id: str) -> bytes:
        self.calls += 1
        return self.inner.root_key(key_id)


def _history(repo: Any) -> None:
    repo.record_messages([msg("m1", "c1", body="hidden"), msg("m2", "c1", day=1), msg("m3", "c2")])
    repo.record_events(
        [
            ev("e1", "m1", EventType.DELIVERED, day=0.1),
            Event(
                event_id="e2", message_id="m2", type=EventType.BOUNCED, occurred_at=at(1.1),
                bounce=BounceClass.HARD, status_code="5.1.1", reason="user unknown",
            ),
        ]
    )  # fmt: skip


@pytest.fixture(
    params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "memory":
        r: Any = CommHistory.in_memory()
    else:
        url = (
            f"sqlite:///{tmp_path / 'm.db'}"
            if request.param == "sqlite"
            else request.getfixturevalue("pg_url")
        )
        r = open_repository(url, Keyring.generate())
    with r:
        _history(r)
        yield r


def test_masked_timeline_matches_the_plain_fields(repo: Any) -> None:
    full = repo.timeline("c1")
    masked = masked_timeline(repo.store, "c1")
    assert [e.message.message_id for e in masked] == ["m1", "m2"]
    for f, m in zip(full, masked, strict=True):
        assert m.message.sent_at == f.message.sent_at
        assert m.message.channel == f.message.channel
        assert m.message.campaign_id == f.message.campaign_id
        assert m.message.address == "c***@example.com"
        assert m.message.has_subject == (f.message.subject is not None)
        assert m.message.has_body == (f.message.body is not None)
        assert [(e.event_id, e.type, e.occurred_at) for e in m.events] == [
            (e.event_id, e.type, e.occurred_at) for e in f.events
        ]
    bounce = masked[1].events[0]
    assert (bounce.bounce, bounce.status_code) == (BounceClass.HARD, "5.1.1")
    assert "user unknown" not in repr(masked)
    assert "hidden" not in repr(masked)
    assert "c1@example.com" not in repr(masked)


def test_masked_timeline_of_unknown_and_erased_contacts(repo: Any) -> None:
    with pytest.raises(NotFoundError):
        masked_timeline(repo.store, "nobody")
    repo.erase_subject("c2")
    assert masked_timeline(repo.store, "c2") == []


@pytest.mark.parametrize(
    "kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_masked_reads_never_decrypt(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    keyring = CountingKeyring()
    url = (
        f"sqlite:///{tmp_path / 'n.db'}" if kind == "sqlite" else request.getfixturevalue("pg_url")
    )
    with open_repository(url, keyring) as repo:
        _history(repo)
        view = repo.as_actor(Actor("an-1", ["analyst"]), purpose="support")
        repo.store.forget_cached_keys()
        keyring.calls = 0
        entries = view.masked_timeline("c1")
        assert len(entries) == 2
        assert [e.message.address for e in entries] == ["c***@example.com"] * 2
        assert keyring.calls == 0  # no data key unwrapped, no subkey derived
        with pytest.raises(PermissionDenied):
            view.timeline("c1")
        keyring.calls = 0
        repo.timeline("c1")
        assert keyring.calls > 0  # the full read does unwrap: the counter works
        assert repo.audit_log.entries()[-1].action == "timeline"


# ---------------------------------------------------------------------- masking


def test_mask_examples() -> None:
    assert mask_email("taro@example.com") == "t***@example.com"
    assert mask_phone("+819012345678") == "+81 90-****-5678"
    assert mask_line_user_id("U" + "0123456789abcdef" * 2) == "U***cdef"
    assert mask_email("no-at-sign") == "***"
    assert mask_phone("not a number") == "***"
    assert mask_phone("+8112345") == "+81 ****"
    assert mask_line_user_id("Ushort") == "***"


@given(email_addresses())
def test_mask_email_keeps_domain_and_hides_the_local_part(raw: str) -> None:
    try:
        address = normalize_email(raw)
    except NormalizationError:
        return
    local, _, domain = address.rpartition("@")
    masked = mask_email(address)
    assert masked == f"{local[0]}***@{domain}"
    if len(local) > 1:
        assert local not in masked.removesuffix(f"@{domain}")


@given(jp_mobile_numbers())
def test_mask_phone_shows_prefix_and_last_four(raw: str) -> None:
    number = normalize_phone(raw)
    masked = mask_phone(number)
    national = number.removeprefix("+81")
    assert masked == f"+81 {national[:2]}-****-{national[-4:]}"
    assert national not in masked
    assert sum(ch.isdigit() for ch in masked) == 2 + 2 + 4  # country code, prefix, last four


@given(line_user_ids())
def test_mask_line_user_id(user_id: str) -> None:
    masked = mask_line_user_id(user_id)
    assert masked == f"U***{user_id[-4:]}"
    assert user_id not in masked


@given(st.text(max_size=40))
def test_masks_never_raise(value: str) -> None:
    for mask in (mask_email, mask_phone, mask_line_user_id):
        assert isinstance(mask(value), str)
