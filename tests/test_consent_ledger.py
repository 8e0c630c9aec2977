"""The consent ledger: append-only events, status at any instant, clear errors."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from commhistory.consent import ConsentState, notice_hash
from commhistory.errors import NormalizationError, PayloadError
from commhistory.model import Channel, ConsentAction, ConsentEvent, ConsentMethod, Purpose
from tests.test_consent_support import at, repo

__all__ = ["repo"]


def test_point_in_time_status_with_deciding_event(repo: Any) -> None:
    granted = repo.consent.grant(
        "c1", "email", "marketing", method="double_opt_in", occurred_at=at(1),
        source="https://example.com/signup", notice_version="v3", notice_text="We will mail you",
        ip="203.0.113.9", user_agent="Mozilla/5.0",
    )  # fmt: skip
    withdrawn = repo.consent.withdraw(
        "c1", Channel.EMAIL, Purpose.MARKETING, method=ConsentMethod.UNSUBSCRIBE_LINK,
        occurred_at=at(3),
    )  # fmt: skip

    before = repo.consent.status("c1", "email", "marketing", at=at(0))
    during = repo.consent.status("c1", "email", "marketing", at=at(2))
    after = repo.consent.status("c1", "email", "marketing", at=at(4))

    assert before.state is ConsentState.NONE
    assert before.decided_by is None
    assert during.granted
    assert during.decided_by is not None
    assert during.decided_by.consent_id == granted.consent_id
    assert during.decided_by.ip == "203.0.113.9"  # evidence comes back decrypted
    assert during.decided_by.notice_hash == notice_hash("We will mail you")
    assert not after.granted
    assert after.state is ConsentState.WITHDRAWN
    assert after.decided_by is not None
    assert after.decided_by.consent_id == withdrawn.consent_id
    # Other channels and purposes are independent.
    assert repo.consent.status("c1", "sms", "marketing", at=at(2)).state is ConsentState.NONE
    assert repo.consent.status("c1", "email", "service", at=at(2)).state is ConsentState.NONE


def test_regrant_after_withdrawal_and_same_instant_tie(repo: Any) -> None:
    repo.consent.grant("c1", "email", "marketing", method="web_form", occurred_at=at(1))
    repo.consent.withdraw("c1", "email", "marketing", method="one_click", occurred_at=at(2))
    repo.consent.grant("c1", "email", "marketing", method="checkbox", occurred_at=at(5))
    assert (
        repo.consent.status("c1", "email", "marketing", at=at(3)).state is ConsentState.WITHDRAWN
    )
    assert repo.consent.status("c1", "email", "marketing", at=at(6)).granted

    repo.consent.grant("c2", "email", "marketing", method="web_form", occurred_at=at(1))
    repo.consent.withdraw("c2", "email", "marketing", method="verbal", occurred_at=at(1))
    assert not repo.consent.status("c2", "email", "marketing", at=at(1)).granted


def test_statuses_in_bulk_match_single_status(repo: Any) -> None:
    for i in range(20):
        repo.consent.grant(f"c{i}", "email", "marketing", method="import", occurred_at=at(1))
        if i % 3 == 0:
            repo.consent.withdraw(f"c{i}", "email", "marketing", method="paper", occurred_at=at(2))
    ids = [f"c{i}" for i in range(22)]
    bulk = repo.consent.statuses(ids, "email", "marketing", at=at(3))
    for cid in ids:
        assert bulk[cid] is repo.consent.status(cid, "email", "marketing", at=at(3)).state
    assert bulk["c21"] is ConsentState.NONE


def test_ledger_is_append_only(repo: Any) -> None:
    first = repo.consent.grant("c1", "email", "marketing", method="web_form", occurred_at=at(1))
    # Recording the same event again is a duplicate, never an update.
    changed = attrs.evolve(first, action=ConsentAction.WITHDRAW)
    report = repo.record_consent([changed])
    assert report.duplicates == 1
    history = repo.consent.history("c1")
    assert [e.action for e in history] == [ConsentAction.GRANT]
    assert not hasattr(repo.consent, "update")
    assert not hasattr(repo.consent, "delete")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        history[0].action = ConsentAction.WITHDRAW


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"channel": "fax"}, "channel"),
        ({"purpose": "spam"}, "purpose"),
        ({"method": "telepathy"}, "method"),
    ],
)
def test_unknown_values_name_the_field(repo: Any, kwargs: dict[str, str], field: str) -> None:
    args = {"channel": "email", "purpose": "marketing", "method": "web_form"} | kwargs
    with pytest.raises(PayloadError) as info:
        repo.consent.grant(
            "c1", args["channel"], args["purpose"], method=args["method"], occurred_at=at(1)
        )
    assert info.value.field == field
    assert "expected one of" in info.value.reason
    with pytest.raises(PayloadError, match="channel"):
        repo.consent.status("c1", "fax", "marketing")
    with pytest.raises(PayloadError, match="purpose"):
        repo.can_send("c1", "email", "spam")


def test_naive_times_and_mismatched_notice_hash_are_errors(repo: Any) -> None:
    from datetime import datetime

    with pytest.raises(NormalizationError, match="naive"):
        repo.consent.status("c1", "email", "marketing", at=datetime(2026, 1, 1))
    with pytest.raises(PayloadError, match="notice_hash"):
        repo.consent.grant(
            "c1", "email", "marketing", method="web_form", notice_text="a", notice_hash="sha256:0"
        )


def test_consent_lines_import_through_ingest(repo: Any) -> None:
    from commhistory.convert import read_records

    text = (
        '{"kind": "consent", "contact_id": "c9", "channel": "email", "purpose": "marketing",'
        ' "action": "grant", "occurred_at": "2026-04-01T09:00:00+09:00",'
        ' "method": "double_opt_in", "source": "https://example.com/f"}\n'
    )
    import io
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.jsonl"
        path.write_text(text)
        report = repo.ingest(read_records(path), source="c.jsonl")
    assert report.inserted == 1
    assert repo.consent.status("c9", "email", "marketing", at=at(1)).granted
    assert io is not None
    assert isinstance(repo.consent.history("c9")[0], ConsentEvent)
