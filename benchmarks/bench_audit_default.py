"""What auditing by default costs: the facade's audited changes against the same unaudited work.

Since issue 13 item 5 the facade writes an audit entry for every erasure, subject
export, key rotation, real purge and consent or suppression change, even without
a guarded view (as its default actor, in the change's own transaction). Measured
in the same run, on SQLite (``audit_default.*.sqlite``) and PostgreSQL
(``audit_default.*.postgres``) when the server answers:

* **erase**: ``repo.erase_subject(contact)`` (audited: the change plus one
  entry, committed together) against
  :func:`commhistory.privacy.erase_subject` on the same store (the unaudited
  path the facade took before). One timed call erases 20 contacts of 10
  messages and 50 events each, stored fresh (untimed) before every call, among
  5,000 other messages. Best of 5. Goal: <= 1.10x.
* **grant**: ``repo.consent.grant(...)`` (audited) against
  ``ConsentLedger(repo.store).grant(...)`` (unaudited), 200 grants per timed
  call, each for another contact. Best of 5. Goal: <= 1.50x: a grant is one
  small row, so the entry (a chain-head lookup, an HMAC, one ``INSERT``) is a
  large part of it.

Run: ``python -m benchmarks audit_default``.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable
from typing import Any, Final

from benchmarks import _data
from benchmarks._harness import Benchmark, Goal, main
from benchmarks.bench_audit import _Databases
from benchmarks.bench_timeline import postgres_reachable
from commhistory.consent import ConsentLedger
from commhistory.crypto import Keyring
from commhistory.facade import CommHistory
from commhistory.privacy import erase_subject
from commhistory.store import SQLRepository

ERASE_CONTACTS: Final = 20
MESSAGES_PER_CONTACT: Final = 10
NOISE_MESSAGES: Final = 5000
GRANTS: Final = 200
ERASE_GOAL: Final = Goal(text="<= 1.10x the unaudited erasure", max_ratio=1.10)
GRANT_GOAL: Final = Goal(text="<= 1.50x the unaudited grant", max_ratio=1.50)


class DefaultAudit:
    """One database per backend; fresh contacts (or grants) for every timed call."""

    def __init__(self, backend: str) -> None:
        self.dbs = _Databases(backend)
        self.keyring = Keyring.generate()
        self.repo: CommHistory[SQLRepository] | None = None
        self.batch = itertools.count()
        self.contacts: list[str] = []
        self.entries_before = 0

    def _open(self) -> CommHistory[SQLRepository]:
        if self.repo is None:
            self.repo = repo = self.dbs.open(self.keyring)
            noise = _data.HistorySpec(n_messages=NOISE_MESSAGES, n_contacts=500, prefix="n-")
            repo.record_messages(_data.messages(noise))
            repo.record_events(_data.events(noise))
        return self.repo

    def setup_erase(self) -> None:
        """Store 20 new contacts to erase (untimed)."""
        repo = self._open()
        spec = _data.HistorySpec(
            n_messages=ERASE_CONTACTS * MESSAGES_PER_CONTACT,
            events_per_message=5,
            n_contacts=ERASE_CONTACTS,
            prefix=f"e{next(self.batch)}-",
            seed=7,
        )
        repo.record_messages(_data.messages(spec))
        repo.record_events(_data.events(spec))
        self.contacts = sorted({m.contact_id for m in _data.messages(spec)})

    def erase_audited(self) -> None:
        """Erase them through the facade (one audit entry each)."""
        assert self.repo is not None
        for cid in self.contacts:
            self.repo.erase_subject(cid)

    def erase_bare(self) -> None:
        """Erase them with the privacy function on the store (no entry)."""
        assert self.repo is not None
        for cid in self.contacts:
            erase_subject(self.repo.store, cid)

    def setup_grant(self) -> None:
        """Pick 200 contact ids no grant has named yet."""
        self._open()
        n = next(self.batch)
        self.contacts = [f"g{n}-{i}" for i in range(GRANTS)]

    def _grant(self, ledger: Callable[[], ConsentLedger]) -> None:
        for cid in self.contacts:
            ledger().grant(cid, "email", "marketing", method="web_form", source="bench")

    def grant_audited(self) -> None:
        """Grant through the facade's ledger (one audit entry each)."""
        assert self.repo is not None
        repo = self.repo
        self._grant(lambda: repo.consent)

    def grant_bare(self) -> None:
        """Grant through the plain ledger on the store (no entry)."""
        assert self.repo is not None
        store = self.repo.store
        self._grant(lambda: ConsentLedger(store))

    def extra(self) -> dict[str, Any]:
        """Figures: the chain is intact, and how many entries it holds."""
        assert self.repo is not None
        report = self.repo.audit_log.verify_chain()
        return {
            "audit_entries": report.entries,
            "chain_intact": report.intact,
            "source_revision": _data.source_revision(),
        }


def benchmarks() -> list[Benchmark]:
    """The default-audit benchmarks; data is stored at the first setup, not here."""
    backends = ["sqlite"] + (["postgres"] if postgres_reachable() else [])
    out = []
    for backend in backends:
        run = DefaultAudit(backend)
        out.append(
            Benchmark(
                name=f"audit_default.erase.{backend}",
                candidate=run.erase_audited,
                baseline=run.erase_bare,
                setup=run.setup_erase,
                goal=ERASE_GOAL,
                repeats=5,
                extra=run.extra,
                items=ERASE_CONTACTS,
            )
        )
        out.append(
            Benchmark(
                name=f"audit_default.grant.{backend}",
                candidate=run.grant_audited,
                baseline=run.grant_bare,
                setup=run.setup_grant,
                goal=GRANT_GOAL,
                repeats=5,
                extra=run.extra,
                items=GRANTS,
            )
        )
    return out


if __name__ == "__main__":
    sys.exit(main([benchmarks], sys.argv[1:]))
