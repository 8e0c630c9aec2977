"""Shared fixtures: the PostgreSQL server the storage tests need."""

from __future__ import annotations

import os

import pytest

POSTGRES_ENV = "COMMHISTORY_TEST_POSTGRES_URL"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The test server's SQLAlchemy URL; skips without one, but fails under CI.

    ``.ci/run`` sets ``COMMHISTORY_TEST_POSTGRES_URL``; a missing or unreachable
    server there is a failure, never a silent skip.
    """
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"{POSTGRES_ENV} is not set; CI must test on PostgreSQL")
        pytest.skip(f"{POSTGRES_ENV} is not set")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url
