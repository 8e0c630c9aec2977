"""The bulk attribute write (issue 16 performance) stores what the general path stores.

A batch's changes of contacts the batch itself creates, one change per contact,
skip the timeline merge on SQL stores (``_write_fresh``); every other change
goes through it. Hypothesis mixes both in one batch (new contacts with one
change, new contacts with several, contacts with stored values, unsets,
personal values) and checks the SQL store ends with exactly the history, the
values and the report of the memory store, whose code has no such shortcut.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commhistory.contacts import AttributeDefinition, AttributeSchema, AttributeType
from commhistory.crypto import (
    Keyring,
    unwrap_data_key,
    wrap_data_key,
    wrap_data_keys,
    wrapped_key_id,
)
from commhistory.errors import CryptoError, NotFoundError
from commhistory.facade import CommHistory, open_repository
from commhistory.model import ContactUpdate
from commhistory.store import MemoryRepository

T0 = datetime(2026, 4, 1, tzinfo=UTC)
SCHEMA = AttributeSchema(
    [
        AttributeDefinition(name="tier", type=AttributeType.ENUM, values=("gold", "silver")),
        AttributeDefinition(name="spend", type=AttributeType.DECIMAL),
        AttributeDefinition(name="visits", type=AttributeType.INT),
        AttributeDefinition(name="tags", type=AttributeType.LIST),
        AttributeDefinition(name="full_name", type=AttributeType.STR, personal=True),
    ]
)
POOLS: dict[str, list[Any]] = {
    "tier": ["gold", "silver", None],
    "spend": ["1.5", "1.50", "20", None],
    "visits": [1, 2, None],
    "tags": [["a"], ["a", "b"], None],
    "full_name": ["Yamada", "山田 太郎", None],
}

_values = st.dictionaries(
    st.sampled_from(sorted(POOLS)), st.integers(0, 3), min_size=1, max_size=3
).map(lambda picks: {k: POOLS[k][i % len(POOLS[k])] for k, i in picks.items()})
_update = st.tuples(st.integers(0, 5), st.integers(0, 3), _values)
"""(contact number, day, values): contacts 0-1 have stored values, 2-5 are new."""

_runs = itertools.count()


def _updates(prefix: str, items: list[tuple[int, int, dict[str, Any]]]) -> list[ContactUpdate]:
    return [
        ContactUpdate(contact_id=f"{prefix}c{n}", attributes=values, at=T0 + timedelta(days=day))
        for n, day, values in items
    ]


def _state(repo: CommHistory[Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in range(6):
        cid = f"{prefix}c{n}"
        try:
            versions = repo.attribute_history(cid)
        except NotFoundError:
            out[cid] = None
            continue
        out[cid] = [
            (v.name, v.type, v.value, v.personal, v.valid_from, v.valid_to) for v in versions
        ]
    return out


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def pair(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[CommHistory[Any], CommHistory[Any]]]:
    target = (
        f"sqlite:///{tmp_path / 'bulk.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    memory: CommHistory[Any] = CommHistory(MemoryRepository(batch_size=100))
    sql = open_repository(target, Keyring.generate(), batch_size=100)
    with memory, sql:
        memory.declare_attributes(SCHEMA)
        sql.declare_attributes(SCHEMA)
        yield memory, sql


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    stored=st.lists(st.tuples(st.integers(0, 1), st.integers(0, 3), _values), max_size=4),
    batch=st.lists(_update, min_size=1, max_size=12),
)
def test_a_bulk_batch_stores_what_the_memory_store_stores(
    pair: tuple[CommHistory[Any], CommHistory[Any]],
    stored: list[tuple[int, int, dict[str, Any]]],
    batch: list[tuple[int, int, dict[str, Any]]],
) -> None:
    memory, sql = pair
    prefix = f"r{next(_runs)}-"  # fresh contacts in every example
    for repo in (memory, sql):
        repo.record_contacts(_updates(prefix, stored))
    reports = [repo.record_contacts(_updates(prefix, batch)) for repo in (memory, sql)]
    assert [(r.inserted, r.duplicates, r.rejected) for r in reports[1:]] == [
        (reports[0].inserted, reports[0].duplicates, reports[0].rejected)
    ]
    assert _state(sql, prefix) == _state(memory, prefix)


def test_a_new_contact_with_one_change_gets_one_current_row_per_value(
    pair: tuple[CommHistory[Any], CommHistory[Any]],
) -> None:
    _, sql = pair
    report = sql.record_contacts(
        [
            ContactUpdate(contact_id="n1", attributes={"tier": "gold", "full_name": "X"}, at=T0),
            ContactUpdate(contact_id="n2", attributes={"tier": None}, at=T0),
        ]
    )
    assert (report.inserted, report.duplicates) == (1, 1)
    history = sql.attribute_history("n1")
    assert [(v.name, v.value, v.valid_from, v.valid_to) for v in history] == [
        ("full_name", "X", T0, None),
        ("tier", "gold", T0, None),
    ]
    assert sql.attribute_history("n2") == []


def test_wrap_data_keys_gives_what_wrap_data_key_gives() -> None:
    keys = Keyring.generate()
    data = {f"c{i}": bytes([i]) * 32 for i in range(5)}
    wrapped = wrap_data_keys(keys, data)
    assert list(wrapped) == list(data)
    for cid, blob in wrapped.items():
        assert unwrap_data_key(keys, blob, contact_id=cid) == data[cid]
        single = wrap_data_key(keys, data[cid], contact_id=cid)
        header = 2 + blob[1]
        assert len(blob) == len(single)
        assert blob[:header] == single[:header]  # format and key id
        assert wrapped_key_id(blob) == keys.current_key_id
    nonces = {blob[2 + blob[1] : 14 + blob[1]] for blob in wrapped.values()}
    assert len(nonces) == 5  # a fresh nonce each
    with pytest.raises(CryptoError):  # bound to its contact
        unwrap_data_key(keys, wrapped["c1"], contact_id="c2")
    with pytest.raises(CryptoError):
        wrap_data_keys(keys, {"c1": b"short"})
    assert wrap_data_keys(keys, {}) == {}


def test_a_version_removed_and_set_again_at_its_time_is_rewritten(
    pair: tuple[CommHistory[Any], CommHistory[Any]],
) -> None:
    """Found by the test above: the SQL store kept the stored row and lost the new one."""
    day = timedelta(days=1)
    for repo in pair:
        repo.record_contacts([ContactUpdate(contact_id="o1", attributes={"visits": 1}, at=T0)])
        repo.record_contacts(
            [
                ContactUpdate(contact_id="o1", attributes={"visits": None}, at=T0),
                ContactUpdate(contact_id="o1", attributes={"visits": 2}, at=T0 + day),
                ContactUpdate(contact_id="o1", attributes={"visits": 1}, at=T0),
            ]
        )
        history = [(v.value, v.valid_from, v.valid_to) for v in repo.attribute_history("o1")]
        assert history == [(1, T0, T0 + day), (2, T0 + day, None)], repo
