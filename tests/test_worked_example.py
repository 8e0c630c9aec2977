"""The worked example (docs/worked-example.md, examples/worked_example.py) runs as shown.

The script runs on a new SQLite file and in a new PostgreSQL schema. What it
prints must be the output block of the page, character for character, and the
numbers of both of its tables (``repo.kpis`` and DuckDB over the Parquet files)
must be those of ``repo.kpis`` read back independently: so neither the page
nor the script can drift from what the library does.
"""

from __future__ import annotations

import importlib.util
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from commhistory import Keyring, open_repository

duckdb = pytest.importorskip("duckdb")
pytest.importorskip("pyarrow")

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "worked-example.md"
SCRIPT = ROOT / "examples" / "worked_example.py"
PROMPT = "$ python examples/worked_example.py\n"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("worked_example", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _shown_output() -> str:
    page = PAGE.read_text(encoding="utf-8")
    assert page.count(PROMPT) == 1
    return page.split(PROMPT, 1)[1].split("```", 1)[0]


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'history.db'}"
    return str(request.getfixturevalue("pg_database_url"))


def _table(printed: str, title: str) -> list[list[str]]:
    lines = printed.splitlines()
    start = lines.index(title) + 2  # the title, then the header
    rows = []
    for text in lines[start:]:
        cells = text.split()
        if len(cells) != 7:
            break
        rows.append(cells)
    return rows


def test_the_example_prints_what_the_page_shows(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = _script()
    keyring = Keyring.generate()
    out = tmp_path / "lake"
    script.main(url, out, keyring)
    printed = capsys.readouterr().out
    assert printed == _shown_output()

    with open_repository(url, keyring) as repo:
        kpis = {row.group["campaign_id"]: row for row in repo.kpis(by="campaign_id")}
    assert set(kpis) == {"spring-sale", "vip-preview"}
    expected = [
        [
            campaign, str(row.sent), str(row.unique_clicks), str(row.conversions),
            f"{row.revenue['JPY']:,}", f"{row.cost['JPY']:,}", f"{row.roi['JPY']:.2f}",
        ]
        for campaign, row in sorted(kpis.items())
    ]  # fmt: skip
    assert _table(printed, "ROI per campaign, by repo.kpis:") == expected
    assert _table(printed, "ROI per campaign, by DuckDB from the Parquet files:") == expected

    # purchases per lifecycle stage at the time, as the repository tells them
    stages: dict[str, list[int]] = {}
    with open_repository(url, keyring) as repo:
        for _, record, _, _ in script.PURCHASES:
            for entry in repo.activities(f"hubspot:{record}", names=["purchase"]):
                a = entry.activity
                stage = str(repo.attributes(a.contact_id, at=a.occurred_at)["lifecycle_stage"])
                got_stage = stages.setdefault(stage, [0, 0])
                got_stage[0] += 1
                got_stage[1] += int(a.revenue or 0)
    shown = printed.split("purchases by lifecycle stage:\n", 1)[1].splitlines()
    assert shown == [
        f"  {stage:<10} {n} purchases, {yen:,} yen" for stage, (n, yen) in sorted(stages.items())
    ]
    assert len(shown) == 2

    # DuckDB's numbers, unrounded, are exactly those of repo.kpis
    con = duckdb.connect()
    for table in ("messages", "events", "costs"):
        con.execute(
            f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{out}/{table}/*/*.parquet')"
        )
    got: dict[str, tuple[Any, ...]] = {
        r[0]: (r[1], r[2], r[3], Decimal(r[4]) / 1_000_000, Decimal(r[5]) / 1_000_000, r[6])
        for r in con.execute(script.ROI_SQL).fetchall()
    }
    assert got == {
        campaign: (
            row.sent, row.unique_clicks, row.conversions, row.revenue["JPY"],
            row.cost["JPY"], row.roi["JPY"],
        )
        for campaign, row in kpis.items()
    }  # fmt: skip


def test_the_page_includes_the_script() -> None:
    page = PAGE.read_text(encoding="utf-8")
    script = _script()
    names = [
        line.split(":pyobject:", 1)[1].strip()
        for line in page.splitlines()
        if line.startswith(":pyobject:")
    ]
    assert names == [
        "import_contacts", "send_campaigns", "record_purchases", "record_costs",
        "print_roi", "export_and_query", "purchases_by_stage",
    ]  # fmt: skip
    assert all(callable(getattr(script, name)) for name in names)
    assert 'ROI_SQL = """' in SCRIPT.read_text(encoding="utf-8")
