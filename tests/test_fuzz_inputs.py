"""Fuzzing the file readers: arbitrary bytes and hostile lines in, only records or rejections out.

For any file, :func:`commhistory.convert.read_records` yields, for each non-blank
line, either a record storage can hold or a typed :class:`~commhistory.InvalidInputError`
rejection; it never raises anything else (CSV: a file-level ``PayloadError`` about
the header is the one exception). Importing the same file stores exactly the
records validation accepted and keeps exactly the rejected lines, with the same
line, field and reason, as dead letters.

``nox -s fuzz`` runs these with a large budget (``--hypothesis-profile=fuzz``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import commhistory as ch
from commhistory.convert import ParsedLine, dumps, read_records
from commhistory.model import MAX_ID_LENGTH, ContactUpdate
from commhistory.store.batching import metadata_bytes, revenue_micros

FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Fields stored in the clear (and indexed): no NUL, at most MAX_ID_LENGTH characters.
PLAIN = frozenset(
    {
        "message_id",
        "contact_id",
        "campaign_id",
        "variant",
        "provider",
        "provider_message_id",
        "event_id",
        "provider_event_id",
        "consent_id",
        "notice_version",
        "notice_hash",
        "actor",
        "status_code",
        "currency",
    }
)

BASE: dict[str, dict[str, Any]] = {
    "message": {
        "kind": "message",
        "message_id": "m-1",
        "channel": "email",
        "direction": "outbound",
        "contact_id": "c-1",
        "address": "taro@example.com",
        "sent_at": "2026-04-01T09:00:00+09:00",
    },
    "event": {
        "kind": "event",
        "event_id": "e-1",
        "type": "converted",
        "occurred_at": "2026-04-02T09:00:00Z",
        "message_id": "m-1",
        "revenue": "4980",
        "currency": "JPY",
    },
    "consent": {
        "kind": "consent",
        "contact_id": "c-1",
        "channel": "email",
        "purpose": "marketing",
        "action": "grant",
        "occurred_at": "2026-03-01T00:00:00Z",
        "method": "web_form",
    },
}
FIELDS = sorted({key for base in BASE.values() for key in base} | {"metadata", "body", "source"})

ANY_CHAR = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
"""Every code point, lone surrogates and NUL included."""

HOSTILE_TEXT = st.one_of(
    st.text(ANY_CHAR, max_size=40),
    st.sampled_from(["\x00", "\ud800", "\udfff", "a\udc80b", "", " ", "1e999999999"]),
    st.integers(min_value=250, max_value=400).map(lambda n: "x" * n),
)
NUMBERS = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["0.1", "1.0000001", "1e30", "-0", "NaN", "1e-999999999", "9" * 80]),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | NUMBERS | HOSTILE_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(HOSTILE_TEXT, inner, max_size=3),
    max_leaves=12,
)


@st.composite
def hostile_lines(draw: st.DrawFn) -> bytes:
    """A canonical JSON line with some fields replaced by hostile values, maybe mangled."""
    obj = dict(BASE[draw(st.sampled_from(sorted(BASE)))])
    for field in draw(st.lists(st.sampled_from(FIELDS), max_size=3)):
        obj[field] = draw(JSON_VALUES)
    text = json.dumps(obj, ensure_ascii=draw(st.booleans()))
    mangle = draw(st.sampled_from(["none", "nest", "duplicate", "truncate", "bigint", "bytes"]))
    if mangle == "nest":
        depth = draw(st.integers(min_value=1, max_value=3000))
        text = text[:-1] + ', "metadata": {"a": ' + "[" * depth + "]" * depth + "}}"
    elif mangle == "duplicate":
        text = text[:-1] + ', "' + draw(st.sampled_from(FIELDS)) + '": "x"}'
    elif mangle == "truncate":
        text = text[: draw(st.integers(min_value=0, max_value=len(text)))]
    elif mangle == "bigint":
        text = text[:-1] + ', "metadata": {"n": ' + "7" * draw(st.integers(4000, 6000)) + "}}"
    data = text.encode("utf-8", "surrogatepass")
    if mangle == "bytes":
        at = draw(st.integers(min_value=0, max_value=len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
    return data


JSONL_FILES = st.one_of(
    st.binary(max_size=3000),
    st.lists(hostile_lines(), min_size=1, max_size=8).map(lambda ls: b"\n".join(ls) + b"\n"),
)

CSV_HEADER = b"message_id,channel,direction,contact_id,address,sent_at,subject,metadata.plan\n"
CSV_GOOD = b"m-1,email,outbound,c-1,taro@example.com,2026-04-01T09:00:00Z,hello,gold\n"
CSV_CELL = st.one_of(
    st.text(ANY_CHAR.filter(lambda c: not 0xD800 <= ord(c) <= 0xDFFF), max_size=20),
    st.sampled_from(['"', '"x', 'x"', '""', "\n", "\r\n", "\r", ",", "\x00", "é", "\t"]),
    st.integers(min_value=131_000, max_value=132_000).map(lambda n: "y" * n),
)


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    """A sheet with a valid header and rows of hostile cells, joined raw (quotes unbalanced)."""
    rows = draw(st.lists(st.lists(CSV_CELL, max_size=9), max_size=6))
    body = b"".join(
        ",".join(row).encode("utf-8") + draw(st.sampled_from([b"\n", b"\r\n", b""]))
        for row in rows
    )
    if draw(st.booleans()):
        at = draw(st.integers(min_value=0, max_value=len(body)))
        body = body[:at] + draw(st.binary(min_size=1, max_size=4)) + body[at:]
    return CSV_HEADER + CSV_GOOD + body + draw(st.sampled_from([b"", CSV_GOOD]))


def _storable(
    record: ch.Message | ch.Event | ch.ConsentEvent | ch.Activity | ContactUpdate,
) -> None:
    """What SQLite and PostgreSQL need of a record, checked without a database."""
    for field in attrs.fields(type(record)):
        value = getattr(record, field.name)
        if isinstance(value, str):
            value.encode("utf-8")  # no lone surrogate
            if field.name in PLAIN:
                assert "\x00" not in value
                assert len(value) <= MAX_ID_LENGTH
    if isinstance(record, ch.Activity):
        metadata_bytes(record.properties)
    elif not isinstance(record, ContactUpdate):
        metadata_bytes(record.metadata)
    if isinstance(record, ch.Event | ch.Activity) and record.revenue is not None:
        revenue_micros(record.revenue)
    dumps(record).encode("utf-8")


def _check_outcomes(parsed: list[ParsedLine]) -> None:
    numbers = [p.line for p in parsed]
    assert numbers == sorted(set(numbers))
    for item in parsed:
        assert (item.record is None) != (item.error is None)
        assert item.raw is not None
        item.raw.encode("utf-8")
        if item.record is not None:
            _storable(item.record)
        else:
            assert isinstance(item.error, ch.InvalidInputError)
            item.error.field.encode("utf-8")
            item.error.reason.encode("utf-8")
            assert "\x00" not in item.error.field + item.error.reason


def _read(path: Path) -> list[ParsedLine] | None:
    """All parsed lines, or None when the file as a whole is refused (CSV header)."""
    try:
        return list(read_records(path))
    except ch.PayloadError as exc:
        refused = exc.field
    assert path.suffix == ".csv" or refused == "<file>"
    return None


_counter = itertools.count()


@pytest.fixture(scope="module")
def template(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, ch.Keyring]:
    """An empty, migrated SQLite file and its keys, copied for each example."""
    base = tmp_path_factory.mktemp("fuzz")
    keys = ch.Keyring.generate()
    with ch.open_repository(f"sqlite:///{base / 'template.db'}", keys, upgrade=True):
        pass
    return base / "template.db", keys


@contextlib.contextmanager
def _fresh(
    template: tuple[Path, ch.Keyring], into: Path
) -> Iterator[ch.CommHistory[ch.SQLRepository]]:
    """A repository of its own for one example (a copy of the empty template file).

    Examples must not share a store: two examples may use the same message id
    with different contacts, which the second import rightly refuses as a
    conflict while ``validate`` (which sees one file) accepts it.
    """
    path = into / "fuzz.db"
    shutil.copyfile(template[0], path)
    with ch.open_repository(f"sqlite:///{path}", template[1], batch_size=3) as repository:
        yield repository


def _validate_equals_import(
    path: Path, parsed: list[ParsedLine], repo: ch.CommHistory[ch.SQLRepository]
) -> None:
    source = f"{path.name}-{next(_counter)}"
    report = repo.ingest(read_records(path), source=source)
    rejected = sorted((p.line, p.error.field, p.error.reason) for p in parsed if p.error)
    letters = sorted((d.line or 0, d.field, d.reason) for d in repo.dead_letters(source=source))
    assert letters == rejected
    assert report.inserted + report.duplicates == sum(1 for p in parsed if p.ok)


@FUZZ
@given(data=JSONL_FILES)
def test_jsonl_reader_yields_only_records_or_rejections(
    data: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("jsonl") / "f.jsonl"
    path.write_bytes(data)
    parsed = list(read_records(path))  # never raises for a .jsonl file
    _check_outcomes(parsed)


@FUZZ
@given(data=csv_files())
def test_csv_reader_yields_only_records_or_rejections(
    data: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("csv") / "f.csv"
    path.write_bytes(data)
    parsed = _read(path)
    assert parsed is not None  # the header is valid, so the file is read
    _check_outcomes(parsed)
    assert parsed[0].ok  # the first row is good and nothing before it can swallow it


@FUZZ
@given(
    data=st.one_of(
        JSONL_FILES.map(lambda d: ("f.jsonl", d)), csv_files().map(lambda d: ("f.csv", d))
    )
)
def test_import_stores_what_validate_accepts(
    data: tuple[str, bytes],
    tmp_path_factory: pytest.TempPathFactory,
    template: tuple[Path, ch.Keyring],
) -> None:
    name, content = data
    folder = tmp_path_factory.mktemp("both")
    path = folder / name
    path.write_bytes(content)
    parsed = _read(path)
    if parsed is None:
        return
    with _fresh(template, folder) as repo:
        _validate_equals_import(path, parsed, repo)
