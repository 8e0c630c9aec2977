"""Costs in the outputs: ``commhistory costs`` and ``commhistory report`` (text, JSON, CSV, HTML).

A small demo database gets costs through the command line; the report's numbers
must equal :func:`commhistory.kpi.compute` over the demo's records and the same costs.
"""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import attrs
import pytest

from commhistory.cli import main
from commhistory.demo import generate, run_demo
from commhistory.kpi import Cost, KpiRow, KpiTable, compute
from commhistory.kpi.machine import mark_machine
from commhistory.kpi.report import ReportData, render_html, render_table

CONTACTS = 600


@pytest.fixture
def demo_db(tmp_path: Path) -> list[str]:
    db, keyring = tmp_path / "demo.db", tmp_path / "demo.keyring"
    run_demo(db, keyring_path=keyring, html_path=tmp_path / "demo.html", contacts=CONTACTS)
    return ["--db", f"sqlite:///{db}", "--keyring", str(keyring)]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


# The demo's campaigns run in April 2024 (UTC).
SPRING = Cost(
    cost_id="spring-ads",
    campaign_id="spring-sale",
    amount=Decimal("150000"),
    currency="JPY",
    starts_at=datetime(2024, 4, 1, tzinfo=UTC),
    ends_at=datetime(2024, 5, 1, tzinfo=UTC),
)
SMS_B = Cost(
    cost_id="sms-b",
    campaign_id="sms-reminder",
    variant="B",
    channel="sms",
    amount=Decimal("3200.50"),
    currency="JPY",
    starts_at=datetime(2024, 4, 1, tzinfo=UTC),
    ends_at=datetime(2024, 5, 1, tzinfo=UTC),
)


def _expected(by: tuple[str, ...]) -> KpiTable:
    messages, events = [], []
    for m, evs in generate(contacts=CONTACTS):
        messages.append(m)
        events.extend(mark_machine(evs, messages=[m]))
    return compute(messages, events, by=by, costs=[SPRING, SMS_B])


def _record(demo_db: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = _run(
        capsys,
        "costs",
        "add",
        *demo_db,
        "--id",
        "spring-ads",
        "--campaign",
        "spring-sale",
        "--amount",
        "150000",
        "--currency",
        "JPY",
        "--period",
        "2024-04",
    )
    assert (code, out) == (0, "1 cost recorded, 0 duplicates (already recorded)\n")
    lines = tmp_path / "costs.jsonl"
    lines.write_text(
        json.dumps(
            {
                "cost_id": "sms-b",
                "campaign_id": "sms-reminder",
                "variant": "B",
                "channel": "sms",
                "amount": "3200.50",
                "currency": "JPY",
                "starts_at": "2024-04-01T09:00:00+09:00",
                "ends_at": "2024-05-01T09:00:00+09:00",
            }
        )
        + "\n",
        encoding="utf-8",
    )
    assert _run(capsys, "costs", "import", str(lines), *demo_db)[0] == 0
    code, out, _ = _run(capsys, "costs", "import", str(lines), *demo_db, "--format", "json")
    assert json.loads(out) == {"inserted": 0, "duplicates": 1}  # re-importing counts nothing


def test_costs_commands_and_report_json_equal_the_memory_engine(
    demo_db: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _record(demo_db, capsys, tmp_path)
    code, out, _ = _run(capsys, "costs", "list", *demo_db, "--format", "json")
    assert [c["cost_id"] for c in json.loads(out)] == ["sms-b", "spring-ads"]
    assert json.loads(out)[0]["amount"] == "3200.50"

    code, out, _ = _run(capsys, "report", *demo_db, "--by", "campaign_id", "--format", "json")
    assert code == 0
    data = json.loads(out)
    expected = _expected(("campaign_id",))
    assert data["rows"] == expected.to_dict()["rows"]
    spring = next(r for r in data["rows"] if r["campaign_id"] == "spring-sale")
    row = expected.row(campaign_id="spring-sale")
    assert spring["cost"] == {"JPY": "150000"}
    revenue = row.revenue.get("JPY", Decimal(0))
    assert spring["roi"] == {"JPY": float((revenue - 150000) / 150000)}
    sms = next(r for r in data["rows"] if r["campaign_id"] == "sms-reminder")
    assert sms["cost"] == {"JPY": "3200.5"}  # the per-variant cost adds up to its campaign


def test_report_table_csv_and_html_show_costs(
    demo_db: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _record(demo_db, capsys, tmp_path)
    code, text, _ = _run(capsys, "report", *demo_db)  # by campaign_id,variant
    assert code == 0
    kpis = text.split("\n\nA/B tests")[0]
    assert all(len(line) <= 100 for line in kpis.splitlines())
    for header in ("cost", "ROI", "cost/conv", "rev/recip"):
        assert re.search(rf"(^|\s){re.escape(header)}(\s|$)", text, re.M), header
    # The spring-sale cost was recorded for the campaign: no variant row shows it.
    assert "cost in no row (recorded above this grouping" in text
    assert "JPY 150,000" in text

    code, out, _ = _run(capsys, "report", *demo_db, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    sms_b = next(r for r in rows if (r["campaign_id"], r["variant"]) == ("sms-reminder", "B"))
    assert sms_b["cost_JPY"] == "3200.5"
    expected = _expected(("campaign_id", "variant")).row(campaign_id="sms-reminder", variant="B")
    assert sms_b["roi_JPY"] == repr(expected.roi["JPY"])
    spring_a = next(r for r in rows if (r["campaign_id"], r["variant"]) == ("spring-sale", "A"))
    assert (spring_a["cost_JPY"], spring_a["roi_JPY"]) == ("", "")

    out_file = tmp_path / "report.html"
    assert _run(capsys, "report", *demo_db, "--format", "html", "--out", str(out_file))[0] == 0
    page = out_file.read_text(encoding="utf-8")
    assert "<span>ROI</span>" in page
    assert "<th>cost/conv</th>" in page
    assert "never split across its channels or variants" in page


def test_costs_command_refuses_bad_input_and_stores_nothing(
    demo_db: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    base = ["costs", "add", *demo_db, "--id", "k", "--campaign", "c", "--currency", "JPY"]
    code, _, err = _run(capsys, *base, "--amount", "-1", "--period", "2024-04")
    assert code == 2
    assert "amount: must not be negative" in err
    code, _, err = _run(capsys, *base, "--amount", "1", "--period", "April")
    assert code == 2
    assert "--period: expected a day (2024-05-01)" in err
    code, _, err = _run(
        capsys, *base, "--amount", "1", "--from", "2024-04-02", "--until", "2024-04-01"
    )
    assert (code, "ends_at: must be after starts_at") == (2, err.split("error: ")[1].strip())
    code, _, err = _run(capsys, *base, "--amount", "1", "--currency", "YEN", "--period", "2024-04")
    assert code == 2
    assert "currency" in err
    bad = tmp_path / "bad.jsonl"
    good = {
        "cost_id": "ok",
        "campaign_id": "c",
        "amount": "1",
        "currency": "JPY",
        "starts_at": "2024-04-01T00:00:00Z",
        "ends_at": "2024-04-02T00:00:00Z",
    }
    bad.write_text(
        json.dumps(good) + "\n" + json.dumps(good | {"cost_id": "nope", "ends_at": "2024-04-02"}),
        encoding="utf-8",
    )
    code, _, err = _run(capsys, "costs", "import", str(bad), *demo_db)
    assert code == 2
    assert "bad.jsonl, line 2: ends_at:" in err
    assert "nothing was stored" in err
    assert _run(capsys, "costs", "list", *demo_db)[1] == "no costs\n"


def test_costs_command_as_an_analyst_is_denied(
    demo_db: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(
        capsys,
        "costs",
        "add",
        *demo_db,
        "--id",
        "k",
        "--campaign",
        "c",
        "--amount",
        "1",
        "--currency",
        "JPY",
        "--period",
        "2024-04-01",
        "--actor",
        "staff-1",
        "--role",
        "analyst",
        "--purpose",
        "budget",
    )
    assert code == 6
    assert "write_history" in err


def test_html_cards_and_footer_only_with_costs() -> None:
    row = KpiRow(group={"campaign_id": "x"}, sent=10, delivered=10, conversions=2)
    plain = KpiTable(by=("campaign_id",), rows=(row,))
    with_cost = KpiTable(
        by=("campaign_id",),
        rows=(KpiRow(group={"campaign_id": "x"}, sent=10, cost={"JPY": Decimal("5")}),),
        has_costs=True,
    )

    def page(table: KpiTable) -> str:
        return render_html(
            ReportData(
                title="t",
                main=table,
                campaigns=table,
                timeline=KpiTable(by=("day",)),
                period="day",
                ab=(),
                generated_at=datetime(2024, 5, 1, tzinfo=UTC),
            )
        )

    assert "ROI" not in page(plain)
    assert "ROI" not in render_table(plain)
    shown = page(with_cost)
    assert "<span>ROI</span>" in shown
    assert "<b>JPY -100.0%</b><span>ROI</span>" in shown  # cost 5, no revenue
    free = attrs.evolve(
        with_cost, rows=(attrs.evolve(with_cost.rows[0], cost={"JPY": Decimal("0")}),)
    )
    assert "<b>-</b><span>ROI</span>" in page(free)  # zero cost: not available


def test_a_single_row_with_unattributed_cost_gets_a_total_row() -> None:
    row = KpiRow(group={"variant": "A"}, sent=4, revenue={"JPY": Decimal("900")})
    table = KpiTable(
        by=("variant",), rows=(row,), unattributed_cost={"JPY": Decimal("300")}, has_costs=True
    )
    text = render_table(table, width=200)
    total = next(line for line in text.splitlines() if line.startswith("total"))
    assert "JPY 300" in total
    assert "JPY 200.0%" in total  # (900 - 300) / 300
    assert "cost in no row" in text
    assert render_table(attrs.evolve(table, unattributed_cost={})).count("total") == 0
