"""Cached normalizers against calling email-validator and phonenumbers directly.

Two streams of 200,000 contact addresses, generated from a fixed seed: about
70 % emails (Japanese and international mailbox providers, company domains, a
few IDN domains, stray case and whitespace) and 30 % Japanese phone numbers
(mobiles and landlines, written with hyphens, spaces, ``+81``, full-width
digits); about 1 % of each is invalid, as in real exports.

* ``normalize.repeated``: 20,000 distinct addresses, each 10 times, shuffled
  (a CSV import where customers recur). Goal: at least 5x faster than direct
  calls.
* ``normalize.distinct``: 200,000 distinct addresses, so the cache never hits.
  Goal: at most 1.2x the time of direct calls (the cache's overhead is small).

The LRU caches are cleared before every timed run. Both sides do the same
work per item: strip, validate, format, and catch the library's error.

Run: ``python -m benchmarks normalize``, ``python -m benchmarks.bench_normalize``
or ``python benchmarks/bench_normalize.py``.
"""

from __future__ import annotations

import functools
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from benchmarks._harness import Benchmark, Goal, main, measure_peak_rss
from commhistory.errors import NormalizationError
from commhistory.normalize import cache_info, clear_caches, normalize_email, normalize_phone

SEED: Final = 20260401
STREAM: Final = 200_000
REPEATS_PER_ADDRESS: Final = 10
EMAIL_SHARE: Final = 0.7
INVALID_SHARE: Final = 0.01

Kind = Literal["email", "phone"]
Item = tuple[Kind, str]

_GIVEN: Final = [
    "taro",
    "hanako",
    "yuki",
    "haruto",
    "yui",
    "sota",
    "hina",
    "ren",
    "aoi",
    "minato",
    "mei",
    "riku",
    "sakura",
    "kenji",
    "akira",
    "naoko",
    "hiroshi",
    "emi",
    "daiki",
    "kaito",
    "rin",
    "yuto",
    "mio",
    "takumi",
    "airi",
    "john",
    "mary",
    "wei",
]
_FAMILY: Final = [
    "sato",
    "suzuki",
    "takahashi",
    "tanaka",
    "watanabe",
    "ito",
    "yamamoto",
    "nakamura",
    "kobayashi",
    "kato",
    "yoshida",
    "yamada",
    "sasaki",
    "yamaguchi",
    "matsumoto",
    "inoue",
    "kimura",
    "hayashi",
    "shimizu",
    "smith",
    "lee",
]
_PROVIDERS: Final = (
    ("gmail.com", 30),
    ("yahoo.co.jp", 15),
    ("docomo.ne.jp", 8),
    ("ezweb.ne.jp", 5),
    ("softbank.ne.jp", 4),
    ("icloud.com", 8),
    ("outlook.jp", 5),
    ("hotmail.com", 4),
    ("nifty.com", 2),
)
_COMPANY_WORDS: Final = [
    "sakura",
    "fuji",
    "nippon",
    "tokyo",
    "osaka",
    "global",
    "tech",
    "trade",
    "foods",
    "mirai",
]
_COMPANY_TLDS: Final = ("co.jp", "jp", "com", "ne.jp", "or.jp")
_IDN_DOMAINS: Final = ("例え.jp", "日本語.jp", "ドメイン.com", "xn--r8jz45g.jp")
_FULL_WIDTH: Final = {ord(c): ord(c) + 0xFEE0 for c in "0123456789+-"}


def _email(rng: random.Random) -> str:
    given, family = rng.choice(_GIVEN), rng.choice(_FAMILY)
    local = rng.choice(
        [
            f"{given}.{family}",
            f"{given}_{family}{rng.randrange(100)}",
            f"{given[0]}{family}{rng.randrange(1960, 2010)}",
            f"{family}.{given}+{rng.choice(['news', 'shop', 'x'])}",
            f"{given}{rng.randrange(10_000)}",
        ]
    )
    roll = rng.random()
    if roll < 0.7:
        domain = rng.choices([d for d, _ in _PROVIDERS], [w for _, w in _PROVIDERS])[0]
    elif roll < 0.99:
        words = rng.sample(_COMPANY_WORDS, 2)
        domain = f"{words[0]}-{words[1]}.{rng.choice(_COMPANY_TLDS)}"
    else:
        domain = rng.choice(_IDN_DOMAINS)
    if rng.random() < 0.1:
        local = local.capitalize()
    if rng.random() < 0.05:
        domain = domain.upper()
    address = f"{local}@{domain}"
    if rng.random() < 0.03:
        address = f" {address} "
    if rng.random() < INVALID_SHARE:
        address = rng.choice([address.replace("@", ""), f"{given} <{address}>", address + "."])
    return address


def _phone(rng: random.Random) -> str:
    if rng.random() < 0.85:
        national = (
            f"0{rng.choice('987')}0-{rng.randrange(1000, 10_000)}-{rng.randrange(10_000):04d}"
        )
    else:
        area = rng.choice(["03", "06"])
        national = f"{area}-{rng.randrange(1000, 10_000)}-{rng.randrange(10_000):04d}"
    if rng.random() < INVALID_SHARE:
        national = national[:-3]
    style = rng.random()
    if style < 0.55:
        return national
    if style < 0.8:
        return national.replace("-", "")
    if style < 0.9:
        return "+81 " + national[1:]
    if style < 0.95:
        return national.replace("-", " ")
    return national.translate(_FULL_WIDTH)


def _distinct(rng: random.Random, count: int) -> list[Item]:
    seen: set[Item] = set()
    items: list[Item] = []
    while len(items) < count:
        item: Item = (
            ("email", _email(rng)) if rng.random() < EMAIL_SHARE else ("phone", _phone(rng))
        )
        if item not in seen:
            seen.add(item)
            items.append(item)
    return items


@functools.cache
def repeated_stream() -> list[Item]:
    """200,000 items: 20,000 distinct addresses, each 10 times, shuffled."""
    rng = random.Random(SEED)
    items = _distinct(rng, STREAM // REPEATS_PER_ADDRESS) * REPEATS_PER_ADDRESS
    rng.shuffle(items)
    return items


@functools.cache
def distinct_stream() -> list[Item]:
    """200,000 distinct items."""
    return _distinct(random.Random(SEED + 1), STREAM)


def ours(items: Sequence[Item]) -> int:
    """Normalize every item with commhistory; return how many were valid."""
    valid = 0
    for kind, value in items:
        try:
            if kind == "email":
                normalize_email(value)
            else:
                normalize_phone(value, "JP")
        except NormalizationError:
            continue
        valid += 1
    return valid


def direct(items: Sequence[Item]) -> int:
    """Normalize every item by calling the libraries directly; return how many were valid."""
    valid = 0
    e164 = phonenumbers.PhoneNumberFormat.E164
    for kind, value in items:
        if kind == "email":
            try:
                validate_email(value.strip(), check_deliverability=False, strict=True).normalized  # noqa: B018
            except EmailNotValidError:
                continue
        else:
            try:
                number = phonenumbers.parse(value, "JP")
            except phonenumbers.NumberParseException:
                continue
            if number.extension or not phonenumbers.is_valid_number(number):
                continue
            phonenumbers.format_number(number, e164)
        valid += 1
    return valid


def _figures(items: Sequence[Item]) -> dict[str, Any]:
    clear_caches()
    valid_ours = ours(items)
    valid_direct = direct(items)
    info = cache_info()
    figures: dict[str, Any] = {
        "items": len(items),
        "distinct": len(set(items)),
        "valid_ours": valid_ours,
        "valid_direct": valid_direct,
        "email_cache": f"hits={info['email'].hits} misses={info['email'].misses} "
        f"size={info['email'].currsize}/{info['email'].maxsize}",
        "phone_cache": f"hits={info['phone'].hits} misses={info['phone'].misses} "
        f"size={info['phone'].currsize}/{info['phone'].maxsize}",
    }
    clear_caches()
    peak = measure_peak_rss(lambda: ours(items))
    if peak is not None:
        figures["rss_growth_mib"] = round(peak / 2**20, 1)
    return figures


def benchmarks() -> list[Benchmark]:
    """The normalizer benchmarks (inputs are built on first use)."""
    return [
        Benchmark(
            name="normalize.repeated",
            candidate=lambda: ours(repeated_stream()),
            baseline=lambda: direct(repeated_stream()),
            setup=clear_caches,
            goal=Goal(text=">= 5x faster than direct calls", max_ratio=1 / 5),
            extra=lambda: _figures(repeated_stream()),
            items=STREAM,
        ),
        Benchmark(
            name="normalize.distinct",
            candidate=lambda: ours(distinct_stream()),
            baseline=lambda: direct(distinct_stream()),
            setup=clear_caches,
            goal=Goal(text="<= 1.2x the time of direct calls", max_ratio=1.2),
            extra=lambda: _figures(distinct_stream()),
            items=STREAM,
        ),
    ]


if __name__ == "__main__":
    sys.exit(main([benchmarks], sys.argv[1:]))
