"""CRM import: contacts, attributes and opt-outs from HubSpot and Salesforce exports and APIs.

A :class:`CrmMapping` (a small JSON document; presets ``hubspot`` and
``salesforce`` ship with the package) says which column holds the CRM's
record id, which holds the last-modified time, which columns fill which
declared contact attribute, and which boolean opt-out columns withdraw
consent on which channel. :func:`parse_row` turns one CSV row into a
:class:`CrmRow` (a :class:`~commhistory.model.ContactUpdate` plus the
:class:`~commhistory.model.ConsentEvent` withdrawals) or raises
:class:`~commhistory.errors.CrmRowError` naming the row, the column and the
reason. :func:`import_rows` stores rows in batches, each in one transaction,
and reports the newest last-modified time it committed: the watermark a
rerun starts from.

Contacts have no stored addresses outside messages, so the email address and
phone number of a CRM record are kept as *personal attributes* (encrypted
under the contact's data key), normalized first.

Where rows come from is a :class:`CrmSource`: an :class:`ExportSource` (a CSV
export, one page) or a CRM's REST API read page by page
(:mod:`commhistory.contacts.crm_api`); :func:`import_source` stores each page
as the export's rows are, committing it before the next page is fetched.

No SQL here and no storage of the watermark: the caller keeps it (the CLI in a
state file).

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Final, Protocol

import attrs

from commhistory.contacts.attributes import AttributeDefinition, AttributeSchema, AttributeType
from commhistory.convert import ParsedLine
from commhistory.errors import CrmRowError, InvalidInputError, PayloadError
from commhistory.model import (
    Channel,
    ConsentAction,
    ConsentEvent,
    ConsentMethod,
    ContactUpdate,
    Purpose,
)
from commhistory.normalize import normalize_email, normalize_phone
from commhistory.normalize.time import parse_timestamp

__all__ = [
    "PRESETS",
    "AttributeRule",
    "ConsentRule",
    "CrmImportReport",
    "CrmMapping",
    "CrmRow",
    "CrmSource",
    "ExportSource",
    "ImportTarget",
    "Row",
    "check_header",
    "import_pages",
    "import_rows",
    "import_source",
    "parse_row",
    "read_export",
]

PRESETS: Final = ("hubspot", "salesforce")
"""The mapping presets shipped with the package."""

_RECORD_ID: Final = re.compile(r"[A-Za-z0-9_\-]{1,64}")
_CRM: Final = re.compile(r"[a-z][a-z0-9_]{0,31}")
_TRUE: Final = frozenset({"true", "1", "yes", "y", "t"})
_FALSE: Final = frozenset({"false", "0", "no", "n", "f", ""})
_NORMALIZERS: Final = ("email", "phone")
_ACTOR: Final = "crm-import"


def _bad(field: str, reason: str) -> PayloadError:
    return PayloadError(field=field, reason=reason)


@attrs.frozen(kw_only=True)
class AttributeRule:
    """One column that fills one declared attribute.

    Attributes:
        column: The CSV header.
        definition: The attribute it fills (declared by the import).
        normalize: ``"email"`` or ``"phone"`` to normalize the cell first, or ``None``.

    .. versionadded:: 0.4.0
    """

    column: str
    definition: AttributeDefinition
    normalize: str | None = None


@attrs.frozen(kw_only=True)
class ConsentRule:
    """One boolean opt-out column: true withdraws consent for a channel and purpose.

    .. versionadded:: 0.4.0
    """

    column: str
    channel: Channel
    purpose: Purpose = Purpose.MARKETING


@attrs.frozen(kw_only=True)
class CrmMapping:
    """How one CRM's export maps to contacts, attributes and consent.

    Attributes:
        crm: The CRM's name (lower case); contact ids are ``<crm>:<record id>``.
        id_column: The column of the CRM's record id (required in every row).
        modified_column: The column of the record's last-modified time (required).
        timezone: The zone of times written without an offset (an IANA name).
        attributes: The columns that fill attributes.
        consent: The opt-out columns.

    .. versionadded:: 0.4.0
    """

    crm: str
    id_column: str
    modified_column: str
    timezone: str = "UTC"
    attributes: tuple[AttributeRule, ...] = ()
    consent: tuple[ConsentRule, ...] = ()

    @property
    def schema(self) -> AttributeSchema:
        """The attributes this mapping fills, as declarations."""
        return AttributeSchema([rule.definition for rule in self.attributes])

    @classmethod
    def from_json(cls, obj: object) -> CrmMapping:
        """Read a mapping document (see ``docs/crm.md``).

        Raises:
            PayloadError: The document is malformed (``field`` names the key).
        """
        if not isinstance(obj, Mapping):
            raise _bad("<mapping>", "expected an object")
        unknown = set(obj) - {"crm", "id", "modified", "timezone", "attributes", "consent"}
        if unknown:
            raise _bad("<mapping>", "unknown key; expected crm, id, modified, timezone, "
                       "attributes, consent")  # fmt: skip
        crm = obj.get("crm")
        if not isinstance(crm, str) or not _CRM.fullmatch(crm):
            raise _bad("crm", "expected a lower-case name")
        for key in ("id", "modified", "timezone"):
            if key in obj and not isinstance(obj[key], str):
                raise _bad(key, "expected a string")
        if not obj.get("id") or not obj.get("modified"):
            raise _bad("<mapping>", "id and modified name the required columns")
        rules = []
        for i, item in enumerate(_list(obj, "attributes")):
            rules.append(_attribute_rule(item, f"attributes[{i}]"))
        consent = []
        for i, item in enumerate(_list(obj, "consent")):
            consent.append(_consent_rule(item, f"consent[{i}]"))
        timezone = str(obj.get("timezone", "UTC"))
        try:
            parse_timestamp("2000-01-01 00:00", default_tz=timezone)
        except InvalidInputError:
            raise _bad("timezone", "not a known time zone") from None
        mapping = cls(
            crm=crm,
            id_column=str(obj["id"]),
            modified_column=str(obj["modified"]),
            timezone=timezone,
            attributes=tuple(rules),
            consent=tuple(consent),
        )
        mapping.schema  # noqa: B018 - refuses an attribute filled twice
        return mapping

    @classmethod
    def load(cls, path: str | Path) -> CrmMapping:
        """Read a mapping from a JSON file.

        Raises:
            PayloadError: Not JSON, or a malformed mapping.
            OSError: The file cannot be read.
        """
        return cls._parse(Path(path).read_text(encoding="utf-8"))

    @classmethod
    def preset(cls, name: str, *, api: bool = False) -> CrmMapping:
        """Return a shipped preset: ``"hubspot"`` or ``"salesforce"``.

        Args:
            name: The CRM.
            api: The preset for the CRM's REST API (its property or field
                names, and the modified field an incremental query filters on)
                instead of its CSV export.

        Raises:
            InvalidInputError: Not a preset.

        .. versionchanged:: 0.4.0
           *api*.
        """
        if name not in PRESETS:
            raise InvalidInputError(field="preset", reason=f"expected one of {', '.join(PRESETS)}")
        file = f"{name}-api.json" if api else f"{name}.json"
        text = (resources.files("commhistory.contacts") / "presets" / file).read_text(
            encoding="utf-8"
        )
        return cls._parse(text)

    @classmethod
    def _parse(cls, text: str) -> CrmMapping:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _bad("<mapping>", f"invalid JSON: {exc.msg} at line {exc.lineno}") from None
        return cls.from_json(obj)


def _list(obj: Mapping[str, Any], key: str) -> list[Any]:
    value = obj.get(key, [])
    if not isinstance(value, list):
        raise _bad(key, "expected a list")
    return value


def _attribute_rule(item: object, where: str) -> AttributeRule:
    if not isinstance(item, Mapping):
        raise _bad(where, "expected an object")
    if set(item) - {"column", "attribute", "type", "personal", "values", "normalize"}:
        raise _bad(where, "unknown key; expected column, attribute, type, personal, normalize")
    column = item.get("column")
    if not isinstance(column, str) or not column:
        raise _bad(f"{where}.column", "expected the column's header")
    normalize = item.get("normalize")
    if normalize is not None and normalize not in _NORMALIZERS:
        raise _bad(f"{where}.normalize", "expected email or phone")
    definition = AttributeDefinition.from_json(
        {
            "name": item.get("attribute"),
            "type": item.get("type", "str"),
            "personal": item.get("personal", False),
            **({"values": item["values"]} if "values" in item else {}),
        }
    )
    if normalize is not None and not (
        definition.personal and definition.type is AttributeType.STR
    ):
        raise _bad(f"{where}.normalize", "an address is a personal str attribute")
    return AttributeRule(column=column, definition=definition, normalize=normalize)


def _consent_rule(item: object, where: str) -> ConsentRule:
    if not isinstance(item, Mapping):
        raise _bad(where, "expected an object")
    if set(item) - {"column", "channel", "purpose"}:
        raise _bad(where, "unknown key; expected column, channel, purpose")
    column = item.get("column")
    if not isinstance(column, str) or not column:
        raise _bad(f"{where}.column", "expected the column's header")
    try:
        channel = Channel(str(item.get("channel")))
        purpose = Purpose(str(item.get("purpose", "marketing")))
    except ValueError:
        raise _bad(where, "unknown channel or purpose") from None
    return ConsentRule(column=column, channel=channel, purpose=purpose)


@attrs.frozen(kw_only=True)
class CrmRow:
    """One CSV row read: the contact's update and the opt-outs it withdraws.

    Attributes:
        line: The row's first line in the file (the header is line 1).
        contact_id: ``<crm>:<record id>``.
        modified_at: The record's last-modified time, UTC.
        update: The attribute values (``None`` when every mapped cell is blank).
        withdrawals: One withdrawal per opt-out column that is true.

    .. versionadded:: 0.4.0
    """

    line: int
    contact_id: str
    modified_at: datetime
    update: ContactUpdate | None = attrs.field(repr=False)
    withdrawals: tuple[ConsentEvent, ...] = attrs.field(repr=False)


def _cell(row: Mapping[str, str | None], column: str, line: int) -> str:
    value = row.get(column)
    if value is None:
        raise CrmRowError(line=line, field=column, reason="missing column")
    if not isinstance(value, str):
        raise CrmRowError(line=line, field=column, reason="expected text")
    return value.strip()


def _flag(row: Mapping[str, str | None], column: str, line: int) -> bool:
    text = _cell(row, column, line).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise CrmRowError(line=line, field=column, reason="expected true or false")


def parse_row(
    mapping: CrmMapping,
    row: Mapping[str, str | None],
    *,
    line: int,
    schema: AttributeSchema | None = None,
    region: str = "JP",
    origin: str = "export",
) -> CrmRow:
    """Read one CSV row (``{header: cell}``) as a :class:`CrmRow`.

    A blank attribute cell leaves the attribute as it is (an export does not
    say "cleared"); a blank opt-out cell is false. Opt-outs only withdraw:
    "not opted out" is no evidence of consent, so nothing is granted.

    Args:
        mapping: The mapping.
        row: The row, as :func:`read_export` gives it (``{header: cell}``).
        line: The row's line number, for errors.
        schema: The declared schema to check values against (default: the mapping's).
        region: The region of national phone numbers.
        origin: ``"export"`` or ``"api"``: the opt-outs' evidence source reads
            ``<crm> <origin>: <column>``.

    Raises:
        CrmRowError: A required column is missing or blank, or a cell is
            malformed (a time, an email address, a phone number, a boolean, a
            value of the wrong type); names the line, the column and the reason.
    """
    record_id = _cell(row, mapping.id_column, line)
    if not _RECORD_ID.fullmatch(record_id):
        raise CrmRowError(line=line, field=mapping.id_column, reason="expected a record id")
    modified_text = _cell(row, mapping.modified_column, line)
    try:
        modified_at = parse_timestamp(modified_text, default_tz=mapping.timezone)
    except InvalidInputError as exc:
        raise CrmRowError(line=line, field=mapping.modified_column, reason=exc.reason) from None
    contact_id = f"{mapping.crm}:{record_id}"
    values: dict[str, object] = {}
    for rule in mapping.attributes:
        text = _cell(row, rule.column, line)
        if not text:
            continue
        try:
            if rule.normalize == "email":
                text = normalize_email(text)
            elif rule.normalize == "phone":
                text = normalize_phone(text, region)
            if rule.definition.type is AttributeType.DATETIME:
                values[rule.definition.name] = parse_timestamp(text, default_tz=mapping.timezone)
            elif rule.definition.type is AttributeType.LIST:
                values[rule.definition.name] = [v.strip() for v in text.split(";") if v.strip()]
            else:
                values[rule.definition.name] = text
        except InvalidInputError as exc:
            raise CrmRowError(line=line, field=rule.column, reason=exc.reason) from None
    columns = {rule.definition.name: rule.column for rule in mapping.attributes}
    try:
        (schema or mapping.schema).values_of(values)
    except InvalidInputError as exc:
        name = getattr(exc, "attribute", "")
        raise CrmRowError(line=line, field=columns.get(name, "<row>"), reason=exc.reason) from None
    withdrawals = tuple(
        _withdrawal(mapping, rule, record_id, contact_id, modified_at, origin=origin)
        for rule in mapping.consent
        if _flag(row, rule.column, line)
    )
    update = (
        ContactUpdate(contact_id=contact_id, attributes=values, at=modified_at) if values else None
    )
    return CrmRow(
        line=line,
        contact_id=contact_id,
        modified_at=modified_at,
        update=update,
        withdrawals=withdrawals,
    )


def _withdrawal(
    mapping: CrmMapping,
    rule: ConsentRule,
    record_id: str,
    contact_id: str,
    at: datetime,
    *,
    origin: str,
) -> ConsentEvent:
    # Deterministic: the same row read again is the same event (a duplicate).
    key = f"{record_id}|{rule.channel.value}|{rule.purpose.value}|withdraw|{at.isoformat()}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return ConsentEvent(
        contact_id=contact_id,
        channel=rule.channel,
        purpose=rule.purpose,
        action=ConsentAction.WITHDRAW,
        occurred_at=at,
        method=ConsentMethod.IMPORT,
        consent_id=f"{mapping.crm}:{digest}",
        source=f"{mapping.crm} {origin}: {rule.column}",
        actor=_ACTOR,
        metadata={"crm": mapping.crm, "column": rule.column},
    )


def read_export(text: Iterable[str]) -> Iterator[tuple[int, Mapping[str, str | None], str]]:
    """Read a CSV export: yield ``(line, {header: cell}, raw row)`` per non-blank row.

    Open the file with ``newline=""`` (and ``encoding="utf-8-sig"``: exports often
    start with a byte-order mark).

    Raises:
        PayloadError: The file has no header row, a header repeats, or the CSV
            itself is broken (a cell over the ``csv`` module's size limit);
            ``line`` says where.
    """
    reader = csv.reader(text)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise _bad("<header>", "the file is empty") from None
    except csv.Error as exc:
        raise PayloadError(field="<header>", reason=f"not CSV: {exc}", line=1) from None
    if len(set(header)) != len(header):
        raise _bad("<header>", "a column header repeats")
    line = reader.line_num + 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise PayloadError(field="<line>", reason=f"not CSV: {exc}", line=line) from None
        start, line = line, reader.line_num + 1
        if not any(c.strip() for c in cells):
            continue
        row: dict[str, str | None] = dict.fromkeys(header)
        row.update(zip(header, cells, strict=False))
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow(cells)
        yield start, row, buf.getvalue()


class ImportTarget(Protocol):
    """What :func:`import_rows` needs of a :class:`~commhistory.CommHistory`.

    .. versionadded:: 0.4.0
    """

    def declare_attributes(self, schema: AttributeSchema) -> AttributeSchema:
        """Declare attributes (idempotent)."""
        ...

    def ingest(self, lines: Iterable[ParsedLine], *, source: str) -> Any:
        """Store parsed lines; invalid ones become dead letters."""
        ...

    def transaction(self, *, read: bool = False) -> AbstractContextManager[object]:
        """One unit of work."""
        ...


@attrs.define(kw_only=True)
class CrmImportReport:
    """What :func:`import_rows` did.

    Attributes:
        rows: Rows read.
        skipped: Rows last modified before the watermark (not imported).
        imported: Rows stored (or found unchanged).
        rejected: Rows refused, kept as dead letters.
        withdrawals: Opt-out withdrawals given to the ledger (duplicates included).
        watermark: The newest last-modified time committed (or the one given).
        errors: The refusals (value-free), in row order.

    .. versionadded:: 0.4.0
    """

    rows: int = 0
    skipped: int = 0
    imported: int = 0
    rejected: int = 0
    withdrawals: int = 0
    watermark: datetime | None = None
    errors: list[CrmRowError] = attrs.field(factory=list)


Row = tuple[int, Mapping[str, str | None], str]
"""The row a source yields, ``(line, cells by column, raw text)``."""


class CrmSource(Protocol):
    """Where rows come from: an export file, or a CRM's API read page by page.

    :func:`import_source` asks for the pages of rows modified at or after the
    watermark and commits each page before asking for the next, so a source
    may fetch lazily (an HTTP request per page).

    .. versionadded:: 0.4.0
    """

    @property
    def name(self) -> str:
        """The dead letters' source (a file name, ``"hubspot api"``)."""
        ...

    @property
    def kind(self) -> str:
        """``"export"`` or ``"api"``: the evidence of the opt-outs it brings."""
        ...

    @property
    def lookback(self) -> timedelta:
        """How far before the watermark rows are still read (an API's overlap)."""
        ...

    def pages(self, mapping: CrmMapping, since: datetime | None) -> Iterator[Sequence[Row]]:
        """Yield the rows, a page at a time (*since* lets an API filter on the server)."""
        ...


@attrs.frozen
class ExportSource:
    """A CSV export read with :func:`read_export`: the whole file is one page.

    The rows are sorted by last-modified time before they are stored, so the
    file is read whole first.

    .. versionadded:: 0.4.0
    """

    lines: Iterable[str] = attrs.field(repr=False)
    name: str = "export"
    kind: str = "export"
    lookback: timedelta = timedelta(0)

    def pages(self, mapping: CrmMapping, since: datetime | None) -> Iterator[Sequence[Row]]:
        """Yield the export's rows as one page (*since* is applied by the importer)."""
        yield list(read_export(self.lines))


def import_rows(
    target: ImportTarget,
    mapping: CrmMapping,
    rows: Iterable[Row],
    *,
    source: str,
    since: datetime | None = None,
    batch_size: int = 500,
    region: str = "JP",
    on_commit: Callable[[datetime], None] | None = None,
) -> CrmImportReport:
    """Import CSV rows (from :func:`read_export`): incremental, idempotent, resumable.

    The mapping's attributes are declared first (idempotent). Rows last
    modified before *since* are skipped; rows at *since* itself are read again
    (they may sit in a batch that did not commit; storing them again changes
    nothing). The rest are sorted by last-modified time and stored in batches
    of *batch_size* rows, each batch in one transaction; after each commit,
    *on_commit* gets the newest last-modified time committed so far: the
    watermark to keep. A refused row is a dead letter (its raw CSV row,
    encrypted) with the error, and no part of it is stored.

    A refused row last modified before *since* is skipped too (the run that
    read it first kept it as a dead letter); one whose time cannot be read is
    kept again on every run.

    Raises:
        PayloadError: The header lacks the id or modified column.
        StorageError: The backend failed; batches committed before stay committed.
    """
    return import_pages(
        target,
        mapping,
        [list(rows)],
        source=source,
        since=since,
        batch_size=batch_size,
        region=region,
        on_commit=on_commit,
    )


def import_source(
    target: ImportTarget,
    mapping: CrmMapping,
    source: CrmSource,
    *,
    since: datetime | None = None,
    batch_size: int = 500,
    region: str = "JP",
    on_commit: Callable[[datetime], None] | None = None,
) -> CrmImportReport:
    """Import from a :class:`CrmSource`: an export or a CRM's API, page by page.

    The same rules as :func:`import_rows`, per page: each page's rows are
    sorted by last-modified time and stored in batches of *batch_size* rows,
    each in one transaction with the page's dead letters in the first; the
    watermark given to *on_commit* moves only after a batch commits, and the
    next page is fetched only then. A failure (the API, the database) leaves
    the pages committed before it committed and nothing of the failed batch;
    running again from the kept watermark resumes.

    Raises:
        PayloadError: The first row lacks the id or modified column.
        CrmApiError: The CRM's API failed (see :mod:`commhistory.contacts.crm_api`).
        StorageError: The backend failed; batches committed before stay committed.

    .. versionadded:: 0.4.0
    """
    return import_pages(
        target,
        mapping,
        source.pages(mapping, since),
        source=source.name,
        since=since,
        batch_size=batch_size,
        region=region,
        on_commit=on_commit,
        origin=source.kind,
        dead_letter_line=None if source.kind == "export" else 1,
        lookback=source.lookback,
    )


def import_pages(
    target: ImportTarget,
    mapping: CrmMapping,
    pages: Iterable[Sequence[Row]],
    *,
    source: str,
    since: datetime | None = None,
    batch_size: int = 500,
    region: str = "JP",
    on_commit: Callable[[datetime], None] | None = None,
    origin: str = "export",
    dead_letter_line: int | None = None,
    lookback: timedelta = timedelta(0),
) -> CrmImportReport:
    """Import rows given a page at a time; :func:`import_source` and :func:`import_rows` use it.

    Args:
        target: Where to store (a :class:`~commhistory.CommHistory`).
        mapping: The mapping.
        pages: Pages of ``(line, {column: cell}, raw)`` rows, oldest page first.
        source: The dead letters' source.
        since: The watermark: rows last modified before it (less *lookback*)
            are skipped; the report's watermark starts at it.
        batch_size: Rows per transaction.
        region: The region of national phone numbers.
        on_commit: Gets the watermark after each commit.
        origin: ``"export"`` or ``"api"`` (see :func:`parse_row`).
        dead_letter_line: Keep every dead letter at this line instead of the
            row's (an API record has no line of its own: its position in a run
            changes from run to run, and a dead letter read again is a
            duplicate only at the same line).
        lookback: Rows modified this long before *since* are still stored
            (an API source reads them again in case one arrived late).

    .. versionadded:: 0.4.0
    """
    schema = target.declare_attributes(mapping.schema)
    report = CrmImportReport(watermark=since)
    skip_before = None if since is None else since - lookback
    for page in pages:
        good: list[tuple[CrmRow, str]] = []
        bad: list[ParsedLine] = []
        for line, row, raw in page:
            if not report.rows:
                check_header(mapping, list(row))
            report.rows += 1
            try:
                parsed = parse_row(
                    mapping, row, line=line, schema=schema, region=region, origin=origin
                )
            except CrmRowError as exc:
                modified = _modified(mapping, row)
                if skip_before is not None and modified is not None and modified < skip_before:
                    report.skipped += 1  # refused in the run that read it first
                    continue
                if dead_letter_line is not None:
                    exc = exc.for_record(_record_id(mapping, row))
                report.errors.append(exc)
                kept = line if dead_letter_line is None else dead_letter_line
                bad.append(ParsedLine(line=kept, raw=raw, error=exc))
                continue
            if skip_before is not None and parsed.modified_at < skip_before:
                report.skipped += 1
                continue
            good.append((parsed, raw))
        _store_page(target, report, good, bad, source=source, batch_size=batch_size,
                    on_commit=on_commit)  # fmt: skip
    return report


def _store_page(
    target: ImportTarget,
    report: CrmImportReport,
    good: list[tuple[CrmRow, str]],
    bad: list[ParsedLine],
    *,
    source: str,
    batch_size: int,
    on_commit: Callable[[datetime], None] | None,
) -> None:
    good.sort(key=lambda item: item[0].modified_at)
    chunks = [good[i : i + batch_size] for i in range(0, len(good), batch_size)] or [[]]
    for n, chunk in enumerate(chunks):
        lines: list[ParsedLine] = list(bad) if n == 0 else []
        for parsed, raw in chunk:
            if parsed.update is not None:
                lines.append(ParsedLine(line=parsed.line, raw=raw, record=parsed.update))
            lines.extend(
                ParsedLine(line=parsed.line, raw=raw, record=w) for w in parsed.withdrawals
            )
        if not lines:
            continue
        with target.transaction():
            target.ingest(lines, source=source)
        if n == 0:
            report.rejected += len(bad)
        if not chunk:
            continue
        report.imported += len(chunk)
        report.withdrawals += sum(len(p.withdrawals) for p, _ in chunk)
        newest = chunk[-1][0].modified_at
        if report.watermark is None or newest > report.watermark:
            report.watermark = newest
        if on_commit is not None:
            on_commit(report.watermark)


def _record_id(mapping: CrmMapping, row: Mapping[str, str | None]) -> str | None:
    value = row.get(mapping.id_column)
    if isinstance(value, str) and _RECORD_ID.fullmatch(value.strip()):
        return value.strip()
    return None


def _modified(mapping: CrmMapping, row: Mapping[str, str | None]) -> datetime | None:
    try:
        return parse_timestamp(str(row.get(mapping.modified_column)), default_tz=mapping.timezone)
    except InvalidInputError:
        return None


def check_header(mapping: CrmMapping, header: Sequence[str]) -> None:
    """Check that the export's header has the required columns.

    Raises:
        PayloadError: The id or modified column is missing (``field`` names it).
    """
    for column in (mapping.id_column, mapping.modified_column):
        if column not in header:
            raise _bad(column, "missing column in the header")
