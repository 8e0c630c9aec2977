"""Send planning end to end: the same rules on memory, SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest

from commhistory.audit import Actor
from commhistory.contacts import AttributeDefinition, AttributeType
from commhistory.crypto import Keyring
from commhistory.errors import InvalidInputError, PermissionDenied, PlanConfigError
from commhistory.facade import CommHistory, open_repository
from commhistory.model import (
    Channel,
    ConsentAction,
    ConsentEvent,
    ConsentMethod,
    Direction,
    Message,
    Purpose,
)
from commhistory.segments.planning import (
    JAPAN_DEFAULT,
    DeferReason,
    DeferredSend,
    Exclusion,
    ExclusionReason,
    FrequencyCap,
    PlanConfig,
    PlannedSend,
    QuietAction,
    QuietHours,
    SendPlan,
)
from commhistory.store import MemoryRepository
from commhistory.store.protocol import Repository

BACKENDS = ["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
T0 = datetime(2026, 1, 5, tzinfo=UTC)
TOKYO = "Asia/Tokyo"
NEW_YORK = "America/New_York"
R = ExclusionReason
_ids = itertools.count()


@pytest.fixture(params=BACKENDS)
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CommHistory[Any]]:
    if request.param == "memory":
        facade: CommHistory[Any] = CommHistory(MemoryRepository(batch_size=3))
    else:
        target = (
            f"sqlite:///{tmp_path / 'plan.db'}"
            if request.param == "sqlite"
            else request.getfixturevalue("pg_url")
        )
        facade = open_repository(target, Keyring.generate(), batch_size=3)
    with facade:
        facade.declare_attributes([AttributeDefinition(name="tz", type=AttributeType.STR)])
        yield facade


def sent(
    contact: str,
    at: datetime,
    *,
    channel: Channel = Channel.EMAIL,
    purpose: Purpose = Purpose.MARKETING,
    direction: Direction = Direction.OUTBOUND,
    address: str | None = None,
) -> Message:
    if address is None:
        address = (
            f"{contact}@example.com" if channel is Channel.EMAIL else _phone(contact)
        )  # fmt: skip
    return Message(
        message_id=f"m{next(_ids)}",
        channel=channel,
        direction=direction,
        contact_id=contact,
        address=address,
        sent_at=at,
        purpose=purpose,
    )


def _phone(contact: str) -> str:
    digits = sum(ord(c) * (i + 1) for i, c in enumerate(contact)) % 10**7
    return f"+81901{digits:07d}"


def consent(
    contact: str,
    channel: Channel = Channel.EMAIL,
    purpose: Purpose = Purpose.MARKETING,
    action: ConsentAction = ConsentAction.GRANT,
    at: datetime = T0,
) -> ConsentEvent:
    return ConsentEvent(
        contact_id=contact, channel=channel, purpose=purpose, action=action,
        occurred_at=at, method=ConsentMethod.WEB_FORM,
    )  # fmt: skip


def reasons(plan: SendPlan) -> dict[str, str]:
    out = {s.contact_id: "send" for s in plan.send}
    out.update({d.contact_id: "defer" for d in plan.deferred})
    out.update({e.contact_id: e.reason.value for e in plan.excluded})
    return out


def seed(
    repo: CommHistory[Any], contacts: Iterable[str], channel: Channel = Channel.EMAIL
) -> None:
    """Contacts with an address (an old transactional message) and marketing consent."""
    ids = list(contacts)
    repo.record_messages(
        sent(c, T0 - timedelta(days=300), channel=channel, purpose=Purpose.TRANSACTIONAL)
        for c in ids
    )
    repo.record_consent(consent(c, channel) for c in ids)


# ---------------------------------------------------------------------- consent


def test_consent_and_suppression_always_apply_to_marketing(repo: CommHistory[Any]) -> None:
    seed(repo, ["ok", "gone", "bounced"])
    repo.record_messages([sent("never", T0)])
    repo.record_consent([consent("gone", action=ConsentAction.WITHDRAW, at=T0 + timedelta(1))])
    repo.suppression.add("email", "bounced@example.com", reason="hard_bounce", since=T0)
    at = T0 + timedelta(days=10)
    permissive = PlanConfig(caps=(), quiet_hours=())
    plan = repo.plan_send(
        ["ok", "never", "gone", "bounced", "unknown"],
        channel="email", purpose="marketing", at=at, config=permissive,
    )  # fmt: skip
    assert reasons(plan) == {
        "ok": "send",
        "never": "no_consent",
        "gone": "no_consent",
        "bounced": "suppressed",
        "unknown": "no_consent",
    }
    # There is no switch: the configuration has no key for it, and a source of
    # candidates (a segment) that names them does not bypass the check.
    with pytest.raises(PlanConfigError) as info:
        PlanConfig.from_dict({"consent": False})
    assert info.value.field == "consent"

    @attrs.frozen
    class Everyone:
        ids: tuple[str, ...]

        def candidate_ids(self, repo: Repository, at: datetime) -> Iterable[str]:
            return self.ids

    again = repo.plan_send(
        Everyone(("bounced", "ok", "never")), channel="email", purpose="marketing", at=at
    )
    assert reasons(again) == {"bounced": "suppressed", "ok": "send", "never": "no_consent"}
    assert [e.contact_id for e in again.excluded] == ["bounced", "never"]


def test_transactional_follows_the_policy_without_marketing_consent(
    repo: CommHistory[Any],
) -> None:
    repo.record_messages([sent(c, T0, purpose=Purpose.TRANSACTIONAL) for c in ("a", "b", "c")])
    repo.record_consent(
        [consent("b", purpose=Purpose.TRANSACTIONAL, action=ConsentAction.WITHDRAW)]
    )
    repo.suppression.add("email", "c@example.com", reason="hard_bounce", since=T0)
    plan = repo.plan_send(
        ["a", "b", "c"], channel="email", purpose="transactional", at=T0 + timedelta(days=1)
    )
    assert reasons(plan) == {"a": "send", "b": "no_consent", "c": "suppressed"}


def test_erased_contacts_are_excluded(repo: CommHistory[Any]) -> None:
    seed(repo, ["x", "y"])
    repo.erase_subject("x")
    plan = repo.plan_send(["x", "y"], channel="email", purpose="transactional")
    assert reasons(plan) == {"x": "erased", "y": "send"}


# ---------------------------------------------------------------------- addresses


def test_missing_address_and_the_address_to_use(repo: CommHistory[Any]) -> None:
    seed(repo, ["has"])
    repo.record_messages([sent("has", T0, address="zz-second@example.com")])
    repo.record_consent([consent("none")])  # a contact, consent, but no address
    at = T0 + timedelta(days=1)
    plan = repo.plan_send(["none", "has"], channel="email", purpose="marketing", at=at)
    assert reasons(plan) == {"none": "missing_address", "has": "send"}
    # Several addresses: the first in sort order, on every store.
    assert plan.send[0].address == "has@example.com"
    assert "example.com" not in repr(plan) + repr(plan.send)
    assert "example.com" not in str(plan.to_dict())
    assert plan.to_dict(addresses=True)["send"][0]["address"] == "has@example.com"
    ids_only = repo.plan_send(
        ["has"], channel="email", purpose="marketing", at=at, addresses=False
    )
    assert ids_only.send[0].address is None
    assert ids_only.send_ids == ["has"]
    # SMS has its own address kind: an email contact has no phone.
    sms = repo.plan_send(["has"], channel="sms", purpose="transactional", at=at)
    assert reasons(sms) == {"has": "missing_address"}
    # Push has no address kind: nothing to check, nothing to resolve.
    push = repo.plan_send(["has"], channel="push", purpose="transactional", at=at)
    assert push.send[0].address is None


# ---------------------------------------------------------------------- caps


CAP = FrequencyCap(channel="email", purpose="marketing", limit=2, days=3)


def test_caps_count_calendar_days_in_a_dst_free_zone(repo: CommHistory[Any]) -> None:
    at_tokyo = datetime.fromisoformat("2026-03-10T12:00:00+09:00")
    # The window: 2026-03-08 00:00 Tokyo = 2026-03-07 15:00 UTC, to the planning instant.
    edge = datetime(2026, 3, 7, 15, tzinfo=UTC)
    seed(repo, ["before", "on", "later", "other"])
    repo.record_messages(
        [
            sent("before", edge - timedelta(microseconds=1)),
            sent("before", edge + timedelta(days=1)),
            sent("on", edge),
            sent("on", edge + timedelta(days=1)),
            # After the planning instant: not counted.
            sent("later", edge + timedelta(days=1)),
            sent("later", at_tokyo + timedelta(seconds=1)),
            # Another purpose and inbound replies are not counted.
            sent("other", edge + timedelta(hours=1), purpose=Purpose.TRANSACTIONAL),
            sent("other", edge + timedelta(hours=2), direction=Direction.INBOUND),
            sent("other", edge + timedelta(hours=3)),
        ]
    )
    config = PlanConfig(caps=(CAP,), default_zone=TOKYO)
    plan = repo.plan_send(
        ["before", "on", "later", "other"],
        channel="email", purpose="marketing", at=at_tokyo, config=config,
    )  # fmt: skip
    assert reasons(plan) == {
        "before": "send",
        "on": "frequency_cap",
        "later": "send",
        "other": "send",
    }
    # Transactional sends are exempt from a marketing cap.
    tx = repo.plan_send(
        ["on"], channel="email", purpose="transactional", at=at_tokyo, config=config
    )
    assert reasons(tx) == {"on": "send"}
    # ... unless a cap names them.
    tx_cap = FrequencyCap(channel="email", purpose="transactional", limit=1, days=1)
    repo.record_messages(
        [sent("on", at_tokyo - timedelta(hours=1), purpose=Purpose.TRANSACTIONAL)]
    )
    capped = repo.plan_send(
        ["on"], channel="email", purpose="transactional", at=at_tokyo, caps=[tx_cap],
        config=config,
    )  # fmt: skip
    assert reasons(capped) == {"on": "frequency_cap"}


def test_caps_follow_each_contacts_zone_across_a_dst_change(repo: CommHistory[Any]) -> None:
    # New York springs forward on 2026-03-08. Planned at 2026-03-10 12:00 EDT, a
    # 3-day window starts 2026-03-08 00:00 EST (05:00 UTC), not 04:00 UTC.
    at = datetime.fromisoformat("2026-03-10T12:00:00-04:00")
    edge = datetime(2026, 3, 8, 5, tzinfo=UTC)
    seed(repo, ["ny_out", "ny_in", "tokyo"])
    for c in ("ny_out", "ny_in"):
        repo.set_attributes(c, {"tz": NEW_YORK}, at=T0)
    repo.set_attributes("tokyo", {"tz": "Not/A_Zone"}, at=T0)  # falls back on the default
    repo.record_messages(
        [
            sent("ny_out", edge - timedelta(minutes=30)),
            sent("ny_out", edge + timedelta(days=1)),
            sent("ny_in", edge),
            sent("ny_in", edge + timedelta(days=1)),
            # Tokyo's window (2026-03-11 01:00 there) began 2026-03-08 15:00 UTC:
            # only the second counts (in New York's or UTC's window both would).
            sent("tokyo", edge + timedelta(hours=1)),
            sent("tokyo", edge + timedelta(days=1)),
        ]
    )
    config = PlanConfig(caps=(CAP,), zone_attribute="tz", default_zone=TOKYO)
    plan = repo.plan_send(
        ["ny_out", "ny_in", "tokyo"], channel="email", purpose="marketing", at=at, config=config
    )
    assert reasons(plan) == {"ny_out": "send", "ny_in": "frequency_cap", "tokyo": "send"}


def test_zone_attribute_must_be_declared_plain_text(repo: CommHistory[Any]) -> None:
    seed(repo, ["a"])
    quiet = QuietHours(channel="email", purpose="marketing", start=time(21), end=time(8))
    repo.declare_attributes(
        [
            AttributeDefinition(name="secret_tz", type=AttributeType.STR, personal=True),
            AttributeDefinition(name="visits", type=AttributeType.INT),
        ]
    )
    for name in ("nope", "secret_tz", "visits"):
        with pytest.raises(PlanConfigError) as info:
            repo.plan_send(
                ["a"], channel="email", purpose="marketing", quiet_hours=[quiet],
                config=PlanConfig(zone_attribute=name),
            )  # fmt: skip
        assert info.value.field == "zone_attribute"


# ---------------------------------------------------------------------- quiet hours


def _jst(text: str) -> datetime:
    return datetime.fromisoformat(f"2026-03-10T{text}+09:00")


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ("20:59:59", None),
        ("21:00:00", "2026-03-11T08:00:00+09:00"),
        ("23:30:00", "2026-03-11T08:00:00+09:00"),
        ("02:00:00", "2026-03-10T08:00:00+09:00"),
        ("07:59:59", "2026-03-10T08:00:00+09:00"),
        ("08:00:00", None),
    ],
)
def test_japan_default_holds_marketing_sms_past_midnight(
    repo: CommHistory[Any], local: str, expected: str | None
) -> None:
    seed(repo, ["a"], channel=Channel.SMS)
    plan = repo.plan_send(
        ["a"], channel="sms", purpose="marketing", at=_jst(local), config=JAPAN_DEFAULT
    )
    if expected is None:
        assert plan.send_ids == ["a"]
    else:
        assert plan.deferred == (
            DeferredSend(contact_id="a", until=datetime.fromisoformat(expected).astimezone(UTC)),
        )
    # Transactional SMS and marketing email are not held by the profile.
    for channel, purpose in (("sms", "transactional"), ("email", "marketing")):
        other = repo.plan_send(
            ["a"], channel=channel, purpose=purpose, at=_jst(local), config=JAPAN_DEFAULT
        )
        assert not other.deferred


def test_quiet_hours_drop_and_defer_across_a_dst_change(repo: CommHistory[Any]) -> None:
    seed(repo, ["ny", "tokyo"])
    repo.set_attributes("ny", {"tz": NEW_YORK}, at=T0)
    defer = QuietHours(channel="email", purpose="marketing", start=time(21), end=time(8))
    drop = attrs.evolve(defer, action=QuietAction.DROP)
    at = datetime.fromisoformat("2026-03-07T23:00:00-05:00")  # Tokyo: 13:00 on the 8th
    config = PlanConfig(zone_attribute="tz", default_zone=TOKYO)
    plan = repo.plan_send(
        ["ny", "tokyo"], channel="email", purpose="marketing", at=at, quiet_hours=[defer],
        config=config,
    )  # fmt: skip
    # 08:00 on the 8th in New York is already EDT: 12:00 UTC.
    assert plan.deferred == (
        DeferredSend(contact_id="ny", until=datetime(2026, 3, 8, 12, tzinfo=UTC)),
    )
    assert plan.send_ids == ["tokyo"]
    dropped = repo.plan_send(
        ["ny", "tokyo"], channel="email", purpose="marketing", at=at, quiet_hours=[drop],
        config=config,
    )  # fmt: skip
    assert reasons(dropped) == {"ny": "quiet_hours", "tokyo": "send"}
    assert dropped.counts()["quiet_hours"] == 1


def test_checks_apply_in_order(repo: CommHistory[Any]) -> None:
    """A capped contact inside quiet hours is excluded for the cap, not deferred."""
    seed(repo, ["capped", "free"])
    at = _jst("23:00:00")
    repo.record_messages([sent("capped", at - timedelta(hours=1)) for _ in range(2)])
    quiet = QuietHours(channel="email", purpose="marketing", start=time(21), end=time(8))
    plan = repo.plan_send(
        ["capped", "free", "capped"], channel="email", purpose="marketing", at=at,
        caps=[CAP], quiet_hours=[quiet], config=PlanConfig(default_zone=TOKYO),
    )  # fmt: skip
    assert reasons(plan) == {"capped": "frequency_cap", "free": "defer"}
    assert len(plan.excluded) + len(plan.deferred) == 2  # duplicates planned once


def test_bad_candidates_are_typed_errors(repo: CommHistory[Any]) -> None:
    with pytest.raises(InvalidInputError) as info:
        repo.plan_send("c1", channel="email", purpose="marketing")
    assert info.value.field == "contacts"
    with pytest.raises(InvalidInputError) as info:
        repo.plan_send(["c1", ""], channel="email", purpose="marketing")
    assert info.value.field == "contacts[1]"
    with pytest.raises(InvalidInputError) as info:
        repo.plan_send(["c1"], channel="fax", purpose="marketing")
    assert info.value.field == "channel"


def test_plan_records_are_the_typed_records(repo: CommHistory[Any]) -> None:
    """The records filled through their slots equal, hash and freeze as constructed ones."""
    seed(repo, ["capped", "held", "sent"])
    at = _jst("23:00:00")
    repo.record_messages([sent("capped", at - timedelta(hours=1)) for _ in range(2)])
    quiet = QuietHours(channel="email", purpose="marketing", start=time(21), end=time(8))
    config = PlanConfig(default_zone=TOKYO)
    plan = repo.plan_send(
        ["capped", "held", "nobody"], channel="email", purpose="marketing", at=at,
        caps=[CAP], quiet_hours=[quiet], config=config,
    )  # fmt: skip
    (held,) = plan.deferred
    assert held == DeferredSend(contact_id="held", until=held.until)
    assert held.reason is DeferReason.QUIET_HOURS
    assert plan.excluded == (
        Exclusion(contact_id="capped", reason=R.FREQUENCY_CAP),
        Exclusion(contact_id="nobody", reason=R.NO_CONSENT),
    )
    assert {hash(e) for e in plan.excluded} == {
        hash(Exclusion(contact_id="capped", reason=R.FREQUENCY_CAP)),
        hash(Exclusion(contact_id="nobody", reason=R.NO_CONSENT)),
    }
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        plan.excluded[0].reason = R.QUIET_HOURS  # type: ignore[misc]
    now = repo.plan_send(["sent"], channel="email", purpose="marketing", at=T0, addresses=True)
    assert now.send == (PlannedSend(contact_id="sent", address="sent@example.com"),)
    assert "example.com" not in repr(now.send[0])
    assert attrs.asdict(now.send[0]) == {"contact_id": "sent", "address": "sent@example.com"}


def test_candidate_ids_of_a_str_subclass_are_planned(repo: CommHistory[Any]) -> None:
    class Id(str):
        pass

    seed(repo, ["c1"])
    plan = repo.plan_send([Id("c1"), "c1"], channel="email", purpose="marketing", at=T0)
    assert plan.send_ids == ["c1"]
    with pytest.raises(InvalidInputError) as info:
        repo.plan_send(["c1", 7], channel="email", purpose="marketing")  # type: ignore[list-item]
    assert info.value.field == "contacts[1]"


# ---------------------------------------------------------------------- the guarded view


def test_guarded_view_gives_addresses_only_to_read_personal(repo: CommHistory[Any]) -> None:
    seed(repo, ["a"])
    at = T0 + timedelta(days=1)
    analyst = repo.as_actor(Actor("ana", ["analyst"]), purpose="campaign planning")
    support = repo.as_actor(Actor("dpo", ["privacy_officer"]), purpose="campaign planning")
    before = len(repo.audit_log.entries())
    masked = analyst.plan_send(["a"], channel="email", purpose="marketing", at=at)
    assert masked.send_ids == ["a"]
    assert masked.send[0].address is None
    assert len(repo.audit_log.entries()) == before  # ids only: nothing decrypted, not audited
    with pytest.raises(PermissionDenied):
        analyst.plan_send(["a"], channel="email", purpose="marketing", at=at, addresses=True)
    full = support.plan_send(["a"], channel="email", purpose="marketing", at=at)
    assert full.send[0].address == "a@example.com"
    entry = repo.audit_log.entries()[-1]
    assert entry.action == "plan_send.addresses"
    assert entry.targets == ("a",)
    assert "example.com" not in repr(entry)
