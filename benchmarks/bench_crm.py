"""CRM import: what reading a HubSpot export costs over storing the same records directly.

What is measured (``crm.sqlite.*``):

* **Data (untimed)**: a synthetic HubSpot contacts export of 3,000 rows
  (``$COMMHISTORY_BENCH_CRM_ROWS``), every column of the preset filled, one row in
  ten opted out of email.
* ``crm.sqlite.import``: candidate :func:`commhistory.contacts.crm.import_rows` of the
  export into a fresh SQLite database (CSV parsing, normalization, schema checks,
  batches of 500 rows); baseline the same contact updates and withdrawals, parsed
  beforehand, stored with ``repo.record_contacts`` and ``repo.record_consent``.
  Goal: the import adds at most 50 % (ratio <= 1.5).
* ``crm.sqlite.rerun``: importing the same export again into the filled database
  (no watermark: every row read, every write a no-op); no baseline, seconds.

Run: ``python -m benchmarks crm``.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Final

from benchmarks._harness import Benchmark, Goal, main
from commhistory.contacts.crm import CrmMapping, import_rows, parse_row, read_export
from commhistory.crypto import Keyring
from commhistory.facade import CommHistory, open_repository
from commhistory.model import ConsentEvent, ContactUpdate

ROWS: Final = int(os.environ.get("COMMHISTORY_BENCH_CRM_ROWS", "3000"))
HEADER: Final = (
    "Record ID,First Name,Last Name,Email,Phone Number,Create Date,Last Modified Date,"
    "Lifecycle Stage,Marketing contact status,Unsubscribed from all email\n"
)


def _export() -> str:
    lines = [HEADER]
    for i in range(ROWS):
        lines.append(
            f"{1000 + i},Given{i},Family{i},person{i}@Example.com,"
            f"+81 90-{1000 + i % 9000:04d}-{1000 + i % 8999:04d},"
            f"2024-01-{1 + i % 28:02d} 09:15,2024-03-{1 + i % 28:02d} {i % 24:02d}:{i % 60:02d},"
            f"{('lead', 'customer', 'subscriber')[i % 3]},Marketing contact,"
            f"{'true' if i % 10 == 0 else 'false'}\n"
        )
    return "".join(lines)


class _State:
    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-crm-"))
        self.keyring = Keyring.generate()
        self.count = 0
        self.repo: CommHistory[Any] | None = None

    def fresh(self) -> None:
        if self.repo is not None:
            self.repo.close()
        self.count += 1
        self.repo = open_repository(f"sqlite:///{self.tmp / f'{self.count}.db'}", self.keyring)
        self.repo.declare_attributes(CrmMapping.preset("hubspot").schema)


def benchmarks() -> list[Benchmark]:
    """Build the CRM import benchmarks on SQLite."""
    mapping = CrmMapping.preset("hubspot")
    text = _export()
    parsed = [
        parse_row(mapping, row, line=line) for line, row, _ in read_export(io.StringIO(text))
    ]
    updates: list[ContactUpdate] = [p.update for p in parsed if p.update is not None]
    withdrawals: list[ConsentEvent] = [w for p in parsed for w in p.withdrawals]
    state = _State()
    filled = _State()
    filled.fresh()
    assert filled.repo is not None
    import_rows(filled.repo, mapping, read_export(io.StringIO(text)), source="bench.csv")

    def candidate() -> None:
        assert state.repo is not None
        import_rows(state.repo, mapping, read_export(io.StringIO(text)), source="bench.csv")

    def baseline() -> None:
        assert state.repo is not None
        state.repo.record_contacts(updates)
        state.repo.record_consent(withdrawals)

    def rerun() -> None:
        assert filled.repo is not None
        import_rows(filled.repo, mapping, read_export(io.StringIO(text)), source="bench.csv")

    return [
        Benchmark(
            name="crm.sqlite.import",
            candidate=candidate,
            baseline=baseline,
            setup=state.fresh,
            goal=Goal(text="import adds <= 50 % over direct record calls", max_ratio=1.5),
            repeats=3,
            items=ROWS,
        ),
        Benchmark(
            name="crm.sqlite.rerun",
            candidate=rerun,
            goal=Goal(text="reported", max_seconds=60.0),
            repeats=3,
            items=ROWS,
        ),
    ]


if __name__ == "__main__":
    sys.exit(main([benchmarks]))
