"""verify-webhook, parse-webhook and ingest-webhook for the ESP adapters added in 0.4.0.

Each case is a saved request: a payload from tests/payloads/<provider>/, signed the way
the provider signs it (through the registry's signer), with the secret the command
line takes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from commhistory.testing import signed_webhook
from tests.test_cli_webhook import run

PAYLOADS = Path(__file__).parent / "payloads"


@attrs.frozen
class CliCase:
    provider: str
    payload: Any
    secret: str
    wrong_secret: str
    events: int
    first_type: str
    sign_with: Any = None
    """What the provider signs with, when it is not ``secret`` (a private key)."""


def _load(provider: str, name: str) -> Any:
    return json.loads((PAYLOADS / provider / name).read_text())


_POSTAL = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey) -> str:
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return public.decode()


CASES = [
    CliCase(
        "mailersend",
        _load("mailersend", "activities.json")["hard_bounced"],
        "ms-secret",
        "other-secret",
        1,
        "bounced",
    ),
    CliCase(
        "postal",
        _load("postal", "events.json")["published"]["MessageLinkClicked"],
        _pem(_POSTAL),
        _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        1,
        "clicked",
        sign_with=_POSTAL,
    ),
    CliCase(
        "mailtrap",
        {"events": [_load("mailtrap", "events.json")["published"]["unsubscribe"]]},
        "mt-secret",
        "other-secret",
        1,
        "unsubscribed",
    ),
    CliCase(
        "unisender_go",
        {
            "events_by_user": [
                dict(
                    _load("unisender_go", "events.json")["published"],
                    events=[_load("unisender_go", "events.json")["shaped"]["hard_bounced"]],
                )
            ]
        },
        "ug-api-key",
        "other-key",
        1,
        "bounced",
    ),
]


def _save(tmp_path: Path, case: CliCase) -> tuple[Path, list[str]]:
    key = case.secret if case.sign_with is None else case.sign_with
    hook = signed_webhook(case.provider, case.payload, key)
    body = tmp_path / "body.json"
    body.write_bytes(hook.body)
    headers = [arg for k, v in hook.headers.items() for arg in ("--header", f"{k}: {v}")]
    return body, [*headers, "--url", hook.url]


@pytest.mark.parametrize("case", CASES, ids=[c.provider for c in CASES])
def test_verify_parse_ingest(
    case: CliCase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body, request = _save(tmp_path, case)
    verify = ["verify-webhook", "--provider", case.provider, str(body), *request]
    assert run([*verify, "--secret", case.secret]) == 0
    assert capsys.readouterr().out.startswith("valid")
    assert run([*verify, "--secret", case.wrong_secret]) == 4
    assert capsys.readouterr().out.startswith("invalid")

    assert run(["parse-webhook", "--provider", case.provider, str(body)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == case.events
    assert (lines[0]["provider"], lines[0]["type"]) == (case.provider, case.first_type)

    store = ["--db", f"sqlite:///{tmp_path / 'h.db'}", "--keyring", str(tmp_path / "k")]
    ingest = ["ingest-webhook", "--provider", case.provider, str(body), *request, *store]
    assert run([*ingest, "--secret", case.wrong_secret]) == 4
    capsys.readouterr()
    assert run([*ingest, "--secret", case.secret]) == 0
    assert f"{case.events} inserted" in capsys.readouterr().out
    assert run([*ingest, "--secret", case.secret]) == 0
    assert "duplicate" in capsys.readouterr().out
