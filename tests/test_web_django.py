"""The Django receiver, through Django's test client, into SQLite and PostgreSQL."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from commhistory.facade import CommHistory

pytest.importorskip("django")

import django  # type: ignore[import-untyped]
from django.conf import settings  # type: ignore[import-untyped]

if not settings.configured:
    settings.configure(
        ROOT_URLCONF="tests_django_urls",
        ALLOWED_HOSTS=["testserver"],
        MIDDLEWARE=["django.middleware.csrf.CsrfViewMiddleware"],
        DATABASES={},
        USE_TZ=True,
    )
    django.setup()

from django.test import Client  # type: ignore[import-untyped]
from django.urls import clear_url_caches, include, path  # type: ignore[import-untyped]

from commhistory.providers import KeyedContactResolver, LineAdapter, WebhookAdapter
from commhistory.store import HistoryWriter, SQLRepository
from commhistory.testing import signed_webhook
from commhistory.web.django import webhook_urls
from tests._big_body import HUGE, PEAK_BOUND, LazyStream, just_under_limit, peak_bytes
from tests._webhook_cases import CASES, CaseBuilder, web_repository

__all__ = ["web_repository"]

BASE = "http://testserver"
_URLS = types.ModuleType("tests_django_urls")
sys.modules["tests_django_urls"] = _URLS


def client(adapters: list[WebhookAdapter], repo: HistoryWriter) -> Any:
    _URLS.urlpatterns = [path("webhooks/", include(webhook_urls(adapters, repo)))]  # type: ignore[attr-defined]
    clear_url_caches()
    return Client(enforce_csrf_checks=True)


def post(c: Any, url: str, body: bytes, headers: dict[str, str]) -> Any:
    content_type = headers.pop("Content-Type", "application/octet-stream")
    return c.post(url, data=body, content_type=content_type, headers=headers)


@pytest.mark.parametrize("build", CASES, ids=lambda b: b.__name__.removesuffix("_case"))
def test_end_to_end(build: CaseBuilder, web_repository: CommHistory[SQLRepository]) -> None:
    case = build(BASE)
    c = client([case.adapter], web_repository)
    forged = post(c, case.forged.path, case.forged.body, dict(case.forged.headers))
    assert forged.status_code == case.refused_status
    good = post(c, case.good.path, case.good.body, dict(case.good.headers))
    assert good.status_code == 200, good.content
    assert good.json() == {"inserted": case.inserted, "duplicates": 0, "rejected": 0}
    retry = case.retry or case.good
    again = post(c, retry.path, retry.body, dict(retry.headers))
    assert again.json() == {"inserted": 0, "duplicates": case.inserted, "rejected": 0}
    assert web_repository.dead_letters() == []


def test_unparseable_oversized_unknown_get() -> None:
    repo = CommHistory.in_memory()
    c = client([LineAdapter("s3cret", max_body_bytes=100)], repo)
    webhook = signed_webhook("line", {"events": 1}, "s3cret")
    answer = post(c, "/webhooks/line", webhook.body, dict(webhook.headers))
    assert (answer.status_code, answer.json()["rejected"]) == (200, 1)
    assert post(c, "/webhooks/line", b"x" * 101, {}).status_code == 413
    assert post(c, "/webhooks/nope", b"{}", {}).status_code == 404
    assert c.get("/webhooks/line").status_code == 405


# --------------------------------------------------------------------------- body limits


@pytest.mark.parametrize("django_limit", ["default", "none"])
def test_huge_body_is_refused_without_buffering(django_limit: str) -> None:
    """Refused on Content-Length, unread, whatever DATA_UPLOAD_MAX_MEMORY_SIZE says."""
    from django.test import override_settings

    repo = CommHistory.in_memory()
    c = client([LineAdapter("s3cret")], repo)
    stream = LazyStream(HUGE)
    environ = {"wsgi.input": stream, "CONTENT_LENGTH": str(HUGE)}
    overrides = {} if django_limit == "default" else {"DATA_UPLOAD_MAX_MEMORY_SIZE": None}
    with override_settings(**overrides):
        answer, peak = peak_bytes(
            lambda: c.post("/webhooks/line", content_type="application/json", **environ)
        )
    assert answer.status_code == 413
    assert "larger than the limit" in answer.json()["error"]
    assert peak < PEAK_BOUND, f"peak {peak / 2**20:.1f} MiB while refusing {HUGE / 2**20:.0f} MiB"
    assert stream.read_bytes == 0
    assert repo.dead_letters() == []


def test_body_just_under_the_limit_is_stored() -> None:
    """Above Django's 2.5 MB DATA_UPLOAD_MAX_MEMORY_SIZE, within the adapter's 5 MiB."""
    repo = CommHistory.in_memory()
    adapter = LineAdapter("s3cret", contact_resolver=KeyedContactResolver(b"0123456789abcdef"))
    c = client([adapter], repo)
    webhook = just_under_limit("s3cret")
    answer = post(c, "/webhooks/line", webhook.body, dict(webhook.headers))
    assert answer.status_code == 200, answer.content
    assert answer.json() == {"inserted": 1, "duplicates": 0, "rejected": 0}
    over = post(c, "/webhooks/line", webhook.body + b" " * 100, dict(webhook.headers))
    assert over.status_code == 413
