"""Shared checks for the email provider adapters of issue 14 (Brevo, Mailjet, SparkPost...)."""

from __future__ import annotations

from typing import Any

from commhistory.facade import CommHistory
from commhistory.model import Channel, Event, Purpose
from commhistory.providers import WebhookAdapter
from commhistory.testing import make_message
from commhistory.testing import signed_webhook as _signed

NOW = 1775002000.0
"""When the helpers sign: give adapters that check signed times ``clock=lambda: NOW``."""


def signed_webhook(provider: str, payload: Any, secret: Any) -> Any:
    return _signed(provider, payload, secret, timestamp=NOW)


def only_event(adapter: WebhookAdapter, provider: str, payload: Any, secret: Any) -> Event:
    """Verify and parse *payload* signed for *provider*; it must give exactly one event."""
    request = signed_webhook(provider, payload, secret).request()
    adapter.verify(request)
    result = adapter.parse(request)
    assert result.errors == []
    [event] = result.records
    assert isinstance(event, Event)
    return event


def unknown_is_dead_lettered(
    adapter: WebhookAdapter, provider: str, payload: Any, secret: Any, name: str
) -> None:
    """An event type the adapter does not know is stored as a dead letter naming it."""
    repo = CommHistory.in_memory()
    outcome = adapter.handle(signed_webhook(provider, payload, secret).request(), repo)
    assert (outcome.report.inserted, outcome.report.rejected) == (0, 1)
    [letter] = repo.list_dead_letters(source=f"webhook:{provider}")
    assert f"unknown event type {name!r}" in letter.reason


def suppresses(
    adapter: WebhookAdapter,
    provider: str,
    payload: Any,
    secret: Any,
    *,
    message_id: str,
    address: str,
    reason: str,
) -> None:
    """The event, linked to a message sent to *address*, puts it on the suppression list."""
    repo = CommHistory.in_memory()
    message = make_message(
        provider=provider,
        provider_message_id=message_id,
        address=address,
        purpose=Purpose.MARKETING,
    )
    repo.record_messages([message])
    outcome = adapter.handle(signed_webhook(provider, payload, secret).request(), repo)
    assert outcome.report.rejected == 0
    entries = repo.suppression.entries(Channel.EMAIL, address)
    assert [entry.reason.value for entry in entries] == [reason]


def retry_is_duplicate(adapter: WebhookAdapter, provider: str, payload: Any, secret: Any) -> None:
    """The same webhook delivered twice is stored once."""
    repo = CommHistory.in_memory()
    request = signed_webhook(provider, payload, secret).request()
    first = adapter.handle(request, repo).report
    assert first.inserted >= 1
    again = adapter.handle(request, repo).report
    assert (again.inserted, again.duplicates) == (0, first.inserted)
