"""The Starlette and FastAPI receivers, through their own test clients, into SQLite/Postgres."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from commhistory.facade import CommHistory

pytest.importorskip("starlette")
pytest.importorskip("httpx2")

import httpx2
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from commhistory.store import HistoryWriter, SQLRepository
from commhistory.web.starlette import webhook_app, webhook_router
from tests._big_body import HUGE, PEAK_BOUND, achunks, just_under_limit, peak_bytes
from tests._webhook_cases import CASES, CaseBuilder, web_repository

__all__ = ["web_repository"]

BASE = "http://testserver"


def starlette_client(case_adapters: list, repo: HistoryWriter) -> TestClient:  # type: ignore[type-arg]
    app = Starlette(routes=[Mount("/webhooks", app=webhook_app(case_adapters, repo))])
    return TestClient(app)


def fastapi_client(case_adapters: list, repo: HistoryWriter) -> TestClient:  # type: ignore[type-arg]
    app = FastAPI()
    app.include_router(webhook_router(case_adapters, repo), prefix="/webhooks")
    return TestClient(app)


CLIENTS = {"starlette": starlette_client, "fastapi": fastapi_client}


@pytest.mark.parametrize("framework", sorted(CLIENTS))
@pytest.mark.parametrize("build", CASES, ids=lambda b: b.__name__.removesuffix("_case"))
def test_end_to_end(
    framework: str, build: CaseBuilder, web_repository: CommHistory[SQLRepository]
) -> None:
    case = build(BASE)
    client = CLIENTS[framework]([case.adapter], web_repository)
    forged = client.post(
        case.forged.path, content=case.forged.body, headers=dict(case.forged.headers)
    )
    assert forged.status_code == case.refused_status
    assert "error" in forged.json()
    good = client.post(case.good.path, content=case.good.body, headers=dict(case.good.headers))
    assert good.status_code == 200, good.text
    assert good.json() == {"inserted": case.inserted, "duplicates": 0, "rejected": 0}
    retry = case.retry or case.good
    again = client.post(retry.path, content=retry.body, headers=dict(retry.headers))
    assert again.json() == {"inserted": 0, "duplicates": case.inserted, "rejected": 0}
    if case.retry is not None:  # the very same request again is a replay
        replay = client.post(
            case.good.path, content=case.good.body, headers=dict(case.good.headers)
        )
        assert replay.status_code == case.refused_status
    assert web_repository.dead_letters() == []


@pytest.mark.parametrize("framework", sorted(CLIENTS))
def test_unparseable_verified_body_is_kept_and_answered_2xx(framework: str) -> None:
    from commhistory.providers import LineAdapter
    from commhistory.testing import signed_webhook

    repo = CommHistory.in_memory()
    client = CLIENTS[framework]([LineAdapter("s3cret")], repo)
    webhook = signed_webhook("line", {"events": "not a list"}, "s3cret")
    answer = client.post("/webhooks/line", content=webhook.body, headers=dict(webhook.headers))
    assert answer.status_code == 200
    assert answer.json()["rejected"] == 1
    [letter] = repo.dead_letters(source="webhook:line")
    assert letter.field == "events"


@pytest.mark.parametrize("framework", sorted(CLIENTS))
def test_oversized_unknown_and_get(framework: str) -> None:
    from commhistory.providers import LineAdapter

    repo = CommHistory.in_memory()
    client = CLIENTS[framework]([LineAdapter("s3cret", max_body_bytes=10)], repo)
    assert client.post("/webhooks/line", content=b"x" * 11).status_code == 413
    assert client.post("/webhooks/nope", content=b"{}").status_code == 404
    assert client.get("/webhooks/line").status_code == 405


# --------------------------------------------------------------------------- body limits


def _asgi_app(framework: str, adapters: list, repo: HistoryWriter) -> Any:  # type: ignore[type-arg]
    if framework == "fastapi":
        app = FastAPI()
        app.include_router(webhook_router(adapters, repo), prefix="/webhooks")
        return app
    return Starlette(routes=[Mount("/webhooks", app=webhook_app(adapters, repo))])


def _post_streamed(app: Any, content: Any, headers: dict[str, str] | None = None) -> Any:
    """POST through httpx's ASGI transport, which streams the body chunk by chunk.

    (Starlette's ``TestClient`` reads a streamed body into memory before the app
    sees it, so it cannot show what the app holds.)
    """

    async def post() -> Any:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url=BASE) as client:
            return await client.post("/webhooks/line", content=content, headers=headers)

    return asyncio.run(post())


@pytest.mark.parametrize("framework", sorted(CLIENTS))
def test_huge_streamed_body_is_refused_without_buffering(framework: str) -> None:
    from commhistory.providers import LineAdapter

    repo = CommHistory.in_memory()
    app = _asgi_app(framework, [LineAdapter("s3cret")], repo)
    answer, peak = peak_bytes(lambda: _post_streamed(app, achunks(HUGE)))
    assert answer.status_code == 413
    assert "larger than the limit" in answer.json()["error"]
    assert peak < PEAK_BOUND, f"peak {peak / 2**20:.1f} MiB while refusing {HUGE / 2**20:.0f} MiB"
    assert repo.dead_letters() == []


@pytest.mark.parametrize("framework", sorted(CLIENTS))
def test_announced_content_length_over_the_limit_is_refused_unread(framework: str) -> None:
    from commhistory.providers import LineAdapter

    pulled = 0

    async def counted() -> AsyncIterator[bytes]:
        nonlocal pulled
        async for piece in achunks(HUGE):
            pulled += 1
            yield piece

    app = _asgi_app(framework, [LineAdapter("s3cret")], CommHistory.in_memory())
    answer = _post_streamed(app, counted(), {"Content-Length": str(HUGE)})
    assert answer.status_code == 413
    assert pulled == 0


@pytest.mark.parametrize("framework", sorted(CLIENTS))
def test_body_just_under_the_limit_is_stored(framework: str) -> None:
    from commhistory.providers import KeyedContactResolver, LineAdapter

    repo = CommHistory.in_memory()
    adapter = LineAdapter("s3cret", contact_resolver=KeyedContactResolver(b"0123456789abcdef"))
    client = CLIENTS[framework]([adapter], repo)
    webhook = just_under_limit("s3cret")
    answer = client.post("/webhooks/line", content=webhook.body, headers=dict(webhook.headers))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"inserted": 1, "duplicates": 0, "rejected": 0}
    over = client.post(
        "/webhooks/line", content=webhook.body + b" " * 100, headers=dict(webhook.headers)
    )
    assert over.status_code == 413
