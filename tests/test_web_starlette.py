"""The Starlette and FastAPI receivers, through their own test clients, into SQLite/Postgres."""

from __future__ import annotations

import pytest

from commhistory.facade import CommHistory

pytest.importorskip("starlette")
pytest.importorskip("httpx2")

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from commhistory.store import HistoryWriter, SQLRepository
from commhistory.web.starlette import webhook_app, webhook_router
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
