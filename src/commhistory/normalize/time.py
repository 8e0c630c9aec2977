"""Timestamps: every accepted spelling in, one aware UTC :class:`~datetime.datetime` out.

:func:`parse_timestamp` accepts

* ISO 8601 strings with an offset or a trailing ``Z``
  (``"2026-04-01T09:00:00+09:00"``, ``"2026-04-01T00:00:00Z"``): anything
  :meth:`datetime.fromisoformat` reads;
* legacy spreadsheet spellings: ``"2026/04/01 09:00"``, ``"2026/4/1 9:00:05"``,
  ``"2026-04-01 09:00:00"``, a bare date ``"2026/04/01"``;
* epoch numbers, as :class:`int`, :class:`float` or a numeric string. A value
  whose magnitude is at least :data:`EPOCH_MS_THRESHOLD` (``1e11``) is read as
  **milliseconds**, anything smaller as **seconds**. ``1e11`` seconds is in
  the year 5138, ``1e11`` milliseconds is 1973-03-03: so this rule reads every
  real timestamp of this century right, in either unit;
* :class:`~datetime.datetime` objects.

A value without an offset (a naive datetime, ``"2026/04/01 09:00"``) is an
error unless ``default_tz`` names the zone it was written in. An eight-digit
string such as ``"20260401"`` is refused as ambiguous (a compact date, or epoch
seconds in 1970?).

:func:`format_timestamp` writes the one canonical spelling:
``"2026-04-01T00:00:00Z"``, UTC with a ``Z``, and a six-digit fraction only
when the microseconds are not zero. ``parse_timestamp(format_timestamp(t)) == t``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Final
from zoneinfo import ZoneInfo

from commhistory.errors import NormalizationError

__all__ = ["EPOCH_MS_THRESHOLD", "format_timestamp", "parse_timestamp"]

EPOCH_MS_THRESHOLD: Final = 10**11
"""Epoch numbers whose magnitude is at least this are milliseconds; smaller ones are seconds."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_TEXT: Final = 64
_NUMBER: Final = re.compile(r"[+-]?[0-9]+(?:\.[0-9]*)?", re.ASCII)
_LEGACY: Final = re.compile(
    r"""
    (?P<year>[0-9]{4}) (?P<sep>[/-]) (?P<month>[0-9]{1,2}) (?P=sep) (?P<day>[0-9]{1,2})
    (?:
        [ T]+ (?P<hour>[0-9]{1,2}) : (?P<minute>[0-9]{2})
        (?: : (?P<second>[0-9]{2}) (?: \. (?P<fraction>[0-9]{1,6}) )? )?
    )?
    """,
    re.ASCII | re.VERBOSE,
)
_MICROS_PER_SECOND: Final = Decimal(1_000_000)
_MICROS_PER_MILLI: Final = Decimal(1_000)


def parse_timestamp(
    value: str | int | float | datetime,
    *,
    default_tz: tzinfo | str | None = None,
    field: str = "timestamp",
) -> datetime:
    """Read a timestamp in any accepted spelling and return it as an aware UTC datetime.

    Args:
        value: An ISO 8601 or legacy string, epoch seconds or milliseconds (a
            number or a numeric string), or a datetime. ``bool`` is refused.
        default_tz: The zone of naive values: a :class:`~datetime.tzinfo` or an
            IANA name such as ``"Asia/Tokyo"``. Without it naive values are an
            error. Values that carry an offset ignore it.
        field: The field name errors report.

    Returns:
        The same instant, with ``tzinfo`` :data:`datetime.UTC`.

    Raises:
        NormalizationError: ``field=field`` when the value cannot be read, is
            naive without ``default_tz``, or lies outside years 1-9999 in UTC;
            ``field="default_tz"`` when ``default_tz`` is not a known zone.

    .. versionadded:: 0.1.0
    """
    if type(value) is str and value[10:11] == "T" and len(value) <= _MAX_TEXT:
        # The canonical spelling (and ISO 8601 with an offset): the stdlib's C parser
        # alone. Anything else it reads is read below exactly as here; the rest, and
        # naive or out-of-range values, take the general path.
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is UTC:
                return parsed
            if parsed.utcoffset() is not None:
                try:
                    return parsed.astimezone(UTC)
                except (OverflowError, ValueError):
                    pass
    if isinstance(value, bool):
        raise NormalizationError(field=field, reason="expected a timestamp, got bool")
    if isinstance(value, datetime):
        return _to_utc(value, default_tz, field)
    if isinstance(value, int | float):
        return _from_epoch(value, field)
    if isinstance(value, str):
        return _from_text(value, default_tz, field)
    raise NormalizationError(
        field=field, reason=f"expected a string, number or datetime, got {type(value).__name__}"
    )


def format_timestamp(value: datetime) -> str:
    """Write an aware datetime in the canonical form: UTC, ISO 8601, ``Z``.

    Microseconds are written (six digits) only when they are not zero:
    ``"2026-04-01T00:00:00Z"``, ``"2026-04-01T00:00:00.250000Z"``.

    Args:
        value: An aware datetime, in any zone.

    Returns:
        The UTC ISO 8601 string.

    Raises:
        NormalizationError: ``field="timestamp"``; the value is not an aware
            datetime, or is outside years 1-9999 once in UTC.

    .. versionadded:: 0.1.0
    """
    if not isinstance(value, datetime):
        raise NormalizationError(
            field="timestamp", reason=f"expected a datetime, got {type(value).__name__}"
        )
    if value.utcoffset() is None:
        raise NormalizationError(field="timestamp", reason="naive datetime; give it a time zone")
    utc = _to_utc(value, None, "timestamp").replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds" if utc.microsecond else "seconds") + "Z"


def _zone(default_tz: tzinfo | str | None) -> tzinfo | None:
    if default_tz is None or isinstance(default_tz, tzinfo):
        return default_tz
    if isinstance(default_tz, str):
        try:
            return ZoneInfo(default_tz)
        except (ValueError, KeyError, OSError):
            raise NormalizationError(
                field="default_tz", reason="not a known IANA time zone name"
            ) from None
    raise NormalizationError(
        field="default_tz",
        reason=f"expected a tzinfo or an IANA zone name, got {type(default_tz).__name__}",
    )


def _to_utc(value: datetime, default_tz: tzinfo | str | None, field: str) -> datetime:
    if value.utcoffset() is None:
        zone = _zone(default_tz)
        if zone is None:
            raise NormalizationError(
                field=field, reason="no time zone offset; give one or a default zone"
            )
        value = value.replace(tzinfo=zone)
        if value.utcoffset() is None:
            raise NormalizationError(field="default_tz", reason="the zone gives no UTC offset")
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise NormalizationError(field=field, reason="out of range (years 1-9999)") from None


def _from_epoch(value: int | float | Decimal, field: str) -> datetime:
    if isinstance(value, float) and not math.isfinite(value):
        raise NormalizationError(field=field, reason="not a finite number")
    number = Decimal(value)
    scale = _MICROS_PER_MILLI if abs(number) >= EPOCH_MS_THRESHOLD else _MICROS_PER_SECOND
    try:
        micros = int((number * scale).to_integral_value(rounding=ROUND_HALF_EVEN))
        return _EPOCH + timedelta(microseconds=micros)
    except (OverflowError, InvalidOperation):
        raise NormalizationError(field=field, reason="out of range (years 1-9999)") from None


def _from_text(value: str, default_tz: tzinfo | str | None, field: str) -> datetime:
    text = value.strip()
    if not text:
        raise NormalizationError(field=field, reason="must not be empty")
    if len(text) > _MAX_TEXT:
        raise NormalizationError(field=field, reason="too long")
    if _NUMBER.fullmatch(text):
        if len(text) == 8 and text.isdigit():
            raise NormalizationError(
                field=field,
                reason="ambiguous 8-digit value (a YYYYMMDD date or epoch seconds?); "
                "write the date as 2026-04-01, or pass the epoch as a number",
            )
        return _from_epoch(Decimal(text), field)
    if text[-1] == "z":
        text = text[:-1] + "Z"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        parsed = _legacy(text, field)
    return _to_utc(parsed, default_tz, field)


def _legacy(text: str, field: str) -> datetime:
    match = _LEGACY.fullmatch(text)
    if match is None:
        raise NormalizationError(
            field=field, reason="not an ISO 8601 timestamp, epoch number or known date format"
        )
    parts = match.groupdict()
    fraction = parts["fraction"] or ""
    try:
        return datetime(
            int(parts["year"]),
            int(parts["month"]),
            int(parts["day"]),
            int(parts["hour"] or 0),
            int(parts["minute"] or 0),
            int(parts["second"] or 0),
            int(fraction.ljust(6, "0")) if fraction else 0,
        )
    except ValueError:
        raise NormalizationError(field=field, reason="not a valid calendar date or time") from None


EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
"""The Unix epoch, aware UTC: stored instants count microseconds from here."""
_MICROSECOND: Final = timedelta(microseconds=1)


def to_micros(value: datetime) -> int:
    """Return an aware datetime as integer microseconds since the Unix epoch (UTC).

    .. versionadded:: 0.4.0
    """
    return (value - EPOCH) // _MICROSECOND


def from_micros(value: int) -> datetime:
    """Return the aware UTC datetime of integer microseconds since the Unix epoch.

    .. versionadded:: 0.4.0
    """
    return EPOCH + timedelta(microseconds=value)
