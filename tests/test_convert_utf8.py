"""The UTF-8 chunk reader and the generated shape checks answer as the text reader (issue 15).

``read_records`` and ``check_records`` read a UTF-8 file in chunks of bytes
(``convert._read_jsonl_utf8``) and vouch for canonical lines with a check
generated per shape (the keys of a line, in order). Both are compared here with
the text reader (``convert._read_jsonl`` on a ``TextIOWrapper``, which reads
other encodings and dead letters) and with the per-field checks, on both JSON
decoders (orjson and the standard library's).
"""

from __future__ import annotations

import codecs
import io
import json
from pathlib import Path
from typing import Any

import attrs
import hypothesis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commhistory import convert
from commhistory.convert import ParsedLine, check_records, read_records
from tests.test_convert_fast import _same_records
from tests.test_import_fast import SIMPLE_EVENT, SIMPLE_MESSAGE, near_canonical_lines


@pytest.fixture(params=["orjson", "stdlib"])
def decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run with orjson (when installed) and with the standard library's decoder."""
    if request.param == "stdlib":
        monkeypatch.setattr(convert, "_orjson_loads", None)
    elif convert._orjson_loads is None:
        pytest.skip("orjson is not installed")
    return str(request.param)


def _outcome(parsed: ParsedLine) -> tuple[Any, ...]:
    error = parsed.error
    if error is not None:
        return (parsed.line, parsed.raw, type(error), error.field, error.reason)
    return (parsed.line, parsed.raw, parsed.record)


def _text_reader(data: bytes, encoding: str, counts: dict[str, int] | None) -> list[Any]:
    """What the text reader yields for *data* (the reader before chunks of bytes)."""
    handle = io.BytesIO(data)
    text = io.TextIOWrapper(handle, encoding=encoding, errors=convert._MARK_ERRORS, newline="")
    return [
        _outcome(p) for p in convert._read_jsonl(text, None, handle, None, encoding, "JP", counts)
    ]


def _chunk_reader(
    data: bytes, encoding: str, counts: dict[str, int] | None, progress: list[int]
) -> list[Any]:
    handle = io.BytesIO(data)
    lines = convert._read_jsonl_utf8(handle, None, progress.append, encoding, "JP", counts)
    return [_outcome(p) for p in lines]


def _compare(data: bytes, encoding: str) -> None:
    for counting in (False, True):
        expected_counts: dict[str, int] | None = {} if counting else None
        counts: dict[str, int] | None = {} if counting else None
        progress: list[int] = []
        expected = _text_reader(data, encoding, expected_counts)
        assert _chunk_reader(data, encoding, counts, progress) == expected
        assert counts == expected_counts
        assert progress == sorted(progress)
        assert not progress or progress[-1] == len(data)


_ENDINGS = st.sampled_from([b"\n", b"\r\n", b"\r", b"\n\n", b"\r\r\n", b""])
_PIECES = st.one_of(
    near_canonical_lines().map(lambda line: line.encode("utf-8", "surrogatepass")),
    st.sampled_from([SIMPLE_MESSAGE.encode(), SIMPLE_EVENT.encode()]),
    st.sampled_from(
        [
            b"",
            b"   ",
            b"\t",
            "\u3000".encode(),
            b"\x85",
            b"{",
            b"[1]",
            b'{"kind": "event"}',
            b"\xef\xbb\xbf" + SIMPLE_EVENT.encode(),
            SIMPLE_EVENT.encode()[:40] + b"\xff" + SIMPLE_EVENT.encode()[40:],
            SIMPLE_MESSAGE.encode().replace("春".encode(), "春".encode()[:2]),
            SIMPLE_EVENT.encode().replace(b'"e1"', b'"e\\u0031"'),
            SIMPLE_EVENT.encode().replace(b'"e1"', b'"\xed\xa0\x80"'),
            # Breaks str.splitlines knows and neither reader splits at.
            SIMPLE_EVENT.replace("https", "\u2028\x85https").encode(),
            SIMPLE_EVENT.encode().replace(b'"e1"', b'"e\x0b1\x0c\x1c"'),
            b"\x0c",
        ]
    ),
)


@st.composite
def files(draw: st.DrawFn) -> bytes:
    """Lines of every kind with every line ending, maybe a byte order mark first."""
    pieces = draw(st.lists(st.tuples(_PIECES, _ENDINGS), max_size=6))
    data = b"".join(line + end for line, end in pieces)
    if draw(st.booleans()):
        data = codecs.BOM_UTF8 + data
    return data


@settings(
    deadline=None,
    max_examples=300,
    # The decoder fixture is the same for every input.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=files(), chunk=st.sampled_from([1, 2, 7, 64, 1 << 20]), sig=st.booleans())
def test_the_chunk_reader_yields_what_the_text_reader_yields(
    decoder: str, data: bytes, chunk: int, sig: bool
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(convert, "_CHUNK", chunk)
        _compare(data, "utf-8-sig" if sig else "utf-8")
    hypothesis.event(f"lines {len(data.splitlines())}")


@pytest.mark.parametrize("chunk", [3, 100, 1 << 20])
def test_lines_across_chunks_keep_their_numbers(decoder: str, chunk: int) -> None:
    lines = [SIMPLE_MESSAGE, "", SIMPLE_EVENT, "not json", SIMPLE_EVENT.replace("e1", "e2")]
    data = "\r\n".join(lines).encode() + b"\r" + SIMPLE_EVENT.replace("e1", "e3").encode()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(convert, "_CHUNK", chunk)
        _compare(data, "utf-8")
        progress: list[int] = []
        outcomes = _chunk_reader(data, "utf-8", None, progress)
    assert [o[0] for o in outcomes] == [1, 3, 4, 5, 6]
    assert outcomes[2][3:] == ("<line>", "invalid JSON: Expecting value at column 1")


def test_read_and_check_records_use_the_chunk_reader_for_utf8(
    decoder: str, tmp_path: Path
) -> None:
    path = tmp_path / "h.jsonl"
    data = codecs.BOM_UTF8 + f"{SIMPLE_MESSAGE}\r\n\xff\n{SIMPLE_EVENT}".encode("utf-8", "replace")
    path.write_bytes(data.replace("\xff".encode(), b"\xff"))
    for encoding in ("utf-8-sig", "UTF8", "utf-8"):
        parsed = list(read_records(path, encoding=encoding))
        expected = _text_reader(path.read_bytes(), encoding, None)
        assert [_outcome(p) for p in parsed] == expected
        counts: dict[str, int] = {}
        expected_counts: dict[str, int] = {}
        checked = [_outcome(p) for p in check_records(path, counts=counts, encoding=encoding)]
        assert checked == _text_reader(path.read_bytes(), encoding, expected_counts)
        assert counts == expected_counts
        # With utf-8 (not utf-8-sig) the first line starts with the BOM: not JSON.
        sig = codecs.lookup(encoding).name == "utf-8-sig"
        assert counts == ({"Message": 1, "Event": 1} if sig else {"Event": 1})
    (bad,) = (p for p in read_records(path) if p.error is not None)
    assert bad.line == 2
    assert bad.raw == "\\xff"
    assert bad.error is not None
    assert bad.error.reason == "cannot be decoded as utf-8-sig; pass the encoding"


@st.composite
def near_canonical_objects(draw: st.DrawFn) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(draw(near_canonical_lines()))
    return obj


@settings(deadline=None, max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(obj=near_canonical_objects())
def test_the_shape_check_answers_as_the_field_checks(obj: dict[str, Any]) -> None:
    kind = obj.get("kind")
    found = convert._CERTAINLY_VALID.get(kind) if type(kind) is str else None
    expected = -1 if found is None else found[0](obj)
    shape = convert._shape_check(tuple(obj))
    got = -1 if shape is None else shape[0](obj)
    assert got == expected
    if shape is not None and found is not None:
        assert shape[1] == found[1]
    if got >= 0:
        assert shape is not None
        assert found is not None
        # The shape's generated builder builds what the trusted builder builds, and
        # every slot is set (attrs.validate reads each field).
        record = shape[2](obj)
        _same_records(record, found[2](obj))
        attrs.validate(record)
    hypothesis.event("vouched" if got >= 0 else "not sure")


def test_a_valid_line_is_built_as_parsed_line_builds_it() -> None:
    record = convert.loads(SIMPLE_EVENT)
    fast = convert._valid_line(7, "raw", record)
    assert fast == ParsedLine(line=7, raw="raw", record=record)
    assert fast.error is None
    assert fast.ok


def test_shapes_are_remembered_up_to_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(convert, "_SHAPES", {})
    monkeypatch.setattr(convert, "_MAX_SHAPES", 2)
    obj = json.loads(SIMPLE_EVENT)
    keys = tuple(obj)
    for i in range(4):
        assert convert._shape_check((*keys, f"x{i}")) is None  # unknown field: not remembered
    assert convert._SHAPES == {}
    for other in (keys[1:] + keys[:1], keys[2:] + keys[:2]):
        assert convert._shape_check(other) is not None
    assert len(convert._SHAPES) == 2
    check = convert._shape_check(keys)  # not remembered (full), still answered
    assert check is not None
    assert check[0](obj) * 2 == SIMPLE_EVENT.count('"')
    assert keys not in convert._SHAPES
