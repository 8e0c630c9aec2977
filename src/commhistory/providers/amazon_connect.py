"""Amazon Connect contact records (CTRs): voice calls and their progress.

A contact record describes one contact with a contact centre when it is over:
who (``CustomerEndpoint.Address``), which way (``InitiationMethod``), and when
it was initiated, connected and disconnected. Each voice contact becomes one
:class:`~commhistory.Message` on :attr:`~commhistory.Channel.VOICE` (id
``amazon-connect:<ContactId>``, ``provider="amazon-connect"``,
``provider_message_id`` the ``ContactId``) and its call events:

* ``RINGING`` at ``InitiationTimestamp`` (the call arrived, or dialling began);
* ``ANSWERED`` at ``ConnectedToSystemTimestamp`` (for an outbound call, when
  the customer answered);
* at ``DisconnectTimestamp``: ``COMPLETED`` for a connected call, with
  ``metadata["duration_seconds"]`` (disconnect minus connection, whole
  seconds); for a call never connected, ``BUSY`` (answering-machine detection
  heard a busy tone), ``FAILED`` (a telecom or destination error:
  :data:`FAILURE_REASONS`), else ``NO_ANSWER``.

``INBOUND`` and ``WEBRTC_API`` contacts are inbound; ``OUTBOUND``, ``CALLBACK``,
``API``, ``EXTERNAL_OUTBOUND`` and ``AGENT_REPLY`` outbound. A ``TRANSFER``,
``QUEUE_TRANSFER``, ``MONITOR`` or ``DISCONNECT`` contact continues (or
watches) a call whose own record is already imported; it produces nothing.
A contact on another channel (``CHAT``, ``TASK``, ``EMAIL``) is an error
naming the channel (kept as a dead letter).

The customer is resolved like an inbound SMS sender (E.164 phone number,
through the adapter's ``contact_resolver``). The agent is kept only as a
pseudonym (:meth:`~commhistory.providers.WebhookAdapter.staff_pseudonym` of
``Agent.ARN``: a keyed hash, ``metadata["agent_id"]``); the agent's
``Username`` and ``ARN`` are left out of everything stored. Connect delivers a
record at least once, and again when it changes: ids are derived from
``ContactId``, so a record delivered again is a duplicate (the first copy
stays).

Two ways in:

* **files** (an export, or a Kinesis Data Firehose delivery to S3): one record
  as a JSON object, an array of them, or records one after the other (JSON
  lines, or concatenated as Firehose writes them). ``commhistory
  parse-webhook --provider amazon-connect FILE`` prints them as canonical JSON
  lines and ``ingest-webhook`` stores them; :func:`parse_contact_records` does
  it from Python;
* **a Kinesis Data Firehose HTTP endpoint**: Firehose POSTs
  ``{"requestId", "timestamp", "records": [{"data": base64}]}`` with the
  endpoint's access key in ``X-Amz-Firehose-Access-Key``, which the adapter
  compares in constant time.

See ``docs/providers/voice.md`` and the data model at
https://docs.aws.amazon.com/connect/latest/adminguide/ctr-data-model.html.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar, Final

from commhistory.convert import ParsedLine
from commhistory.errors import InvalidInputError, PayloadError, SignatureError
from commhistory.model import Channel, Direction, Event, EventType, Message, Purpose, Record
from commhistory.providers.base import (
    ContactResolver,
    WebhookAdapter,
    WebhookRequest,
    as_object,
    content_hash,
    get_mapping,
    get_str,
    hmac_equal,
    iso_time,
    json_type,
    phone_address,
    require_str,
)
from commhistory.providers.registry import (
    ProviderSpec,
    SignedRequest,
    json_body,
    register_provider,
)

__all__ = [
    "ACCESS_KEY_HEADER",
    "FAILURE_REASONS",
    "INITIATION_METHODS",
    "PROVIDER",
    "AmazonConnectAdapter",
    "parse_contact_records",
]

ACCESS_KEY_HEADER: Final = "X-Amz-Firehose-Access-Key"
"""The header carrying a Firehose HTTP endpoint's access key."""

INITIATION_METHODS: Final[Mapping[str, Direction | None]] = {
    "INBOUND": Direction.INBOUND,
    "WEBRTC_API": Direction.INBOUND,
    "OUTBOUND": Direction.OUTBOUND,
    "CALLBACK": Direction.OUTBOUND,
    "API": Direction.OUTBOUND,
    "EXTERNAL_OUTBOUND": Direction.OUTBOUND,
    "AGENT_REPLY": Direction.OUTBOUND,
    "TRANSFER": None,
    "QUEUE_TRANSFER": None,
    "MONITOR": None,
    "DISCONNECT": None,
}
"""``InitiationMethod`` values: the call's direction, or ``None`` for contacts that
continue or watch another contact (they produce no records)."""

FAILURE_REASONS: Final = frozenset(
    {
        "TELECOM_PROBLEM",
        "OUTBOUND_DESTINATION_ENDPOINT_ERROR",
        "OUTBOUND_RESOURCE_ERROR",
        "OUTBOUND_ATTEMPT_FAILED",
        "EXPIRED",
    }
)
"""``DisconnectReason`` values that make an unconnected call ``FAILED``."""

_BUSY_DETECTIONS: Final = frozenset({"SIT_TONE_BUSY"})
_AGENT_DROPPED: Final = frozenset({"ARN", "Username"})


def _json_values(text: str) -> Iterator[Any]:
    """The JSON values of *text*: one, an array's items, or several one after another."""
    decoder = json.JSONDecoder()
    index, end = 0, len(text)
    while True:
        while index < end and text[index] in " \t\r\n":
            index += 1
        if index >= end:
            return
        try:
            value, index = decoder.raw_decode(text, index)
        except json.JSONDecodeError as exc:
            raise PayloadError(
                field="<body>", reason=f"invalid JSON: {exc.msg} at character {exc.pos}"
            ) from None
        except RecursionError:
            raise PayloadError(field="<body>", reason="JSON nested too deeply") from None
        if isinstance(value, list):
            yield from value
        else:
            yield value


class _FirehoseRecord(str):
    """The base64 ``data`` of one Firehose record (decoded when it is parsed)."""

    __slots__ = ()


class AmazonConnectAdapter(WebhookAdapter):
    """Reads Amazon Connect contact records, from files or a Firehose HTTP endpoint.

    Args:
        access_key: The Firehose HTTP endpoint's access key (what
            :meth:`verify` compares ``X-Amz-Firehose-Access-Key`` with).
        region: The region for phone numbers without a country code.
        **options: :class:`~commhistory.providers.base.WebhookAdapter` options;
            the calls need ``contact_resolver``, agent pseudonyms ``staff_key``.

    Raises:
        InvalidInputError: The access key is empty.

    .. versionadded:: 0.4.0
    """

    name: ClassVar[str] = "amazon-connect"
    auth_failure_status: ClassVar[int] = 401

    def __init__(self, access_key: str, *, region: str = "JP", **options: Any) -> None:
        super().__init__(**options)
        secret: object = access_key
        if not isinstance(secret, str) or not secret:
            raise InvalidInputError(field="access_key", reason="must be a non-empty string")
        self._access_key = access_key
        self._region = region

    def _verify(self, request: WebhookRequest) -> None:
        given = request.header(ACCESS_KEY_HEADER)
        if not given:
            raise SignatureError(f"missing header {ACCESS_KEY_HEADER}")
        if not hmac_equal(self._access_key, given.strip()):
            raise SignatureError(f"{ACCESS_KEY_HEADER}: wrong access key")

    def _decode(self, request: WebhookRequest) -> Any:
        try:
            text = request.body.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise PayloadError(field="<body>", reason="not valid UTF-8") from None
        return list(_json_values(text))

    def _events(self, payload: Any, request: WebhookRequest) -> Sequence[Any]:
        items: list[Any] = payload
        if len(items) == 1 and isinstance(items[0], dict) and "records" in items[0]:
            delivery = items[0]
            records = delivery["records"]
            if not isinstance(records, list):
                raise PayloadError(
                    field="records", reason=f"expected an array, got {json_type(records)}"
                )
            return [
                _FirehoseRecord(r["data"])
                if isinstance(r, dict) and isinstance(r.get("data"), str)
                else r
                for r in records
            ]
        if not items:
            raise PayloadError(field="<body>", reason="no contact records")
        return items

    def _parse_event(self, event: Any) -> list[Record]:
        if isinstance(event, _FirehoseRecord):
            try:
                data = base64.b64decode(str(event), validate=True).decode("utf-8-sig")
            except (binascii.Error, ValueError):
                raise PayloadError(field="records.data", reason="not base64 UTF-8") from None
            records: list[Record] = []
            for item in _json_values(data):
                records.extend(self._contact(item))
            return records
        return self._contact(event)

    def _contact(self, event: Any) -> list[Record]:
        item = as_object(event, field="<record>")
        contact_id = require_str(item, "ContactId")
        channel = (get_str(item, "Channel") or "").upper()
        if channel != "VOICE":
            shown = channel[:20] if channel.isascii() and channel.isprintable() else "?"
            raise PayloadError(
                field="Channel", reason=f"only VOICE contacts are imported (got {shown or 'none'})"
            )
        method = require_str(item, "InitiationMethod").upper()
        if method not in INITIATION_METHODS:
            allowed = ", ".join(sorted(INITIATION_METHODS))
            raise PayloadError(field="InitiationMethod", reason=f"expected one of: {allowed}")
        direction = INITIATION_METHODS[method]
        if direction is None:
            return []  # continues (or watches) a contact imported on its own
        endpoint = get_mapping(item, "CustomerEndpoint")
        address = phone_address(
            endpoint.get("Address"), field="CustomerEndpoint.Address", region=self._region
        )
        contact = self.resolve_contact(Channel.VOICE, address)
        initiated = iso_time(item.get("InitiationTimestamp"), field="InitiationTimestamp")
        connected = _optional_time(item, "ConnectedToSystemTimestamp")
        disconnected = _optional_time(item, "DisconnectTimestamp")
        agent = get_mapping(item, "Agent")
        agent_arn = get_str(agent, "ARN")
        agent_id = None if agent_arn is None else self.staff_pseudonym(agent_arn)
        queue = get_mapping(item, "Queue")
        reason = get_str(item, "DisconnectReason")
        key = (
            contact_id
            if len(contact_id) <= 200 and contact_id.isascii() and contact_id.isprintable()
            else content_hash(contact_id)
        )
        details: dict[str, Any] = {"initiation_method": method}
        if agent_id is not None:
            details["agent_id"] = agent_id
        if get_str(queue, "Name") is not None:
            details["queue"] = get_str(queue, "Name")
        if reason is not None:
            details["disconnect_reason"] = reason
        message = Message(
            message_id=f"{self.name}:{key}",
            channel=Channel.VOICE,
            direction=direction,
            contact_id=contact,
            address=address,
            sent_at=initiated,
            purpose=Purpose.SERVICE,
            provider=self.name,
            provider_message_id=key,
            metadata={**details, "provider_raw": _kept(item, agent_id)},
        )
        timeline: list[tuple[EventType, datetime, dict[str, Any]]] = [
            (EventType.RINGING, initiated, {})
        ]
        if connected is not None:
            timeline.append((EventType.ANSWERED, connected, {}))
        if disconnected is not None:
            extra: dict[str, Any] = dict(details)
            if connected is not None:
                seconds = max(0, int((disconnected - connected).total_seconds()))
                timeline.append(
                    (EventType.COMPLETED, disconnected, {**extra, "duration_seconds": seconds})
                )
            else:
                timeline.append((_unanswered(item, reason), disconnected, extra))
        records: list[Record] = [message]
        for type_, when, metadata in timeline:
            event_id, provider_event_id = self.ids(f"{key}:{type_.value}")
            records.append(
                Event(
                    event_id=event_id,
                    type=type_,
                    occurred_at=when,
                    provider=self.name,
                    provider_message_id=key,
                    provider_event_id=provider_event_id,
                    address=address,
                    reason=reason if type_ is EventType.FAILED else None,
                    metadata=metadata,
                )
            )
        return records


def _optional_time(item: Mapping[str, Any], field: str) -> datetime | None:
    value = item.get(field)
    return None if value is None or value == "" else iso_time(value, field=field)


def _unanswered(item: Mapping[str, Any], reason: str | None) -> EventType:
    """The event of a call that ended without being connected."""
    if get_str(item, "AnsweringMachineDetectionStatus") in _BUSY_DETECTIONS:
        return EventType.BUSY
    if reason in FAILURE_REASONS:
        return EventType.FAILED
    return EventType.NO_ANSWER


def _kept(item: Mapping[str, Any], agent_id: str | None) -> dict[str, Any]:
    """The record as kept in ``provider_raw``: the agent only as a pseudonym."""
    kept = dict(item)
    agent = item.get("Agent")
    if isinstance(agent, Mapping):
        trimmed = {k: v for k, v in agent.items() if k not in _AGENT_DROPPED}
        if agent_id is not None:
            trimmed["AgentId"] = agent_id
        kept["Agent"] = trimmed
    return kept


def parse_contact_records(
    data: bytes,
    *,
    contact_resolver: ContactResolver,
    staff_key: bytes | None = None,
    region: str = "JP",
) -> list[ParsedLine]:
    """Parse a file of Amazon Connect contact records into canonical records.

    Args:
        data: The file's bytes: a record, an array of records, or records one
            after another (JSON lines, or concatenated as Firehose writes them).
        contact_resolver: Maps customers' phone numbers to contact ids.
        staff_key: Keys agent pseudonyms (at least 16 bytes); without one,
            agents are left out.
        region: The region for phone numbers without a country code.

    Returns:
        One line per record, or per contact that cannot be parsed (with its
        error); ready for :meth:`Repository.ingest <commhistory.store.Repository.ingest>`.

    Raises:
        PayloadError: The file is not UTF-8 JSON.

    .. versionadded:: 0.4.0
    """
    adapter = AmazonConnectAdapter(
        "-",
        region=region,
        contact_resolver=contact_resolver,
        staff_key=staff_key,
        max_body_bytes=max(len(data), 1),
    )
    return list(adapter.parse(WebhookRequest(body=data)).lines)


def _from_secret(secret: str | None, /, **options: Any) -> AmazonConnectAdapter:
    return AmazonConnectAdapter(secret or "-", **options)


def _sign(events: Any, secret: Any, /, *, url: str, timestamp: float) -> SignedRequest:
    # events: a list of contact records; secret: the Firehose access key.
    records = events if isinstance(events, list) else [events]
    delivery = {
        "requestId": content_hash([records, timestamp])[:36],
        "timestamp": int(timestamp * 1000),
        "records": [{"data": base64.b64encode(json_body(r)).decode("ascii")} for r in records],
    }
    headers = {"Content-Type": "application/json", ACCESS_KEY_HEADER: str(secret)}
    return SignedRequest(body=json_body(delivery), headers=headers, url=url)


PROVIDER: Final = register_provider(
    ProviderSpec(adapter=AmazonConnectAdapter, from_secret=_from_secret, signer=_sign)
)
"""Amazon Connect's entry in the provider registry.

``--secret`` and the test secret are the Firehose HTTP endpoint's access key.

.. versionadded:: 0.4.0
"""
