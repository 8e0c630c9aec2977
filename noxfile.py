"""Tasks: ``nox -s tests lint typecheck docs bench demo`` (and ``fuzz``, never by default).

Every session installs from ``pyproject.toml``: the package with its extras,
and the PEP 735 dependency group named after the session.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.reuse_venv = "yes"

PYPROJECT = nox.project.load_toml("pyproject.toml")


def _install(session: nox.Session, *groups: str, extras: str = "postgres") -> None:
    deps: list[str] = []
    for group in groups:
        deps.extend(nox.project.dependency_groups(PYPROJECT, group))
    session.install("-e", f".[{extras}]" if extras else ".", *deps)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite on the in-memory store, SQLite and (when configured) PostgreSQL.

    PostgreSQL tests run when ``COMMHISTORY_TEST_POSTGRES_URL`` is set; with
    ``CI`` set they fail, rather than skip, when the server is unreachable. The
    ``fast`` extra (orjson) is installed; the JSON-lines readers' tests run first
    without it, so both decoders are tested.
    """
    _install(session, "test", extras="postgres,fastapi,flask,django,fast")
    if not session.posargs:
        # The readers once more on the standard library's JSON decoder: the path taken
        # without the 'fast' extra (orjson), which the main run below does not take.
        session.run(
            "pytest", "-q", "tests/test_convert.py", "tests/test_cli_validate.py",
            "tests/test_fuzz_inputs.py",
            env={"PYTHONHASHSEED": "0", "COMMHISTORY_TEST_NO_ORJSON": "1"},
        )  # fmt: skip
    session.run("pytest", *session.posargs, env={"PYTHONHASHSEED": "0"})


@nox.session(default=False)
def fuzz(session: nox.Session) -> None:
    """Fuzz every input path with a large Hypothesis budget (not part of the default sessions).

    The canonical JSON lines and CSV readers (``tests/test_fuzz_inputs.py``) and
    each provider's parser (the Hypothesis tests in ``tests/test_providers_*.py``):
    the only outcomes are records and typed rejections.
    ``COMMHISTORY_FUZZ_EXAMPLES`` sets the examples per test (default 20000);
    ``nox -s fuzz -- -x`` passes options on to pytest.
    """
    _install(session, "test", extras="postgres")
    providers = sorted(str(p) for p in Path("tests").glob("test_providers_*.py"))
    session.run(
        "pytest",
        "tests/test_fuzz_inputs.py",
        *providers,
        "--hypothesis-profile=fuzz",
        "--hypothesis-show-statistics",
        *session.posargs,
        env={"PYTHONHASHSEED": "0"},
    )


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff lint and format check, and the import-linter layer contract."""
    _install(session, "lint", extras="")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    # The rooms of docs/design/architecture.md, contract in pyproject.toml.
    session.run("lint-imports")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, the tests and the benchmarks."""
    _install(session, "typecheck", extras="postgres,fastapi,flask,django")
    session.run("mypy", "--strict")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the docs with warnings as errors, and run their doctests."""
    _install(session, "docs")
    session.run(
        "sphinx-build", "-n", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html"
    )
    session.run(
        "sphinx-build", "-n", "-W", "--keep-going", "-b", "doctest", "docs", "docs/_build/doctest"
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Run every benchmark (``nox -s bench -- normalize`` runs the ones whose name matches)."""
    _install(session, "bench")
    session.run("python", "-m", "benchmarks", *session.posargs, env=dict(os.environ))


@nox.session
def demo(session: nox.Session) -> None:
    """Run the quickstart's main job in a fresh environment."""
    _install(session, extras="")
    session.run("commhistory", "demo", *session.posargs)
