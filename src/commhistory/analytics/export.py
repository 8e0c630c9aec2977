"""Write the history's non-personal facts as a date-partitioned dataset, incrementally.

:func:`export_analytics` reads the plain columns of messages, events, activities
and campaign costs through the repository's
:class:`~commhistory.store.analytics.AnalyticsReader` (a batch at a time) and
writes them under a directory as hive-style partitions; the values of the
contact attributes declared plain are written whole, as a snapshot::

    OUT/messages/date=2024-05-01/part-000001.parquet
    OUT/events/date=2024-05-01/part-000001.parquet
    OUT/activities/...   OUT/costs/...
    OUT/contact_attributes/snapshot.parquet
    OUT/erased_contacts.csv
    OUT/_commhistory_export.json

Contact ids are replaced by :class:`Pseudonymizer` values (HMAC-SHA256 under the
keyring's ``"analytics-pseudonym"`` subkey). No address, subject, body, reason,
URL, IP, user agent, metadata or encrypted property is read. Rows of erased
contacts are left out; ``erased_contacts.csv`` lists the pseudonyms of every
erased contact, for purging copies made before the erasure.

The manifest records, per appended table, the stored-at sequence bound of the
last run (:class:`~commhistory.store.analytics.Watermark`); the next run writes
only the rows stored since, whatever their times, as new part files. The
attribute snapshot is rewritten by every run (attribute rows change after they
are written: a value's ``valid_to`` closes when the next one arrives).

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

import attrs

from commhistory.crypto import KeyProvider, derive_subkey
from commhistory.errors import InvalidInputError
from commhistory.normalize.time import from_micros, to_micros
from commhistory.store.analytics import SNAPSHOTS, TABLES, AnalyticsReader, Watermark

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "ANALYTICS_KEY_PURPOSE",
    "FORMATS",
    "MANIFEST_NAME",
    "AnalyticsExport",
    "Pseudonymizer",
    "export_analytics",
]

ANALYTICS_KEY_PURPOSE: Final = "analytics-pseudonym"
"""The keyring subkey purpose of :meth:`Pseudonymizer.from_keyring`."""

FORMATS: Final = ("parquet", "csv")
"""The file formats :func:`export_analytics` writes."""

MANIFEST_NAME: Final = "_commhistory_export.json"
"""The manifest file in the output directory."""

ERASED_NAME: Final = "erased_contacts.csv"
_MANIFEST_VERSION: Final = 2
_DAY: Final = 86_400_000_000
_TIME_COLUMNS: Final = frozenset(
    {"sent_at", "occurred_at", "starts_at", "ends_at", "recorded_at", "valid_from", "valid_to",
     "value_ts"}
)  # fmt: skip
_INT_COLUMNS: Final = frozenset({"revenue_micros", "amount_micros", "value_int", "value_micros"})
_BOOL_COLUMNS: Final = frozenset({"machine", "value_bool"})
_DATE_COLUMNS: Final = frozenset({"value_date"})
_UNIQUE_COLUMNS: Final = frozenset(
    {"message_id", "event_id", "activity_id", "cost_id", "attributed_message_id"}
)
"""Id columns: (nearly) one value per row, so no Parquet dictionary (it only costs)."""
_CONTACT: Final = "contact_id"
_PSEUDONYM: Final = "contact"


class Pseudonymizer:
    """Maps a contact id to a stable pseudonym (``"p_"`` + 32 hex digits).

    The pseudonym is HMAC-SHA256 of the id under a 32-byte key: the same id gives
    the same pseudonym in every export made with the key; without the key it
    reveals nothing about the id.

    Args:
        key: The 32-byte HMAC key.
        key_id: The keyring key the key was derived from (recorded in the manifest).

    .. versionadded:: 0.4.0
    """

    __slots__ = ("_cache", "_key", "key_id")

    def __init__(self, key: bytes, *, key_id: str = "") -> None:
        if len(key) < 32:
            raise InvalidInputError(field="key", reason="must be at least 32 bytes")
        self._key = key
        self.key_id = key_id
        self._cache: dict[str, str] = {}

    @classmethod
    def from_keyring(cls, keys: KeyProvider) -> Pseudonymizer:
        """Return the pseudonymizer keyed by the keyring.

        The key is the HKDF subkey ``"analytics-pseudonym"`` of the keyring's
        blind-index key, so pseudonyms survive ordinary key rotations and change
        only with an index-key rotation.
        """
        key_id = keys.index_key_id
        return cls(derive_subkey(keys, key_id, ANALYTICS_KEY_PURPOSE), key_id=key_id)

    @property
    def check(self) -> str:
        """A value that tells keys apart without revealing them (kept in the manifest)."""
        return hmac.new(self._key, b"commhistory/analytics/check", hashlib.sha256).hexdigest()[:16]

    def __call__(self, contact_id: str) -> str:
        """Return the pseudonym of *contact_id*."""
        got = self._cache.get(contact_id)
        if got is None:
            got = "p_" + hmac.digest(self._key, contact_id.encode(), "sha256").hex()[:32]
            if len(self._cache) >= 1 << 18:
                self._cache.clear()
            self._cache[contact_id] = got
        return got

    def __repr__(self) -> str:
        return f"Pseudonymizer(key_id={self.key_id!r})"


@attrs.frozen(kw_only=True)
class AnalyticsExport:
    """What one :func:`export_analytics` run wrote.

    Attributes:
        rows: The rows written, per table (for ``contact_attributes``, the rows of
            the snapshot written).
        files: The files written, relative to the output directory.
        erased: How many pseudonyms ``erased_contacts.csv`` lists.
        run: The run number (1 for the first export into the directory).

    .. versionadded:: 0.4.0
    """

    rows: Mapping[str, int]
    files: tuple[str, ...]
    erased: int
    run: int

    @property
    def total(self) -> int:
        """All rows written."""
        return sum(self.rows.values())


# ---------------------------------------------------------------------- manifest


def _read_manifest(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidInputError(field="out", reason="the export manifest is unreadable") from exc
    if isinstance(doc, dict) and doc.get("version") == 1:
        raise InvalidInputError(
            field="out",
            reason="the directory was exported with a time watermark (manifest version 1), "
            "which misses late rows; export into a new directory",
        )
    if not isinstance(doc, dict) or doc.get("version") != _MANIFEST_VERSION:
        raise InvalidInputError(field="out", reason="the export manifest has an unknown version")
    return doc


def _watermark(state: Mapping[str, Any] | None, until: int | None) -> Watermark | None:
    """What the earlier runs read from a table; refuses an *until* before theirs."""
    if state is None:
        return None
    last: int | None = state["until"]  # None: the last run read every time
    if until is not None and (last is None or until < last):
        shown = "none" if last is None else from_micros(last).isoformat()
        raise InvalidInputError(
            field="until",
            reason=f"before the last run's until ({shown}): the runs of a directory "
            "only move forward",
        )
    return Watermark(int(state["stored_before"]), last)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------------- writers


def _pyarrow() -> Any:
    try:
        import pyarrow as pa  # noqa: PLC0415 - optional dependency
        import pyarrow.parquet as pq  # noqa: PLC0415
    except ImportError as exc:
        raise InvalidInputError(
            field="format",
            reason="parquet needs pyarrow: pip install 'commhistory[analytics]', or use csv",
        ) from exc
    return pa, pq


def _dictionary_columns(columns: Sequence[str]) -> list[str]:
    """The columns worth Parquet dictionary encoding: repeated text (names, codes, pseudonyms).

    Ids and times are (nearly) unique per row: a dictionary there is built, found
    too large and dropped, which costs a third of the writing time and grows the file.
    """
    return [
        name
        for name in columns
        if name not in _UNIQUE_COLUMNS and name not in _TIME_COLUMNS and name not in _INT_COLUMNS
    ]


def _parquet_writer(pq: Any, path: Path, schema: pa.Schema) -> Any:
    return pq.ParquetWriter(
        path, schema, compression="zstd", use_dictionary=_dictionary_columns(schema.names)
    )


def _arrow_schema(pa: Any, columns: Sequence[str]) -> pa.Schema:
    fields = []
    for name in columns:
        if name in _TIME_COLUMNS:
            fields.append(pa.field(name, pa.timestamp("us", tz="UTC")))
        elif name in _INT_COLUMNS:
            fields.append(pa.field(name, pa.int64()))
        elif name in _BOOL_COLUMNS:
            fields.append(pa.field(name, pa.bool_()))
        elif name in _DATE_COLUMNS:
            fields.append(pa.field(name, pa.date32()))
        else:
            fields.append(pa.field(name, pa.string()))
    return pa.schema(fields)


class _Partitions:
    """Writes one file per (table, date) partition; rows come in date order."""

    def __init__(self, out: Path, table: str, columns: Sequence[str], fmt: str, run: int) -> None:
        self.base = out / table
        self.columns = list(columns)
        self.fmt = fmt
        self.name = f"part-{run:06d}.{fmt}"
        self.day: int | None = None
        self.files: list[str] = []
        self._writer: Any = None
        self._handle: IO[str] | None = None
        self._csv: Any = None
        if fmt == "parquet":
            self.pa, self.pq = _pyarrow()
            self.schema = _arrow_schema(self.pa, columns)

    def _open(self, day: int) -> None:
        self.close()
        self.day = day
        label = from_micros(day * _DAY).date().isoformat()
        folder = self.base / f"date={label}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / self.name
        self.files.append(f"{self.base.name}/date={label}/{self.name}")
        if self.fmt == "parquet":
            self._writer = _parquet_writer(self.pq, path, self.schema)
        else:
            self._handle = path.open("w", encoding="utf-8", newline="")
            self._csv = csv.writer(self._handle)
            self._csv.writerow(self.columns)

    def write(self, day: int, columns: list[Sequence[Any]]) -> None:
        """Write CSV columns of rows of *day*."""
        if day != self.day:
            self._open(day)
        self._csv.writerows(_csv_rows(self.columns, columns))

    def write_batch(self, day: int, batch: pa.RecordBatch) -> None:
        """Write an Arrow batch of rows of *day* (in :attr:`schema`)."""
        if day != self.day:
            self._open(day)
        self._writer.write_batch(batch)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _arrow_table(pa: Any, schema: pa.Schema, columns: list[Sequence[Any]]) -> pa.Table:
    arrays = []
    for col, field in zip(columns, schema, strict=True):
        if field.name in _DATE_COLUMNS:  # ISO text
            arrays.append(pa.array(col, type=pa.string()).cast(field.type))
        else:
            arrays.append(pa.array(col, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _csv_rows(names: Sequence[str], columns: list[Sequence[Any]]) -> Iterator[tuple[Any, ...]]:
    out: list[Sequence[Any]] = []
    for name, col in zip(names, columns, strict=True):
        if name in _TIME_COLUMNS:
            out.append([None if v is None else from_micros(v).isoformat() for v in col])
        elif name in _BOOL_COLUMNS:
            out.append([None if v is None else "true" if v else "false" for v in col])
        else:
            out.append(col)
    return zip(*out, strict=True)


def _export_snapshot(
    reader: AnalyticsReader,
    table: str,
    *,
    out: Path,
    fmt: str,
    batch_size: int,
    pseudonym: Callable[[str], str],
) -> tuple[int, list[str]]:
    """Rewrite ``OUT/<table>/snapshot.<fmt>`` whole (atomically); skip it while empty."""
    spec = SNAPSHOTS[table]
    names = [_PSEUDONYM if n == _CONTACT else n for n in spec.columns]
    contact = spec.columns.index(_CONTACT)
    bools = [i for i, n in enumerate(spec.columns) if n in _BOOL_COLUMNS]
    folder = out / table
    path = folder / f"snapshot.{fmt}"
    tmp = folder / f"snapshot.{fmt}.tmp"
    count = 0
    writer: Any = None
    handle: IO[str] | None = None
    pa: Any = None
    schema: Any = None
    try:
        for batch in reader.snapshot(table, batch_size=batch_size):
            cols: list[Sequence[Any]] = list(zip(*batch, strict=True))
            cols[contact] = [pseudonym(c) for c in cols[contact]]
            for i in bools:  # 0/1 on SQLite
                cols[i] = [None if v is None else bool(v) for v in cols[i]]
            if count == 0:
                folder.mkdir(parents=True, exist_ok=True)
                if fmt == "parquet":
                    pa, pq = _pyarrow()
                    schema = _arrow_schema(pa, names)
                    writer = _parquet_writer(pq, tmp, schema)
                else:
                    handle = tmp.open("w", encoding="utf-8", newline="")
                    csv.writer(handle).writerow(names)
            if writer is not None:
                writer.write_table(_arrow_table(pa, schema, cols))
            elif handle is not None:
                csv.writer(handle).writerows(_csv_rows(names, cols))
            count += len(batch)
    finally:
        if writer is not None:
            writer.close()
        if handle is not None:
            handle.close()
    if count == 0:
        if not path.exists():
            return 0, []
        # everything gone (erased, or declared personal since): an empty snapshot
        folder.mkdir(parents=True, exist_ok=True)
        if fmt == "parquet":
            pa, pq = _pyarrow()
            schema = _arrow_schema(pa, names)
            pq.write_table(schema.empty_table(), tmp, compression="zstd")
        else:
            tmp.write_text(",".join(names) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return count, [f"{table}/{path.name}"]


def _split_days(rows: list[tuple[Any, ...]], at: int) -> Iterator[tuple[int, int, int]]:
    """Yield (day, start, stop) runs of rows sorted by column *at*."""
    start = 0
    n = len(rows)
    while start < n:
        day = rows[start][at] // _DAY
        end_of_day = (day + 1) * _DAY
        if rows[-1][at] < end_of_day:
            yield day, start, n
            return
        lo, hi = start, n
        while lo < hi:  # first row of a later day
            mid = (lo + hi) // 2
            if rows[mid][at] < end_of_day:
                lo = mid + 1
            else:
                hi = mid
        yield day, start, lo
        start = lo


def _export_table(
    reader: AnalyticsReader,
    table: str,
    *,
    out: Path,
    fmt: str,
    run: int,
    after: Watermark | None,
    before: int,
    since: int | None,
    until: int | None,
    batch_size: int,
    pseudonym: Callable[[str], str],
) -> tuple[int, int | None, list[str]]:
    spec = TABLES[table]
    at = spec.columns.index(spec.order)
    contact = spec.columns.index(_CONTACT) if _CONTACT in spec.columns else None
    machine = spec.columns.index("machine") if "machine" in spec.columns else None
    names = [_PSEUDONYM if n == _CONTACT else n for n in spec.columns]
    parts = _Partitions(out, table, names, fmt, run)
    to_arrow = None if fmt != "parquet" else _ArrowRows(parts.schema, contact, machine, pseudonym)
    count = 0
    latest: int | None = None
    try:
        for batch in reader.scan(
            table, after=after, before=before, since=since, until=until, batch_size=batch_size
        ):
            if to_arrow is not None:
                arrow = to_arrow(batch)
                for day, start, stop in _split_days(batch, at):
                    parts.write_batch(day, arrow.slice(start, stop - start))
            else:
                cols: list[Sequence[Any]] = list(zip(*batch, strict=True))
                if contact is not None:
                    cols[contact] = [pseudonym(c) for c in cols[contact]]
                for day, start, stop in _split_days(batch, at):
                    parts.write(day, [c[start:stop] for c in cols])
            count += len(batch)
            latest = int(batch[-1][at])
    finally:
        parts.close()
    return count, latest, parts.files


class _ArrowRows:
    """Turns a batch of row tuples into an Arrow batch of *schema*, in Arrow's C++.

    The rows go in as one struct array (no per-column Python lists); the 0/1
    ``machine`` column becomes a bool, and each distinct contact id is
    pseudonymized once per batch.
    """

    def __init__(
        self,
        schema: pa.Schema,
        contact: int | None,
        machine: int | None,
        pseudonym: Callable[[str], str],
    ) -> None:
        self.pa, _ = _pyarrow()
        import pyarrow.compute as pc  # noqa: PLC0415 - optional dependency

        self.pc = pc
        self.schema = schema
        fields = list(schema)
        if machine is not None:
            fields[machine] = self.pa.field(fields[machine].name, self.pa.int8())
        self.row_type = self.pa.struct(fields)
        self.contact = contact
        self.machine = machine
        self.pseudonym = pseudonym

    def __call__(self, rows: list[tuple[Any, ...]]) -> pa.RecordBatch:
        pa, pc = self.pa, self.pc
        columns = pa.RecordBatch.from_struct_array(pa.array(rows, type=self.row_type)).columns
        if self.machine is not None:
            columns[self.machine] = pc.not_equal(columns[self.machine], 0)
        if self.contact is not None:
            ids = columns[self.contact]
            distinct = pc.unique(ids)
            names = pa.array([self.pseudonym(c) for c in distinct.to_pylist()], pa.string())
            columns[self.contact] = names.take(pc.index_in(ids, value_set=distinct))
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)


def export_analytics(
    reader: AnalyticsReader,
    keys: KeyProvider | Pseudonymizer,
    out: str | os.PathLike[str],
    *,
    format: str = "parquet",
    since: datetime | None = None,
    until: datetime | None = None,
    batch_size: int = 50_000,
) -> AnalyticsExport:
    """Export the history's non-personal facts under *out*, after the last export there.

    Args:
        reader: The repository's analytics port (``repo.analytics_reader``).
        keys: The keyring (the pseudonym key is derived from it), or a
            :class:`Pseudonymizer`.
        out: The output directory (created when missing). A manifest in it from
            an earlier run makes this run incremental.
        format: ``"parquet"`` (needs ``pyarrow``: the ``analytics`` extra) or ``"csv"``.
        since: Only rows whose time is at or after this aware datetime (the
            rows it leaves out are not written by later runs either).
        until: Only rows whose time is before this aware datetime; the rows
            left out are written by a later run with a later *until* (or none).
            It cannot be earlier than the last run's, nor follow a run without.
        batch_size: Rows read and written per batch.

    Returns:
        What was written.

    Raises:
        InvalidInputError: Unknown format (``field="format"``), pyarrow missing
            for parquet (``field="format"``), a naive ``since``/``until``, an
            *until* before the last run's (``field="until"``), or a manifest in
            *out* written in another format, under another pseudonym key or
            with the time watermark of manifest version 1 (``field="out"``).
        StorageError: The database failed.
    """
    if format not in FORMATS:
        raise InvalidInputError(field="format", reason=f"expected one of: {', '.join(FORMATS)}")
    if format == "parquet":
        _pyarrow()
    bounds: list[int | None] = []
    for field, value in (("since", since), ("until", until)):
        bound: object = value
        if bound is not None and (not isinstance(bound, datetime) or bound.utcoffset() is None):
            raise InvalidInputError(field=field, reason="expected an aware datetime")
        bounds.append(None if value is None else to_micros(value))
    pseudonym = keys if isinstance(keys, Pseudonymizer) else Pseudonymizer.from_keyring(keys)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    manifest_path = root / MANIFEST_NAME
    manifest = _read_manifest(manifest_path)
    if manifest is None:
        manifest = {
            "version": _MANIFEST_VERSION,
            "format": format,
            "pseudonym_key_id": pseudonym.key_id,
            "pseudonym_check": pseudonym.check,
            "runs": 0,
            "tables": {},
        }
    elif manifest.get("format") != format:
        raise InvalidInputError(
            field="out", reason=f"the directory holds a {manifest.get('format')} export"
        )
    elif manifest.get("pseudonym_check") != pseudonym.check:
        raise InvalidInputError(
            field="out",
            reason="the directory was exported under another pseudonym key; use a new directory",
        )
    run = int(manifest["runs"]) + 1
    rows: dict[str, int] = {}
    files: list[str] = []
    tables: dict[str, Any] = manifest["tables"]
    watermarks = {table: _watermark(tables.get(table), bounds[1]) for table in TABLES}
    before = reader.stored_seq_bound()  # after the checks: nothing read, nothing written yet
    for table in TABLES:
        state = tables.get(table) or {"rows": 0, "latest": None}
        count, latest, written = _export_table(
            reader,
            table,
            out=root,
            fmt=format,
            run=run,
            after=watermarks[table],
            before=before,
            since=bounds[0],
            until=bounds[1],
            batch_size=batch_size,
            pseudonym=pseudonym,
        )
        rows[table] = count
        files += written
        if latest is None or (state["latest"] is not None and state["latest"] > latest):
            latest = state["latest"]
        tables[table] = {
            "stored_before": before,
            "until": bounds[1],
            "latest": latest,
            "latest_time": None if latest is None else from_micros(latest).isoformat(),
            "rows": int(state["rows"]) + count,
        }
    for table in SNAPSHOTS:
        count, written = _export_snapshot(
            reader, table, out=root, fmt=format, batch_size=batch_size, pseudonym=pseudonym
        )
        rows[table] = count
        files += written
    erased = [pseudonym(c) for c in reader.erased_contacts()]
    _write_atomic(root / ERASED_NAME, "contact\n" + "".join(f"{p}\n" for p in sorted(erased)))
    manifest["runs"] = run
    manifest["tables"] = tables
    _write_atomic(manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return AnalyticsExport(rows=rows, files=tuple(files), erased=len(erased), run=run)
