"""The Flask receiver, through Flask's test client, into SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from commhistory.facade import CommHistory

pytest.importorskip("flask")

import flask
from flask.testing import FlaskClient

from commhistory.providers import KeyedContactResolver, LineAdapter, WebhookAdapter
from commhistory.store import HistoryWriter, SQLRepository
from commhistory.testing import signed_webhook
from commhistory.web.flask import webhook_blueprint
from tests._big_body import HUGE, LIMIT, PEAK_BOUND, LazyStream, just_under_limit, peak_bytes
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


# --------------------------------------------------------------------------- body limits


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_huge_body_is_refused_without_buffering(framing: str) -> None:
    """Announced (Content-Length) or streamed (chunked, ``wsgi.input_terminated``)."""
    repo = CommHistory.in_memory()
    c = client([LineAdapter("s3cret")], repo)
    stream = LazyStream(HUGE)
    headers, environ = {}, {}
    if framing == "chunked":
        # No usable length (the test client derives Content-Length from the
        # stream; announce 0, which chunked encoding overrides): read until the limit.
        stream = LazyStream(HUGE, announced=0)
        headers = {"Transfer-Encoding": "chunked"}
        environ = {"wsgi.input_terminated": True}  # what a server that de-chunks sets

    def post() -> Any:
        return c.post(
            "/webhooks/line", input_stream=stream, headers=headers, environ_overrides=environ
        )

    answer, peak = peak_bytes(post)
    assert answer.status_code == 413
    assert "larger than the limit" in answer.get_json()["error"]
    assert peak < PEAK_BOUND, f"peak {peak / 2**20:.1f} MiB while refusing {HUGE / 2**20:.0f} MiB"
    if framing == "content-length":
        assert stream.read_bytes == 0  # refused on the header alone
    else:
        assert LIMIT < stream.read_bytes <= LIMIT + 64 * 1024
    assert repo.dead_letters() == []


def test_flask_max_content_length_is_answered_as_json_413() -> None:
    app = flask.Flask("test")
    app.config["MAX_CONTENT_LENGTH"] = 1000
    app.register_blueprint(
        webhook_blueprint([LineAdapter("s3cret")], CommHistory.in_memory()), url_prefix="/webhooks"
    )
    answer = app.test_client().post("/webhooks/line", data=b"x" * 2000)
    assert answer.status_code == 413
    assert "error" in answer.get_json()


def test_body_just_under_the_limit_is_stored() -> None:
    repo = CommHistory.in_memory()
    adapter = LineAdapter("s3cret", contact_resolver=KeyedContactResolver(b"0123456789abcdef"))
    c = client([adapter], repo)
    webhook = just_under_limit("s3cret")
    answer = c.post("/webhooks/line", data=webhook.body, headers=dict(webhook.headers))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json() == {"inserted": 1, "duplicates": 0, "rejected": 0}
    over = c.post("/webhooks/line", data=webhook.body + b" " * 100, headers=dict(webhook.headers))
    assert over.status_code == 413
