"""The commhistory pytest plugin: fixtures for testing code that uses commhistory.

Enabled automatically when commhistory is installed (entry point ``pytest11``),
or explicitly with ``pytest -p commhistory.testing.pytest_plugin``.

Fixtures (all prefixed ``commhistory_`` so they never clash with yours):

* ``commhistory_repository``: a fresh in-memory history (:meth:`CommHistory.in_memory
  <commhistory.CommHistory.in_memory>`);
* ``commhistory_sql_repository``: a fresh encrypted SQLite history in ``tmp_path``;
* ``commhistory_keyring``: a fresh keyring;
* ``commhistory_sendgrid_keys``: a SendGrid-style signing key pair;
* ``commhistory_signed_webhook``: :func:`commhistory.testing.signed_webhook`.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from commhistory.crypto import Keyring
from commhistory.facade import CommHistory, open_repository
from commhistory.store import MemoryRepository, SQLRepository
from commhistory.testing.webhooks import SendGridKeys, SignedWebhook, sendgrid_keys, signed_webhook

__all__ = [
    "commhistory_keyring",
    "commhistory_repository",
    "commhistory_sendgrid_keys",
    "commhistory_signed_webhook",
    "commhistory_sql_repository",
]


@pytest.fixture
def commhistory_repository() -> Iterator[CommHistory[MemoryRepository]]:
    """A fresh in-memory history, closed after the test."""
    repo = CommHistory.in_memory()
    yield repo
    repo.close()


@pytest.fixture
def commhistory_keyring() -> Keyring:
    """A freshly generated keyring."""
    return Keyring.generate()


@pytest.fixture
def commhistory_sql_repository(
    tmp_path: Path, commhistory_keyring: Keyring
) -> Iterator[CommHistory[SQLRepository]]:
    """A fresh encrypted SQLite history in the test's temporary directory."""
    with open_repository(f"sqlite:///{tmp_path / 'commhistory.db'}", commhistory_keyring) as repo:
        yield repo


@pytest.fixture
def commhistory_sendgrid_keys() -> SendGridKeys:
    """A SendGrid-style P-256 key pair (give ``.public_key`` to the adapter)."""
    return sendgrid_keys()


@pytest.fixture
def commhistory_signed_webhook() -> Callable[..., SignedWebhook]:
    """The :func:`~commhistory.testing.signed_webhook` function."""
    return signed_webhook
