"""Activities stored and read back: memory, SQLite and PostgreSQL behave the same."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

import commhistory as ch
from commhistory import CommHistory, IngestReport, Keyring, open_repository
from commhistory.convert import dumps, read_records
from commhistory.store import current_revision, downgrade_to_base, upgrade
from commhistory.store._engine import create_engine
from commhistory.store.batching import properties_bytes
from commhistory.store.memory import MemoryRepository
from commhistory.store.sql import SQLRepository

T0 = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)
WEEK = timedelta(days=7)
BACKENDS = ["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
DECLARED = {"purchase": ["sku", "category"], "page_view": ["url_path"], "signup": []}

Opener = Callable[..., CommHistory[Any]]


@pytest.fixture(params=BACKENDS)
def open_history(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Open a facade over each backend (small batches), closing them all at the end."""
    opened: list[CommHistory[Any]] = []
    keyring = Keyring.generate()
    url = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    elif request.param == "postgresql":
        url = request.getfixturevalue("pg_url")

    def opener(*, attribution_window: timedelta | None = None) -> CommHistory[Any]:
        if url is None:
            repo: CommHistory[Any] = CommHistory(
                MemoryRepository(batch_size=3), attribution_window=attribution_window
            )
        else:
            repo = open_repository(
                url, keyring, batch_size=3, attribution_window=attribution_window
            )
        opened.append(repo)
        return repo

    yield opener
    for repo in opened:
        repo.close()


@pytest.fixture
def repo(open_history: Opener) -> CommHistory[Any]:
    history = open_history()
    history.declare_activities(DECLARED)
    return history


def activity(n: int, **kw: Any) -> ch.Activity:
    fields: dict[str, Any] = {
        "activity_id": f"a{n}",
        "contact_id": "c1",
        "name": "purchase",
        "occurred_at": T0 + timedelta(minutes=n),
        "revenue": Decimal("4980.5"),
        "currency": "JPY",
        "properties": {"sku": f"SKU-{n}", "gift_message": "Happy birthday, Hanako"},
    }
    fields.update(kw)
    return ch.Activity(**fields)


def message(n: int, **kw: Any) -> ch.Message:
    fields: dict[str, Any] = {
        "message_id": f"m{n}",
        "channel": ch.Channel.EMAIL,
        "direction": ch.Direction.OUTBOUND,
        "contact_id": "c1",
        "address": "taro@example.com",
        "sent_at": T0 - timedelta(days=2, hours=n),
        "campaign_id": "spring",
    }
    fields.update(kw)
    return ch.Message(**fields)


def click(n: int, message_id: str, at: datetime, **kw: Any) -> ch.Event:
    return ch.Event(
        event_id=f"e{n}",
        type=ch.EventType.CLICKED,
        occurred_at=at,
        message_id=message_id,
        **kw,
    )


# --------------------------------------------------------------------------- writes


def test_declarations_are_stored_and_replaced(repo: CommHistory[Any]) -> None:
    catalog = repo.declare_activities({"purchase": ["sku"], "refund": []})
    assert catalog.names == {
        "purchase": frozenset({"sku"}),
        "page_view": frozenset({"url_path"}),
        "signup": frozenset(),
        "refund": frozenset(),
    }
    assert repo.activity_catalog() == catalog


def test_record_and_read_back_with_properties_merged(repo: CommHistory[Any]) -> None:
    items = [activity(2), activity(1), activity(3, name="page_view", revenue=None, currency=None,
                                                   properties={"url_path": "/shoes"})]  # fmt: skip
    assert repo.record_activities(items) == IngestReport(inserted=3)

    entries = repo.activities("c1")

    assert [e.activity for e in entries] == [items[1], items[0], items[2]]  # by occurred_at
    assert [e.message_id for e in entries] == [None, None, None]
    assert [e.activity.activity_id for e in repo.activities("c1", names="page_view")] == ["a3"]
    window = repo.activities(
        "c1", since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=3)
    )
    assert [e.activity.activity_id for e in window] == ["a2"]


def test_retried_batches_are_duplicates_and_a_changed_identity_is_a_dead_letter(
    repo: CommHistory[Any],
) -> None:
    items = [activity(n) for n in range(1, 6)]
    assert repo.record_activities(items) == IngestReport(inserted=5)
    assert repo.record_activities(items) == IngestReport(duplicates=5)
    # Same id, other content but same contact and name: the first stored wins.
    changed = activity(1, revenue=Decimal("1"), properties={})
    assert repo.record_activities([changed, activity(1, contact_id="c2")]) == IngestReport(
        duplicates=1, rejected=1
    )
    assert repo.activities("c1")[0].activity == items[0]
    with pytest.raises(ch.NotFoundError):
        repo.activities("c2")
    (letter,) = repo.dead_letters()
    assert (letter.field, letter.line, letter.source) == ("activity_id", 2, "record_activities")
    assert json.loads(letter.raw)["contact_id"] == "c2"


def test_within_one_batch_a_repeated_id_is_a_duplicate(repo: CommHistory[Any]) -> None:
    assert repo.record_activities([activity(1), activity(1), activity(2)]) == IngestReport(
        inserted=2, duplicates=1
    )


def test_undeclared_names_and_personal_plain_values_become_dead_letters(
    repo: CommHistory[Any],
) -> None:
    items = [
        activity(1),
        activity(2, name="refund"),
        activity(3, properties={"sku": "call 090-1234-5678"}),
        activity(4, properties={"category": "shoes", "email": "hanako@example.com"}),
    ]
    report = repo.record_activities(items)
    assert report == IngestReport(inserted=2, rejected=2)
    letters = sorted((d.line, d.field) for d in repo.dead_letters())
    assert letters == [(2, "name"), (3, "properties.sku")]
    stored = repo.activities("c1")
    assert stored[1].activity.properties == {"category": "shoes", "email": "hanako@example.com"}


def test_jsonl_import_takes_the_activity_kind(repo: CommHistory[Any], tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    lines = [dumps(activity(1)), dumps(activity(2, name="unknown_thing")), dumps(message(1))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    report = repo.ingest(read_records(path), source="in.jsonl")

    assert report == IngestReport(inserted=2, rejected=1)
    (letter,) = repo.dead_letters()
    assert (letter.source, letter.line, letter.field) == ("in.jsonl", 2, "name")
    assert [e.activity.activity_id for e in repo.activities("c1")] == ["a1"]
    assert repo.ingest(read_records(path), source="in.jsonl") == IngestReport(
        duplicates=2, rejected=1
    )


def test_activities_do_not_change_kpis(repo: CommHistory[Any]) -> None:
    repo.record_messages([message(1), message(2)])
    repo.record_events([click(1, "m1", T0 - timedelta(days=1))])
    before = repo.kpis(by="campaign_id")
    repo.record_activities([activity(1), activity(2)])
    assert repo.kpis(by="campaign_id") == before


# --------------------------------------------------------------------------- attribution


def _history(repo: CommHistory[Any]) -> None:
    repo.record_messages(
        [
            message(1),
            message(2, channel=ch.Channel.SMS, address="+819012345678"),
            message(3, contact_id="c2", address="jiro@example.com"),
            message(4, direction=ch.Direction.INBOUND, provider=None),
        ]
    )
    repo.record_events(
        [
            click(1, "m1", T0 - timedelta(days=1)),
            click(2, "m2", T0 - timedelta(hours=3)),  # SMS: channel-agnostic
            click(3, "m1", T0 - timedelta(hours=1), machine=True),  # a scanner
            click(4, "m3", T0 - timedelta(minutes=30)),  # another contact
            click(5, "m4", T0 - timedelta(minutes=20)),  # an inbound message
            click(6, "m1", T0 + timedelta(days=1)),  # after every activity below
        ]
    )


def test_attribution_is_off_by_default(repo: CommHistory[Any]) -> None:
    _history(repo)
    repo.record_activities([activity(0)])
    assert repo.activities("c1")[0].message_id is None


def test_revenue_is_attributed_to_the_last_human_click_in_the_window(
    open_history: Opener,
) -> None:
    repo = open_history(attribution_window=WEEK)
    repo.declare_activities(DECLARED)
    _history(repo)
    items = [
        activity(0),  # last human click on c1's outbound messages: m2 (SMS)
        activity(1, occurred_at=T0 - timedelta(hours=12)),  # before m2's click: m1
        activity(2, occurred_at=T0 + timedelta(days=5)),  # the latest click, e6: m1
        activity(3, occurred_at=T0 + timedelta(days=30)),  # none in the window
        activity(4, revenue=None, currency=None),  # no revenue
    ]
    repo.record_activities(items)

    got = {e.activity.activity_id: e.message_id for e in repo.activities("c1")}

    assert got == {"a0": "m2", "a1": "m1", "a2": "m1", "a3": None, "a4": None}
    # A retry changes nothing, even after a newer click.
    repo.record_events([click(7, "m1", T0 - timedelta(minutes=1))])
    assert repo.record_activities(items) == IngestReport(duplicates=5)
    assert {e.activity.activity_id: e.message_id for e in repo.activities("c1")} == got
    exported = repo.export_subject("c1")["activities"]
    assert {a["activity_id"]: a["attributed_message_id"] for a in exported} == got


# --------------------------------------------------------------------------- privacy


def test_export_lists_activities_and_erasure_deletes_them(repo: CommHistory[Any]) -> None:
    repo.record_messages([message(1)])
    repo.record_activities([activity(1), activity(2), activity(3, contact_id="c2")])

    doc = repo.export_subject("c1")

    assert [a["activity_id"] for a in doc["activities"]] == ["a1", "a2"]
    assert doc["activities"][0]["properties"]["gift_message"] == "Happy birthday, Hanako"
    assert doc["activities"][0]["kind"] == "activity"
    json.dumps(doc)

    report = repo.erase_subject("c1")

    assert {i.what: i.count for i in report.destroyed}["activities"] == 2
    assert repo.activities("c1") == []
    assert [e.activity.activity_id for e in repo.activities("c2")] == ["a3"]
    assert repo.export_subject("c1")["activities"] == []
    # A retried import after the erasure stores nothing of the person again.
    assert repo.record_activities([activity(9)]) == IngestReport(rejected=1)
    assert repo.activities("c1") == []


def test_retention_purges_old_activities_when_the_policy_says_so(repo: CommHistory[Any]) -> None:
    repo.record_activities([activity(1), activity(2, occurred_at=T0 + timedelta(days=400))])
    now = T0 + timedelta(days=500)
    policy = ch.RetentionPolicy(activities=timedelta(days=365))

    dry = ch.privacy.purge(repo.store, policy, now=now)
    assert {i.kind: i.count for i in dry.items}["activities"] == 1
    assert len(repo.activities("c1")) == 2
    assert "activities" not in {i.kind for i in ch.privacy.purge(repo.store, now=now).items}

    ch.privacy.purge(repo.store, policy, now=now, dry_run=False)
    assert [e.activity.activity_id for e in repo.activities("c1")] == ["a2"]


def test_sqlite_file_holds_plain_properties_never_personal_ones(tmp_path: Path) -> None:
    with open_repository(f"sqlite:///{tmp_path / 'p.db'}", Keyring.generate()) as repo:
        repo.declare_activities(DECLARED)
        repo.record_activities(
            [
                activity(
                    1,
                    properties={
                        "sku": "SKU-PLAIN-77",
                        "email": "hanako@example.com",
                        "gift_message": "Happy birthday, Hanako",
                    },
                )
            ]
        )
        stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("p.db"))
        assert b"SKU-PLAIN-77" in stored
        assert b"hanako@example.com" not in stored
        assert b"Happy birthday" not in stored
        repo.erase_subject("c1")
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("p.db"))
    assert b"SKU-PLAIN-77" not in stored


def test_bare_store_encrypts_undeclared_names_whole(tmp_path: Path) -> None:
    with open_repository(f"sqlite:///{tmp_path / 'b.db'}", Keyring.generate()) as repo:
        store: SQLRepository = repo.store
        assert store.record_activities(
            [activity(1, properties={"sku": "SKU-HIDDEN-1"})]
        ) == IngestReport(inserted=1)
        with store.engine.connect() as conn:
            plain = conn.exec_driver_sql("SELECT plain_properties FROM activities").scalar()
        assert plain is None
        assert repo.activities("c1")[0].activity.properties == {"sku": "SKU-HIDDEN-1"}


# --------------------------------------------------------------------------- migration


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'migrate.db'}"
    pg: str = request.getfixturevalue("pg_url")
    return pg


def test_migration_0007_adds_the_indexed_tables_and_downgrades(url: str) -> None:
    upgrade(url, "0005")
    engine = create_engine(url)
    try:
        assert "activities" not in sa.inspect(engine).get_table_names()
        assert upgrade(engine, "0007") == "0007"
        assert current_revision(engine) == "0007"
        inspector = sa.inspect(engine)
        assert {"activities", "activity_names"} <= set(inspector.get_table_names())
        indexes = {ix["name"]: ix["column_names"] for ix in inspector.get_indexes("activities")}
        assert indexes["ix_activities_contact_id_name_occurred_at"] == [
            "contact_id", "name", "occurred_at",
        ]  # fmt: skip
        assert indexes["ix_activities_name_occurred_at"] == ["name", "occurred_at"]
        downgrade_to_base(engine)
        assert "activities" not in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_guarded_view_checks_and_audits_activity_calls(repo: CommHistory[Any]) -> None:
    analyst = repo.as_actor(ch.Actor("ana", ["analyst"]), purpose="weekly report")
    operator = repo.as_actor(ch.Actor("ops", ["operator"]), purpose="import")
    officer = repo.as_actor(ch.Actor("dpo", ["privacy_officer"]), purpose="ticket 7")

    with pytest.raises(ch.PermissionDenied):
        analyst.record_activities([activity(1)])
    assert operator.declare_activities({"signup": []}).names["signup"] == frozenset()
    assert operator.record_activities([activity(1)]) == IngestReport(inserted=1)
    assert "purchase" in analyst.activity_catalog()
    with pytest.raises(ch.PermissionDenied):
        operator.activities("c1")
    assert [e.activity.activity_id for e in officer.activities("c1")] == ["a1"]

    actions = [(e.actor_id, e.action, e.outcome) for e in repo.audit_log.entries()]
    assert ("ana", "record_activities", "denied") in actions
    assert ("ops", "declare_activities", "ok") in actions
    assert ("ops", "record_activities", "ok") in actions
    assert ("dpo", "activities", "ok") in actions


_flat = st.dictionaries(
    st.text(max_size=8),
    st.none() | st.booleans() | st.integers() | st.text(max_size=12)
    | st.floats(allow_nan=False, allow_infinity=False) | st.lists(st.integers(), max_size=2),
    max_size=4,
)  # fmt: skip


@given(_flat, st.sets(st.text(max_size=8), max_size=3))
def test_property_split_serializes_as_json_does(
    properties: dict[str, Any], plain: set[str]
) -> None:
    shown, hidden = properties_bytes(properties, frozenset(plain))
    as_json = {"ensure_ascii": False, "separators": (",", ":")}
    want_shown = {k: v for k, v in properties.items() if k in plain}
    want_hidden = {k: v for k, v in properties.items() if k not in plain}
    assert shown == (json.dumps(want_shown, **as_json) if want_shown else None)  # type: ignore[arg-type]
    assert hidden == (json.dumps(want_hidden, **as_json).encode() if want_hidden else None)  # type: ignore[arg-type]


def test_bulk_batches_on_postgresql_find_stored_ids_after_an_optimistic_copy(
    open_history: Opener,
) -> None:
    # Batches above the lookup threshold copy first; a stored id sends the batch
    # back to the lookup, which still tells duplicates from conflicts.
    repo = open_history()
    repo.declare_activities(DECLARED)
    store = repo.store
    store._batch_size = 600
    first = [activity(n) for n in range(600)]
    assert repo.record_activities(first) == IngestReport(inserted=600)
    second = [activity(n) for n in range(550, 1150)]
    second[10] = activity(560, contact_id="c2")  # a conflict among the stored ids
    assert repo.record_activities(second) == IngestReport(inserted=550, duplicates=49, rejected=1)
    assert len(repo.activities("c1")) == 1150
    (letter,) = repo.dead_letters()
    assert letter.field == "activity_id"
