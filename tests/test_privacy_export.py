"""Subject export: one versioned JSON document of everything held on a person."""

from __future__ import annotations

import json
from typing import Any

import pytest

from commhistory.errors import NotFoundError
from commhistory.model import BounceClass, EventType
from commhistory.privacy import EXPORT_SCHEMA
from tests.test_consent_support import at, ev, msg, repo

__all__ = ["repo"]


def test_export_holds_everything_on_the_person(repo: Any) -> None:
    repo.consent.grant(
        "c1", "email", "marketing", method="double_opt_in", occurred_at=at(0), ip="192.0.2.1"
    )
    repo.record_messages([msg("m1", "c1", day=1), msg("m2", "c2", day=1)])
    repo.record_events(
        [
            ev("e1", "m1", EventType.BOUNCED, day=1.1, bounce=BounceClass.HARD),
            ev("e2", "m2", EventType.DELIVERED, day=1.1),
        ]
    )
    doc = repo.export_subject("c1")
    json.dumps(doc)  # serialisable as it is
    assert doc["schema"] == EXPORT_SCHEMA
    assert doc["contact"]["contact_id"] == "c1"
    assert doc["contact"]["erased_at"] is None
    assert doc["addresses"] == [{"kind": "email", "address": "c1@example.com"}]
    assert [m["message_id"] for m in doc["messages"]] == ["m1"]
    assert doc["messages"][0]["address"] == "c1@example.com"
    assert [e["event_id"] for e in doc["messages"][0]["events"]] == ["e1"]
    assert doc["consent"][0]["ip"] == "192.0.2.1"
    assert doc["consent_status"] == [
        {
            "channel": "email",
            "purpose": "marketing",
            "state": "granted",
            "consent_id": doc["consent"][0]["consent_id"],
        }
    ]
    assert [s["reason"] for s in doc["suppression"]] == ["hard_bounce"]
    assert "blind_index" not in json.dumps(doc["suppression"])


def test_export_of_unknown_contact_is_an_error(repo: Any) -> None:
    with pytest.raises(NotFoundError):
        repo.export_subject("nobody")


def test_export_after_erasure_holds_only_what_was_kept(repo: Any) -> None:
    repo.consent.grant("c1", "email", "marketing", method="web_form", occurred_at=at(0))
    repo.record_messages([msg("m1", "c1", day=1)])
    repo.erase_subject("c1")
    doc = repo.export_subject("c1")
    assert doc["contact"]["erased_at"] is not None
    assert doc["messages"] == []
    assert doc["addresses"] == []
    assert len(doc["consent"]) == 1
