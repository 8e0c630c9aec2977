"""Examples in the Markdown docs that Sphinx's doctest builder does not collect run here.

The KPI page's worked example (issue 5: reproduce each metric by hand) lives in
plain ``python`` fences; it must stay true, so the test suite runs it.
"""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.mark.parametrize("page", ["kpi.md"])
def test_markdown_examples_run(page: str) -> None:
    path = DOCS / page
    assert ">>>" in path.read_text(encoding="utf-8")
    result = doctest.testfile(
        str(path),
        module_relative=False,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        verbose=False,
        report=True,
    )
    assert result.attempted > 0
    assert result.failed == 0
