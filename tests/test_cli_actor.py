"""The command line acting as an actor: ``--actor``/``--role``/``--purpose``/``--policy``.

Every command that touches the repository goes through the guarded view when an
actor is given: the table below runs each of them as each role and checks the
exit code and the audit entry it leaves (or that it leaves none).
"""

from __future__ import annotations

import argparse
import getpass
import json
from pathlib import Path
from typing import NamedTuple

import pytest

from commhistory.audit import AuditEntry
from commhistory.cli import build_parser, main
from commhistory.cli._exits import EXIT_DENIED, EXIT_USAGE
from commhistory.crypto import Keyring
from commhistory.facade import open_repository

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PAYLOADS = Path(__file__).resolve().parent / "payloads"
HISTORY = str(EXAMPLES / "history.jsonl")
ENV = (
    "COMMHISTORY_ACTOR",
    "COMMHISTORY_ROLES",
    "COMMHISTORY_PURPOSE",
    "COMMHISTORY_POLICY",
    "COMMHISTORY_REQUIRE_ACTOR",
    "COMMHISTORY_DB",
    "COMMHISTORY_KEYRING",
    "COMMHISTORY_CONTACT_KEY",
)
# Personal values of examples/history.jsonl that a masked timeline must not show.
PERSONAL = ("Taro.Yamada", "taro.yamada", "春のセール", "山田様")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


class Store(NamedTuple):
    url: str
    keyring: Path
    policy: Path
    setup_entries: int = 0  # the import that made the store is audited too (as os:<user>)

    @property
    def args(self) -> list[str]:
        return ["--db", self.url, "--keyring", str(self.keyring)]

    def entries(self) -> list[AuditEntry]:
        """The entries written after the store was set up."""
        return self.all_entries()[self.setup_entries :]

    def all_entries(self) -> list[AuditEntry]:
        with open_repository(self.url, Keyring.load(self.keyring), upgrade=False) as repo:
            return repo.audit_log.entries()

    def key_ids(self) -> list[str]:
        return list(Keyring.load(self.keyring).key_ids())


def _make_store(url: str, tmp_path: Path) -> Store:
    keyring = tmp_path / "k.keyring"
    policy = tmp_path / "policy.json"
    # A host role with no permission at all, for the commands every built-in role may run.
    policy.write_text(json.dumps({"roles": {"nothing": []}}))
    (tmp_path / "ids.txt").write_text("c-1001\nc-1002\n")  # plan-send's candidates
    assert main(["import", HISTORY, "--db", url, "--keyring", str(keyring)]) == 0
    made = Store(url, keyring, policy)
    return made._replace(setup_entries=len(made.all_entries()))


@pytest.fixture
def store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Store:
    made = _make_store(f"sqlite:///{tmp_path / 'h.db'}", tmp_path)
    capsys.readouterr()
    return made


# --------------------------------------------------------------------------- the table


class Expect(NamedTuple):
    code: int
    entry: tuple[str, str, str] | None  # (action, outcome, permission), or no entry
    also: tuple[tuple[str, str, str], ...] = ()  # the entries after it, for multi-step commands


def ok(action: str | None = None, permission: str = "") -> Expect:
    return Expect(0, None if action is None else (action, "ok", permission))


def denied(action: str, permission: str) -> Expect:
    return Expect(EXIT_DENIED, (action, "denied", permission))


ROLES = ("analyst", "operator", "privacy_officer", "admin", "nothing")
PURPOSE = ["--purpose", "ticket 4711"]
TWILIO_STATUS = str(PAYLOADS / "twilio" / "status_delivered.txt")
# can-send's --purpose is the message purpose; the access purpose is --access-purpose.
CAN_SEND = ["can-send", "c-1001", "--channel", "email", "--purpose", "marketing"]

PLAN_SEND = ["plan-send", "--contacts", "{store}/ids.txt", "--channel", "email"]
PLAN_SEND += ["--purpose", "marketing"]

CRM_EXPORT = str(PAYLOADS / "crm" / "salesforce_opt_outs.csv")
# crm-import declares its attributes, then stores the rows (opt-outs included) in one batch.
CRM_OK = Expect(
    0, ("attributes.declare", "ok", "write_history"), (("ingest", "ok", "write_history"),)
)

# command -> (argv after the command name, expected result per role)
TABLE: dict[str, tuple[list[str], dict[str, Expect]]] = {
    "import": (
        ["import", HISTORY, *PURPOSE],
        {
            "analyst": denied("ingest", "write_history"),
            "operator": ok("ingest", "write_history"),
            "privacy_officer": denied("ingest", "write_history"),
            "admin": ok("ingest", "write_history"),
            "nothing": denied("ingest", "write_history"),
        },
    ),
    "ingest-webhook": (
        ["ingest-webhook", "--provider", "twilio", TWILIO_STATUS, *PURPOSE],
        {
            "analyst": denied("ingest", "write_history"),
            "operator": ok("ingest", "write_history"),
            "privacy_officer": denied("ingest", "write_history"),
            "admin": ok("ingest", "write_history"),
            "nothing": denied("ingest", "write_history"),
        },
    ),
    "crm-import": (
        ["crm-import", "--preset", "salesforce", CRM_EXPORT, *PURPOSE],
        {
            "analyst": denied("attributes.declare", "write_history"),
            "operator": CRM_OK,
            "privacy_officer": denied("attributes.declare", "write_history"),
            "admin": CRM_OK,
            "nothing": denied("attributes.declare", "write_history"),
        },
    ),
    "timeline": (
        ["timeline", "c-1001", *PURPOSE],
        {
            # without read_personal: the masked timeline, not audited
            "analyst": ok(),
            "operator": ok(),
            "privacy_officer": ok("timeline", "read_personal"),
            "admin": ok("timeline", "read_personal"),
            "nothing": denied("masked_timeline", "read_history_masked"),
        },
    ),
    "timeline --masked": (
        ["timeline", "c-1001", "--masked", *PURPOSE],
        {
            "analyst": ok(),
            "operator": ok(),
            "privacy_officer": ok(),
            "admin": ok(),
            "nothing": denied("masked_timeline", "read_history_masked"),
        },
    ),
    "declare-activities": (
        ["declare-activities", "purchase=sku", *PURPOSE],
        {
            "analyst": denied("declare_activities", "write_history"),
            "operator": ok("declare_activities", "write_history"),
            "privacy_officer": denied("declare_activities", "write_history"),
            "admin": ok("declare_activities", "write_history"),
            "nothing": denied("declare_activities", "write_history"),
        },
    ),
    "activities": (
        ["activities", "c-1001", *PURPOSE],
        {
            "analyst": denied("activities", "read_personal"),
            "operator": denied("activities", "read_personal"),
            "privacy_officer": ok("activities", "read_personal"),
            "admin": ok("activities", "read_personal"),
            "nothing": denied("activities", "read_personal"),
        },
    ),
    "can-send": (
        [*CAN_SEND, "--access-purpose", "ticket 4711"],
        {
            "analyst": ok(),
            "operator": ok(),
            "privacy_officer": ok(),
            "admin": ok(),
            "nothing": denied("can_send", "read_history_masked"),
        },
    ),
    # Ids only: nothing decrypted, so checked, never audited.
    "plan-send": (
        [*PLAN_SEND, "--access-purpose", "ticket 4711"],
        {
            "analyst": ok(),
            "operator": ok(),
            "privacy_officer": ok(),
            "admin": ok(),
            "nothing": denied("plan_send", "read_history_masked"),
        },
    ),
    "report": (
        ["report", "--by", "channel", *PURPOSE],
        {
            "analyst": ok(),
            "operator": ok(),
            "privacy_officer": denied("kpis", "read_metrics"),
            "admin": ok(),
            "nothing": denied("kpis", "read_metrics"),
        },
    ),
    "export-analytics": (
        # {store} is the store's own folder (a new one per case).
        ["export-analytics", "{store}/lake", "--format", "csv", *PURPOSE],
        {
            "analyst": ok(),
            "operator": ok(),
            "privacy_officer": denied("export_analytics", "read_metrics"),
            "admin": ok(),
            "nothing": denied("export_analytics", "read_metrics"),
        },
    ),
    "export-subject": (
        ["export-subject", "c-1001", *PURPOSE],
        {
            "analyst": denied("export_subject", "export_subject"),
            "operator": denied("export_subject", "export_subject"),
            "privacy_officer": ok("export_subject", "export_subject"),
            "admin": ok("export_subject", "export_subject"),
            "nothing": denied("export_subject", "export_subject"),
        },
    ),
    "erase-subject": (
        ["erase-subject", "c-1002", "--yes", *PURPOSE],
        {
            "analyst": denied("erase_subject", "erase_subject"),
            "operator": denied("erase_subject", "erase_subject"),
            "privacy_officer": ok("erase_subject", "erase_subject"),
            "admin": ok("erase_subject", "erase_subject"),
            "nothing": denied("erase_subject", "erase_subject"),
        },
    ),
    "purge": (
        ["purge", *PURPOSE],
        {
            "analyst": denied("purge", "erase_subject"),
            "operator": denied("purge", "erase_subject"),
            "privacy_officer": ok("purge", "erase_subject"),
            "admin": ok("purge", "erase_subject"),
            "nothing": denied("purge", "erase_subject"),
        },
    ),
    "purge --dry-run": (
        ["purge", "--dry-run", *PURPOSE],
        {
            "analyst": denied("purge.dry_run", "erase_subject"),
            "operator": denied("purge.dry_run", "erase_subject"),
            "privacy_officer": ok(),
            "admin": ok(),
            "nothing": denied("purge.dry_run", "erase_subject"),
        },
    ),
    "rotate-keys": (
        ["rotate-keys", *PURPOSE],
        {
            "analyst": denied("rotate_keys", "manage_keys"),
            "operator": denied("rotate_keys", "manage_keys"),
            "privacy_officer": denied("rotate_keys", "manage_keys"),
            "admin": ok("rotate_keys", "manage_keys"),
            "nothing": denied("rotate_keys", "manage_keys"),
        },
    ),
}

CASES = [(command, role) for command in TABLE for role in ROLES]
# On PostgreSQL: for each command, the first role allowed and the first denied.
PG_CASES = [
    (command, role)
    for command, (_argv, by_role) in TABLE.items()
    for wanted in (0, EXIT_DENIED)
    for role in [next((r for r in ROLES if by_role[r].code == wanted), None)]
    if role is not None
]


def _check_case(store: Store, command: str, role: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv, by_role = TABLE[command]
    argv = [a.replace("{store}", str(store.policy.parent)) for a in argv]
    expect = by_role[role]
    actor = ["--actor", f"staff-{role}", "--role", role, "--policy", str(store.policy)]
    code = main([*argv, *store.args, *actor])
    out, err = capsys.readouterr()
    assert code == expect.code, err
    entries = store.entries()
    if expect.entry is None:
        assert entries == []
    else:
        assert [(e.action, e.outcome, e.permission) for e in entries] == [
            expect.entry,
            *expect.also,
        ]
        for entry in entries:
            assert (entry.actor_id, entry.roles, entry.purpose) == (
                f"staff-{role}",
                (role,),
                "ticket 4711",
            )
    if expect.code == EXIT_DENIED:
        assert err.count("\n") == 1
        assert f"permission denied: actor 'staff-{role}' lacks permission" in err
        assert repr(expect.entry[2] if expect.entry else "") in err
        assert out == ""


@pytest.mark.parametrize(("command", "role"), CASES, ids=[f"{c}-{r}" for c, r in CASES])
def test_command_as_role_sqlite(
    store: Store, command: str, role: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _check_case(store, command, role, capsys)


@pytest.mark.parametrize(("command", "role"), PG_CASES, ids=[f"{c}-{r}" for c, r in PG_CASES])
def test_command_as_role_postgresql(
    pg_url: str, tmp_path: Path, command: str, role: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store = _make_store(pg_url, tmp_path)
    capsys.readouterr()
    _check_case(store, command, role, capsys)


def test_the_table_covers_every_guarded_command() -> None:
    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    guarded = {
        name
        for name, sub in subparsers.choices.items()
        if any(a.dest == "actor" for a in sub._actions)
    }
    assert guarded == {command.split()[0] for command in TABLE}
    assert len(PG_CASES) >= len(TABLE) + 3  # most commands have both an allowed and a denied role


# --------------------------------------------------------------------------- behaviour


def test_without_an_actor_the_os_user_acts_as_admin_and_is_audited(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue 13 item 5: no command leaves no trace. The setup import itself was audited.
    (setup,) = store.all_entries()
    user = f"os:{getpass.getuser()}"
    assert (setup.actor_id, setup.roles, setup.action) == (user, ("admin",), "ingest")
    assert main(["timeline", "c-1001", *store.args]) == 0
    assert main(["export-subject", "c-1001", *store.args]) == 0
    assert "Taro.Yamada" in capsys.readouterr().out
    assert main(["erase-subject", "c-1001", "--yes", *store.args]) == 0
    got = [
        (e.actor_id, e.roles, e.action, e.outcome, e.contact_id, e.purpose)
        for e in store.entries()
    ]
    assert got == [
        (user, ("admin",), "timeline", "ok", "c-1001", "commhistory timeline"),
        (user, ("admin",), "export_subject", "ok", "c-1001", "commhistory export-subject"),
        (user, ("admin",), "erase_subject", "ok", "c-1001", "commhistory erase-subject"),
    ]


def test_the_os_user_wins_over_nothing_but_an_actor_wins_over_it(
    store: Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMMHISTORY_ACTOR", "po-9")
    monkeypatch.setenv("COMMHISTORY_ROLES", "privacy_officer")
    monkeypatch.setenv("COMMHISTORY_PURPOSE", "request 3")
    assert main(["export-subject", "c-1001", *store.args]) == 0
    (entry,) = store.entries()
    assert (entry.actor_id, entry.roles, entry.purpose) == (
        "po-9",
        ("privacy_officer",),
        "request 3",
    )


def test_masked_timeline_text_and_json(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    analyst = ["--actor", "an-1", "--role", "analyst"]
    assert main(["timeline", "c-1001", *store.args, *analyst]) == 0
    out, err = capsys.readouterr()
    assert "masked" in out
    assert "m-0001" in out
    assert "subject: (withheld)" in out
    assert "converted 4980 JPY" in out
    assert "lacks permission 'read_personal'" in err
    assert not any(value in out for value in PERSONAL)

    assert main(["timeline", "c-1001", *store.args, *analyst, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (entry,) = doc
    assert entry["masked"] is True
    message = entry["message"]
    assert (message["message_id"], message["channel"]) == ("m-0001", "email")
    assert message["has_subject"] is True
    # Withheld today; a masked form once masked addresses are stored, never the address.
    assert message["address"] is None or "***" in message["address"]
    assert [e["type"] for e in entry["events"]][-1] == "converted"
    assert not any(value in json.dumps(doc, ensure_ascii=False) for value in PERSONAL)
    assert store.entries() == []


def test_masked_flag_without_an_actor(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["timeline", "c-1001", "--masked", *store.args]) == 0
    out, err = capsys.readouterr()
    assert "m-0001" in out
    assert err == ""
    assert not any(value in out for value in PERSONAL)


def test_audited_command_needs_a_purpose(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    officer = ["--actor", "po-1", "--role", "privacy_officer"]
    assert main(["export-subject", "c-1001", *store.args, *officer]) == EXIT_USAGE
    assert "state why with --purpose" in capsys.readouterr().err
    assert main(["timeline", "c-1001", *store.args, *officer]) == EXIT_USAGE
    capsys.readouterr()
    assert store.entries() == []
    # ...unless nothing audited would run: a denial is still audited, with a default purpose.
    analyst = ["--actor", "an-1", "--role", "analyst"]
    assert main(["export-subject", "c-1001", *store.args, *analyst]) == EXIT_DENIED
    # ...and a masked timeline or a metric read needs none.
    assert main(["timeline", "c-1001", "--masked", *store.args, *officer]) == 0
    assert main(["report", *store.args, *analyst]) == 0
    (entry,) = store.entries()
    assert (entry.action, entry.outcome, entry.purpose) == (
        "export_subject",
        "denied",
        "commhistory export-subject",
    )


def test_environment_defaults(
    store: Store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COMMHISTORY_ACTOR", "svc-crm")
    monkeypatch.setenv("COMMHISTORY_ROLES", "analyst, privacy_officer")
    monkeypatch.setenv("COMMHISTORY_PURPOSE", "nightly sync")
    assert main(["export-subject", "c-1001", *store.args]) == 0
    # The options win over the environment, each on its own.
    assert main(["export-subject", "c-1001", *store.args, "--actor", "an-1"]) == 0
    assert main(["export-subject", "c-1001", *store.args, "--role", "analyst"]) == EXIT_DENIED
    assert main(["export-subject", "c-1001", *store.args, "--purpose", "ticket 9"]) == 0
    capsys.readouterr()
    got = [(e.actor_id, e.roles, e.outcome, e.purpose) for e in store.entries()]
    assert got == [
        ("svc-crm", ("analyst", "privacy_officer"), "ok", "nightly sync"),
        ("an-1", ("analyst", "privacy_officer"), "ok", "nightly sync"),
        ("svc-crm", ("analyst",), "denied", "nightly sync"),
        ("svc-crm", ("analyst", "privacy_officer"), "ok", "ticket 9"),
    ]


def test_policy_from_the_environment_and_plain_form(
    store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    policy = tmp_path / "plain.json"
    # The plain form: role -> permissions; it may redefine a built-in role.
    policy.write_text(json.dumps({"support": ["export_subject"], "analyst": []}))
    monkeypatch.setenv("COMMHISTORY_POLICY", str(policy))
    base = ["export-subject", "c-1001", *store.args, "--purpose", "t"]
    assert main([*base, "--actor", "s-1", "--role", "support"]) == 0
    assert main(["report", *store.args, "--actor", "a-1", "--role", "analyst"]) == EXIT_DENIED
    assert [(e.actor_id, e.action, e.outcome) for e in store.entries()] == [
        ("s-1", "export_subject", "ok"),
        ("a-1", "kpis", "denied"),
    ]


def test_builtin_roles_can_be_dropped(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "p.json"
    policy.write_text(json.dumps({"builtin_roles": False, "roles": {"dpo": ["export_subject"]}}))
    argv = ["export-subject", "c-1001", *store.args, "--policy", str(policy), "--purpose", "t"]
    assert main([*argv, "--actor", "x", "--role", "admin"]) == EXIT_USAGE
    assert "unknown role 'admin' (known: dpo)" in capsys.readouterr().err
    assert main([*argv, "--actor", "x", "--role", "dpo"]) == 0


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "no such file"),
        ("{not json", "not JSON: Expecting property name enclosed in double quotes at line 1"),
        ("[]", "must be a JSON object"),
        ('{"support": "export_subject"}', "role 'support': expected a list of permission names"),
        ('{"support": ["export"]}', "role 'support': unknown permission 'export' (known: "),
        ('{"Support": ["export_subject"]}', "roles: must be a lower-case name"),
        ('{"roles": {}, "owner": "me"}', "unknown key 'owner' (expected roles, require_actor"),
        ('{"require_actor": "yes"}', "'require_actor' must be true or false"),
        ('{"roles": [], "require_actor": true}', "'roles' must be an object"),
        ('{"require_actor": true, "roles": {"a": [1]}}', "role 'a': expected a list"),
    ],
    ids=[
        "missing",
        "not-json",
        "not-object",
        "not-list",
        "unknown-permission",
        "bad-role-name",
        "unknown-key",
        "require-not-bool",
        "roles-not-object",
        "permission-not-string",
    ],
)
def test_policy_file_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, problem: str
) -> None:
    path = tmp_path / "policy.json"
    if content is not None:
        path.write_text(content)
    db = tmp_path / "never.db"
    argv = ["report", "--db", f"sqlite:///{db}", "--keyring", str(tmp_path / "k")]
    assert main([*argv, "--policy", str(path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"error: policy file {path}: {problem}" in err
    assert not db.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--role", "analyst"], "--role needs --actor"),
        (["--purpose", " "], "--purpose must not be empty"),
        (["--actor", "a-1"], "--actor needs at least one --role (or $COMMHISTORY_ROLES)"),
        (["--actor", "a-1", "--role", "ghost"], "--role: unknown role 'ghost' (known: admin,"),
        (["--actor", "a-1", "--role", "Analyst"], "--role: must be a lower-case name"),
        (["--actor", "a\tb", "--role", "analyst"], "--actor: must be a printable"),
        (["--actor", "a-1", "--role", "admin", "--purpose", " "], "--purpose must not be empty"),
    ],
)
def test_usage_errors(
    store: Store, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["report", *store.args, *argv]) == EXIT_USAGE
    assert message in capsys.readouterr().err
    assert store.entries() == []


def test_can_send_spells_the_access_purpose_apart(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["can-send", "c-1001", "--channel", "email", "--purpose", "marketing", *store.args]
    assert main([*base, "--access-purpose", " "]) == EXIT_USAGE
    assert "--access-purpose must not be empty" in capsys.readouterr().err
    nobody = ["--actor", "x", "--role", "nothing", "--policy", str(store.policy)]
    assert main([*base, *nobody, "--access-purpose", "campaign check"]) == EXIT_DENIED
    (entry,) = store.entries()
    assert entry.purpose == "campaign check"


@pytest.mark.parametrize("how", ["policy", "env"])
def test_require_actor(
    store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    how: str,
) -> None:
    policy = tmp_path / "strict.json"
    policy.write_text(json.dumps({"require_actor": True, "roles": {"support": ["read_metrics"]}}))
    if how == "policy":
        monkeypatch.setenv("COMMHISTORY_POLICY", str(policy))
        source = f"policy file {policy}"
    else:
        monkeypatch.setenv("COMMHISTORY_REQUIRE_ACTOR", "1")
        source = "$COMMHISTORY_REQUIRE_ACTOR"
    for argv in (
        ["report"],
        ["timeline", "c-1001"],
        ["export-subject", "c-1001"],
        ["import", HISTORY],
        ["can-send", "c-1001", "--channel", "email", "--purpose", "marketing"],
    ):
        assert main([*argv, *store.args]) == EXIT_DENIED, argv
        err = capsys.readouterr().err
        assert f"an actor is required ({source}): pass --actor ID --role ROLE" in err
    role = "support" if how == "policy" else "analyst"
    assert main(["report", *store.args, "--actor", "s-1", "--role", role]) == 0
    # Commands that do not open a repository through the view are not affected.
    assert main(["validate", HISTORY]) == 0
    assert main(["audit", "verify", *store.args]) == 0


def test_require_actor_env_must_be_a_flag(
    store: Store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COMMHISTORY_REQUIRE_ACTOR", "maybe")
    assert main(["report", *store.args]) == EXIT_USAGE
    assert "$COMMHISTORY_REQUIRE_ACTOR must be 1 or 0" in capsys.readouterr().err
    monkeypatch.setenv("COMMHISTORY_REQUIRE_ACTOR", "off")
    assert main(["report", *store.args]) == 0


def test_denied_rotation_leaves_the_keyring_alone(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    before = store.key_ids()
    argv = ["rotate-keys", *store.args, "--purpose", "quarterly"]
    assert main([*argv, "--actor", "po-1", "--role", "privacy_officer"]) == EXIT_DENIED
    assert store.key_ids() == before
    assert main([*argv, "--actor", "ad-1", "--role", "admin"]) == 0
    after = store.key_ids()
    assert len(after) == len(before) + 1
    capsys.readouterr()
    # The rotation's entry is authenticated under the new key, and the chain still verifies.
    entries = store.entries()
    assert [(e.action, e.outcome) for e in entries] == [
        ("rotate_keys", "denied"),
        ("rotate_keys", "ok"),
    ]
    assert main(["audit", "verify", *store.args]) == 0


def test_denied_erasure_erases_nothing(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["erase-subject", "c-1001", "--yes", *store.args, "--purpose", "request 12"]
    assert main([*argv, "--actor", "op-1", "--role", "operator"]) == EXIT_DENIED
    assert main(["export-subject", "c-1001", *store.args]) == 0
    assert "Taro.Yamada" in capsys.readouterr().out


def test_webhook_sender_lookup_needs_read_personal(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    inbound = str(PAYLOADS / "twilio" / "inbound.txt")
    argv = ["ingest-webhook", "--provider", "twilio", inbound, *store.args]
    assert main([*argv, "--actor", "op-1", "--role", "operator"]) == EXIT_DENIED
    assert "lacks permission 'read_personal'" in capsys.readouterr().err
    assert main([*argv, "--actor", "ad-1", "--role", "admin"]) == EXIT_USAGE  # needs a purpose
    assert main([*argv, "--actor", "ad-1", "--role", "admin", "--purpose", "inbound sms"]) == 0
    assert "1 inserted" in capsys.readouterr().out
    got = [(e.actor_id, e.action, e.outcome, e.permission) for e in store.entries()]
    assert got == [
        ("op-1", "find_contacts", "denied", "read_personal"),
        ("ad-1", "find_contacts", "ok", "read_personal"),
        ("ad-1", "ingest", "ok", "write_history"),
    ]
    assert store.entries()[1].targets == ("c-1002",)


def test_audit_show_lists_cli_entries_with_actor_and_purpose(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    officer = ["--actor", "po-1", "--role", "privacy_officer", "--purpose", "request 12"]
    assert main(["export-subject", "c-1001", *store.args, *officer]) == 0
    assert main(["rotate-keys", *store.args, "--actor", "an-1", "--role", "analyst"]) == 6
    capsys.readouterr()
    assert main(["audit", "show", *store.args]) == 0
    first, second = capsys.readouterr().out.splitlines()[store.setup_entries :]
    assert "po-1 (privacy_officer)  export_subject  ok  contact=c-1001" in first
    assert "permission=export_subject  purpose='request 12'" in first
    assert "an-1 (analyst)  rotate_keys  denied" in second
    assert "permission=manage_keys  purpose='commhistory rotate-keys'" in second
    assert main(["audit", "show", *store.args, "--actor", "po-1", "--format", "json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert (row["actor_id"], row["roles"], row["purpose"], row["permission"]) == (
        "po-1",
        ["privacy_officer"],
        "request 12",
        "export_subject",
    )


def test_purpose_without_actor_applies_to_the_os_user(
    store: Store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("COMMHISTORY_ACTOR", raising=False)
    monkeypatch.delenv("COMMHISTORY_PURPOSE", raising=False)
    assert main(["export-subject", "c-1001", *store.args, "--purpose", "request 12"]) == 0
    monkeypatch.setenv("COMMHISTORY_PURPOSE", "nightly sync")
    assert main(["export-subject", "c-1001", *store.args]) == 0
    capsys.readouterr()
    got = [(e.actor_id, e.roles, e.action, e.outcome, e.purpose) for e in store.entries()]
    user = f"os:{getpass.getuser()}"
    assert got == [
        (user, ("admin",), "export_subject", "ok", "request 12"),
        (user, ("admin",), "export_subject", "ok", "nightly sync"),
    ]
