"""Hostile input files: each bad line is one typed rejection, alike in validate and import.

Each case writes a real file in ``tmp_path`` with one hostile line among good ones
and runs the real CLI: ``validate`` must report exactly that line (line, field,
reason) and exit 1; ``import`` must keep exactly that line as a dead letter with
the same line, field and reason, store every other record, and exit 1, on SQLite
and on PostgreSQL. (See ``docs/reliability.md``, "Hostile input".)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import pytest

import commhistory as ch
from commhistory.cli import main


def message(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "message",
        "message_id": f"m-{i}",
        "channel": "email",
        "direction": "outbound",
        "contact_id": "c-1",
        "address": "taro@example.com",
        "sent_at": "2026-04-01T09:00:00+09:00",
        "campaign_id": "spring",
        **extra,
    }


def event(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "event",
        "event_id": f"e-{i}",
        "type": "converted",
        "occurred_at": "2026-04-02T09:00:00+09:00",
        "message_id": "m-1",
        "currency": "JPY",
        **extra,
    }


def line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False)


def jsonl(bad: str, *, before: int = 1, after: int = 3) -> bytes:
    """A file: *before* good lines, the hostile line, then *after* good lines."""
    good = [line(message(i)) for i in range(1, before + after + 1)]
    lines = [*good[:before], bad, *good[before:]]
    return ("\n".join(lines) + "\n").encode("utf-8")


def long_text(n: int) -> str:
    """*n* characters that do not compress (so PostgreSQL cannot squeeze them into an index)."""
    out = ""
    seed = b"commhistory"
    while len(out) < n:
        seed = hashlib.sha256(seed).digest()
        out += seed.hex()
    return out[:n]


CSV_HEADER = "message_id,channel,direction,contact_id,address,sent_at,subject\n"


def csv_row(i: int, subject: str = "hello") -> str:
    return f"m-{i},email,outbound,c-1,taro@example.com,2026-04-01T09:00:00+09:00,{subject}\n"


@attrs.frozen
class Case:
    """One hostile file: its name, bytes, and the one rejection it must produce."""

    id: str
    name: str
    content: Callable[[], bytes]
    line: int
    field: str
    reason: str  # a substring of the reason
    valid: int  # how many records are valid (and stored)


def _s(text: str) -> bytes:
    return text.encode("utf-8")


CASES = [
    # item 3: parser and number limits
    Case(
        "json-nesting-1000",
        "h.jsonl",
        lambda: jsonl('{"kind":"message","metadata":' + "[" * 1000 + "]" * 1000 + "}"),
        2,
        "<line>",
        "nested more than 64 levels",
        4,
    ),
    Case(
        "metadata-nesting-100",
        "h.jsonl",
        lambda: jsonl(
            line(message(9))[:-1] + ', "metadata": {"a": ' + "[" * 100 + "]" * 100 + "}}"
        ),
        2,
        "metadata",
        "nested more than 64 levels",
        4,
    ),
    Case(
        "integer-5000-digits",
        "h.jsonl",
        lambda: jsonl(line(message(9))[:-1] + ', "metadata": {"n": ' + "9" * 5000 + "}}"),
        2,
        "<line>",
        "a number has too many digits",
        4,
    ),
    Case(
        "revenue-1e999999999",
        "h.jsonl",
        lambda: jsonl(line(event(1, revenue="1e999999999"))),
        2,
        "revenue",
        "too large to store",
        4,
    ),
    Case(
        "lone-surrogate-in-id",
        "h.jsonl",
        lambda: jsonl(line(message(9)).replace('"c-1"', '"c-\\ud800"')),
        2,
        "contact_id",
        "lone surrogate",
        4,
    ),
    Case(
        "lone-surrogate-in-body",
        "h.jsonl",
        lambda: jsonl(line(message(9))[:-1] + ', "body": "x\\udfffy"}'),
        2,
        "body",
        "lone surrogate",
        4,
    ),
    Case(
        "csv-cell-over-131072",
        "h.csv",
        lambda: _s(CSV_HEADER + csv_row(1) + csv_row(2, "x" * 140_000) + csv_row(3) + csv_row(4)),
        3,
        "<row>",
        "a cell is longer than 131072 characters",
        3,
    ),
    Case(
        "csv-quoted-cell-over-131072-across-lines",
        "h.csv",
        lambda: _s(
            CSV_HEADER
            + csv_row(1)
            + csv_row(2, '"' + "y" * 70_000 + "\n" + "z" * 70_000 + '"')
            + csv_row(3)
        ),
        3,
        "<row>",
        "a cell is longer than 131072 characters",
        # the cell's second line is read again as a row of its own and rejected too
        -1,
    ),
    # item 4: what PostgreSQL refuses in plain text and indexes
    Case(
        "nul-in-message-id",
        "h.jsonl",
        lambda: jsonl(line(message(9)).replace('"m-9"', '"m-\\u00009"')),
        2,
        "message_id",
        "contains a NUL character",
        4,
    ),
    Case(
        "nul-in-campaign-id",
        "h.jsonl",
        lambda: jsonl(line(message(9)).replace('"spring"', '"spr\\u0000ing"')),
        2,
        "campaign_id",
        "contains a NUL character",
        4,
    ),
    Case(
        "id-of-10000-characters",
        "h.jsonl",
        lambda: jsonl(line(message(9)).replace('"m-9"', json.dumps(long_text(10_000)))),
        2,
        "message_id",
        "longer than 255 characters",
        4,
    ),
    Case(
        "lone-surrogate-in-metadata-value",
        "h.jsonl",
        lambda: jsonl(line(message(9))[:-1] + ', "metadata": {"plan": "\\ud800"}}'),
        2,
        "metadata",
        "lone surrogate",
        4,
    ),
    # item 6: an unterminated quote must not swallow the rows after it
    Case(
        "csv-unterminated-quote",
        "h.csv",
        lambda: _s(
            CSV_HEADER
            + csv_row(1)
            + csv_row(2, '"never closed')
            + "".join(csv_row(i) for i in range(3, 104))
        ),
        3,
        "<row>",
        "a quoted cell opened on this line is never closed",
        102,
    ),
    # item 7: invalid UTF-8 part-way through a file larger than one batch
    Case(
        "invalid-utf8-mid-file",
        "h.jsonl",
        lambda: (
            _s("".join(line(message(i)) + "\n" for i in range(1, 13)))
            + b'{"kind": "message", "subject": "\xff\xfe"}\n'
            + _s("".join(line(message(i)) + "\n" for i in range(13, 40)))
        ),
        13,
        "<line>",
        "cannot be decoded as utf-8-sig",
        39,
    ),
    Case(
        "invalid-shift-jis-mid-csv",
        "h.csv",
        lambda: (
            _s(CSV_HEADER + csv_row(1))
            + b"m-2,email,outbound,c-1,taro@example.com,2026-04-01T09:00:00+09:00,\x81\n"
            + _s(csv_row(3))
        ),
        3,
        "<line>",
        "cannot be decoded as utf-8-sig",
        2,
    ),
    # item 8: what validate accepted and import rejected
    Case(
        "nan-in-metadata",
        "h.jsonl",
        lambda: jsonl(line(message(9))[:-1] + ', "metadata": {"x": [1, NaN]}}'),
        2,
        "metadata",
        "NaN and Infinity are not JSON numbers",
        4,
    ),
    Case(
        "revenue-7-decimals",
        "h.jsonl",
        lambda: jsonl(line(event(1, revenue="1.0000001"))),
        2,
        "revenue",
        "more than 6 decimal places",
        4,
    ),
    Case(
        "revenue-1e30",
        "h.jsonl",
        lambda: jsonl(line(event(1, revenue="1e30"))),
        2,
        "revenue",
        "too large to store",
        4,
    ),
    Case(
        "revenue-float-0.1+0.2",
        "h.jsonl",
        lambda: jsonl(line(event(1, revenue=0.1 + 0.2))),
        2,
        "revenue",
        "more than 6 decimal places",
        4,
    ),
    Case(
        "lone-surrogate-metadata-key",
        "h.jsonl",
        lambda: jsonl(line(message(9))[:-1] + ', "metadata": {"\\udc80": 1}}'),
        2,
        "metadata",
        "a key contains a lone surrogate",
        4,
    ),
    # item 9: duplicate keys, and unknown keys that may be personal
    Case(
        "duplicate-key",
        "h.jsonl",
        lambda: jsonl(line(message(9))[:-1] + ', "message_id": "m-other"}'),
        2,
        "<line>",
        "duplicate key 'message_id'",
        4,
    ),
    Case(
        "duplicate-key-not-shown",
        "h.jsonl",
        lambda: jsonl(
            line(message(9))[:-1] + ', "metadata": {"taro@example.com": 1, "taro@example.com": 2}}'
        ),
        2,
        "<line>",
        "a key appears more than once",
        4,
    ),
    Case(
        "unknown-key-not-shown",
        "h.jsonl",
        lambda: jsonl(line(message(9))[:-1] + ', "hanako@example.com": 1}'),
        2,
        "<record>",
        "an unknown key (its name is not shown)",
        4,
    ),
]


def _write(tmp_path: Path, case: Case) -> Path:
    path = tmp_path / case.name
    path.write_bytes(case.content())
    return path


def _validate(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = main(["validate", str(path), "--format", "json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


def _import(
    path: Path, db: str, keyring: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, Any], list[tuple[int | None, str, str]]]:
    code = main(
        [
            "import",
            str(path),
            "--db",
            db,
            "--keyring",
            str(keyring),
            "--format",
            "json",
            "--batch-size",
            "10",
        ]
    )
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    with ch.open_repository(db, ch.Keyring.load(keyring)) as repo:
        letters = [(d.line, d.field, d.reason) for d in repo.dead_letters()]
    return code, report, letters


def _expected_valid(case: Case, summary: dict[str, Any]) -> int:
    return summary["valid"] if case.valid < 0 else case.valid


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_validate_rejects_the_line_and_reads_the_rest(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, case)
    code, summary = _validate(path, capsys)
    assert code == 1
    first = summary["errors"][0]
    assert (first["line"], first["field"]) == (case.line, case.field)
    assert case.reason in first["reason"]
    assert summary["valid"] == _expected_valid(case, summary)
    if case.valid >= 0:
        assert summary["invalid"] == 1


def _check_import(case: Case, tmp_path: Path, db: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, case)
    _, summary = _validate(path, capsys)
    code, report, letters = _import(path, db, tmp_path / "k.keyring", capsys)
    assert code == 1
    # One validation path: import stores what validate accepts, and keeps as dead
    # letters exactly the lines validate rejects, with the same line, field and reason.
    expected = [(e["line"], e["field"], e["reason"]) for e in summary["errors"]]
    assert sorted(letters, key=repr) == sorted(expected, key=repr)
    assert report["rejected"] == summary["invalid"]
    assert report["inserted"] + report["duplicates"] == summary["valid"]
    assert summary["valid"] == _expected_valid(case, summary)
    assert (letters[0][0], letters[0][1]) == (case.line, case.field) or (
        case.line,
        case.field,
    ) in [(ln, f) for ln, f, _ in letters]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_import_on_sqlite_matches_validate(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _check_import(case, tmp_path, f"sqlite:///{tmp_path / 'h.db'}", capsys)


@pytest.mark.postgres
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_import_on_postgres_matches_validate(
    case: Case, pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _check_import(case, tmp_path, pg_url, capsys)


def test_no_personal_key_is_echoed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Neither validate's output nor a dead letter's field or reason shows an unknown key."""
    path = tmp_path / "h.jsonl"
    path.write_bytes(jsonl(line(message(9))[:-1] + ', "hanako@example.com": 1}'))
    assert main(["validate", str(path)]) == 1
    captured = capsys.readouterr()
    assert "hanako" not in captured.out + captured.err
    db = f"sqlite:///{tmp_path / 'h.db'}"
    _, _, letters = _import(path, db, tmp_path / "k.keyring", capsys)
    assert "hanako" not in repr(letters)


def test_an_identifier_like_unknown_key_is_still_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "h.jsonl"
    path.write_bytes(jsonl(line(message(9))[:-1] + ', "mesage_id": "m"}'))
    code, summary = _validate(path, capsys)
    assert code == 1
    assert summary["errors"][0]["field"] == "mesage_id"


@pytest.mark.parametrize("command", ["validate", "import"])
def test_utf16_without_bom_is_one_typed_error_in_both_commands(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "h.jsonl"
    path.write_bytes(jsonl(line(message(9))))
    args = [command, str(path), "--encoding", "utf-16"]
    if command == "import":
        args += ["--db", f"sqlite:///{tmp_path / 'h.db'}", "--keyring", str(tmp_path / "k")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "utf-16 without a byte order mark; pass utf-16-le or utf-16-be" in err
    assert "Traceback" not in err


def test_utf16_with_bom_reads_per_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "h.jsonl"
    path.write_bytes(jsonl("{broken").decode("utf-8").encode("utf-16"))
    code, summary = _validate_with(path, capsys, "--encoding", "utf-16")
    assert code == 1
    assert (summary["valid"], summary["errors"][0]["line"]) == (4, 2)


def _validate_with(
    path: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, dict[str, Any]]:
    code = main(["validate", str(path), "--format", "json", *extra])
    return code, json.loads(capsys.readouterr().out)


def test_consent_source_is_kept_out_of_repr() -> None:
    consent = ch.ConsentEvent(
        contact_id="c-1",
        channel=ch.Channel.EMAIL,
        purpose=ch.Purpose.MARKETING,
        action=ch.ConsentAction.GRANT,
        occurred_at=datetime(2026, 4, 1, tzinfo=UTC),
        method=ch.ConsentMethod.WEB_FORM,
        source="https://shop.example.jp/form?email=hanako@example.com",
    )
    assert "hanako" not in repr(consent)
    assert "source" not in repr(consent)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("message_id", "m\x00", "contains a NUL character"),
        ("message_id", "m" * 256, "longer than 255 characters"),
        ("campaign_id", "\ud800", "lone surrogate"),
        ("subject", "\udc80", "lone surrogate"),
        ("provider", "sg\x00", "contains a NUL character"),
    ],
)
def test_records_built_in_code_are_held_to_the_same_rules(
    field: str, value: str, reason: str
) -> None:
    """The model refuses what storage cannot hold, so the API and the files agree."""
    kwargs: dict[str, Any] = {
        "message_id": "m-1",
        "channel": ch.Channel.EMAIL,
        "direction": ch.Direction.OUTBOUND,
        "contact_id": "c-1",
        "address": "taro@example.com",
        "sent_at": datetime(2026, 4, 1, tzinfo=UTC),
        field: value,
    }
    with pytest.raises(ch.PayloadError) as info:
        ch.Message(**kwargs)
    assert (info.value.field, reason in info.value.reason) == (field, True)
