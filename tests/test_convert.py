from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import commhistory as ch
from commhistory.convert import ParsedLine, dumps, loads, read_records, structure, unstructure
from tests.strategies_records import records

JST = timezone(timedelta(hours=9))


def message_obj(**overrides: object) -> dict[str, object]:
    obj: dict[str, object] = {
        "kind": "message",
        "message_id": "m1",
        "channel": "email",
        "direction": "outbound",
        "contact_id": "c1",
        "address": "Taro@Example.COM",
        "sent_at": "2026-04-01T09:00:00+09:00",
    }
    obj.update(overrides)
    return obj


def test_message_is_normalized_and_in_utc() -> None:
    msg = structure(message_obj(campaign_id="spring", variant="A"))
    assert isinstance(msg, ch.Message)
    assert msg.address == "Taro@example.com"
    assert msg.sent_at == datetime(2026, 4, 1, 0, 0, tzinfo=UTC)
    assert msg.sent_at.tzinfo is UTC
    assert msg.channel is ch.Channel.EMAIL
    assert msg.purpose is ch.Purpose.MARKETING


def test_sms_address_becomes_e164() -> None:
    msg = structure(message_obj(channel="sms", address="090-1234-5678"))
    assert msg.address == "+819012345678"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-04-01T09:00:00+09:00", datetime(2026, 4, 1, tzinfo=UTC)),
        ("2026-04-01T00:00:00Z", datetime(2026, 4, 1, tzinfo=UTC)),
        (1775001600, datetime(2026, 4, 1, tzinfo=UTC)),
        (1775001600000, datetime(2026, 4, 1, tzinfo=UTC)),
    ],
)
def test_timestamps_accept_iso_epoch_seconds_and_millis(value: object, expected: datetime) -> None:
    event = structure(
        {
            "kind": "event",
            "event_id": "e1",
            "message_id": "m1",
            "type": "delivered",
            "occurred_at": value,
        }
    )
    assert event.occurred_at == expected  # type: ignore[union-attr]


def test_naive_timestamp_needs_default_zone() -> None:
    obj = message_obj(sent_at="2026-04-01T09:00:00")
    with pytest.raises(ch.NormalizationError) as info:
        structure(obj)
    assert info.value.field == "sent_at"
    msg = structure(obj, default_tz="Asia/Tokyo")
    assert msg.sent_at == datetime(2026, 4, 1, tzinfo=UTC)  # type: ignore[union-attr]


def test_unknown_key_is_named() -> None:
    with pytest.raises(ch.PayloadError) as info:
        structure(message_obj(plan="gold"))
    assert info.value.field == "plan"
    assert "metadata" in info.value.reason


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"channel": "fax"}, "channel"),
        ({"direction": None}, "direction"),
        ({"message_id": 12}, "message_id"),
        ({"address": "not an address"}, "address"),
        ({"sent_at": "yesterday"}, "sent_at"),
        ({"sent_at": True}, "sent_at"),
        ({"metadata": [1, 2]}, "metadata"),
        ({"kind": "parcel"}, "kind"),
    ],
)
def test_bad_fields_are_named(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ch.InvalidInputError) as info:
        structure(message_obj(**overrides))
    assert info.value.field == field
    assert "Taro" not in str(info.value)


def test_missing_kind() -> None:
    obj = message_obj()
    del obj["kind"]
    with pytest.raises(ch.PayloadError, match="kind: required"):
        structure(obj)


def test_event_bounce_is_classified_from_the_diagnostic() -> None:
    event = loads(
        json.dumps(
            {
                "kind": "event",
                "event_id": "e1",
                "provider": "sendgrid",
                "provider_message_id": "x",
                "type": "bounced",
                "occurred_at": 1775001600,
                "reason": "550 5.1.1 <taro@example.com>: Recipient address rejected",
            }
        )
    )
    assert isinstance(event, ch.Event)
    assert event.status_code == "5.1.1"
    assert event.bounce is ch.BounceClass.HARD


def test_given_bounce_class_wins() -> None:
    event = structure(
        {
            "kind": "event",
            "event_id": "e1",
            "message_id": "m",
            "type": "bounced",
            "occurred_at": 1775001600,
            "status_code": "5.1.1",
            "bounce": "soft",
        }
    )
    assert event.bounce is ch.BounceClass.SOFT  # type: ignore[union-attr]


def test_revenue_is_decimal_with_currency() -> None:
    event = structure(
        {
            "kind": "event",
            "event_id": "e1",
            "message_id": "m",
            "type": "converted",
            "occurred_at": 1775001600,
            "revenue": "4980",
            "currency": "JPY",
        }
    )
    assert event.revenue == Decimal("4980")  # type: ignore[union-attr]
    with pytest.raises(ch.PayloadError) as info:
        structure(
            {
                "kind": "event",
                "event_id": "e1",
                "message_id": "m",
                "type": "converted",
                "occurred_at": 1775001600,
                "revenue": "4980",
            }
        )
    assert info.value.field == "currency"
    with pytest.raises(ch.NormalizationError) as info2:
        structure(
            {
                "kind": "event",
                "event_id": "e1",
                "message_id": "m",
                "type": "converted",
                "occurred_at": 1775001600,
                "revenue": "12",
                "currency": "yen",
            }
        )
    assert info2.value.field == "currency"


def test_loads_rejects_non_json_and_non_objects() -> None:
    with pytest.raises(ch.PayloadError, match="invalid JSON"):
        loads('{"kind": "message",')
    with pytest.raises(ch.PayloadError, match="expected an object"):
        loads("[1, 2]")


def test_output_is_utc_iso_and_round_trips() -> None:
    msg = structure(message_obj(metadata={"plan": "gold"}))
    line = dumps(msg)
    obj = json.loads(line)
    assert obj["kind"] == "message"
    assert obj["sent_at"] == "2026-04-01T00:00:00Z"
    assert obj["metadata"] == {"plan": "gold"}
    assert "subject" not in obj
    assert loads(line) == msg


@given(records())
def test_every_valid_record_round_trips(record: ch.Message | ch.Event | ch.ConsentEvent) -> None:
    assert loads(dumps(record)) == record
    assert structure(unstructure(record)) == record


@given(st.text())
def test_arbitrary_text_raises_only_our_errors(text: str) -> None:
    with contextlib.suppress(ch.InvalidInputError):
        loads(text)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "kind",
                "message_id",
                "channel",
                "direction",
                "contact_id",
                "address",
                "sent_at",
                "event_id",
                "type",
                "occurred_at",
                "revenue",
                "currency",
                "machine",
                "metadata",
                "purpose",
                "action",
                "method",
            ]
        ),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(),
            st.text(max_size=20),
            st.lists(st.integers(), max_size=2),
            st.sampled_from(
                [
                    "message",
                    "event",
                    "consent",
                    "email",
                    "sms",
                    "outbound",
                    "delivered",
                    "grant",
                    "import",
                    "2026-04-01T00:00:00Z",
                    "JPY",
                    "1.5",
                ]
            ),
        ),
    )
)
def test_arbitrary_objects_raise_only_our_errors(obj: dict[str, object]) -> None:
    with contextlib.suppress(ch.InvalidInputError):
        structure(obj)


def test_read_jsonl_keeps_every_line(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text(
        json.dumps(message_obj())
        + "\n\n"
        + "not json\n"
        + json.dumps(message_obj(channel="x"))
        + "\n",
        encoding="utf-8",
    )
    lines = list(read_records(path))
    assert [p.line for p in lines] == [1, 3, 4]
    assert lines[0].ok
    assert lines[1].error is not None
    assert lines[1].error.field == "<line>"
    assert lines[2].error is not None
    assert lines[2].error.field == "channel"
    assert lines[1].raw == "not json"
    assert "not json" not in repr(lines[1])


def test_read_csv_with_mapping_metadata_and_zone(tmp_path: Path) -> None:
    path = tmp_path / "legacy.csv"
    path.write_text(
        "配信ID,顧客ID,チャネル,方向,宛先,配信日時,プラン,メモ\n"
        "d-1,c-1,email,outbound,Suzuki@Example.JP,2025/10/01 09:00,gold,x\n"
        'd-2,c-2,sms,outbound,080-9876-5432,"2025/10/01 09:05",,"multi\nline"\n'
        "d-3,c-3,email,outbound,not-an-address,2025/10/01 09:00,gold,\n",
        encoding="utf-8",
    )
    mapping = {
        "配信ID": "message_id",
        "顧客ID": "contact_id",
        "チャネル": "channel",
        "方向": "direction",
        "宛先": "address",
        "配信日時": "sent_at",
        "プラン": "metadata.plan",
        "メモ": "",
    }
    lines = list(read_records(path, mapping=mapping, default_tz="Asia/Tokyo"))
    assert [p.line for p in lines] == [2, 3, 5]
    first = lines[0].record
    assert isinstance(first, ch.Message)
    assert first.address == "Suzuki@example.jp"
    assert first.sent_at == datetime(2025, 10, 1, 0, 0, tzinfo=UTC)
    assert first.metadata == {"plan": "gold"}
    second = lines[1].record
    assert isinstance(second, ch.Message)
    assert second.address == "+818098765432"
    assert second.metadata == {}
    assert lines[2].error is not None
    assert lines[2].error.field == "address"


def test_read_csv_unknown_column_is_a_file_error(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("message_id,colour\nm1,red\n", encoding="utf-8")
    with pytest.raises(ch.PayloadError) as info:
        list(read_records(path))
    assert info.value.field == "colour"
    assert "--map" in info.value.reason
    (parsed,) = read_records(path, mapping={"colour": ""})
    assert parsed.error is not None
    assert parsed.error.field == "channel"


def test_unknown_key_is_reported_before_missing_ones() -> None:
    with pytest.raises(ch.PayloadError) as info:
        structure({"kind": "message", "mesage_id": "m1"})
    assert info.value.field == "mesage_id"


def test_read_csv_in_shift_jis(tmp_path: Path) -> None:
    path = tmp_path / "sjis.csv"
    text = (
        "message_id,contact_id,channel,direction,address,sent_at,subject\n"
        "m1,c1,email,outbound,a@example.jp,2025-10-01T09:00:00+09:00,秋の新商品\n"
    )
    path.write_bytes(text.encode("cp932"))
    # Read as UTF-8, the row alone is rejected (the header is ASCII): line, field, reason.
    (wrong,) = read_records(path)
    assert wrong.error is not None
    assert (wrong.line, wrong.error.field) == (2, "<line>")
    assert "cannot be decoded as utf-8-sig" in wrong.error.reason
    (parsed,) = read_records(path, encoding="cp932")
    assert isinstance(parsed.record, ch.Message)
    assert parsed.record.subject == "秋の新商品"


def test_unknown_suffix(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ch.PayloadError, match="unknown file type"):
        list(read_records(path))


def test_parsed_line_ok_flag() -> None:
    bad = ParsedLine(line=1, raw="x", error=ch.PayloadError(field="a", reason="b"))
    assert not bad.ok


def test_explicit_null_keeps_a_bounce_unclassified() -> None:
    obj = {
        "kind": "event",
        "event_id": "e1",
        "message_id": "m",
        "type": "bounced",
        "occurred_at": 1775001600,
        "reason": "550 5.1.1 user unknown",
    }
    derived = structure(obj)
    assert isinstance(derived, ch.Event)
    assert (derived.status_code, derived.bounce) == ("5.1.1", ch.BounceClass.HARD)
    kept = structure({**obj, "status_code": None, "bounce": None})
    assert isinstance(kept, ch.Event)
    assert (kept.status_code, kept.bounce) == (None, None)
    assert loads(dumps(kept)) == kept
