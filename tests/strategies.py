"""Hypothesis strategies shared by the test modules (add yours here, grouped by subject)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import phonenumbers
from hypothesis import reject
from hypothesis import strategies as st

__all__ = [
    "aware_datetimes",
    "email_addresses",
    "epoch_numbers",
    "jp_mobile_numbers",
    "line_user_ids",
    "phone_spellings",
    "smtp_diagnostics",
    "timestamp_spellings",
    "world_phone_numbers",
    "zones",
]

# --------------------------------------------------------------------------- email

_ASCII_LOCAL = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-",
    min_size=1,
    max_size=20,
).filter(lambda s: not s.startswith(".") and not s.endswith(".") and ".." not in s)
_LABELS = st.sampled_from(
    [
        *("example", "Example", "EXAMPLE", "mail", "co"),
        *("例え", "ドメイン", "straße", "bücher", "xn--r8jz45g"),
    ]
)
_TLDS = st.sampled_from(["com", "jp", "JP", "co.jp", "net", "org", "de", "みんな"])


@st.composite
def email_addresses(draw: st.DrawFn) -> str:
    """Addresses as people type them: mixed case, IDN domains, stray whitespace.

    Not all are valid (email-validator may refuse some); tests that need
    valid ones should normalize and skip the refused.
    """
    local = draw(st.one_of(_ASCII_LOCAL, st.sampled_from(["たろう", "Jörg", "taro.yamada"])))
    labels = draw(st.lists(_LABELS, min_size=1, max_size=2))
    domain = ".".join([*labels, draw(_TLDS)])
    pad = draw(st.sampled_from(["", " ", "\t", "\u3000"]))
    return f"{pad}{local}@{domain}{pad}"


# --------------------------------------------------------------------------- phone

# ASCII "0"-"9", "+" and "-" have full-width twins 0xFEE0 code points higher.
_FULL_WIDTH = {ord(c): ord(c) + 0xFEE0 for c in "0123456789+-"}


@st.composite
def jp_mobile_numbers(draw: st.DrawFn) -> str:
    """A Japanese mobile number in national form, e.g. ``"090-1234-5678"``."""
    prefix = draw(st.sampled_from(["090", "080", "070"]))
    first = draw(st.integers(min_value=1000, max_value=9999))
    second = draw(st.integers(min_value=0, max_value=9999))
    return f"{prefix}-{first:04d}-{second:04d}"


@st.composite
def phone_spellings(draw: st.DrawFn) -> str:
    """A Japanese number (mobile or Tokyo landline) spelled one of the ways people do."""
    national = draw(
        st.one_of(
            jp_mobile_numbers(),
            st.integers(min_value=1000, max_value=9999).map(lambda n: f"03-{n:04d}-5678"),
        )
    )
    digits = national.replace("-", "")
    style = draw(st.sampled_from(["hyphen", "plain", "space", "intl", "intl0", "full", "tel"]))
    if style == "plain":
        return digits
    if style == "space":
        return national.replace("-", " ")
    if style == "intl":
        return "+81 " + national[1:]
    if style == "intl0":
        return "+81" + digits
    if style == "full":
        return national.translate(_FULL_WIDTH)
    if style == "tel":
        return "tel:+81-" + national[1:]
    return national


_PHONE_TYPES = [
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.FIXED_LINE,
    phonenumbers.PhoneNumberType.TOLL_FREE,
    phonenumbers.PhoneNumberType.VOIP,
]


@st.composite
def world_phone_numbers(draw: st.DrawFn) -> str:
    """A valid E.164 number of any region or non-geographic entity, e.g. ``"+390612345678"``.

    Starts from the numbering plan's example number and redraws up to its last
    five digits, keeping the result only when it is still valid.
    """
    if draw(st.booleans()):
        region = draw(st.sampled_from(sorted(phonenumbers.SUPPORTED_REGIONS)))
        example = phonenumbers.example_number_for_type(region, draw(st.sampled_from(_PHONE_TYPES)))
        if example is None:
            example = phonenumbers.example_number(region)
    else:
        code = draw(st.sampled_from(sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS)))
        example = phonenumbers.example_number_for_non_geo_entity(code)
    if example is None:
        reject()
    nsn = phonenumbers.national_significant_number(example)
    k = draw(st.integers(min_value=0, max_value=min(5, len(nsn) - 1)))
    tail = draw(st.text(alphabet="0123456789", min_size=k, max_size=k))
    candidate = f"+{example.country_code}{nsn[: len(nsn) - k]}{tail}"
    try:
        number = phonenumbers.parse(candidate, None)
    except phonenumbers.NumberParseException:
        number = example
    if not phonenumbers.is_valid_number(number):
        number = example
    e164: str = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164


# --------------------------------------------------------------------------- LINE


def line_user_ids() -> st.SearchStrategy[str]:
    """Valid LINE user ids: ``U`` and 32 lower-case hex digits."""
    return st.text(alphabet="0123456789abcdef", min_size=32, max_size=32).map(lambda h: "U" + h)


# --------------------------------------------------------------------------- time


def zones() -> st.SearchStrategy[tzinfo]:
    """UTC, fixed offsets and a few IANA zones (with and without DST)."""
    return st.one_of(
        st.just(UTC),
        st.integers(min_value=-14 * 60, max_value=14 * 60).map(
            lambda m: timezone(timedelta(minutes=m))
        ),
        st.sampled_from(
            [ZoneInfo("Asia/Tokyo"), ZoneInfo("America/New_York"), ZoneInfo("Europe/London")]
        ),
    )


def aware_datetimes(min_year: int = 2, max_year: int = 9998) -> st.SearchStrategy[datetime]:
    """Aware datetimes; the default bounds keep clear of years 1 and 9999 in any zone."""
    return st.datetimes(
        min_value=datetime(min_year, 1, 1),
        max_value=datetime(max_year, 12, 31),
        timezones=zones(),
    )


def epoch_numbers() -> st.SearchStrategy[int | float]:
    """Epoch seconds (1970-2100) and milliseconds (1973-2100), ints and floats.

    Milliseconds before 1973-03-03 (below ``1e11``) read as seconds, by design.
    """
    seconds = st.integers(min_value=0, max_value=4_102_444_800)  # up to 2100
    return st.one_of(
        seconds,
        st.integers(min_value=10**11, max_value=4_102_444_800_000),
        st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False),
    )


@st.composite
def timestamp_spellings(draw: st.DrawFn) -> str:
    """A timestamp written as an API, a log or a spreadsheet would write it."""
    moment = draw(aware_datetimes(1900, 2200))
    style = draw(st.sampled_from(["iso", "z", "space", "slash", "compact"]))
    if style == "z":
        return moment.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"
    if style == "space":
        return moment.isoformat(sep=" ")
    if style == "slash":
        return moment.strftime("%Y/%m/%d %H:%M:%S")  # naive: needs a default zone
    if style == "compact":
        return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return moment.isoformat()


# --------------------------------------------------------------------------- SMTP

_DIAGNOSTIC_TEMPLATES = (
    "{basic} {enhanced} <taro@example.com>: Recipient address rejected",
    "smtp; {basic}-{enhanced} The email account that you tried to reach does not exist.",
    "smtp;{basic} {enhanced} Message rejected",
    "Remote server returned '{basic} {enhanced} RESOLVER.ADR.RecipNotFound; not found'",
    "{basic} {enhanced}",
    "{enhanced}",
)


@st.composite
def smtp_diagnostics(draw: st.DrawFn) -> tuple[str, str, int]:
    """A diagnostic line with the enhanced and basic codes it carries."""
    klass = draw(st.sampled_from([4, 5]))
    subject = draw(st.integers(min_value=0, max_value=7))
    detail = draw(st.integers(min_value=0, max_value=12))
    basic = klass * 100 + draw(st.sampled_from([21, 50, 51, 52, 53, 54]))
    enhanced = f"{klass}.{subject}.{detail}"
    template = draw(st.sampled_from(_DIAGNOSTIC_TEMPLATES))
    return template.format(basic=basic, enhanced=enhanced), enhanced, basic
