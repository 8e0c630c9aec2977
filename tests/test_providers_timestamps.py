"""Signed timestamps must be finite; tolerances finite and non-negative (issue 12 item 9)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from commhistory.cli import main
from commhistory.errors import InvalidInputError, SignatureError
from commhistory.providers import MailgunAdapter, SendGridAdapter, WebhookRequest
from commhistory.providers.mailgun import mailgun_signature
from commhistory.providers.sendgrid import SIGNATURE_HEADER, TIMESTAMP_HEADER
from commhistory.testing import sendgrid_keys, signed_webhook

NOW = 1775002000.0
KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
NON_FINITE = ["nan", "NaN", "inf", "-inf", "Infinity", "-Infinity"]


def exit_code(argv: list[str]) -> int:
    """The command line's exit code (argparse's usage errors exit through SystemExit)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(str(exc.code))


def mailgun_request(stamp: str, token: str = "t" * 50) -> WebhookRequest:
    payload = {
        "signature": {
            "timestamp": stamp,
            "token": token,
            "signature": mailgun_signature(KEY, stamp, token),
        },
        "event-data": {"event": "delivered", "id": "e1"},
    }
    return WebhookRequest(
        body=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )


@pytest.mark.parametrize("stamp", NON_FINITE)
def test_mailgun_refuses_a_signed_non_finite_timestamp(stamp: str) -> None:
    adapter = MailgunAdapter(KEY, clock=lambda: NOW)
    with pytest.raises(SignatureError, match=r"signature\.timestamp: not a finite number"):
        adapter.verify(mailgun_request(stamp))


@pytest.mark.parametrize("stamp", NON_FINITE)
def test_sendgrid_refuses_a_signed_non_finite_timestamp(stamp: str) -> None:
    keys = sendgrid_keys()
    body = b'[{"event": "open"}]'
    signature = keys.private_key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    request = WebhookRequest(
        body=body,
        headers={
            SIGNATURE_HEADER: base64.b64encode(signature).decode(),
            TIMESTAMP_HEADER: stamp,
        },
    )
    adapter = SendGridAdapter(keys.public_key, clock=lambda: NOW)
    with pytest.raises(SignatureError, match=f"{TIMESTAMP_HEADER}: not a finite number"):
        adapter.verify(request)


def test_a_finite_timestamp_still_verifies() -> None:
    MailgunAdapter(KEY, clock=lambda: NOW).verify(mailgun_request(str(int(NOW))))


@pytest.mark.parametrize("tolerance", [float("nan"), float("inf"), -1.0])
def test_adapters_refuse_a_non_finite_or_negative_tolerance(tolerance: float) -> None:
    with pytest.raises(InvalidInputError, match="finite, non-negative") as caught:
        MailgunAdapter(KEY, tolerance=tolerance)
    assert caught.value.field == "tolerance"


@pytest.mark.parametrize("tolerance", ["nan", "inf", "-inf", "-1", "ten"])
def test_verify_webhook_refuses_a_bad_tolerance_as_usage(
    tolerance: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = sendgrid_keys()
    stale = signed_webhook("sendgrid", [{"event": "open"}], keys, timestamp=1_000_000_000)
    body = tmp_path / "body.json"
    body.write_bytes(stale.body)
    headers = [a for n, v in stale.headers.items() for a in ("--header", f"{n}: {v}")]
    base = ["verify-webhook", "--provider", "sendgrid", str(body), *headers]
    base += ["--secret", keys.public_key]
    assert exit_code([*base, "--tolerance", tolerance]) == 2
    assert "--tolerance" in capsys.readouterr().err
    assert exit_code([*base, "--tolerance", "0"]) == 4  # a finite window still judges the age
