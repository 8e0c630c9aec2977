"""docs/providers/index.md: the providers table names every registered provider.

Each row's first cell holds the registry name in backticks (``SendGrid (`sendgrid`)``).
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs

from commhistory.providers import registered_adapters

INDEX = Path(__file__).parent.parent / "docs" / "providers" / "index.md"


@attrs.frozen
class Row:
    name: str
    cells: tuple[str, ...]


def table_rows(text: str) -> list[Row]:
    section = text.split("## Providers at a glance", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("| ") or line.startswith("| provider |"):
            continue
        cells = tuple(cell.strip() for cell in line.strip().strip("|").split("|"))
        found = re.search(r"\(`([a-z][a-z0-9_-]*)`\)", cells[0])
        assert found is not None, f"no registry name in {cells[0]!r}"
        rows.append(Row(found.group(1), cells))
    return rows


def toctree(text: str) -> set[str]:
    block = text.split("```{toctree}", 1)[1].split("```", 1)[0]
    return {line.strip() for line in block.splitlines() if line.strip() and ":" not in line}


def test_every_registered_provider_has_a_row_and_every_row_a_provider() -> None:
    rows = table_rows(INDEX.read_text(encoding="utf-8"))
    names = [row.name for row in rows]
    assert len(names) == len(set(names)), "a provider has two rows"
    registered = set(registered_adapters())
    assert registered - set(names) == set(), "registered providers missing from the table"
    assert set(names) - registered == set(), "a row names no registered provider"


def test_every_row_has_seven_cells_and_a_docs_source() -> None:
    for row in table_rows(INDEX.read_text(encoding="utf-8")):
        assert len(row.cells) == 7, row.name
        assert re.fullmatch(r"<https://[^ >]+>", row.cells[5]), row.name


def test_registered_rows_link_their_page_and_the_page_is_in_the_toctree() -> None:
    text = INDEX.read_text(encoding="utf-8")
    pages = toctree(text)
    for row in table_rows(text):
        link = re.fullmatch(r"\[[^\]]+\]\(([a-z0-9_-]+)\.md\)", row.cells[6])
        assert link is not None, row.name
        assert (INDEX.parent / f"{link.group(1)}.md").is_file(), row.name
        assert link.group(1) in pages, row.name


def test_the_check_would_catch_a_missing_row() -> None:
    text = INDEX.read_text(encoding="utf-8")
    without = "\n".join(line for line in text.splitlines() if "(`postal`)" not in line)
    assert "postal" not in {row.name for row in table_rows(without)}
    assert "postal" in set(registered_adapters())
