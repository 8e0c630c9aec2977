"""The Flask receiver, through Flask's test client, into SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from commhistory.facade import CommHistory

pytest.importorskip("flask")

import flask
from flask.testing import FlaskClient

from commhistory.providers import LineAdapter, WebhookAdapter
from commhistory.store import HistoryWriter, SQLRepository
from commhistory.testing import signed_webhook
from commhistory.web.flask import webhook_blueprint
from tests._webhook_cases import CASES, CaseBuilder, web_repository

__all__ = ["web_repository"]

BASE = "http://localhost"


def client(adapters: list[WebhookAdapter], repo: HistoryWriter) -> FlaskClient:
    app = flask.Flask("test")
    app.register_blueprint(webhook_blueprint(adapters, repo), url_prefix="/webhooks")
    return app.test_client()


@pytest.mark.parametrize("build", CASES, ids=lambda b: b.__name__.removesuffix("_case"))
def test_end_to_end(build: CaseBuilder, web_repository: CommHistory[SQLRepository]) -> None:
    case = build(BASE)
    c = client([case.adapter], web_repository)
    forged = c.post(case.forged.path, data=case.forged.body, headers=dict(case.forged.headers))
    assert forged.status_code == case.refused_status
    good = c.post(case.good.path, data=case.good.body, headers=dict(case.good.headers))
    assert good.status_code == 200, good.get_data(as_text=True)
    assert good.get_json() == {"inserted": case.inserted, "duplicates": 0, "rejected": 0}
    retry = case.retry or case.good
    again = c.post(retry.path, data=retry.body, headers=dict(retry.headers))
    assert again.get_json() == {"inserted": 0, "duplicates": case.inserted, "rejected": 0}
    assert web_repository.dead_letters() == []


def test_unparseable_oversized_unknown_get() -> None:
    repo = CommHistory.in_memory()
    c = client([LineAdapter("s3cret", max_body_bytes=100)], repo)
    webhook = signed_webhook("line", {"events": 1}, "s3cret")
    answer = c.post("/webhooks/line", data=webhook.body, headers=dict(webhook.headers))
    assert (answer.status_code, answer.get_json()["rejected"]) == (200, 1)
    assert len(repo.dead_letters()) == 1
    assert c.post("/webhooks/line", data=b"x" * 101).status_code == 413
    assert c.post("/webhooks/nope", data=b"{}").status_code == 404
    assert c.get("/webhooks/line").status_code == 405
