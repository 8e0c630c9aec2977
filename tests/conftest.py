"""Shared fixtures: the PostgreSQL server the storage tests need."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

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


@pytest.fixture
def pg_url(postgres_url: str) -> Iterator[str]:
    """A URL whose connections live in a fresh, empty PostgreSQL schema, dropped afterwards.

    Every connection made from the URL gets ``search_path`` set to a unique
    schema (libpq ``options``), so tests are isolated from each other and from
    the ``public`` schema, tables, ``alembic_version`` and all.
    """
    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(postgres_url, poolclass=sa.NullPool)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {name}")
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.fail(f"PostgreSQL at {POSTGRES_ENV} is unreachable: {type(exc).__name__}")
    sep = "&" if "?" in postgres_url else "?"
    try:
        yield f"{postgres_url}{sep}options=-csearch_path%3D{name}"
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {name} CASCADE")
        admin.dispose()


@pytest.fixture
def pg_database_url(postgres_url: str) -> Iterator[str]:
    """A URL of a fresh, empty PostgreSQL database of its own, dropped afterwards.

    For tests that must not see other sessions' transactions in the shared test
    database (the analytics export waits for every transaction still running in
    its database before it reads rows past them).
    """
    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(postgres_url, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.fail(f"PostgreSQL at {POSTGRES_ENV} is unreachable: {type(exc).__name__}")
    base, _, query = postgres_url.partition("?")
    url = base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
        admin.dispose()


@pytest.fixture
def pg_partitioned_url(pg_url: str) -> str:
    """As :func:`pg_url`, with the schema at head and ``messages``/``events`` partitioned.

    The partitioned variant the storage contract tests run on as well (issue 15 item 4):
    monthly partitions from the current month, one ahead, and the ``DEFAULT`` partition,
    which takes the tests' rows of other months.
    """
    import sqlalchemy as sa

    from commhistory.store import partition, upgrade

    engine = sa.create_engine(pg_url, poolclass=sa.NullPool)
    try:
        upgrade(engine)
        partition.enable(engine, ahead_months=1)
    finally:
        engine.dispose()
    return pg_url


def pg_variant_url(request: pytest.FixtureRequest, param: str) -> str:
    """The URL of a ``postgresql`` or ``postgresql-partitioned`` test parameter."""
    name = "pg_partitioned_url" if param == "postgresql-partitioned" else "pg_url"
    url: str = request.getfixturevalue(name)
    return url


# ``--hypothesis-profile=fuzz`` (``nox -s fuzz``): a large budget for the input fuzz tests
# (tests/test_fuzz_inputs.py); COMMHISTORY_FUZZ_EXAMPLES sets how many examples each runs.
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("COMMHISTORY_FUZZ_EXAMPLES", "20000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(autouse=True, scope="session")
def _stdlib_json_only() -> Iterator[None]:
    """``COMMHISTORY_TEST_NO_ORJSON=1``: read JSON lines with the standard library only.

    The reader uses orjson when it is installed (the ``fast`` extra); this runs the
    suite on the path taken without it.
    """
    if not os.environ.get("COMMHISTORY_TEST_NO_ORJSON"):
        yield
        return
    from commhistory import convert

    saved = convert._orjson_loads
    convert._orjson_loads = None
    try:
        yield
    finally:
        convert._orjson_loads = saved


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def migration_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database for a migration test: a new SQLite file, or the test PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'migrate.db'}"
    pg: str = request.getfixturevalue("pg_url")
    return pg
