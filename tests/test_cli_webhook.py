"""The webhook commands, through a locally built parser (cli/__init__ registers them later)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from commhistory.cli import webhook
from commhistory.cli._exits import CommandError
from commhistory.testing import sendgrid_keys, signed_webhook

PAYLOADS = Path(__file__).parent / "payloads"


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="commhistory")
    webhook.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except CommandError as exc:
        return exc.exit_code
    return code


def test_parse_prints_canonical_lines(capsys: pytest.CaptureFixture[str]) -> None:
    path = PAYLOADS / "sendgrid" / "batch.json"
    assert run(["parse-webhook", "--provider", "sendgrid", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 12
    first = json.loads(lines[0])
    assert (first["kind"], first["type"], first["provider"]) == ("event", "queued", "sendgrid")


def test_parse_reports_bad_events(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"event": "open"}, "x"]))
    assert run(["parse-webhook", "--provider", "sendgrid", str(path)]) == 1
    err = capsys.readouterr().err
    assert "event 1: sg_message_id: required" in err
    assert "event 2: <event>" in err


def test_parse_twilio_form_and_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    path = PAYLOADS / "twilio" / "status_delivered.txt"
    assert run(["parse-webhook", "--provider", "twilio", str(path)]) == 0
    assert '"delivered"' in capsys.readouterr().out
    assert run(["parse-webhook", "--provider", "twilio", "/nonexistent"]) == 2


def test_ingest_stores_and_dead_letters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ["--db", f"sqlite:///{tmp_path / 'h.db'}", "--keyring", str(tmp_path / "k")]
    path = PAYLOADS / "line" / "events.json"
    # Without a contact key, LINE items get keyring-derived pseudonymous contacts (issue 14).
    assert run(["ingest-webhook", "--provider", "line", str(path), *store]) == 0
    assert "5 inserted" in capsys.readouterr().out
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert run(["ingest-webhook", "--provider", "line", str(broken), *store]) == 1
    assert "1 rejected" in capsys.readouterr().out


def test_ingest_with_contact_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMMHISTORY_CONTACT_KEY", "00" * 16)
    store = ["--db", f"sqlite:///{tmp_path / 'h.db'}", "--keyring", str(tmp_path / "k")]
    path = PAYLOADS / "line" / "events.json"
    assert run(["ingest-webhook", "--provider", "line", str(path), *store]) == 0
    assert "5 inserted" in capsys.readouterr().out


def test_verify_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = sendgrid_keys()
    hook = signed_webhook("sendgrid", [{"event": "open"}], keys)
    body = tmp_path / "body.json"
    body.write_bytes(hook.body)
    headers = [
        arg for name, value in hook.headers.items() for arg in ("--header", f"{name}: {value}")
    ]
    base = ["verify-webhook", "--provider", "sendgrid", str(body), *headers]
    assert run([*base, "--secret", keys.public_key]) == 0
    assert "valid" in capsys.readouterr().out
    assert run([*base, "--secret", sendgrid_keys().public_key]) == 4
    assert "invalid: signature does not match" in capsys.readouterr().out
    assert run([*base, "--secret", "garbage"]) == 2


def test_verify_twilio_published_example(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = tmp_path / "twilio.txt"
    body.write_bytes(
        b"CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234"
        b"&From=%2B14158675309&To=%2B18005551212"
    )
    argv = [
        "verify-webhook", "--provider", "twilio", str(body), "--secret", "12345",
        "--url", "https://mycompany.com/myapp.php?foo=1&bar=2",
        "--header", "X-Twilio-Signature: RSOYDt4T1cUTdK1PDd93/VVr8B8=",
    ]  # fmt: skip
    assert run(argv) == 0
    assert run([*argv[:-1], "X-Twilio-Signature: AAAA"]) == 4
    assert "URL differs" in capsys.readouterr().out


# Issue 14, item 6: inbound items on a fresh install, with no contact key and no setup. The
# payload is Twilio's incoming-message webhook (tests/payloads/twilio/inbound_stop.txt, shaped
# after https://www.twilio.com/docs/messaging/guides/webhook-request).
def test_parse_inbound_sms_on_a_fresh_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COMMHISTORY_CONTACT_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    path = PAYLOADS / "twilio" / "inbound_stop.txt"
    assert run(["parse-webhook", "--provider", "twilio", str(path)]) == 0
    out = capsys.readouterr()
    [line] = out.out.splitlines()
    record = json.loads(line)
    assert record["kind"] == "message"
    assert record["contact_id"].startswith("c_")
    assert "819012345678" not in record["contact_id"]
    assert "key of this run" in out.err
    # With a keyring the ids are stable, and the same as ingest-webhook derives.
    keyring = str(tmp_path / "k")
    store = ["--db", f"sqlite:///{tmp_path / 'h.db'}", "--keyring", keyring]
    assert run(["ingest-webhook", "--provider", "twilio", str(path), *store]) == 0
    capsys.readouterr()
    ids = set()
    for _ in range(2):
        assert run(["parse-webhook", "--provider", "twilio", str(path), "--keyring", keyring]) == 0
        ids.add(json.loads(capsys.readouterr().out)["contact_id"])
    assert len(ids) == 1


def test_ingest_stop_from_a_number_never_messaged_suppresses_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from commhistory.crypto import Keyring
    from commhistory.facade import open_repository
    from commhistory.model import Channel

    monkeypatch.delenv("COMMHISTORY_CONTACT_KEY", raising=False)
    db, keyring = f"sqlite:///{tmp_path / 'h.db'}", str(tmp_path / "k")
    path = PAYLOADS / "twilio" / "inbound_stop.txt"
    argv = ["ingest-webhook", "--provider", "twilio", str(path), "--db", db, "--keyring", keyring]
    assert run(argv) == 0
    assert "1 inserted" in capsys.readouterr().out
    with open_repository(db, Keyring.load(keyring)) as repo:
        [entry] = repo.suppression.entries(Channel.SMS, "+819012345678")
        assert entry.reason.value == "sms_keyword"


def test_ingest_verifies_with_secret(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = sendgrid_keys()
    events = json.loads((PAYLOADS / "sendgrid" / "batch.json").read_text())
    hook = signed_webhook("sendgrid", events, keys)
    body = tmp_path / "body.json"
    body.write_bytes(hook.body)
    headers = [
        arg for name, value in hook.headers.items() for arg in ("--header", f"{name}: {value}")
    ]
    store = ["--db", f"sqlite:///{tmp_path / 'h.db'}", "--keyring", str(tmp_path / "k")]
    base = ["ingest-webhook", "--provider", "sendgrid", str(body), *headers, *store]
    assert run([*base, "--secret", sendgrid_keys().public_key]) == 4
    assert "invalid: signature does not match" in capsys.readouterr().out
    assert run([*base, "--secret", keys.public_key, "--tolerance", "600"]) == 0
    assert "12 inserted" in capsys.readouterr().out


# Issue 14, item 2: the new email providers are found by --provider through the registry.
def test_brevo_through_every_webhook_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = json.loads((PAYLOADS / "brevo" / "events.json").read_text())
    hook = signed_webhook("brevo", [events["delivered"], events["spam"]], "hooks:pw")
    body = tmp_path / "brevo.json"
    body.write_bytes(hook.body)
    headers = [
        arg for name, value in hook.headers.items() for arg in ("--header", f"{name}: {value}")
    ]
    verify = ["verify-webhook", "--provider", "brevo", str(body), *headers]
    assert run([*verify, "--secret", "hooks:pw"]) == 0
    assert run([*verify, "--secret", "hooks:other"]) == 4
    assert "wrong user name or password" in capsys.readouterr().out
    assert run(["parse-webhook", "--provider", "brevo", str(body)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(x["provider"], x["type"]) for x in lines] == [
        ("brevo", "delivered"),
        ("brevo", "complained"),
    ]
    store = ["--db", f"sqlite:///{tmp_path / 'h.db'}", "--keyring", str(tmp_path / "k")]
    ingest = ["ingest-webhook", "--provider", "brevo", str(body), *store, *headers]
    assert run([*ingest, "--secret", "hooks:pw"]) == 0
    assert "2 inserted" in capsys.readouterr().out


def test_verify_mandrill_needs_the_configured_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = json.loads((PAYLOADS / "mandrill" / "events.json").read_text())
    url = "https://hooks.example.jp/webhooks/mandrill"
    hook = signed_webhook("mandrill", events, "md-key", url=url)
    body = tmp_path / "mandrill.txt"
    body.write_bytes(hook.body)
    signature = f"X-Mandrill-Signature: {hook.headers['X-Mandrill-Signature']}"
    base = ["verify-webhook", "--provider", "mandrill", str(body), "--secret", "md-key"]
    assert run([*base, "--url", url, "--header", signature]) == 0
    assert run([*base, "--url", url + "/", "--header", signature]) == 4
    assert "URL differs" in capsys.readouterr().out
    assert run(["parse-webhook", "--provider", "mandrill", str(body)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(events)
