"""Many threads at once: signed webhooks through the receivers into one repository.

The Starlette/FastAPI receivers call the repository in a thread pool, and Flask
and Django servers run views on many threads; all of them share the one
repository they were given. These tests post 16 threads x 20 signed webhooks at
once, on SQLite and PostgreSQL, and check that every record is stored exactly
once (see also ``tests/test_store_threads.py``).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from commhistory.facade import CommHistory
from commhistory.providers import KeyedContactResolver, LineAdapter
from commhistory.store import SQLRepository
from commhistory.testing import SignedWebhook, signed_webhook
from tests._webhook_cases import web_repository

__all__ = ["web_repository"]

THREADS = 16
REQUESTS = 20
USERS = 8
SECRET = "thread-secret"
RESOLVER = KeyedContactResolver(b"thread-test-resolver-key")


@pytest.fixture(autouse=True)
def _switch_often() -> Iterator[None]:
    """Let the interpreter switch threads far more often than every 5 ms."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _line_body(t: int, i: int) -> dict[str, Any]:
    user = f"U{(t * REQUESTS + i) % USERS:032x}"  # contacts shared across threads

    def event(kind: str, n: int, extra: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": kind,
            "mode": "active",
            "timestamp": 1775001600000 + n,
            "source": {"type": "user", "userId": user},
            "webhookEventId": f"01HX{t:04d}{i:04d}{n:018d}",
            "deliveryContext": {"isRedelivery": False},
            "replyToken": f"r{n}",
            **extra,
        }

    return {
        "destination": "Uaaaabbbbccccddddeeeeffff00001111",
        "events": [
            event("message", 1, {"message": {"id": f"9{t:04d}{i:04d}", "type": "text"}}),
            event("postback", 2, {"postback": {"data": f"thread={t}&request={i}"}}),
        ],
    }


def _requests() -> list[list[SignedWebhook]]:
    return [
        [signed_webhook("line", _line_body(t, i), SECRET) for i in range(REQUESTS)]
        for t in range(THREADS)
    ]


def _stored(repo: CommHistory[SQLRepository], table: str) -> int:
    with repo.store.engine.connect() as conn:
        return int(conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one())


Post = Callable[[SignedWebhook], tuple[int, dict[str, Any]]]


def _post_from_threads(make_post: Callable[[], Post]) -> list[tuple[int, dict[str, Any]]]:
    """Each thread makes its own client (the app and repository are shared) and posts."""
    plan = _requests()
    start = threading.Barrier(THREADS)

    def run(t: int) -> list[tuple[int, dict[str, Any]]]:
        post = make_post()
        start.wait()
        return [post(webhook) for webhook in plan[t]]

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(run, range(THREADS)))  # re-raises any thread's exception
    return [answer for per_thread in results for answer in per_thread]


def _check(answers: list[tuple[int, dict[str, Any]]], repo: CommHistory[SQLRepository]) -> None:
    assert [status for status, _ in answers] == [200] * THREADS * REQUESTS, answers
    assert {body["rejected"] for _, body in answers} == {0}
    assert sum(body["inserted"] for _, body in answers) == THREADS * REQUESTS * 2
    assert _stored(repo, "messages") == THREADS * REQUESTS * 2
    assert _stored(repo, "contacts") == USERS
    assert repo.dead_letters() == []


def test_starlette_many_threads(web_repository: CommHistory[SQLRepository]) -> None:
    pytest.importorskip("starlette")
    pytest.importorskip("httpx2")
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.testclient import TestClient

    from commhistory.web.starlette import webhook_app

    adapter = LineAdapter(SECRET, contact_resolver=RESOLVER)
    app = Starlette(routes=[Mount("/webhooks", app=webhook_app([adapter], web_repository))])

    def make_post() -> Post:
        client = TestClient(app)

        def post(webhook: SignedWebhook) -> tuple[int, dict[str, Any]]:
            answer = client.post(
                "/webhooks/line", content=webhook.body, headers=dict(webhook.headers)
            )
            return answer.status_code, answer.json()

        return post

    _check(_post_from_threads(make_post), web_repository)
    again = _post_from_threads(make_post)  # every provider retry is a duplicate
    assert sum(body["inserted"] for _, body in again) == 0
    assert _stored(web_repository, "messages") == THREADS * REQUESTS * 2


def test_flask_many_threads(web_repository: CommHistory[SQLRepository]) -> None:
    pytest.importorskip("flask")
    import flask

    from commhistory.web.flask import webhook_blueprint

    adapter = LineAdapter(SECRET, contact_resolver=RESOLVER)
    app = flask.Flask("threads")
    app.register_blueprint(webhook_blueprint([adapter], web_repository), url_prefix="/webhooks")

    def make_post() -> Post:
        client = app.test_client()

        def post(webhook: SignedWebhook) -> tuple[int, dict[str, Any]]:
            answer = client.post(
                "/webhooks/line", data=webhook.body, headers=dict(webhook.headers)
            )
            return answer.status_code, answer.get_json()

        return post

    _check(_post_from_threads(make_post), web_repository)
