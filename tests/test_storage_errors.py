"""Storage errors say what failed and why, and a failed command leaves no file behind.

Issue 13, items 1 and 2: a missing PostgreSQL database, a closed port and a SQLite file in a
missing folder each name the target and the cause (never a password); ``init`` writes neither
a keyring nor a database when the database cannot be reached; only ``init`` and ``import``
create a SQLite file, so a mistyped ``--db`` elsewhere says the database does not exist.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import sqlalchemy as sa

import commhistory as ch
from commhistory.cli import main
from commhistory.errors import DatabaseNotFoundError, DatabaseUnavailableError, StorageError

PASSWORD = "s3cret-pw-do-not-print"


def _pg(postgres_url: str, **changes: object) -> str:
    url = sa.make_url(postgres_url).set(**changes)  # type: ignore[arg-type]
    return url.render_as_string(hide_password=False).replace("+psycopg", "")


@pytest.fixture
def pg_missing_db(postgres_url: str) -> str:
    return _pg(postgres_url, database="commhistory_no_such_database", password=PASSWORD)


@pytest.fixture
def pg_closed_port(postgres_url: str) -> str:
    return _pg(postgres_url, host="127.0.0.1", port=1, password=PASSWORD)


# -- the Python API -----------------------------------------------------------------------


def test_sqlite_in_a_missing_folder_names_the_folder(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nowhere' / 'h.db'}"
    with pytest.raises(DatabaseUnavailableError) as info:
        ch.open_repository(url, ch.Keyring.generate())
    err = info.value
    assert isinstance(err, StorageError)
    assert not isinstance(err, DatabaseNotFoundError)
    assert err.target == f"SQLite file {str(tmp_path / 'nowhere' / 'h.db')!r}"
    assert "does not exist" in err.reason
    assert str(tmp_path / "nowhere") in err.reason
    assert "unable to open database file" in err.detail
    assert "OperationalError" not in str(err)
    assert not (tmp_path / "nowhere").exists()


def test_sqlite_without_upgrade_never_creates_the_file(tmp_path: Path) -> None:
    path = tmp_path / "typo.db"
    with pytest.raises(DatabaseNotFoundError, match="does not exist") as info:
        ch.open_repository(f"sqlite:///{path}", ch.Keyring.generate(), upgrade=False)
    assert str(path) in str(info.value)
    assert "commhistory init" in info.value.reason
    assert not path.exists()


def test_sqlite_read_only_folder_says_permission(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        probe = folder / "probe"
        try:
            probe.touch()
        except PermissionError:
            pass
        else:  # running as a user that ignores modes (root)
            pytest.skip("file modes are not enforced for this user")
        with pytest.raises(DatabaseUnavailableError, match="permission denied"):
            ch.open_repository(f"sqlite:///{folder / 'h.db'}", ch.Keyring.generate())
    finally:
        folder.chmod(0o700)


def test_postgres_missing_database_is_named(pg_missing_db: str) -> None:
    with pytest.raises(DatabaseNotFoundError) as info:
        ch.open_repository(pg_missing_db, ch.Keyring.generate())
    err = info.value
    url = sa.make_url(pg_missing_db)
    assert err.target == (
        f"PostgreSQL database 'commhistory_no_such_database' at {url.host}:{url.port or 5432}"
    )
    assert "does not exist" in err.reason
    assert "commhistory_no_such_database" in err.detail
    assert PASSWORD not in str(err)
    assert PASSWORD not in repr(err)


def test_postgres_closed_port_is_named(pg_closed_port: str) -> None:
    with pytest.raises(DatabaseUnavailableError) as info:
        ch.open_repository(pg_closed_port, ch.Keyring.generate())
    err = info.value
    assert not isinstance(err, DatabaseNotFoundError)
    assert "at 127.0.0.1:1" in err.target
    assert "nothing is listening" in err.reason
    assert "refused" in err.detail.lower()
    assert PASSWORD not in str(err)


def test_store_helpers_raise_the_same_errors(tmp_path: Path, pg_closed_port: str) -> None:
    with pytest.raises(DatabaseUnavailableError, match=r"127\.0\.0\.1:1"):
        ch.store.current_revision(pg_closed_port)
    with pytest.raises(DatabaseUnavailableError, match=r"127\.0\.0\.1:1"):
        ch.store.upgrade(pg_closed_port)
    with pytest.raises(DatabaseUnavailableError, match="folder"):
        ch.store.upgrade(f"sqlite:///{tmp_path / 'nowhere' / 'h.db'}")


def test_errors_pickle_with_their_attributes() -> None:
    err = DatabaseNotFoundError(target="SQLite file 'x.db'", reason="gone", detail="driver says")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is DatabaseNotFoundError
    assert (back.target, back.reason, back.detail, str(back)) == (
        err.target,
        err.reason,
        err.detail,
        str(err),
    )
    exists = ch.KeyringExistsError("k.keyring")
    assert pickle.loads(pickle.dumps(exists)).path == "k.keyring"


# -- the command line ---------------------------------------------------------------------


def _cli(tmp_path: Path, db: str, *command: str) -> list[str]:
    return [*command, "--db", db, "--keyring", str(tmp_path / "k.keyring")]


def test_init_in_a_missing_folder_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path / 'nowhere' / 'h.db'}"
    assert main(_cli(tmp_path, db, "init")) == 2
    err = capsys.readouterr().err
    assert "cannot open SQLite file" in err
    assert "nowhere' does not exist" in err
    assert "OperationalError" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("which", ["pg_missing_db", "pg_closed_port"])
def test_init_on_unreachable_postgres_writes_no_keyring(
    which: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = request.getfixturevalue(which)
    assert main(_cli(tmp_path, db, "init")) == 2
    err = capsys.readouterr().err
    assert "cannot open PostgreSQL database" in err
    assert "does not exist" in err if which == "pg_missing_db" else "127.0.0.1:1" in err
    assert "OperationalError" not in err
    assert PASSWORD not in err
    assert list(tmp_path.iterdir()) == []


def test_import_to_unreachable_database_writes_no_keyring(
    tmp_path: Path, pg_closed_port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    history = Path(__file__).resolve().parent.parent / "examples" / "history.jsonl"
    assert main(_cli(tmp_path, pg_closed_port, "import", str(history))) == 2
    assert "nothing is listening" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "command",
    [
        ["report"],
        ["timeline", "c1"],
        ["rotate-keys"],
        ["backfill-masks"],
        ["audit", "verify"],
        ["can-send", "c1", "--channel", "email", "--purpose", "marketing"],
    ],
    ids=lambda c: c[0],
)
def test_commands_other_than_init_and_import_never_create_a_database(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = f"sqlite:///{tmp_path / 'h.db'}"
    assert main(_cli(tmp_path, good, "init")) == 0
    capsys.readouterr()
    typo = tmp_path / "h-typo.db"
    assert main(_cli(tmp_path, f"sqlite:///{typo}", *command)) == 2
    err = capsys.readouterr().err
    assert f"cannot open SQLite file {str(typo)!r}: the file does not exist" in err
    assert "commhistory init" in err
    assert not typo.exists()
