"""Set-wise enrollment (``enroll_batch``) equals ``enroll`` one trigger after the other.

On memory, SQLite and PostgreSQL, for each re-entry policy: the same triggers
enroll, the same are kept out, retried ones are recognised, and the stored rows
are the same; two workers enrolling different triggers of one contact at once
still let a ``once`` journey in once.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commhistory.crypto import Keyring
from commhistory.errors import InvalidInputError
from commhistory.facade import CommHistory, open_repository
from commhistory.journeys import Journey
from commhistory.journeys.engine import Entry, enroll, enroll_batch, enrollment_id
from tests._journeys import BACKENDS, open_history, sql_target

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "journeys"
T0 = dt.datetime(2026, 3, 2, 1, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


@pytest.fixture(params=BACKENDS)
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CommHistory[Any]]:
    with open_history(request, tmp_path) as history:
        yield history


def _journey(key: str, reentry: str) -> Journey:
    data = Journey.load(EXAMPLES / "welcome.json").to_dict()
    data.update(key=key, reentry=reentry)
    if reentry == "periodic":
        data["reentry_days"] = 2
    return Journey.from_dict(data)


# One entry: contact (of 3), trigger (of 8: repeats are retries), hour after T0, a property.
entries = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 7), st.integers(0, 150), st.booleans()),
    max_size=12,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    batches=st.lists(entries, min_size=1, max_size=3),
    reentry=st.sampled_from(["once", "periodic", "always"]),
)
def test_a_batch_enrolls_what_enroll_one_by_one_does(
    repo: CommHistory[Any], batches: list[list[tuple[int, int, int, bool]]], reentry: str
) -> None:
    tag = uuid.uuid4().hex[:8]  # one example's journeys apart from the last one's
    one, many = _journey(f"one-{tag}", reentry), _journey(f"many-{tag}", reentry)
    store = repo.store
    for batch in batches:
        items = [
            (f"c{c}-{tag}", f"t{t}", T0 + h * HOUR, {"flag": flag}) for c, t, h, flag in batch
        ]
        expected: dict[str, list[str]] = {"in": [], "out": [], "known": []}
        for contact, trigger, at, props in items:
            before = store.journey_store.enrollment(enrollment_id(one.key, trigger))
            done = enroll(store, one, contact, trigger, at, properties=props)
            outcome = "known" if before is not None else "in" if done else "out"
            expected[outcome].append(trigger)
        result = enroll_batch(store, many, items)
        got = {"in": list(result.enrolled), "out": list(result.kept_out),
               "known": list(result.known)}  # fmt: skip
        assert got == expected

    def rows(key: str) -> list[tuple[Any, ...]]:
        out = []
        for n in range(8):
            row = store.journey_store.enrollment(enrollment_id(key, f"t{n}"))
            if row is not None:
                out.append((row.contact_id, row.trigger_id, row.entered_at,
                            dict(row.entry_properties), row.step_id, row.since, row.status,
                            dict(row.visits), row.wake_at, row.revision))  # fmt: skip
        return out

    assert rows(many.key) == rows(one.key)


def test_a_bad_entry_stores_nothing(repo: CommHistory[Any]) -> None:
    journey = _journey("bad", "always")
    good: Entry = ("c1", "t1", T0, {})
    with pytest.raises(InvalidInputError, match="at"):
        enroll_batch(repo.store, journey, [good, ("c1", "t2", dt.datetime(2026, 3, 2), {})])
    with pytest.raises(InvalidInputError, match="properties"):
        enroll_batch(repo.store, journey, [good, ("c1", "t3", T0, {"x": 1.5})])
    assert repo.store.journey_store.enrollment(enrollment_id("bad", "t1")) is None
    assert enroll_batch(repo.store, journey, []).enrolled == ()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return sql_target(request, tmp_path)


def test_concurrent_batches_let_a_once_journey_in_once(target: str) -> None:
    """Three workers enroll different triggers of the same contacts at once."""
    keyring = Keyring.generate()
    journey = _journey("once", "once")
    with open_repository(target, keyring):
        pass  # the schema, before the workers open it at once
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def worker(n: int) -> None:
        try:
            with open_repository(target, keyring) as mine:
                for round_ in range(10):
                    at = T0 + n * HOUR
                    items: list[Entry] = [
                        (f"c{c}-{round_}", f"w{n}-r{round_}-c{c}", at, {}) for c in range(20)
                    ]
                    barrier.wait(timeout=60)  # each round's batches race for the same contacts
                    enroll_batch(mine.store, journey, items)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()  # the others stop waiting for this one

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with open_repository(target, keyring) as check:
        counts = check.store.journey_store.journey_counts("once", 1)
    assert sum(counts.statuses.values()) == 200
