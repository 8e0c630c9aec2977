"""The plain-value guard (``normalize.personal_kind``) against the same rule written out directly.

Plain attributes and plain activity properties are checked value by value before
they are stored in the clear. The stream, from a fixed seed, is what such values
look like: catalogue SKUs and categories, tiers, URL paths, dates, prices, and
order ids with 7+ digits (the ones that reach libphonenumber's matcher); a few
are emails and phone numbers (refused).

* ``personal.repeated``: 100,000 values drawn from 5,000 distinct ones (a catalogue
  recurs). Goal: at least 3x faster than the direct rule (the cache pays).
* ``personal.distinct``: 50,000 distinct values, so the cache never hits. Goal: at
  most 1.2x the time of the direct rule (the cache's overhead is small).

The baseline is the rule without a cache: the email and LINE id regexes, a digit
count, and ``phonenumbers.PhoneNumberMatcher`` for text with 7+ digits. The cache is
cleared before every timed run.

Run: ``python -m benchmarks personal`` or ``python benchmarks/bench_personal.py``.
"""

from __future__ import annotations

import functools
import random
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import phonenumbers

from benchmarks._harness import Benchmark, Goal, main
from commhistory.normalize import clear_caches, personal_kind

SEED: Final = 20261204
REPEATED: Final = 100_000
DISTINCT_IN_REPEATED: Final = 5_000
DISTINCT: Final = 50_000

_EMAIL: Final = re.compile(r"[^\s@<>()\[\],;:\"]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_][\w-]+")
_LINE: Final = re.compile(r"(?<![0-9A-Za-z])U[0-9a-f]{32}(?![0-9A-Za-z])")
_NOT_DIGITS: Final = re.compile(r"\D+")


def direct(values: Sequence[str]) -> int:
    """The hand-written rule, no cache: how many values hold personal data."""
    found = 0
    for text in values:
        if ("@" in text and _EMAIL.search(text)) or ("U" in text and _LINE.search(text)):
            found += 1
        elif len(_NOT_DIGITS.sub("", text)) >= 7:
            matcher = phonenumbers.PhoneNumberMatcher(
                text, "JP", leniency=phonenumbers.Leniency.VALID
            )
            found += matcher.has_next()
    return found


def ours(values: Sequence[str]) -> int:
    """The package's guard."""
    return sum(personal_kind(text) is not None for text in values)


def _value(rnd: random.Random, n: int) -> str:
    roll = rnd.random()
    if roll < 0.30:
        return f"SKU-{n:05d}"
    if roll < 0.40:
        return rnd.choice(["gold", "silver", "bronze", "platinum"]) + f"-{n % 97}"
    if roll < 0.55:
        return f"/products/{rnd.choice(['shoes', 'bags', 'coats'])}/{n}"
    if roll < 0.65:
        return f"2026-{1 + n % 12:02d}-{1 + n % 28:02d}"
    if roll < 0.75:
        return f"¥{rnd.randrange(100, 99_999):,}"
    if roll < 0.95:
        return f"ORD-{n:010d}"  # 7+ digits: reaches the matcher
    if roll < 0.975:
        return f"user{n}@example.com"
    return f"090-{n % 10_000:04d}-{(n * 7) % 10_000:04d}"


@functools.cache
def repeated_stream() -> list[str]:
    """100,000 values drawn from 5,000 distinct ones."""
    rnd = random.Random(SEED)
    pool = [_value(rnd, n) for n in range(DISTINCT_IN_REPEATED)]
    return [rnd.choice(pool) for _ in range(REPEATED)]


@functools.cache
def distinct_stream() -> list[str]:
    """50,000 distinct values."""
    rnd = random.Random(SEED + 1)
    return list(dict.fromkeys(_value(rnd, n) for n in range(DISTINCT)))


def _agree() -> dict[str, object]:
    values = distinct_stream()
    assert ours(values) == direct(values), "the guard and the direct rule disagree"
    return {"refused_share": round(ours(values) / len(values), 3)}


def benchmarks() -> list[Benchmark]:
    """The guard's benchmarks."""
    return [
        Benchmark(
            name="personal.repeated",
            candidate=lambda: ours(repeated_stream()),
            baseline=lambda: direct(repeated_stream()),
            setup=clear_caches,
            goal=Goal(text=">= 3x faster than the direct rule", max_ratio=1 / 3),
            items=REPEATED,
        ),
        Benchmark(
            name="personal.distinct",
            candidate=lambda: ours(distinct_stream()),
            baseline=lambda: direct(distinct_stream()),
            setup=clear_caches,
            goal=Goal(text="<= 1.2x the time of the direct rule", max_ratio=1.2),
            extra=_agree,
            items=len(distinct_stream()),
        ),
    ]


if __name__ == "__main__":
    sys.exit(main([benchmarks], sys.argv[1:]))
