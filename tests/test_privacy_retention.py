"""Retention: what is due, dry runs, and purging."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from commhistory.errors import InvalidInputError
from commhistory.privacy import RetentionPolicy, purge
from commhistory.privacy.retention import add_months
from tests.test_consent_support import at, msg, repo

__all__ = ["repo"]


def _counts(report: Any) -> dict[str, int]:
    return {i.kind: i.count for i in report.items}


def test_superseded_consent_is_due_a_month_after_sending_stops(repo: Any) -> None:
    repo.consent.grant("c1", "email", "marketing", method="web_form", occurred_at=at(0))
    repo.record_messages([msg("m1", "c1", day=10)])
    repo.consent.withdraw("c1", "email", "marketing", method="one_click", occurred_at=at(5))
    repo.consent.grant("c2", "email", "marketing", method="web_form", occurred_at=at(0))

    # Sending stopped at the last message (day 10): due one month later.
    early = purge(repo.store, now=at(35))
    assert _counts(early)["consent_events"] == 0
    due = purge(repo.store, now=at(45))
    assert due.dry_run
    assert _counts(due)["consent_events"] == 1
    assert len(repo.consent.history("c1")) == 2  # a dry run deletes nothing

    purge(repo.store, now=at(45), dry_run=False)
    history = repo.consent.history("c1")
    assert [e.action.value for e in history] == ["withdraw"]  # the opt-out is kept
    assert not repo.can_send("c1", "email", "marketing", at=at(46))
    assert len(repo.consent.history("c2")) == 1  # still granted: kept
    # A longer policy (mail-order advertising: 3 years) keeps it.
    repo.consent.grant("c3", "email", "marketing", method="web_form", occurred_at=at(0))
    repo.consent.withdraw("c3", "email", "marketing", method="paper", occurred_at=at(1))
    long = purge(repo.store, RetentionPolicy(consent_evidence_months=36), now=at(100))
    assert _counts(long)["consent_events"] == 0


def test_erased_evidence_is_purged_after_its_date(repo: Any) -> None:
    repo.consent.grant("c1", "email", "marketing", method="web_form", occurred_at=at(0))
    report = repo.erase_subject("c1")
    until = next(i.until for i in report.kept if i.what == "consent_evidence")
    assert until is not None
    assert (
        _counts(purge(repo.store, now=until - timedelta(seconds=1)))["erased_consent_evidence"]
        == 0
    )
    assert _counts(purge(repo.store, now=until))["erased_consent_evidence"] == 1
    purge(repo.store, now=until, dry_run=False)
    assert repo.export_subject("c1")["consent"] == []


def test_policy_validation_and_months() -> None:
    with pytest.raises(InvalidInputError):
        RetentionPolicy(consent_evidence_months=-1)
    assert add_months(datetime(2026, 1, 31, tzinfo=UTC), 1) == datetime(2026, 2, 28, tzinfo=UTC)
    assert add_months(datetime(2026, 11, 15, tzinfo=UTC), 3) == datetime(2027, 2, 15, tzinfo=UTC)
