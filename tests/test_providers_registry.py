"""The provider registry: registration, look-up, entry points; the CLI and testing kit use it."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from commhistory.cli import webhook
from commhistory.cli._exits import EXIT_USAGE, CommandError
from commhistory.errors import InvalidInputError, NotFoundError, PayloadError, SignatureError
from commhistory.model import Event, EventType, Record
from commhistory.providers import (
    ADAPTERS,
    ENTRY_POINT_GROUP,
    AmazonConnectAdapter,
    BrevoAdapter,
    DuplicateProviderError,
    LineAdapter,
    MailerSendAdapter,
    MailgunAdapter,
    MailgunInboundAdapter,
    MailjetAdapter,
    MailtrapAdapter,
    MandrillAdapter,
    PostalAdapter,
    PostmarkAdapter,
    ProviderLoadError,
    ProviderSpec,
    ResendAdapter,
    SendGridAdapter,
    SendGridInboundAdapter,
    SesAdapter,
    SignedRequest,
    SparkPostAdapter,
    TwilioAdapter,
    UnisenderGoAdapter,
    WebhookAdapter,
    WebhookRequest,
    get_provider,
    provider_names,
    register_provider,
    registered_adapters,
    registry,
    sendgrid,
)
from commhistory.providers.base import as_object, epoch, require_str
from commhistory.providers.registry import json_body
from commhistory.testing import sendgrid_keys, signed_webhook
from commhistory.testing.webhooks import DEFAULT_URL

BUILTIN: dict[str, type[WebhookAdapter]] = {
    "amazon-connect": AmazonConnectAdapter,
    "brevo": BrevoAdapter,
    "line": LineAdapter,
    "mailersend": MailerSendAdapter,
    "mailgun": MailgunAdapter,
    "mailtrap": MailtrapAdapter,
    "postal": PostalAdapter,
    "mailgun-inbound": MailgunInboundAdapter,
    "mailjet": MailjetAdapter,
    "mandrill": MandrillAdapter,
    "postmark": PostmarkAdapter,
    "resend": ResendAdapter,
    "sendgrid": SendGridAdapter,
    "sendgrid-inbound": SendGridInboundAdapter,
    "ses": SesAdapter,
    "sparkpost": SparkPostAdapter,
    "twilio": TwilioAdapter,
    "unisender_go": UnisenderGoAdapter,
}

TOKEN_HEADER = "X-Fake-Token"


# --------------------------------------------------------------------------- a test provider


class FakeAdapter(WebhookAdapter):
    """A provider that sends a JSON list of ``{"id", "at"}`` and a shared token header."""

    name: ClassVar[str] = "fake"

    def __init__(self, token: str, **options: Any) -> None:
        super().__init__(**options)
        if not token:
            raise InvalidInputError(field="token", reason="must not be empty")
        self.token = token

    def _verify(self, request: WebhookRequest) -> None:
        if request.header(TOKEN_HEADER) != self.token:
            raise SignatureError("token does not match")

    def _events(self, payload: Any, request: WebhookRequest) -> Sequence[Any]:
        if not isinstance(payload, list):
            raise PayloadError(field="<body>", reason="expected a list")
        return payload

    def _parse_event(self, event: Any) -> list[Record]:
        item = as_object(event)
        key = require_str(item, "id")
        event_id, provider_event_id = self.ids(key)
        return [
            Event(
                event_id=event_id,
                type=EventType.DELIVERED,
                occurred_at=epoch(item.get("at"), field="at"),
                provider=self.name,
                provider_message_id=key,
                provider_event_id=provider_event_id,
            )
        ]


def _fake_from_secret(secret: str | None, /, **options: Any) -> FakeAdapter:
    return FakeAdapter(secret or "-", **options)


def _fake_sign(events: Any, secret: Any, /, *, url: str, timestamp: float) -> SignedRequest:
    headers = {"Content-Type": "application/json", TOKEN_HEADER: str(secret)}
    return SignedRequest(body=json_body(events), headers=headers, url=url)


FAKE = ProviderSpec(adapter=FakeAdapter, from_secret=_fake_from_secret, signer=_fake_sign)
"""Registered by the tests (or loaded through a fake entry point), never at import."""


class HijackAdapter(FakeAdapter):
    name: ClassVar[str] = "sendgrid"


HIJACK = ProviderSpec(adapter=HijackAdapter, from_secret=_fake_from_secret)


class UnsignedAdapter(FakeAdapter):
    name: ClassVar[str] = "unsigned"


UNSIGNED = ProviderSpec(adapter=UnsignedAdapter, from_secret=_fake_from_secret)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> registry._State:
    """A copy of the loaded registry, thrown away after the test."""
    get_provider("sendgrid")  # load everything into the real registry first
    state = registry._STATE.copy()
    monkeypatch.setattr(registry, "_STATE", state)
    return state


class FakeEntryPoints:
    """Stands in for ``importlib.metadata.entry_points``; counts its calls."""

    def __init__(self, *pairs: tuple[str, str]) -> None:
        self.points = [
            importlib.metadata.EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)
            for name, value in pairs
        ]
        self.calls = 0

    def __call__(self, *, group: str) -> list[importlib.metadata.EntryPoint]:
        self.calls += 1
        return [point for point in self.points if point.group == group]


@pytest.fixture
def unloaded(sandbox: registry._State) -> None:
    """The sandbox, with the built-ins registered but entry points not loaded yet."""
    sandbox.loaded = False


def _install(monkeypatch: pytest.MonkeyPatch, *pairs: tuple[str, str]) -> FakeEntryPoints:
    fake = FakeEntryPoints(*pairs)
    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    return fake


# --------------------------------------------------------------------------- built-ins


def test_builtin_providers_register_themselves() -> None:
    assert set(BUILTIN) <= set(provider_names())
    assert {name: ADAPTERS[name] for name in BUILTIN} == BUILTIN
    assert get_provider("sendgrid") is sendgrid.PROVIDER
    assert get_provider("sendgrid").adapter is SendGridAdapter
    assert ADAPTERS is registered_adapters()


def test_adapters_is_read_only() -> None:
    with pytest.raises(TypeError):
        ADAPTERS["fake"] = FakeAdapter  # type: ignore[index]


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_parse_only_adapters_build_without_a_secret(name: str) -> None:
    adapter = get_provider(name).from_secret(None, tolerance=10)
    assert type(adapter) is BUILTIN[name]
    assert adapter.tolerance == 10


# --------------------------------------------------------------------------- registration


def test_register_and_look_up(sandbox: registry._State) -> None:
    assert "fake" not in provider_names()
    with pytest.raises(NotFoundError, match="provider 'fake' not found"):
        get_provider("fake")
    assert register_provider(FAKE) is FAKE
    assert get_provider("fake") is FAKE
    assert "fake" in provider_names()
    assert ADAPTERS["fake"] is FakeAdapter
    assert len(ADAPTERS) == len(BUILTIN) + 1
    assert list(ADAPTERS) == sorted(ADAPTERS)


def test_the_sandbox_is_thrown_away() -> None:
    # Runs after test_register_and_look_up: the real registry never saw "fake".
    assert "fake" not in provider_names()
    assert ADAPTERS.get("fake") is None


def test_registering_the_same_spec_again_does_nothing(sandbox: registry._State) -> None:
    register_provider(FAKE)
    assert register_provider(FAKE) is FAKE
    assert get_provider("fake") is FAKE


def test_duplicates_are_refused(sandbox: registry._State) -> None:
    with pytest.raises(
        DuplicateProviderError,
        match=r"provider 'sendgrid' is already registered by "
        r"commhistory\.providers\.sendgrid\.SendGridAdapter",
    ) as caught:
        register_provider(HIJACK)
    assert (caught.value.name, caught.value.holder) == (
        "sendgrid",
        "commhistory.providers.sendgrid.SendGridAdapter",
    )
    assert get_provider("sendgrid") is sendgrid.PROVIDER
    register_provider(FAKE)
    other = ProviderSpec(adapter=FakeAdapter, from_secret=_fake_from_secret)  # no signer
    with pytest.raises(DuplicateProviderError, match="'fake'"):
        register_provider(other)
    assert get_provider("fake") is FAKE


def test_errors_pickle() -> None:
    for error in (
        DuplicateProviderError(name="x", holder="m.X"),
        ProviderLoadError(entry_point="x", target="m:X", reason="broken"),
    ):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert str(copy) == str(error)


class Nameless(FakeAdapter):
    name: ClassVar[str] = "Not A Name"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"adapter": int}, "adapter"),
        ({"adapter": "fake"}, "adapter"),
        ({"adapter": Nameless}, "adapter.name"),
        ({"from_secret": "not callable"}, "from_secret"),
        ({"signer": 42}, "signer"),
    ],
)
def test_specs_are_checked(kwargs: dict[str, Any], field: str) -> None:
    fields: dict[str, Any] = {"adapter": FakeAdapter, "from_secret": _fake_from_secret}
    with pytest.raises(InvalidInputError) as caught:
        ProviderSpec(**{**fields, **kwargs})
    assert caught.value.field == field


def test_only_specs_register(sandbox: registry._State) -> None:
    with pytest.raises(InvalidInputError, match="spec: must be a ProviderSpec"):
        register_provider(FakeAdapter)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- entry points


def test_entry_points_load_lazily_and_once(
    unloaded: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _install(monkeypatch, ("fake", f"{__name__}:FAKE"))
    assert fake.calls == 0  # nothing is loaded before the first look-up
    assert get_provider("fake") is FAKE
    assert "fake" in provider_names()
    assert ADAPTERS["fake"] is FakeAdapter
    assert get_provider("sendgrid") is sendgrid.PROVIDER
    assert fake.calls == 1


def test_a_module_registering_itself_and_its_entry_point_agree(
    unloaded: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_provider(FAKE)  # as the module does when imported
    _install(monkeypatch, ("fake", f"{__name__}:FAKE"))
    assert get_provider("fake") is FAKE


@pytest.mark.parametrize(
    ("name", "target", "reason"),
    [
        (
            "acme",
            "no_such_module_for_commhistory:PROVIDER",
            "ModuleNotFoundError: No module named",
        ),
        ("acme", f"{__name__}:NO_SUCH_NAME", "AttributeError"),
        ("acme", f"{__name__}:FakeAdapter", "it is the class FakeAdapter, not a ProviderSpec"),
        ("acme", f"{__name__}:FAKE", "its adapter is named 'fake'; name the entry point after it"),
        ("acme", "commhistory.providers.sendgrid", "it is a module object, not a ProviderSpec"),
        ("sendgrid", f"{__name__}:HIJACK", "provider 'sendgrid' is already registered by"),
    ],
)
def test_a_broken_entry_point_is_named_when_its_provider_is_looked_up(
    unloaded: None, monkeypatch: pytest.MonkeyPatch, name: str, target: str, reason: str
) -> None:
    fake = _install(monkeypatch, (name, target), ("fake", f"{__name__}:FAKE"))
    assert get_provider("fake") is FAKE  # the others still load
    for _ in range(2):  # every time, without loading again
        with pytest.raises(ProviderLoadError) as caught:
            get_provider(name)
        error = caught.value
        assert (error.entry_point, error.target) == (name, target)
        assert reason in error.reason
        assert str(error).startswith(
            f"provider entry point {name!r} = {target!r} (group 'commhistory.providers')"
            " cannot be loaded: "
        )
    assert fake.calls == 1
    assert name in provider_names()  # choosing it says why it fails
    if name != "sendgrid":
        assert name not in ADAPTERS


# --------------------------------------------------------------------------- the CLI


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="commhistory")
    webhook.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except CommandError as exc:
        print(f"error: {exc}")
        return exc.exit_code
    return code


def test_cli_finds_a_provider_registered_by_a_test_module(
    sandbox: registry._State, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    register_provider(FAKE)
    adapter = webhook.build_adapter("fake", "t0ken", tolerance=5)
    assert isinstance(adapter, FakeAdapter)
    assert (adapter.token, adapter.tolerance) == ("t0ken", 5)

    path = tmp_path / "fake.json"
    path.write_text(json.dumps([{"id": "m-1", "at": 1_700_000_000}, {"at": 1}]))
    assert run(["parse-webhook", "--provider", "fake", str(path)]) == 1
    captured = capsys.readouterr()
    record = json.loads(captured.out.splitlines()[0])
    assert (record["event_id"], record["provider"]) == ("fake:m-1", "fake")
    assert "event 2: id: required" in captured.err

    base = [
        "verify-webhook",
        "--provider",
        "fake",
        str(path),
        "--header",
        f"{TOKEN_HEADER}: t0ken",
    ]
    assert run([*base, "--secret", "t0ken"]) == 0
    assert capsys.readouterr().out == "valid: the fake signature verifies\n"
    assert run([*base, "--secret", "other"]) == webhook.EXIT_INVALID
    assert capsys.readouterr().out == "invalid: token does not match\n"


def test_cli_unknown_and_broken_providers(
    unloaded: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _install(monkeypatch, ("acme", "no_such_module_for_commhistory:PROVIDER"))
    with pytest.raises(CommandError, match=r"^unknown provider 'nope'$") as unknown:
        webhook.build_adapter("nope", None)
    assert unknown.value.exit_code == EXIT_USAGE
    with pytest.raises(CommandError, match="provider entry point 'acme'") as broken:
        webhook.build_adapter("acme", None)
    assert broken.value.exit_code == EXIT_USAGE
    # --provider offers the broken provider, so choosing it explains the failure.
    assert run(["parse-webhook", "--provider", "acme", "x.json"]) == EXIT_USAGE
    assert "No module named 'no_such_module_for_commhistory'" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("provider", "secret", "message"),
    [
        ("sendgrid", "garbage", "--secret: not a valid public key"),
        ("postmark", "user-without-password", "--secret: give a user name and a password"),
        ("twilio", "", None),  # "" reads as no secret: a parse-only adapter, as before
    ],
)
def test_cli_secrets_are_read_by_the_provider(
    provider: str, secret: str, message: str | None
) -> None:
    if message is None:
        assert isinstance(webhook.build_adapter(provider, secret), TwilioAdapter)
        return
    with pytest.raises(CommandError) as caught:
        webhook.build_adapter(provider, secret)
    assert str(caught.value) == message
    assert caught.value.exit_code == EXIT_USAGE


# --------------------------------------------------------------------------- the testing kit


def test_signed_webhook_finds_a_provider_registered_by_a_test_module(
    sandbox: registry._State,
) -> None:
    with pytest.raises(InvalidInputError, match="provider: unknown provider"):
        signed_webhook("fake", [], "t0ken")
    register_provider(FAKE)
    hook = signed_webhook("fake", [{"id": "m-1", "at": 1_700_000_000}], "t0ken")
    assert hook.provider == "fake"
    assert hook.url == DEFAULT_URL.format(provider="fake")
    assert hook.headers[TOKEN_HEADER] == "t0ken"
    adapter = FakeAdapter("t0ken")
    adapter.verify(hook.request())
    (record,) = adapter.parse(hook.request()).records
    assert isinstance(record, Event)
    assert record.event_id == "fake:m-1"


def test_signed_webhook_needs_a_signer(sandbox: registry._State) -> None:
    register_provider(UNSIGNED)
    with pytest.raises(InvalidInputError, match="provider: the provider registered no signer"):
        signed_webhook("unsigned", [], "t0ken")


def test_signed_webhook_passes_url_and_timestamp_to_the_signer() -> None:
    keys = sendgrid_keys()
    hook = signed_webhook("sendgrid", [], keys, url="https://h.test/x?a=1", timestamp=1234.9)
    assert hook.url == "https://h.test/x?a=1"
    assert hook.path == "/x?a=1"
    assert hook.headers[sendgrid.TIMESTAMP_HEADER] == "1234"
    with pytest.raises(InvalidInputError, match="secret: give a SendGridKeys"):
        signed_webhook("sendgrid", [], object())
