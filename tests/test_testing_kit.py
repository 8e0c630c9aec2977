"""The testing kit: factories, signed webhooks for every provider, the pytest plugin."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from commhistory.errors import InvalidInputError
from commhistory.facade import CommHistory
from commhistory.model import Channel, ConsentAction, EventType
from commhistory.testing import make_consent, make_event, make_message, signed_webhook


def test_factories_make_valid_linked_records() -> None:
    message = make_message(campaign_id="spring")
    event = make_event(message, type="clicked")
    assert event.message_id == message.message_id
    assert event.type is EventType.CLICKED
    assert event.occurred_at > message.sent_at
    repo = CommHistory.in_memory()
    assert repo.record_messages([message, make_message(channel="sms")]).inserted == 2
    assert repo.record_events([event]).inserted == 1
    [entry] = repo.timeline(message.contact_id)
    assert entry.events == (event,)
    consent = make_consent(contact_id=message.contact_id, action="withdraw")
    assert consent.action is ConsentAction.WITHDRAW
    assert repo.record_consent([consent]).inserted == 1


@pytest.mark.parametrize("channel", list(Channel))
def test_message_factory_covers_every_channel(channel: Channel) -> None:
    assert make_message(channel=channel).channel is channel


def test_unknown_provider() -> None:
    with pytest.raises(InvalidInputError, match="provider"):
        signed_webhook("carrier-pigeon", [], "secret")


DOWNSTREAM_TEST = '''
    """A downstream project's test of its webhook endpoint, using the commhistory plugin."""

    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.testclient import TestClient

    from commhistory.providers import SendGridAdapter
    from commhistory.web.starlette import webhook_app


    def test_my_endpoint_records_a_bounce(
        commhistory_repository, commhistory_sendgrid_keys, commhistory_signed_webhook
    ):
        adapter = SendGridAdapter(commhistory_sendgrid_keys.public_key)
        app = Starlette(
            routes=[Mount("/hooks", app=webhook_app([adapter], commhistory_repository))]
        )
        event = {
            "event": "bounce", "email": "taro@example.com", "timestamp": 1775001610,
            "sg_message_id": "abc.filter", "sg_event_id": "e1", "status": "5.1.1",
        }
        webhook = commhistory_signed_webhook("sendgrid", [event], commhistory_sendgrid_keys)
        answer = TestClient(app).post(
            "/hooks/sendgrid", content=webhook.body, headers=dict(webhook.headers)
        )
        assert answer.status_code == 200
        assert answer.json()["inserted"] == 1


    def test_sql_repository_fixture(commhistory_sql_repository):
        assert commhistory_sql_repository.dead_letters() == []
'''


def test_pytest_plugin_in_a_downstream_project(tmp_path: Path) -> None:
    # The plugin loads through the pytest11 entry point of the installed package.
    (tmp_path / "test_downstream.py").write_text(textwrap.dedent(DOWNSTREAM_TEST))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
