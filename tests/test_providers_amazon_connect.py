"""Amazon Connect contact records: voice contacts become voice messages with call events.

The records use the fields of Amazon Connect's documented contact record data
model (Agent.ARN/Username/ConnectedToAgentTimestamp, Channel, ContactId,
CustomerEndpoint.Address/Type, SystemEndpoint, InitiationMethod,
InitiationTimestamp, ConnectedToSystemTimestamp, DisconnectTimestamp,
DisconnectReason, Queue):
https://docs.aws.amazon.com/connect/latest/adminguide/ctr-data-model.html
The Firehose HTTP endpoint delivery shape and its access-key header:
https://docs.aws.amazon.com/firehose/latest/dev/httpdeliveryrequestresponse.html
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commhistory.crypto import Keyring
from commhistory.errors import PayloadError, SignatureError
from commhistory.facade import CommHistory, open_repository
from commhistory.model import Channel, Direction, Event, EventType, Message, Purpose
from commhistory.providers import AmazonConnectAdapter, KeyedContactResolver, WebhookRequest
from commhistory.providers.amazon_connect import parse_contact_records
from commhistory.store import MemoryRepository
from commhistory.testing import signed_webhook
from tests._webhook_props import JSON, parse_or_payload_error

PAYLOADS = Path(__file__).parent / "payloads" / "amazon_connect"
INBOUND: dict[str, Any] = json.loads((PAYLOADS / "inbound.json").read_text())
OUTBOUND: dict[str, Any] = json.loads((PAYLOADS / "outbound_no_answer.json").read_text())
RESOLVER = KeyedContactResolver(b"c" * 32)
STAFF_KEY = b"s" * 32
ACCESS_KEY = "firehose-access-key-0123"
AGENT_ARN = INBOUND["Agent"]["ARN"]


def adapter(**options: Any) -> AmazonConnectAdapter:
    options.setdefault("contact_resolver", RESOLVER)
    options.setdefault("staff_key", STAFF_KEY)
    return AmazonConnectAdapter(ACCESS_KEY, **options)


def records(*items: Any, **options: Any) -> list[Any]:
    body = "\n".join(json.dumps(i) for i in items).encode()
    result = adapter(**options).parse(WebhookRequest(body=body))
    assert not result.errors, [e.error for e in result.errors]
    return result.records


def changed(base: dict[str, Any], **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(base))
    out.update(fields)
    return out


def test_inbound_contact_is_a_voice_message_with_its_call_events() -> None:
    message, *events = records(INBOUND)
    assert isinstance(message, Message)
    assert (message.channel, message.direction) == (Channel.VOICE, Direction.INBOUND)
    assert message.purpose is Purpose.SERVICE
    assert message.address == "+819012345678"  # the customer, not the SystemEndpoint
    assert message.contact_id == RESOLVER(Channel.VOICE, "+819012345678")
    assert message.message_id == "amazon-connect:0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d"
    assert message.provider == "amazon-connect"
    assert message.sent_at.isoformat() == "2026-04-01T01:07:00+00:00"
    assert message.metadata["queue"] == "BasicQueue"
    assert all(isinstance(e, Event) for e in events)
    assert [(e.type, e.occurred_at.isoformat()) for e in events] == [
        (EventType.RINGING, "2026-04-01T01:07:00+00:00"),
        (EventType.ANSWERED, "2026-04-01T01:07:00+00:00"),
        (EventType.COMPLETED, "2026-04-01T01:12:10+00:00"),
    ]
    assert events[-1].metadata["duration_seconds"] == 310
    assert events[-1].metadata["disconnect_reason"] == "CUSTOMER_DISCONNECT"


def test_agent_is_kept_only_as_a_keyed_pseudonym() -> None:
    message, *events = records(INBOUND)
    agent_id = message.metadata["agent_id"]
    assert agent_id.startswith("a_")
    assert len(agent_id) == 34
    assert events[-1].metadata["agent_id"] == agent_id
    stored = json.dumps([message.metadata, *(e.metadata for e in events)])
    assert "hanako" not in stored  # the username, nowhere
    assert "11111111-2222-3333-4444-555555555555" not in stored  # the agent ARN's id
    assert message.metadata["provider_raw"]["Agent"]["AgentId"] == agent_id
    # The same agent, the same pseudonym; another key, another one.
    again, *_ = records(changed(INBOUND, ContactId="another-contact"))
    assert again.metadata["agent_id"] == agent_id
    other, *_ = records(INBOUND, staff_key=b"t" * 32)
    assert other.metadata["agent_id"] != agent_id
    # Without a staff key the agent is left out altogether.
    bare, *_ = records(INBOUND, staff_key=None)
    assert "agent_id" not in bare.metadata
    assert "ARN" not in bare.metadata["provider_raw"]["Agent"]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, EventType.NO_ANSWER),
        ({"DisconnectReason": "TELECOM_PROBLEM"}, EventType.FAILED),
        ({"DisconnectReason": "OUTBOUND_DESTINATION_ENDPOINT_ERROR"}, EventType.FAILED),
        ({"AnsweringMachineDetectionStatus": "SIT_TONE_BUSY"}, EventType.BUSY),
    ],
)
def test_unconnected_outbound_call(fields: dict[str, Any], expected: EventType) -> None:
    message, *events = records(changed(OUTBOUND, **fields))
    assert message.direction is Direction.OUTBOUND
    assert [e.type for e in events] == [EventType.RINGING, expected]
    assert "duration_seconds" not in events[-1].metadata


def test_connected_outbound_call_is_answered_then_completed() -> None:
    record = changed(OUTBOUND, ConnectedToSystemTimestamp="2026-04-01T02:00:15Z")
    _, *events = records(record)
    assert [e.type for e in events] == [
        EventType.RINGING,
        EventType.ANSWERED,
        EventType.COMPLETED,
    ]
    assert events[-1].metadata["duration_seconds"] == 20


@pytest.mark.parametrize("method", ["TRANSFER", "QUEUE_TRANSFER", "MONITOR", "DISCONNECT"])
def test_contacts_that_continue_another_produce_nothing(method: str) -> None:
    assert records(changed(INBOUND, InitiationMethod=method)) == []


def test_file_shapes_array_lines_and_concatenated() -> None:
    as_array = json.dumps([INBOUND, OUTBOUND]).encode()
    concatenated = (json.dumps(INBOUND) + json.dumps(OUTBOUND)).encode()  # Firehose to S3
    lines = (json.dumps(INBOUND) + "\n" + json.dumps(OUTBOUND) + "\n").encode()
    for body in (as_array, concatenated, lines):
        parsed = parse_contact_records(body, contact_resolver=RESOLVER, staff_key=STAFF_KEY)
        kinds = [type(p.record).__name__ for p in parsed]
        assert kinds == ["Message", "Event", "Event", "Event", "Message", "Event", "Event"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"Channel": "CHAT"}, "Channel"),
        ({"InitiationMethod": "TELEPATHY"}, "InitiationMethod"),
        ({"ContactId": None}, "ContactId"),
        (
            {"CustomerEndpoint": {"Address": "not a number", "Type": "TELEPHONE_NUMBER"}},
            "CustomerEndpoint.Address",
        ),
        ({"InitiationTimestamp": "yesterday"}, "InitiationTimestamp"),
        ({"DisconnectTimestamp": 17}, "DisconnectTimestamp"),
    ],
)
def test_bad_records_are_typed_errors_and_the_others_are_kept(
    fields: dict[str, Any], field: str
) -> None:
    body = json.dumps([changed(INBOUND, **fields), OUTBOUND]).encode()
    lines = parse_contact_records(body, contact_resolver=RESOLVER)
    [error] = [line for line in lines if line.error is not None]
    assert error.error is not None
    assert error.error.field == field
    assert "+8190" not in str(error.error)
    assert sum(1 for line in lines if isinstance(line.record, Message)) == 1


@pytest.mark.parametrize("contact_id", ["x" * 300, "id\x00with-nul", "連絡-1"])
def test_unusual_contact_ids_are_hashed_into_a_plain_id(contact_id: str) -> None:
    message, *_ = records(changed(INBOUND, ContactId=contact_id))
    assert message.provider_message_id is not None
    assert len(message.provider_message_id) == 64
    assert records(changed(INBOUND, ContactId=contact_id))[0] == message  # stable


def test_a_file_that_is_not_json_is_a_payload_error() -> None:
    with pytest.raises(PayloadError) as caught:
        parse_contact_records(b'{"ContactId": ', contact_resolver=RESOLVER)
    assert caught.value.field == "<body>"


def test_firehose_delivery_verifies_and_parses() -> None:
    signed = signed_webhook("amazon-connect", [INBOUND, OUTBOUND], ACCESS_KEY)
    request = signed.request()
    a = adapter()
    a.verify(request)
    result = a.parse(request)
    assert [type(r).__name__ for r in result.records].count("Message") == 2
    bad = WebhookRequest(body=signed.body, headers={"X-Amz-Firehose-Access-Key": "wrong"})
    with pytest.raises(SignatureError):
        a.verify(bad)
    with pytest.raises(SignatureError):
        a.verify(WebhookRequest(body=signed.body))


def test_firehose_record_that_is_not_base64_is_one_error() -> None:
    good = base64.b64encode(json.dumps(INBOUND).encode()).decode()
    body = json.dumps({"requestId": "r", "records": [{"data": "%%%"}, {"data": good}]})
    result = adapter().parse(WebhookRequest(body=body.encode()))
    [error] = result.errors
    assert error.error is not None
    assert error.error.field == "records.data"
    assert len(result.records) == 4


@pytest.fixture(
    params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CommHistory[Any]]:
    if request.param == "memory":
        with CommHistory(MemoryRepository()) as mem:
            yield mem
        return
    url = (
        f"sqlite:///{tmp_path / 'c.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    with open_repository(url, Keyring.generate()) as sql:
        yield sql


def test_a_record_delivered_twice_is_stored_once(repo: CommHistory[Any]) -> None:
    body = json.dumps(INBOUND).encode()
    first = repo.ingest(parse_contact_records(body, contact_resolver=RESOLVER), source="t")
    updated = changed(INBOUND, LastUpdateTimestamp="2026-04-01T02:00:00Z")
    again = repo.ingest(
        parse_contact_records(json.dumps(updated).encode(), contact_resolver=RESOLVER), source="t"
    )
    assert (first.inserted, again.inserted, again.duplicates) == (4, 0, 4)
    [entry] = repo.timeline(RESOLVER(Channel.VOICE, "+819012345678"))
    # Ringing and answered share a time (inbound: connected on arrival); order by type.
    assert sorted(e.type for e in entry.events) == sorted(
        [EventType.RINGING, EventType.ANSWERED, EventType.COMPLETED]
    )


def test_cli_parse_webhook_reads_a_contact_record_file(tmp_path: Path) -> None:
    path = tmp_path / "ctr.json"
    path.write_text(json.dumps(INBOUND) + json.dumps(OUTBOUND))
    keyring = tmp_path / "k.keyring"
    Keyring.generate().save(str(keyring))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "commhistory",
            "parse-webhook",
            "--provider",
            "amazon-connect",
            "--keyring",
            str(keyring),
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["kind"] for line in lines].count("message") == 2
    agents = {line["metadata"].get("agent_id") for line in lines if line["kind"] == "message"}
    assert any(a is not None and a.startswith("a_") for a in agents)
    assert "hanako" not in done.stdout


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(INBOUND)), JSON, max_size=6))
def test_fuzzed_records_give_records_or_typed_errors(fields: dict[str, Any]) -> None:
    parse_or_payload_error(adapter(), json.dumps(changed(INBOUND, **fields)).encode())


@settings(max_examples=100, deadline=None)
@given(JSON)
def test_fuzzed_bodies_give_records_or_typed_errors(value: Any) -> None:
    parse_or_payload_error(adapter(), json.dumps(value).encode())
