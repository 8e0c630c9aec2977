"""The import's fast paths store and report exactly what the general paths do (issue 15)."""

from __future__ import annotations

import contextlib
import json
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import hypothesis
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commhistory.convert import ParsedLine, check_records, dumps, loads, read_records
from commhistory.crypto import Keyring
from commhistory.errors import InvalidInputError
from commhistory.facade import CommHistory, open_repository
from commhistory.model import Event, EventType, Message
from commhistory.store import SQLRepository, schema
from commhistory.store import _backend as backend_module
from commhistory.store._backend import without_null_columns
from commhistory.store.layout import EVENT_WRITE_COLUMNS, MESSAGE_WRITE_COLUMNS
from tests.strategies_records import events, messages, records
from tests.test_convert_fast import FIELDS, SPELLINGS, _same_records
from tests.test_fuzz_inputs import JSON_VALUES
from tests.test_store_contract import event, full_event, message

SQL_BACKENDS = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.postgres),
]


# ----------------------------------------------------------------- null columns left out

_VALUES = st.one_of(st.none(), st.text(max_size=3), st.binary(max_size=3), st.integers())


@st.composite
def column_patterns(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    """Rows whose columns are NULL in every row, in all rows but one, in some, or in none."""
    width = draw(st.integers(min_value=1, max_value=6))
    n = draw(st.integers(min_value=backend_module._PRUNE_MIN_ROWS, max_value=80))
    columns: list[list[Any]] = []
    for _ in range(width):
        mode = draw(st.sampled_from(["null", "one", "some", "all"]))
        if mode == "null":
            column: list[Any] = [None] * n
        elif mode == "one":
            column = [None] * n
            column[draw(st.integers(min_value=0, max_value=n - 1))] = draw(_VALUES)
        elif mode == "some":
            column = [draw(_VALUES) for _ in range(n)]
        else:
            column = [draw(_VALUES.filter(lambda v: v is not None)) for _ in range(n)]
        columns.append(column)
    return list(zip(*columns, strict=True))


@settings(max_examples=200)
@given(column_patterns())
def test_left_out_columns_were_null_in_every_row(rows: list[tuple[Any, ...]]) -> None:
    columns = [f"c{i}" for i in range(len(rows[0]))]
    table = sa.Table(
        "t", sa.MetaData(), sa.Column("c0", sa.Text, primary_key=True),
        *[sa.Column(c, sa.Text, nullable=True) for c in columns[1:]],
    )  # fmt: skip
    kept, out = without_null_columns(table, columns, rows)
    assert kept[0] == "c0"  # the primary key is never left out
    assert len(out) == len(rows)
    for row, new in zip(rows, out, strict=True):
        # Putting NULL back where a column was left out gives the row back.
        again = dict(zip(kept, new, strict=True))
        assert tuple(again.get(c) for c in columns) == row
    for name in set(columns) - set(kept):
        assert all(row[columns.index(name)] is None for row in rows)
    for name in set(kept) - {"c0"}:
        assert any(row[columns.index(name)] is not None for row in rows)


def test_columns_with_a_default_are_never_left_out() -> None:
    for table, columns in (
        (schema.events, EVENT_WRITE_COLUMNS),
        (schema.messages, MESSAGE_WRITE_COLUMNS),
    ):
        for name in columns:
            column = table.c[name]
            if column.default is not None or column.server_default is not None:
                assert not backend_module._null_by_default(column), name
        rows = [tuple(None for _ in columns)] * backend_module._PRUNE_MIN_ROWS
        kept, _ = without_null_columns(table, columns, rows)
        assert {c.name for c in table.primary_key.columns} <= set(kept)


@pytest.fixture(params=SQL_BACKENDS)
def two_urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two empty databases of one kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
        return
    first: str = request.getfixturevalue("pg_url")
    base: str = request.getfixturevalue("postgres_url")
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(base, poolclass=sa.NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {name}")
    sep = "&" if "?" in base else "?"
    try:
        yield first, f"{base}{sep}options=-csearch_path%3D{name}"
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {name} CASCADE")
        admin.dispose()


def _stored(
    url: str, keyring: Keyring, *, prune: bool, monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, Any]:
    monkeypatch.setattr(backend_module, "_PRUNE_MIN_ROWS", 64 if prune else 10**9)
    messages = [message(n, contact=f"c{n % 7}", provider=None, provider_message_id=None,
                        metadata={}) for n in range(300)]  # fmt: skip
    messages[40] = message(40, contact="c5")  # one message with provider ids and metadata
    events = [event(n, f"m{n % 300}", type=EventType.OPENED, user_agent="UA") for n in range(400)]
    events[77] = full_event(77, "m3")  # one event with every column set
    with open_repository(url, keyring, batch_size=1000) as repo:
        repo.record_messages(messages)
        repo.record_events(events)
        return _plain_rows(repo), [repo.timeline(f"c{c}") for c in range(7)]


def _plain_rows(repo: CommHistory[SQLRepository]) -> dict[str, list[tuple[Any, ...]]]:
    """Every stored column of messages and events; a ciphertext as whether it is set."""
    out = {}
    with repo.store.engine.connect() as conn:
        for table in ("messages", "events"):
            columns = schema.metadata.tables[table].columns
            cols = [c.name for c in columns if c.name != "stored_seq"]
            rows = conn.exec_driver_sql(f"SELECT {', '.join(cols)} FROM {table}").all()
            out[table] = sorted(
                (tuple(v is not None if isinstance(v, bytes | memoryview) else v for v in r)
                 for r in rows),
                key=repr,
            )  # fmt: skip
    return out


def test_bulk_inserts_store_the_same_rows_with_null_columns_left_out(
    two_urls: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    keyring = Keyring.generate()
    pruned = _stored(two_urls[0], keyring, prune=True, monkeypatch=monkeypatch)
    full = _stored(two_urls[1], keyring, prune=False, monkeypatch=monkeypatch)
    assert pruned == full
    rows = pruned[0]["events"]
    assert len(rows) == 400
    assert sum(1 for r in rows if r[3] is not None) == 1  # provider: the full event only


# ----------------------------------------------------------------- validate: certainly valid

SIMPLE_MESSAGE = (
    '{"kind": "message", "message_id": "m1", "channel": "email", "direction": "outbound", '
    '"contact_id": "c1", "address": "Taro@Example.JP", "purpose": "marketing", '
    '"subject": "春のご案内", "body": "本文", "sent_at": "2026-04-01T00:00:00+00:00"}'
)
SIMPLE_EVENT = (
    '{"kind": "event", "event_id": "e1", "message_id": "m1", "type": "clicked", '
    '"occurred_at": "2026-04-01T00:31:00Z", "url": "https://example.jp/?c=1", "machine": false}'
)


def _outcomes(lines: list[ParsedLine]) -> list[tuple[int, object]]:
    out: list[tuple[int, object]] = []
    for parsed in lines:
        if parsed.record is not None:
            out.append((parsed.line, parsed.record))
        else:
            assert parsed.error is not None
            out.append(
                (parsed.line, (type(parsed.error), parsed.error.field, parsed.error.reason))
            )
    return out


def _reference(path: Path) -> list[tuple[int, object]]:
    """Each non-blank line's outcome through loads(), which structures every line in full."""
    out: list[tuple[int, object]] = []
    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as fh:
        for number, raw in enumerate(fh, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            try:
                out.append((number, loads(line)))
            except InvalidInputError as exc:
                out.append((number, (type(exc), exc.field, exc.reason)))
    return out


def _compare_readers(path: Path) -> dict[str, int]:
    """read_records against loads() and check_records; returns what check_records counted."""
    counts: dict[str, int] = {}
    checked = list(check_records(path, counts=counts))
    full = list(read_records(path))
    if all(p.error is None or not p.error.reason.startswith("cannot be decoded") for p in full):
        # The trusted builders build what structuring builds, equal and alike.
        reference = _reference(path)
        assert [n for n, _ in reference] == [p.line for p in full]
        for (_, expected), parsed in zip(reference, full, strict=True):
            if parsed.record is None:
                assert parsed.error is not None
                error = parsed.error
                assert (type(error), error.field, error.reason) == expected
            else:
                _same_records(parsed.record, expected)
                attrs.validate(parsed.record)
    shown = {p.line for p in checked}
    # Every line it yields is read_records' line, outcome for outcome.
    assert _outcomes(checked) == [o for o in _outcomes(full) if o[0] in shown]
    # Every line it only counted holds a valid record of the class counted.
    hidden = [p for p in full if p.line not in shown]
    assert all(p.record is not None for p in hidden)
    by_class: dict[str, int] = {}
    for p in hidden:
        name = type(p.record).__name__
        by_class[name] = by_class.get(name, 0) + 1
    assert by_class == counts
    return counts


def test_canonical_messages_and_events_are_only_counted(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text(f"{SIMPLE_MESSAGE}\n\n{SIMPLE_EVENT}\n", encoding="utf-8")
    assert _compare_readers(path) == {"Message": 1, "Event": 1}


@pytest.mark.parametrize(
    ("line", "field"),
    [
        (SIMPLE_EVENT.replace('"event_id": "e1"', '"event_id": "e1", "event_id": "e2"'), "<line>"),
        (SIMPLE_EVENT.replace('"clicked"', '"clicked", "bogus": 1'), "bogus"),
        (SIMPLE_EVENT.replace('"e1"', '" "'), "event_id"),
        (SIMPLE_EVENT.replace('"e1"', '"e\\u0000"'), "event_id"),
        (SIMPLE_EVENT.replace('"m1"', "null"), "message_id"),
        (SIMPLE_EVENT.replace("00:31:00Z", "00:31:00"), "occurred_at"),
        (SIMPLE_EVENT.replace('"https', '"\\ud800https'), "url"),
        (SIMPLE_MESSAGE.replace("Taro@Example.JP", "not an address"), "address"),
        (SIMPLE_MESSAGE.replace('"outbound"', '"sideways"'), "direction"),
        (SIMPLE_MESSAGE.replace('"m1"', '"' + "m" * 256 + '"'), "message_id"),
    ],
)
def test_lines_the_check_refuses_get_the_usual_error(
    tmp_path: Path, line: str, field: str
) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    assert _compare_readers(path) == {}
    (parsed,) = read_records(path)
    assert parsed.error is not None
    assert parsed.error.field == field


@st.composite
def near_canonical_lines(draw: st.DrawFn) -> str:
    """A canonical message or event line, its fields mutated, as a writer might spell it."""
    obj: dict[str, Any] = json.loads(draw(st.sampled_from([SIMPLE_MESSAGE, SIMPLE_EVENT])))
    if draw(st.booleans()):
        obj = json.loads(dumps(draw(records())))
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        field = draw(st.sampled_from([*obj, *FIELDS, "unknown_key"]))
        action = draw(st.sampled_from(["replace", "spelling", "drop", "null"]))
        if action == "drop":
            obj.pop(field, None)
        elif action == "null":
            obj[field] = None
        elif action == "spelling":
            obj[field] = draw(SPELLINGS | st.sampled_from(["", " m1", "m\x00", "é", "\ud800"]))
        else:
            obj[field] = draw(JSON_VALUES)
    if draw(st.booleans()):  # keys in another order: another shape check
        obj = dict(draw(st.permutations(list(obj.items()))))
    line = json.dumps(obj, ensure_ascii=draw(st.booleans()))
    if draw(st.integers(min_value=0, max_value=9)) == 0 and len(obj) > 1:
        key = draw(st.sampled_from(sorted(obj)))  # a repeated key, as text
        line = line[:-1] + f", {json.dumps(key)}: {json.dumps(obj[key])}" + "}"
    return line


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(near_canonical_lines(), min_size=1, max_size=4))
def test_check_records_counts_only_what_read_records_accepts(lines: list[str]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "h.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
        counted = _compare_readers(path)
    hypothesis.event(f"counted {sum(counted.values())} of {len(lines)}")


# ----------------------------------------------------------------- random sparse batches

_MESSAGE_OPTIONAL = ("campaign_id", "variant", "subject", "body", "provider", "metadata")
_EVENT_OPTIONAL = (
    "provider", "provider_event_id", "address", "status_code", "bounce", "reason", "url",
    "user_agent", "ip", "revenue", "metadata",
)  # fmt: skip
_UNSET: dict[str, Any] = {"metadata": {}, "revenue": None}


def _thin(record: Any, fields: tuple[str, ...], keep: dict[str, int], i: int) -> Any:
    """*record* with each optional field set on the first keep[field] rows only."""
    changes = {f: _UNSET.get(f) for f in fields if i >= keep[f]}
    if "revenue" in changes:
        changes["currency"] = None
    return attrs.evolve(record, **changes)


@st.composite
def sparse_batches(draw: st.DrawFn) -> tuple[list[Message], list[Event]]:
    """70 messages and 100 events whose optional fields are set in none, one, some or all rows."""
    n_messages, n_events = 70, 100
    keep = {
        f: draw(st.sampled_from([0, 1, 5, n_events]))
        for f in {*_MESSAGE_OPTIONAL, *_EVENT_OPTIONAL}
    }
    message = draw(messages())
    event = attrs.evolve(draw(events()), message_id="m0", provider_message_id=None)
    out_m = [
        _thin(
            attrs.evolve(
                message, message_id=f"m{i}", contact_id=f"c{i % 5}",
                provider_message_id=None if message.provider is None else f"pm{i}",
            ),
            _MESSAGE_OPTIONAL, keep, i,
        )
        for i in range(n_messages)
    ]  # fmt: skip
    out_e = []
    for i in range(n_events):
        e = _thin(event, _EVENT_OPTIONAL, keep, i)
        e = attrs.evolve(
            e, event_id=f"e{i}", message_id=f"m{i % n_messages}", provider_message_id=None,
            provider_event_id=None if e.provider_event_id is None else f"pe{i}",
        )  # fmt: skip
        out_e.append(e)
    return out_m, out_e


def _store_batch(url: str, keyring: Keyring, batch: tuple[list[Message], list[Event]]) -> Any:
    with open_repository(url, keyring, batch_size=1000) as repo:
        repo.record_messages(batch[0])
        repo.record_events(batch[1])
        return _plain_rows(repo), [repo.timeline(f"c{c}") for c in range(5)]


@pytest.mark.parametrize("kind", SQL_BACKENDS)
@settings(
    deadline=None,
    max_examples=8,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(batch=sparse_batches())
def test_random_sparse_batches_store_the_same_rows_either_way(
    kind: str,
    batch: tuple[list[Message], list[Event]],
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keyring = Keyring.generate()
    stored = []
    with tempfile.TemporaryDirectory() as folder, _databases(kind, folder, request) as urls:
        for url, prune in zip(urls, (True, False), strict=True):
            monkeypatch.setattr(backend_module, "_PRUNE_MIN_ROWS", 64 if prune else 10**9)
            stored.append(_store_batch(url, keyring, batch))
    assert stored[0] == stored[1]
    assert len(stored[0][0]["events"]) == len({e.event_id for e in batch[1]})


@contextlib.contextmanager
def _databases(kind: str, folder: str, request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """Two empty databases of one kind for one example."""
    if kind == "sqlite":
        yield [f"sqlite:///{folder}/a.db", f"sqlite:///{folder}/b.db"]
        return
    base: str = request.getfixturevalue("postgres_url")
    names = [f"t_{uuid.uuid4().hex[:16]}" for _ in range(2)]
    admin = sa.create_engine(base, poolclass=sa.NullPool)
    with admin.begin() as conn:
        for name in names:
            conn.exec_driver_sql(f"CREATE SCHEMA {name}")
    sep = "&" if "?" in base else "?"
    try:
        yield [f"{base}{sep}options=-csearch_path%3D{name}" for name in names]
    finally:
        with admin.begin() as conn:
            for name in names:
                conn.exec_driver_sql(f"DROP SCHEMA {name} CASCADE")
        admin.dispose()
