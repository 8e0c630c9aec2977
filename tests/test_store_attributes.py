"""Contact attributes end to end: the same tests on memory, SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from commhistory.audit import Actor
from commhistory.contacts import AttributeDefinition, AttributeSchema, AttributeType
from commhistory.convert import ParsedLine, dumps
from commhistory.crypto import Keyring
from commhistory.errors import (
    AttributeEnumError,
    AttributeSchemaError,
    AttributeTypeError,
    InvalidInputError,
    NotFoundError,
    PermissionDenied,
    PersonalValueError,
    UnknownAttributeError,
)
from commhistory.facade import CommHistory, open_repository
from commhistory.model import ContactUpdate
from commhistory.store import MemoryRepository

T0 = datetime(2026, 4, 1, tzinfo=UTC)
DAY = timedelta(days=1)
T = AttributeType
SCHEMA = AttributeSchema(
    [
        AttributeDefinition(name="tier", type=T.ENUM, values=("gold", "silver", "bronze")),
        AttributeDefinition(name="region", type=T.STR),
        AttributeDefinition(name="spend", type=T.DECIMAL),
        AttributeDefinition(name="visits", type=T.INT),
        AttributeDefinition(name="vip", type=T.BOOL),
        AttributeDefinition(name="signup", type=T.DATE),
        AttributeDefinition(name="last_seen", type=T.DATETIME),
        AttributeDefinition(name="tags", type=T.LIST),
        AttributeDefinition(name="full_name", type=T.STR, personal=True),
        AttributeDefinition(name="birth_date", type=T.DATE, personal=True),
        AttributeDefinition(name="postal_address", type=T.STR, personal=True),
    ]
)
PERSONAL = {"full_name": "山田 太郎 Yamada", "postal_address": "1-2-3 Chiyoda Tokyo-to"}
VALUES: dict[str, Any] = {
    "tier": "gold",
    "region": "JP-13",
    "spend": "12500.50",
    "visits": 7,
    "vip": True,
    "signup": "2025-12-24",
    "last_seen": "2026-03-31T18:00:00+09:00",
    "tags": ["newsletter", "app"],
    "birth_date": "1990-02-03",
    **PERSONAL,
}
TYPED: dict[str, Any] = {
    "tier": "gold",
    "region": "JP-13",
    "spend": Decimal("12500.5"),
    "visits": 7,
    "vip": True,
    "signup": date(2025, 12, 24),
    "last_seen": datetime(2026, 3, 31, 9, tzinfo=UTC),
    "tags": ("newsletter", "app"),
    "birth_date": date(1990, 2, 3),
    **PERSONAL,
}

BACKENDS = ["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    kind = getattr(request, "param", "sqlite")
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'attrs.db'}"
    pg: str = request.getfixturevalue("pg_url")
    return pg


@pytest.fixture(params=BACKENDS)
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CommHistory[Any]]:
    if request.param == "memory":
        facade: CommHistory[Any] = CommHistory(MemoryRepository(batch_size=3))
    else:
        target = (
            f"sqlite:///{tmp_path / 'attrs.db'}"
            if request.param == "sqlite"
            else request.getfixturevalue("pg_url")
        )
        facade = open_repository(target, Keyring.generate(), batch_size=3)
    with facade:
        facade.declare_attributes(SCHEMA)
        yield facade


def lines(*records: ContactUpdate) -> list[ParsedLine]:
    return [ParsedLine(line=i, raw=dumps(r), record=r) for i, r in enumerate(records, 1)]


def update(contact: str, at: datetime = T0, **values: Any) -> ContactUpdate:
    return ContactUpdate(contact_id=contact, attributes=values, at=at)


# ---------------------------------------------------------------------- schema


def test_declaring_is_idempotent_and_kept_in_the_store(repo: CommHistory[Any]) -> None:
    assert repo.declare_attributes(SCHEMA) == SCHEMA
    assert repo.attribute_schema() == SCHEMA
    extra = AttributeDefinition(name="score", type=T.INT)
    schema = repo.declare_attributes([extra])
    assert set(schema.names) == {*SCHEMA.names, "score"}
    # A second facade over the same store sees the declarations.
    assert CommHistory(repo.store).attribute_schema() == schema


def test_changing_a_type_or_personal_flag_is_refused_unless_allowed(
    repo: CommHistory[Any],
) -> None:
    with pytest.raises(AttributeSchemaError, match="allow_changes"):
        repo.declare_attributes([AttributeDefinition(name="visits", type=T.STR)])
    with pytest.raises(AttributeSchemaError, match="personal"):
        repo.declare_attributes([AttributeDefinition(name="region", type=T.STR, personal=True)])
    assert repo.attribute_schema() == SCHEMA
    repo.set_attributes("c1", {"visits": 3}, at=T0)
    changed = repo.declare_attributes(
        [AttributeDefinition(name="visits", type=T.DECIMAL)], allow_changes=True
    )
    assert changed["visits"].type is T.DECIMAL
    assert repo.attributes("c1") == {"visits": 3}  # stored before: kept as it was
    repo.set_attributes("c1", {"visits": "3.5"}, at=T0 + DAY)
    assert repo.attributes("c1") == {"visits": Decimal("3.5")}


# ---------------------------------------------------------------------- values and history


def test_values_come_back_typed_and_personal_ones_masked(repo: CommHistory[Any]) -> None:
    assert repo.set_attributes("c1", VALUES, at=T0) is True
    assert repo.attributes("c1") == TYPED
    masked = repo.masked_attributes("c1")
    assert masked == {**TYPED, "full_name": None, "postal_address": None, "birth_date": None}


def test_history_and_values_at_a_time(repo: CommHistory[Any]) -> None:
    repo.set_attributes("c1", {"tier": "bronze", "full_name": "Taro"}, at=T0)
    repo.set_attributes("c1", {"tier": "silver"}, at=T0 + 10 * DAY)
    repo.set_attributes("c1", {"tier": "gold", "full_name": "Taro Y"}, at=T0 + 20 * DAY)
    # Out of order: a change learned late lands in the history, not on top.
    assert repo.set_attributes("c1", {"tier": "silver"}, at=T0 + 5 * DAY) is True
    assert repo.attributes("c1", at=T0) == {"tier": "bronze", "full_name": "Taro"}
    assert repo.attributes("c1", at=T0 + 6 * DAY)["tier"] == "silver"
    assert repo.attributes("c1", at=T0 + 15 * DAY)["tier"] == "silver"
    assert repo.attributes("c1") == {"tier": "gold", "full_name": "Taro Y"}
    assert repo.attributes("c1", at=T0 - DAY) == {}
    tiers = [
        (v.value, v.valid_from, v.valid_to)
        for v in repo.attribute_history("c1")
        if v.name == "tier"
    ]
    assert tiers == [
        ("bronze", T0, T0 + 5 * DAY),
        ("silver", T0 + 5 * DAY, T0 + 10 * DAY),
        ("silver", T0 + 10 * DAY, T0 + 20 * DAY),
        ("gold", T0 + 20 * DAY, None),
    ]
    names = [v.value for v in repo.attribute_history("c1") if v.name == "full_name"]
    assert names == ["Taro", "Taro Y"]


def test_setting_the_value_in_force_changes_nothing(repo: CommHistory[Any]) -> None:
    assert repo.set_attributes("c1", {"tier": "gold", "full_name": "Taro"}, at=T0) is True
    before = repo.attribute_history("c1")
    assert repo.set_attributes("c1", {"tier": "gold", "full_name": "Taro"}, at=T0) is False
    assert repo.set_attributes("c1", {"tier": "gold"}, at=T0 + DAY) is False
    assert repo.set_attributes("c1", {"full_name": "Taro"}, at=T0 + DAY) is False
    assert repo.attribute_history("c1") == before


def test_none_unsets_from_that_time(repo: CommHistory[Any]) -> None:
    repo.set_attributes("c1", {"tier": "gold", "region": "JP-13"}, at=T0)
    assert repo.set_attributes("c1", {"tier": None}, at=T0 + DAY) is True
    assert repo.attributes("c1") == {"region": "JP-13"}
    assert repo.attributes("c1", at=T0)["tier"] == "gold"
    assert repo.set_attributes("c1", {"tier": None}, at=T0 + 2 * DAY) is False


def test_same_time_overwrites_in_place(repo: CommHistory[Any]) -> None:
    repo.set_attributes("c1", {"full_name": "Taro", "tier": "gold"}, at=T0)
    repo.set_attributes("c1", {"full_name": "Jiro", "tier": "silver"}, at=T0)
    assert repo.attributes("c1") == {"full_name": "Jiro", "tier": "silver"}
    assert len(repo.attribute_history("c1")) == 2


# ---------------------------------------------------------------------- refusals, atomicity


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"colour": "red"}, UnknownAttributeError),
        ({"visits": "many"}, AttributeTypeError),
        ({"tier": "diamond"}, AttributeEnumError),
        ({"region": "taro@example.com"}, PersonalValueError),
        ({"region": "090-1234-5678"}, PersonalValueError),
    ],
)
def test_a_refused_value_stores_nothing_of_the_call(
    repo: CommHistory[Any], values: dict[str, Any], error: type[Exception]
) -> None:
    repo.set_attributes("c1", {"tier": "bronze"}, at=T0)
    before = repo.attribute_history("c1")
    with pytest.raises(error):
        repo.set_attributes("c1", {"tier": "gold", "full_name": "Taro", **values}, at=T0 + DAY)
    assert repo.attribute_history("c1") == before


def test_a_bad_update_in_a_many_call_stores_nothing(repo: CommHistory[Any]) -> None:
    good = [update(f"c{i}", tier="gold", full_name=f"Name {i}") for i in range(5)]
    with pytest.raises(AttributeEnumError):
        repo.set_attributes_many([*good, update("c9", tier="diamond")])
    for i in range(5):
        with pytest.raises(NotFoundError):
            repo.attributes(f"c{i}")
    assert repo.set_attributes_many(good) == [True] * 5
    assert repo.set_attributes_many(good) == [False] * 5


def test_an_erased_contact_takes_no_attributes(repo: CommHistory[Any]) -> None:
    repo.set_attributes("c1", VALUES, at=T0)
    repo.set_attributes("c2", {"tier": "gold"}, at=T0)
    report = repo.erase_subject("c1")
    assert {i.what: i.count for i in report.destroyed}["attributes"] == len(VALUES)
    assert repo.attributes("c1") == {}
    assert repo.attribute_history("c1") == []
    with pytest.raises(InvalidInputError, match="erased"):
        repo.set_attributes("c1", {"tier": "gold"}, at=T0 + DAY)
    with pytest.raises(InvalidInputError, match="erased"):
        repo.set_attributes_many([update("c2", tier="silver"), update("c1", tier="silver")])
    assert repo.attributes("c2") == {"tier": "gold"}  # nothing of the refused call
    assert repo.attribute_history("c1") == []


def test_unknown_contacts_are_not_found(repo: CommHistory[Any]) -> None:
    with pytest.raises(NotFoundError):
        repo.attributes("nobody")
    with pytest.raises(NotFoundError):
        repo.masked_attributes("nobody")
    with pytest.raises(NotFoundError):
        repo.attribute_history("nobody")


# ---------------------------------------------------------------------- privacy


def test_export_has_current_values_and_history(repo: CommHistory[Any]) -> None:
    repo.set_attributes("c1", {"tier": "silver", "birth_date": "1990-02-03"}, at=T0)
    repo.set_attributes("c1", {"tier": "gold"}, at=T0 + DAY)
    doc = repo.export_subject("c1")
    assert doc["attributes"] == {"tier": "gold", "birth_date": "1990-02-03"}
    history = [(h["name"], h["value"], h["valid_to"]) for h in doc["attribute_history"]]
    assert history == [
        ("birth_date", "1990-02-03", None),
        ("tier", "silver", "2026-04-02T00:00:00Z"),
        ("tier", "gold", None),
    ]
    repo.erase_subject("c1")
    after = repo.export_subject("c1")
    assert after["attributes"] == {}
    assert after["attribute_history"] == []


# ---------------------------------------------------------------------- ingest


def test_contact_lines_are_ingested_in_batches(repo: CommHistory[Any]) -> None:
    good = [update(f"c{i}", tier="gold", visits=str(i), full_name=f"N{i}") for i in range(4)]
    bad = update("c8", tier="diamond")
    report = repo.ingest(lines(*good, bad, update("c9", colour="red")), source="crm.jsonl")
    assert (report.inserted, report.duplicates, report.rejected) == (4, 0, 2)
    assert repo.attributes("c3") == {"tier": "gold", "visits": 3, "full_name": "N3"}
    reasons = sorted((d.field, d.line) for d in repo.dead_letters(source="crm.jsonl"))
    assert reasons == [("attributes.colour", 6), ("attributes.tier", 5)]
    again = repo.ingest(lines(*good), source="crm.jsonl")
    assert (again.inserted, again.duplicates, again.rejected) == (0, 4, 0)
    assert repo.record_contacts([update("c1", at=T0 + DAY, tier="silver")]).inserted == 1
    assert repo.attributes("c1", at=T0)["tier"] == "gold"


def test_ingest_refuses_erased_contacts_keeping_only_ids(repo: CommHistory[Any]) -> None:
    repo.set_attributes("c1", {"tier": "gold"}, at=T0)
    repo.erase_subject("c1")
    report = repo.ingest(lines(update("c1", full_name="Taro Again")), source="late.jsonl")
    assert report.rejected == 1
    [letter] = repo.dead_letters(source="late.jsonl")
    assert letter.field == "contact_id"
    assert json.loads(letter.raw) == {"kind": "contact", "contact_id": "c1"}


def test_a_bare_store_refuses_contact_lines() -> None:
    store = MemoryRepository()
    record = update("c1", tier="gold")
    report = store.ingest(lines(record), source="x")
    assert report.rejected == 1
    assert "facade" in store.dead_letters()[0].reason


# ---------------------------------------------------------------------- access


def test_guarded_view_checks_and_audits(repo: CommHistory[Any]) -> None:
    repo.set_attributes("c1", {"tier": "gold", "full_name": "Taro"}, at=T0)
    analyst = repo.as_actor(Actor("ann", ["analyst"]), purpose="segment review")
    assert analyst.masked_attributes("c1") == {"tier": "gold", "full_name": None}
    with pytest.raises(PermissionDenied):
        analyst.attributes("c1")
    with pytest.raises(PermissionDenied):
        analyst.set_attributes("c1", {"tier": "silver"})
    operator = repo.as_actor(Actor("op", ["operator"]), purpose="crm sync")
    assert operator.set_attributes("c1", {"tier": "silver"}, at=T0 + DAY) is True
    officer = repo.as_actor(Actor("po", ["privacy_officer"]), purpose="ticket 7")
    assert officer.attributes("c1")["full_name"] == "Taro"
    entries = [(e.actor_id, e.action, e.outcome) for e in repo.audit_log.entries()]
    assert ("op", "attributes.set", "ok") in entries
    assert ("po", "attributes", "ok") in entries
    assert ("ann", "attributes", "denied") in entries
    assert not any(e.action == "masked_attributes" for e in repo.audit_log.entries())
    set_entry = next(e for e in repo.audit_log.entries() if e.actor_id == "op")
    assert set_entry.contact_id == "c1"
    assert "silver" not in str(set_entry)


# ---------------------------------------------------------------------- SQL: columns, secrecy


@pytest.mark.parametrize(
    "url", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_plain_values_are_filterable_in_sql(url: str) -> None:
    with open_repository(url, Keyring.generate()) as repo:
        repo.declare_attributes(SCHEMA)
        repo.set_attributes("c1", VALUES, at=T0)
        repo.set_attributes("c2", {**VALUES, "tier": "silver", "spend": "99.5"}, at=T0)
        repo.set_attributes("c1", {"tier": "bronze"}, at=T0 + DAY)
        ph = "?" if repo.store.dialect == "sqlite" else "%s"
        current = "FROM contact_attributes WHERE name = {ph} AND valid_to IS NULL AND "
        with repo.store.engine.connect() as conn:

            def ids(sql: str, *params: Any) -> list[str]:
                return sorted(
                    r[0]
                    for r in conn.exec_driver_sql("SELECT contact_id " + sql.format(ph=ph), params)
                )

            assert ids(current + f"value_text = {ph}", "tier", "bronze") == ["c1"]
            assert ids(current + f"value_text IN ({ph}, {ph})", "tier", "silver", "gold") == ["c2"]
            assert ids(current + f"value_micros > {ph}", "spend", 1_000 * 10**6) == ["c1"]
            assert ids(current + f"value_micros BETWEEN {ph} AND {ph}", "spend", 0, 10**8) == [
                "c2"
            ]
            assert ids(current + f"value_date < {ph}", "signup", "2026-01-01") == ["c1", "c2"]
            assert ids(current + f"value_int >= {ph}", "visits", 7) == ["c1", "c2"]
            assert ids(current + "value_bool", "vip") == ["c1", "c2"]
            assert ids(current + "value_text IS NOT NULL", "region") == ["c1", "c2"]
            at = T0 + DAY // 2
            as_of = (
                "FROM contact_attributes WHERE name = {ph} AND valid_from <= {ph} "
                "AND (valid_to IS NULL OR valid_to > {ph}) AND value_text = {ph}"
            )
            micros = int(at.timestamp()) * 10**6
            assert ids(as_of, "tier", micros, micros, "gold") == ["c1"]
            secret = conn.exec_driver_sql(
                f"SELECT value_text, value_secret FROM contact_attributes WHERE name = {ph}",
                ("full_name",),
            ).all()
        assert all(r[0] is None and r[1] is not None for r in secret)


def test_no_plaintext_personal_attribute_in_the_sqlite_file(tmp_path: Path) -> None:
    db = tmp_path / "scan.db"
    with open_repository(f"sqlite:///{db}", Keyring.generate()) as repo:
        repo.declare_attributes(SCHEMA)
        repo.set_attributes("c1", VALUES, at=T0)
        repo.ingest(
            lines(update("c2", full_name="Hanako Suzuki", postal_address="9-9 Osaka")),
            source="crm.jsonl",
        )
        assert repo.attributes("c2")["full_name"] == "Hanako Suzuki"
    blobs = [p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("scan.db")]
    assert any(b"JP-13" in blob for blob in blobs)  # plain values are in the clear
    for value in (*PERSONAL.values(), "1990-02-03", "Hanako Suzuki", "9-9 Osaka"):
        assert not any(value.encode() in blob for blob in blobs), value


def test_erasure_leaves_no_attribute_row(tmp_path: Path) -> None:
    db = tmp_path / "erase.db"
    with open_repository(f"sqlite:///{db}", Keyring.generate()) as repo:
        repo.declare_attributes(SCHEMA)
        repo.set_attributes("c1", VALUES, at=T0)
        repo.set_attributes("c1", {"region": "JP-27"}, at=T0 + DAY)
        repo.erase_subject("c1")
        with repo.store.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT COUNT(*) FROM contact_attributes").scalar() == 0
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT COUNT(*) FROM contact_attributes").scalar() == 0
    finally:
        engine.dispose()
    assert not any(
        b"JP-27" in p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("erase.db")
    )


@pytest.mark.postgres
def test_concurrent_writers_of_one_contact_keep_one_timeline(pg_url: str) -> None:
    keyring = Keyring.generate()
    with open_repository(pg_url, keyring) as repo:
        repo.declare_attributes(SCHEMA)
        repo.set_attributes("c1", {"visits": 0}, at=T0)
        errors: list[BaseException] = []

        def writer(offset: int) -> None:
            try:
                with open_repository(pg_url, keyring) as mine:
                    for i in range(20):
                        mine.set_attributes("c1", {"visits": i + offset}, at=T0 + i * DAY)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(k * 100,)) for k in (1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        history = [v for v in repo.attribute_history("c1") if v.name == "visits"]
        # One unbroken timeline: each version ends where the next begins.
        assert [v.valid_from for v in history] == sorted({v.valid_from for v in history})
        for before, after in itertools.pairwise(history):
            assert before.valid_to == after.valid_from
        assert history[-1].valid_to is None
