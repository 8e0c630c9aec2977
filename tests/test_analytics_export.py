"""The analytics export: DuckDB over the exported dataset gives exactly ``repo.kpis``.

On SQLite and PostgreSQL, a generated history (the demo generator plus machine
reactions, rejections and conversions in two currencies) is exported as Parquet;
DuckDB recomputes the per-campaign KPIs from the files alone. Also: no personal
value (address, subject, body, URL, IP, user agent, raw contact id) in any
file, incremental runs write only new rows, erased contacts are left out and
listed by pseudonym, CSV works without pyarrow, and parquet without pyarrow is
a typed error.
"""

from __future__ import annotations

import builtins
import csv
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from commhistory.analytics import MANIFEST_NAME, Pseudonymizer
from commhistory.crypto import Keyring
from commhistory.demo import generate
from commhistory.errors import InvalidInputError
from commhistory.facade import CommHistory, open_repository
from commhistory.kpi import Cost
from commhistory.model import Activity, Channel, Direction, Event, EventType, Message

duckdb = pytest.importorskip("duckdb")
pytest.importorskip("pyarrow")

T0 = datetime(2024, 5, 1, 9, tzinfo=UTC)
PERSONAL_SUBJECT = "Secret offer for Hanako Yamada"
PERSONAL_BODY = "Dear Hanako, your card ending 4242"


def _history() -> tuple[list[Message], list[Event]]:
    messages: list[Message] = []
    events: list[Event] = []
    for i, (m, evs) in enumerate(generate(contacts=120, seed=7)):
        messages.append(m)
        events.extend(evs)
        if i % 5 == 0:  # machine reactions: KPIs leave them out
            events.append(
                Event(
                    event_id=f"x-mo-{i}", type=EventType.OPENED, message_id=m.message_id,
                    occurred_at=m.sent_at + timedelta(hours=2), machine=True,
                )
            )  # fmt: skip
        if i % 7 == 0:
            events.append(
                Event(
                    event_id=f"x-cv-{i}", type=EventType.CONVERTED, message_id=m.message_id,
                    occurred_at=m.sent_at + timedelta(days=1), revenue=Decimal("1250"),
                    currency="JPY", url="https://shop.example/checkout?u=hanako",
                    ip="198.51.100.23", user_agent="Mozilla/5.0 (Hanako's iPhone)",
                )
            )  # fmt: skip
        if i % 11 == 0:
            events.append(
                Event(
                    event_id=f"x-usd-{i}", type=EventType.CONVERTED, message_id=m.message_id,
                    occurred_at=m.sent_at + timedelta(days=2), revenue=Decimal("9.990001"),
                    currency="USD", machine=i % 2 == 0,
                )
            )  # fmt: skip
        if i % 13 == 0:
            events.append(
                Event(
                    event_id=f"x-rj-{i}", type=EventType.REJECTED, message_id=m.message_id,
                    occurred_at=m.sent_at,
                )
            )  # fmt: skip
    messages.append(
        Message(
            message_id="in-1", channel=Channel.EMAIL, direction=Direction.INBOUND,
            contact_id="cust-00001", address="hanako.yamada@example.jp", sent_at=T0,
            subject=PERSONAL_SUBJECT, body=PERSONAL_BODY,
        )
    )  # fmt: skip
    return messages, events


@pytest.fixture(params=["sqlite", "postgresql"])
def history(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CommHistory[Any]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'analytics.db'}"
    else:
        url = request.getfixturevalue("pg_database_url")
    with open_repository(url, Keyring.generate()) as repo:
        messages, events = _history()
        repo.record_messages(messages)
        repo.record_events(events)
        repo.declare_activities({"purchase": ["sku"]})
        repo.record_activities(
            [
                Activity(
                    activity_id="a-1", contact_id="cust-00002", name="purchase",
                    occurred_at=T0 + timedelta(days=3), revenue=Decimal("3000"),
                    currency="JPY", properties={"sku": "TEA-1", "card_holder": "Hanako Yamada"},
                )
            ]
        )  # fmt: skip
        repo.record_costs(
            [
                Cost(
                    cost_id="c-1", campaign_id=messages[0].campaign_id or "x",
                    amount=Decimal("50000"), currency="JPY", starts_at=T0 - timedelta(days=60),
                    ends_at=T0 + timedelta(days=60),
                )
            ]
        )  # fmt: skip
        yield repo


def _duckdb_kpis(out: Path) -> dict[str | None, dict[str, Any]]:
    sql = f"""
    WITH per AS (
        SELECT m.message_id, m.campaign_id,
            coalesce(bool_or(e.type = 'rejected'), false) AS rejected,
            coalesce(bool_or(e.type = 'bounced'), false) AS bounced,
            coalesce(bool_or(e.type = 'bounced' AND e.bounce = 'hard'), false) AS hard,
            coalesce(bool_or(e.type = 'failed'), false) AS failed,
            coalesce(bool_or(e.type = 'opened' AND NOT e.machine), false) AS opened,
            coalesce(bool_or(e.type = 'clicked' AND NOT e.machine), false) AS clicked,
            coalesce(bool_or(e.type = 'converted' AND NOT e.machine), false) AS converted,
            coalesce(bool_or(e.type = 'unsubscribed' AND NOT e.machine), false) AS unsub,
            coalesce(bool_or(e.type = 'complained' AND NOT e.machine), false) AS complained
        FROM read_parquet('{out}/messages/*/*.parquet', hive_partitioning = true) m
        LEFT JOIN read_parquet('{out}/events/*/*.parquet', hive_partitioning = true) e
            ON e.message_id = m.message_id
        WHERE m.direction = 'outbound'
        GROUP BY ALL
    ), sent AS (
        SELECT *, NOT bounced AND NOT failed AS delivered FROM per WHERE NOT rejected
    )
    SELECT campaign_id, count(*) AS sent,
        count(*) FILTER (delivered) AS delivered,
        count(*) FILTER (bounced) AS bounced,
        count(*) FILTER (bounced AND hard) AS hard_bounced,
        count(*) FILTER (failed AND NOT bounced) AS failed,
        count(*) FILTER (delivered AND (opened OR clicked)) AS unique_opens,
        count(*) FILTER (delivered AND clicked) AS unique_clicks,
        count(*) FILTER (delivered AND converted) AS conversions,
        count(*) FILTER (delivered AND unsub) AS unsubscribes,
        count(*) FILTER (delivered AND complained) AS complaints
    FROM sent GROUP BY campaign_id
    """
    con = duckdb.connect()
    cols = [
        "sent", "delivered", "bounced", "hard_bounced", "failed", "unique_opens",
        "unique_clicks", "conversions", "unsubscribes", "complaints",
    ]  # fmt: skip
    got: dict[str | None, dict[str, Any]] = {}
    for row in con.execute(sql).fetchall():
        got[row[0]] = dict(zip(cols, row[1:], strict=True)) | {"revenue": {}}
    revenue_sql = f"""
    SELECT m.campaign_id, e.currency, sum(e.revenue_micros)
    FROM read_parquet('{out}/messages/*/*.parquet', hive_partitioning = true) m
    JOIN read_parquet('{out}/events/*/*.parquet', hive_partitioning = true) e
        ON e.message_id = m.message_id
    WHERE m.direction = 'outbound' AND e.type = 'converted' AND NOT e.machine
        AND e.currency IS NOT NULL AND e.revenue_micros IS NOT NULL
        AND m.message_id NOT IN (
            SELECT message_id FROM read_parquet('{out}/events/*/*.parquet')
            WHERE type IN ('rejected', 'bounced', 'failed'))
    GROUP BY ALL
    """
    for campaign, currency, micros in con.execute(revenue_sql).fetchall():
        got[campaign]["revenue"][currency] = Decimal(int(micros)) / 1_000_000
    return got


def _repo_kpis(repo: CommHistory[Any]) -> dict[str | None, dict[str, Any]]:
    table = repo.kpis(by="campaign_id")
    out: dict[str | None, dict[str, Any]] = {}
    for row in table.rows:
        counts = {
            k: getattr(row, k)
            for k in (
                "sent", "delivered", "bounced", "hard_bounced", "failed", "unique_opens",
                "unique_clicks", "conversions", "unsubscribes", "complaints",
            )
        }  # fmt: skip
        out[row.group["campaign_id"]] = counts | {"revenue": dict(row.revenue)}
    return out


def test_duckdb_over_the_export_gives_repo_kpis(history: CommHistory[Any], tmp_path: Path) -> None:
    out = tmp_path / "lake"
    report = history.export_analytics(out, format="parquet", batch_size=97)
    expected = _repo_kpis(history)
    assert sum(r["sent"] for r in expected.values()) > 50
    assert any(r["revenue"] for r in expected.values())
    assert _duckdb_kpis(out) == expected
    assert report.rows["activities"] == 1
    assert report.rows["costs"] == 1
    # hive-style partitions by UTC date, readable as is
    dates = {p.name for p in (out / "messages").iterdir()}
    assert dates
    assert all(d.startswith("date=20") for d in dates)
    con = duckdb.connect()
    n = con.execute(
        f"SELECT count(*) FROM read_parquet('{out}/messages/*/*.parquet', hive_partitioning=1)"
    ).fetchone()
    assert n is not None
    assert n[0] == report.rows["messages"]


def _personal_values(history: CommHistory[Any]) -> list[bytes]:
    messages, _ = _history()
    values = {m.address for m in messages} | {m.contact_id for m in messages}
    values |= {PERSONAL_SUBJECT, PERSONAL_BODY, "Hanako", "198.51.100.23", "card_holder"}
    values |= {"https://shop.example", "iPhone"}
    values |= {m.subject for m in messages if m.subject}
    return [v.encode() for v in values]


def test_no_personal_value_in_any_file(history: CommHistory[Any], tmp_path: Path) -> None:
    for fmt in ("csv", "parquet"):
        out = tmp_path / fmt
        history.export_analytics(out, format=fmt)
        blobs = [p.read_bytes() for p in out.rglob("*") if p.is_file()]
        if fmt == "parquet":  # compressed: scan the decoded values too
            con = duckdb.connect()
            for table in ("messages", "events", "activities", "costs"):
                rows = con.execute(
                    f"SELECT * FROM read_parquet('{out}/{table}/*/*.parquet')"
                ).fetchall()
                blobs.append(repr(rows).encode())
        for value in _personal_values(history):
            assert not any(value in blob for blob in blobs), value
    # the plain property is there, under a pseudonymous contact
    with (
        (tmp_path / "csv" / "activities")
        .joinpath(
            next(p.name for p in (tmp_path / "csv" / "activities").iterdir()), "part-000001.csv"
        )
        .open() as f
    ):
        (row,) = list(csv.DictReader(f))
    assert json.loads(row["properties"]) == {"sku": "TEA-1"}
    assert row["contact"].startswith("p_")
    assert row["contact"] != "cust-00002"


def test_incremental_export_writes_only_new_rows(
    history: CommHistory[Any], tmp_path: Path
) -> None:
    out = tmp_path / "lake"
    first = history.export_analytics(out, format="parquet")
    again = history.export_analytics(out, format="parquet")
    assert again.total == 0
    assert again.files == ()
    assert again.run == 2
    late = T0 + timedelta(days=400)
    history.record_messages(
        [
            Message(
                message_id="new-1", channel=Channel.EMAIL, direction=Direction.OUTBOUND,
                contact_id="cust-00003", address="new@example.org", sent_at=late,
                campaign_id="later",
            )
        ]
    )  # fmt: skip
    history.record_events(
        [Event(event_id="new-e1", type=EventType.DELIVERED, message_id="new-1", occurred_at=late)]
    )
    third = history.export_analytics(out, format="parquet")
    assert third.rows == {
        "messages": 1, "events": 1, "activities": 0, "costs": 0, "contact_attributes": 0,
    }  # fmt: skip
    assert all("part-000003" in f for f in third.files)
    con = duckdb.connect()
    ids = con.execute(
        f"SELECT message_id, count(*) FROM read_parquet('{out}/messages/*/*.parquet') "
        "GROUP BY ALL HAVING count(*) > 1"
    ).fetchall()
    assert ids == []
    total = con.execute(f"SELECT count(*) FROM read_parquet('{out}/messages/*/*.parquet')")
    row = total.fetchone()
    assert row is not None
    assert row[0] == first.rows["messages"] + 1
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["version"] == 2
    assert manifest["tables"]["messages"]["latest"] == int(late.timestamp() * 1_000_000)
    assert manifest["tables"]["messages"]["stored_before"] > 0
    assert _duckdb_kpis(out) == _repo_kpis(history)


def test_erased_contacts_are_left_out_and_listed(
    history: CommHistory[Any], tmp_path: Path
) -> None:
    history.erase_subject("cust-00002")
    out = tmp_path / "lake"
    report = history.export_analytics(out, format="csv")
    assert report.erased == 1
    keyring = history._store.keyring
    pseudonym = Pseudonymizer.from_keyring(keyring)("cust-00002")
    assert (out / "erased_contacts.csv").read_text() == f"contact\n{pseudonym}\n"
    assert report.rows["activities"] == 0
    for path in (out / "messages").rglob("*.csv"):
        assert pseudonym not in path.read_text()


def test_pseudonyms_are_stable_and_keyed() -> None:
    keys = Keyring.generate()
    a, b = Pseudonymizer.from_keyring(keys), Pseudonymizer.from_keyring(keys)
    assert a("cust-1") == b("cust-1") != a("cust-2")
    assert Pseudonymizer.from_keyring(Keyring.generate())("cust-1") != a("cust-1")
    assert "cust" not in a("cust-1")
    assert len(a("cust-1")) == 34


def test_csv_works_without_pyarrow_and_parquet_is_a_typed_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = builtins.__import__

    def no_pyarrow(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    repo = CommHistory.in_memory()
    messages, events = _history()
    repo.record_messages(messages)
    repo.record_events(events)
    keys = Keyring.generate()
    with pytest.raises(InvalidInputError) as info:
        repo.export_analytics(tmp_path / "p", format="parquet", keys=keys)
    assert info.value.field == "format"
    assert "pyarrow" in info.value.reason
    assert not (tmp_path / "p").exists()
    report = repo.export_analytics(tmp_path / "c", format="csv", keys=keys)
    assert report.rows["messages"] == len(messages)
    monkeypatch.setattr(builtins, "__import__", real_import)
    con = duckdb.connect()
    n = con.execute(
        f"SELECT count(*) FROM read_csv('{tmp_path}/c/events/*/*.csv', hive_partitioning=1)"
    ).fetchone()
    assert n is not None
    assert n[0] == report.rows["events"]


def test_bad_arguments_are_typed_errors(tmp_path: Path) -> None:
    repo = CommHistory.in_memory()
    with pytest.raises(InvalidInputError) as info:
        repo.export_analytics(tmp_path / "x", format="csv")
    assert info.value.field == "keys"
    keys = Keyring.generate()
    with pytest.raises(InvalidInputError) as info:
        repo.export_analytics(tmp_path / "x", format="xlsx", keys=keys)
    assert info.value.field == "format"
    with pytest.raises(InvalidInputError) as info:
        repo.export_analytics(tmp_path / "x", keys=keys, since=datetime(2024, 1, 1))
    assert info.value.field == "since"
    repo.export_analytics(tmp_path / "x", format="csv", keys=keys)
    with pytest.raises(InvalidInputError) as info:
        repo.export_analytics(tmp_path / "x", format="parquet", keys=keys)
    assert info.value.field == "out"
    with pytest.raises(InvalidInputError) as info:
        repo.export_analytics(tmp_path / "x", format="csv", keys=Keyring.generate())
    assert info.value.field == "out"


def test_cli_export_analytics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from commhistory.cli import main

    db, keyring = tmp_path / "demo.db", tmp_path / "demo.keyring"
    html = tmp_path / "demo.html"
    assert (
        main(
            ["demo", "--db", str(db), "--keyring", str(keyring), "--out", str(html),
             "--contacts", "60"]
        )
        == 0
    )  # fmt: skip
    capsys.readouterr()
    store = ["--db", f"sqlite:///{db}", "--keyring", str(keyring)]
    out = tmp_path / "lake"
    assert main(["export-analytics", str(out), "--report", "json", *store]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["run"] == 1
    assert doc["rows"]["messages"] > 0
    assert all(f.endswith(".parquet") for f in doc["files"])
    assert main(["export-analytics", str(out), *store]) == 0
    assert capsys.readouterr().out.startswith("run 2: 0 rows of messages")
    assert main(["export-analytics", str(out), "--format", "csv", *store]) == 2
    assert "out:" in capsys.readouterr().err


def test_the_documented_duckdb_query_gives_repo_kpis(
    history: CommHistory[Any], tmp_path: Path
) -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "analytics.md").read_text()
    sql = page.split("```sql\n", 1)[1].split("```", 1)[0]
    out = tmp_path / "lake"
    history.export_analytics(out)
    rows = duckdb.connect().execute(sql.replace("/data/commhistory", str(out))).fetchall()
    cols = ("sent", "delivered", "unique_opens", "unique_clicks", "conversions")
    got = {r[0]: dict(zip(cols, r[1:], strict=True)) for r in rows}
    expected = {
        campaign: {k: v for k, v in kpis.items() if k in cols}
        for campaign, kpis in _repo_kpis(history).items()
    }
    assert got == expected


def test_memory_and_sql_export_the_same_rows(tmp_path: Path) -> None:
    keys = Keyring.generate()
    pseudonym = Pseudonymizer.from_keyring(keys)
    memory = CommHistory.in_memory()
    with open_repository(f"sqlite:///{tmp_path / 'same.db'}", keys) as sql:
        for repo in (memory, sql):
            messages, events = _history()
            repo.record_messages(messages)
            repo.record_events(events)
            _set_attributes(repo)
            repo.erase_subject("cust-00004")
        sql.export_analytics(tmp_path / "sql", format="csv", keys=pseudonym)
    memory.export_analytics(tmp_path / "memory", format="csv", keys=pseudonym)
    for table in ("messages", "events", "contact_attributes"):
        files = sorted((tmp_path / "sql" / table).rglob("*.csv"))
        assert files
        assert [f.relative_to(tmp_path / "sql") for f in files] == [
            f.relative_to(tmp_path / "memory")
            for f in sorted((tmp_path / "memory" / table).rglob("*.csv"))
        ]
        for f in files:
            assert (
                f.read_text()
                == (tmp_path / "memory" / f.relative_to(tmp_path / "sql")).read_text()
            )
    assert (tmp_path / "sql" / "erased_contacts.csv").read_text() == (
        tmp_path / "memory" / "erased_contacts.csv"
    ).read_text()


ATTRIBUTES = {
    "attributes": [
        {"name": "tier", "type": "enum", "values": ["gold", "silver"]},
        {"name": "visits", "type": "int"},
        {"name": "spend", "type": "decimal"},
        {"name": "member", "type": "bool"},
        {"name": "signup", "type": "date"},
        {"name": "last_seen", "type": "datetime"},
        {"name": "tags", "type": "list"},
        {"name": "nickname", "type": "str", "personal": True},
        {"name": "birthday", "type": "date", "personal": True},
    ]
}
PERSONAL_NICKNAME = "Hanako-chan of Setagaya"


def _set_attributes(repo: CommHistory[Any]) -> None:
    from commhistory.contacts import AttributeSchema

    repo.declare_attributes(AttributeSchema.from_json(ATTRIBUTES))
    sent = sorted(m.sent_at for m in _history()[0])
    start, middle = sent[0] - timedelta(days=1), sent[len(sent) // 2]
    for i in range(1, 13):
        cid = f"cust-{i:05d}"
        repo.set_attributes(
            cid,
            {
                "tier": "silver", "visits": i, "spend": f"{i}.25", "member": i % 2 == 0,
                "signup": "2024-03-14", "last_seen": "2024-04-30T10:00:00+00:00",
                "tags": ["tea", "sale"], "nickname": PERSONAL_NICKNAME,
                "birthday": "1987-06-05",
            },
            at=start,
        )  # fmt: skip
        if i % 3 == 0:  # promoted in the middle of the campaigns
            repo.set_attributes(cid, {"tier": "gold"}, at=middle)


def test_plain_attributes_are_exported_typed_with_their_history(
    history: CommHistory[Any], tmp_path: Path
) -> None:
    _set_attributes(history)
    out = tmp_path / "lake"
    report = history.export_analytics(out, format="parquet")
    assert "contact_attributes/snapshot.parquet" in report.files
    pseudonym = Pseudonymizer.from_keyring(history._store.keyring)
    con = duckdb.connect()
    con.execute(f"CREATE VIEW attrs AS SELECT * FROM '{out}/contact_attributes/*.parquet'")
    assert {n for (n,) in con.execute("SELECT DISTINCT name FROM attrs").fetchall()} == {
        "tier", "visits", "spend", "member", "signup", "last_seen", "tags",
    }  # fmt: skip
    assert report.rows["contact_attributes"] == 12 * 7 + 4
    types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE attrs)").fetchall())
    assert types["value_int"] == "BIGINT"
    assert types["value_bool"] == "BOOLEAN"
    assert types["value_date"] == "DATE"
    assert types["value_ts"].startswith("TIMESTAMP WITH TIME ZONE")
    assert types["valid_to"].startswith("TIMESTAMP WITH TIME ZONE")
    c3 = pseudonym("cust-00003")
    row = con.execute(
        "SELECT value_int, value_micros, value_text, value_bool, value_date, "
        "epoch_us(value_ts), type FROM attrs WHERE contact = ? AND name IN "
        "('visits', 'spend', 'member', 'signup', 'last_seen', 'tags') ORDER BY name",
        [c3],
    ).fetchall()
    seen = int(datetime(2024, 4, 30, 10, tzinfo=UTC).timestamp() * 1_000_000)
    assert row == [
        (None, None, None, None, None, seen, "datetime"),
        (None, None, None, False, None, None, "bool"),
        (None, None, None, None, date(2024, 3, 14), None, "date"),
        (None, 3_250_000, "3.25", None, None, None, "decimal"),
        (None, None, '["tea","sale"]', None, None, None, "list"),
        (3, None, None, None, None, None, "int"),
    ]  # fmt: skip
    # the tier in force when each message was sent, joined as of sent_at, is the repo's
    sql = f"""
        SELECT m.message_id, a.value_text
        FROM read_parquet('{out}/messages/*/*.parquet') m
        JOIN attrs a ON a.contact = m.contact AND a.name = 'tier'
            AND a.valid_from <= m.sent_at AND (a.valid_to IS NULL OR a.valid_to > m.sent_at)
    """
    got = dict(con.execute(sql).fetchall())
    messages, _ = _history()
    expected = {
        m.message_id: tier
        for m in messages
        if (tier := history.attributes(m.contact_id, at=m.sent_at).get("tier")) is not None
    }
    assert "gold" in expected.values()
    assert "silver" in expected.values()
    assert got == expected


def test_a_personal_attribute_never_reaches_the_files(
    history: CommHistory[Any], tmp_path: Path
) -> None:
    _set_attributes(history)
    for fmt in ("csv", "parquet"):
        out = tmp_path / fmt
        history.export_analytics(out, format=fmt)
        blobs = [p.read_bytes() for p in out.rglob("*") if p.is_file()]
        assert any(b"silver" in b for b in blobs) or fmt == "parquet"
        con = duckdb.connect()
        reader = "read_parquet" if fmt == "parquet" else "read_csv"
        files = f"{out}/contact_attributes/*.{fmt}"
        rows = con.execute(f"SELECT * FROM {reader}('{files}')").fetchall()
        assert len(rows) == 12 * 7 + 4
        blobs.append(repr(rows).encode())
        personal = (PERSONAL_NICKNAME, "Hanako", "nickname", "birthday", "1987-06-05")
        for value in (*personal, "date(1987", "cust-0000"):
            assert not any(value.encode() in blob for blob in blobs), (fmt, value)


def test_the_attribute_snapshot_is_rewritten_each_run(
    history: CommHistory[Any], tmp_path: Path
) -> None:
    out = tmp_path / "lake"
    first = history.export_analytics(out, format="csv")
    assert first.rows["contact_attributes"] == 0
    assert not (out / "contact_attributes").exists()
    _set_attributes(history)
    second = history.export_analytics(out, format="csv")
    assert second.rows["contact_attributes"] == 12 * 7 + 4
    assert second.rows["messages"] == 0
    history.erase_subject("cust-00003")
    third = history.export_analytics(out, format="csv")
    assert third.rows["contact_attributes"] == 11 * 7 + 3
    assert third.files == ("contact_attributes/snapshot.csv",)
    with (out / "contact_attributes" / "snapshot.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 11 * 7 + 3
    gone = Pseudonymizer.from_keyring(history._store.keyring)("cust-00003")
    assert all(r["contact"] != gone for r in rows)
    assert [p.name for p in (out / "contact_attributes").iterdir()] == ["snapshot.csv"]
    closed = [r for r in rows if r["name"] == "tier" and r["valid_to"]]
    assert len(closed) == 3
    assert all(r["value_text"] == "silver" for r in closed)


def test_the_documented_as_of_join_gives_repo_attributes(
    history: CommHistory[Any], tmp_path: Path
) -> None:
    _set_attributes(history)
    page = (Path(__file__).resolve().parent.parent / "docs" / "analytics.md").read_text()
    (sql,) = [
        block.split("```", 1)[0]
        for block in page.split("```sql\n")[1:]
        if "contact_attributes/snapshot.parquet" in block.split("```", 1)[0]
    ]
    out = tmp_path / "lake"
    history.export_analytics(out)
    rows = duckdb.connect().execute(sql.replace("/data/commhistory", str(out))).fetchall()
    expected: dict[tuple[str, str | None], int] = {}
    for m in _history()[0]:
        tier = history.attributes(m.contact_id, at=m.sent_at).get("tier")
        if tier is not None:
            key = (str(tier), m.campaign_id)
            expected[key] = expected.get(key, 0) + 1
    assert {(t, c): n for t, c, n in rows} == expected
    assert {t for t, _ in expected} == {"gold", "silver"}


def _late_rows(repo: CommHistory[Any], early: datetime) -> None:
    """Rows stored now with times before everything exported so far."""
    repo.record_messages(
        [
            Message(
                message_id="late-1", channel=Channel.EMAIL, direction=Direction.OUTBOUND,
                contact_id="cust-00005", address="late@example.org", sent_at=early,
                campaign_id="late-campaign",
            ),
            Message(  # the message of the orphan event stored before the first run
                message_id="late-2", channel=Channel.EMAIL, direction=Direction.OUTBOUND,
                contact_id="cust-00006", address="late2@example.org", sent_at=early,
                campaign_id="late-campaign",
            ),
        ]
    )  # fmt: skip
    repo.record_events(
        [
            Event(event_id="late-e1", type=EventType.CLICKED, message_id="late-1",
                  occurred_at=early + timedelta(minutes=5)),
            Event(event_id="late-e2", type=EventType.CONVERTED, message_id="late-1",
                  occurred_at=early + timedelta(minutes=9), revenue=Decimal("700"),
                  currency="JPY"),
        ]
    )  # fmt: skip
    repo.record_activities(
        [
            Activity(activity_id="late-a1", contact_id="cust-00005", name="purchase",
                     occurred_at=early, revenue=Decimal("700"), currency="JPY")
        ]
    )  # fmt: skip
    repo.record_costs(
        [
            Cost(cost_id="late-c1", campaign_id="late-campaign", amount=Decimal("100"),
                 currency="JPY", starts_at=early - timedelta(days=1), ends_at=early)
        ]
    )  # fmt: skip


def _exported_ids(out: Path) -> dict[str, list[str]]:
    con = duckdb.connect()
    ids = {}
    for table, column in (
        ("messages", "message_id"), ("events", "event_id"), ("activities", "activity_id"),
        ("costs", "cost_id"),
    ):  # fmt: skip
        ids[table] = [
            r[0]
            for r in con.execute(
                f"SELECT {column} FROM read_parquet('{out}/{table}/*/*.parquet') ORDER BY 1"
            ).fetchall()
        ]
    return ids


def test_rows_stored_late_with_old_times_are_exported_by_the_next_run(
    history: CommHistory[Any], tmp_path: Path
) -> None:
    early = T0 - timedelta(days=900)  # before every row of the first run
    history.record_events(  # an orphan: its message is not stored yet
        [Event(event_id="late-orphan", type=EventType.OPENED, message_id="late-2",
               occurred_at=early + timedelta(minutes=1))]
    )  # fmt: skip
    out = tmp_path / "lake"
    first = history.export_analytics(out, format="parquet")
    assert "late-orphan" not in _exported_ids(out)["events"]
    _late_rows(history, early)
    second = history.export_analytics(out, format="parquet")
    assert second.rows == {
        "messages": 2, "events": 3, "activities": 1, "costs": 1, "contact_attributes": 0,
    }  # fmt: skip
    assert history.export_analytics(out, format="parquet").total == 0
    ids = _exported_ids(out)
    for table, new in (
        ("messages", {"late-1", "late-2"}), ("events", {"late-e1", "late-e2", "late-orphan"}),
        ("activities", {"late-a1"}), ("costs", {"late-c1"}),
    ):  # fmt: skip
        assert new <= set(ids[table]), table
        assert len(ids[table]) == len(set(ids[table])) == first.rows[table] + len(new)
    # old dates get new part files of the later run
    assert any(f.startswith("messages/date=2021-") and "part-000002" in f for f in second.files)
    assert _duckdb_kpis(out) == _repo_kpis(history)


def test_a_write_in_progress_is_exported_once_it_commits(
    history: CommHistory[Any], tmp_path: Path
) -> None:
    out = tmp_path / "lake"
    history.export_analytics(out, format="parquet")
    url = history.store.engine.url.render_as_string(hide_password=False)
    early = T0 - timedelta(days=900)
    with open_repository(url, history.store.keyring) as writer:
        with writer.store.transaction():
            _late_rows(writer, early)
            during = history.export_analytics(out, format="parquet")
            assert during.total == 0  # not committed: not seen, and not skipped either
        after = history.export_analytics(out, format="parquet")
    assert after.rows["messages"] == 2
    assert after.rows["events"] == 2
    assert after.rows["costs"] == 1
    assert history.export_analytics(out, format="parquet").total == 0
    assert _duckdb_kpis(out) == _repo_kpis(history)


def test_a_memory_store_exports_late_rows_too(tmp_path: Path) -> None:
    keys = Keyring.generate()
    repo = CommHistory.in_memory()
    messages, events = _history()
    repo.record_messages(messages)
    repo.record_events(events)
    repo.declare_activities({"purchase": ["sku"]})
    out = tmp_path / "lake"
    first = repo.export_analytics(out, format="csv", keys=keys)
    _late_rows(repo, T0 - timedelta(days=900))
    second = repo.export_analytics(out, format="csv", keys=keys)
    assert (second.rows["messages"], second.rows["events"], second.rows["activities"]) == (2, 2, 1)
    assert repo.export_analytics(out, format="csv", keys=keys).total == 0
    assert first.rows["messages"] == len(messages)


def test_until_only_moves_forward_and_old_manifests_are_refused(tmp_path: Path) -> None:
    keys = Keyring.generate()
    repo = CommHistory.in_memory()
    messages, events = _history()
    repo.record_messages(messages)
    repo.record_events(events)
    out = tmp_path / "lake"
    cut = sorted(m.sent_at for m in messages)[len(messages) // 2]
    first = repo.export_analytics(out, format="csv", keys=keys, until=cut)
    with pytest.raises(InvalidInputError) as info:
        repo.export_analytics(out, format="csv", keys=keys, until=cut - timedelta(seconds=1))
    assert info.value.field == "until"
    rest = repo.export_analytics(out, format="csv", keys=keys)  # no until: up to now
    assert first.rows["messages"] + rest.rows["messages"] == len(messages)
    assert rest.rows["messages"] > 0
    with pytest.raises(InvalidInputError) as info:  # the last run read every time
        repo.export_analytics(out, format="csv", keys=keys, until=cut + timedelta(days=999))
    assert info.value.field == "until"
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    manifest["version"] = 1
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(InvalidInputError) as info:
        repo.export_analytics(out, format="csv", keys=keys)
    assert info.value.field == "out"
    assert "new directory" in info.value.reason


def test_id_columns_are_written_without_a_dictionary(
    history: CommHistory[Any], tmp_path: Path
) -> None:
    """Ids and times are plain-encoded (a dictionary of unique values only costs);
    repeated text keeps its dictionary. Readers see the same values either way."""
    import pyarrow.parquet as pq

    out = tmp_path / "lake"
    history.export_analytics(out, format="parquet")
    files = sorted((out / "events").glob("*/*.parquet"))
    assert files
    meta = pq.ParquetFile(files[0]).metadata
    names = meta.schema.to_arrow_schema().names
    encodings = {names[i]: set(meta.row_group(0).column(i).encodings) for i in range(len(names))}
    dictionary = {"PLAIN_DICTIONARY", "RLE_DICTIONARY"}
    assert not encodings["event_id"] & dictionary
    assert not encodings["message_id"] & dictionary
    assert not encodings["occurred_at"] & dictionary
    assert encodings["type"] & dictionary
    table = pq.read_table(files[0])
    assert table.column("event_id").null_count == 0
