"""The SQLite connection settings the store relies on are in force on every connection."""

from __future__ import annotations

from pathlib import Path

from commhistory.crypto import Keyring
from commhistory.facade import open_repository


def test_sqlite_connections_are_configured(tmp_path: Path) -> None:
    with open_repository(f"sqlite:///{tmp_path / 'e.db'}", Keyring.generate()) as repo:
        for _ in range(2):  # a fresh and a pooled connection alike
            with repo.store.transaction(read=True) as conn:

                def pragma(name: str) -> object:
                    return conn.exec_driver_sql(f"PRAGMA {name}").scalar()

                assert pragma("journal_mode") == "wal"
                assert pragma("synchronous") == 1  # NORMAL
                assert pragma("foreign_keys") == 1
                assert pragma("secure_delete") == 1
                assert pragma("busy_timeout") == 60_000
