"""Django receiver: a view and URL patterns with one endpoint per adapter.

::

    # urls.py
    from django.urls import include, path
    from commhistory.web.django import webhook_urls

    urlpatterns = [path("webhooks/", include(webhook_urls([sendgrid, twilio], repo)))]

The view is CSRF-exempt (providers cannot send a CSRF token; each request is
authenticated by its signature instead). Needs ``commhistory[django]``.

The view reads the body itself, with ``request.read()`` in chunks against the
adapter's limit (5 MiB by default), in place of Django's
``DATA_UPLOAD_MAX_MEMORY_SIZE`` check on ``request.body`` (2.5 MB by
default, which would refuse valid webhooks between the two): a
``CONTENT_LENGTH`` over the limit is answered 413 unread, and reading stops at
the limit. Under ASGI, Django itself spools the whole body to a temporary file
(in memory up to ``FILE_UPLOAD_MAX_MEMORY_SIZE``) before any view runs: cap
request sizes at the server or proxy there.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from commhistory.providers.base import WebhookAdapter, WebhookRequest
from commhistory.store.protocol import HistoryWriter
from commhistory.web import WebhookReceiver, WebhookResponse, read_body

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponse  # type: ignore[import-untyped]

__all__ = ["webhook_urls", "webhook_view"]


def webhook_view(
    adapters: Iterable[WebhookAdapter] | Mapping[str, WebhookAdapter], repository: HistoryWriter
) -> Callable[..., HttpResponse]:
    """Return a Django view ``view(request, provider)`` serving every adapter.

    Args:
        adapters: The adapters (served at their names, or at the mapping's keys).
        repository: Where records are stored.
    """
    from django.http import JsonResponse  # noqa: PLC0415
    from django.views.decorators.csrf import (  # type: ignore[import-untyped]  # noqa: PLC0415
        csrf_exempt,
    )

    receiver = WebhookReceiver(adapters, repository)

    def answer_for(request: HttpRequest, provider: str) -> WebhookResponse:
        method = request.method or "POST"
        early = receiver.before_body(provider, method, request.META.get("CONTENT_LENGTH"))
        if early is not None:
            return early
        body = read_body(request.read, receiver.body_limit(provider) or 0)
        if body is None:
            return receiver.too_large(provider)
        incoming = WebhookRequest(
            body=body,
            headers=list(request.headers.items()),
            url=request.build_absolute_uri(),
            method=method,
        )
        return receiver.receive(provider, incoming)

    def view(request: HttpRequest, provider: str) -> HttpResponse:
        answer = answer_for(request, provider)
        response = JsonResponse(dict(answer.body), status=answer.status)
        for key, value in answer.headers.items():
            response[key] = value
        return response

    exempt: Callable[..., HttpResponse] = csrf_exempt(view)
    return exempt


def webhook_urls(
    adapters: Iterable[WebhookAdapter] | Mapping[str, WebhookAdapter], repository: HistoryWriter
) -> list[Any]:
    """Return URL patterns (``<provider>``) for :func:`webhook_view`; ``include()`` them.

    Args:
        adapters: The adapters.
        repository: Where records are stored.
    """
    from django.urls import path  # type: ignore[import-untyped]  # noqa: PLC0415

    return [path("<str:provider>", webhook_view(adapters, repository), name="commhistory_webhook")]
