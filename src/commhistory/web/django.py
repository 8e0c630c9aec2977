"""Django receiver: a view and URL patterns with one endpoint per adapter.

::

    # urls.py
    from django.urls import include, path
    from commhistory.web.django import webhook_urls

    urlpatterns = [path("webhooks/", include(webhook_urls([sendgrid, twilio], repo)))]

The view is CSRF-exempt (providers cannot send a CSRF token; each request is
authenticated by its signature instead). Needs ``commhistory[django]``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from commhistory.providers.base import WebhookAdapter, WebhookRequest
from commhistory.store.protocol import HistoryWriter
from commhistory.web import WebhookReceiver

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

    def view(request: HttpRequest, provider: str) -> HttpResponse:
        incoming = WebhookRequest(
            body=request.body,
            headers=list(request.headers.items()),
            url=request.build_absolute_uri(),
            method=request.method or "POST",
        )
        answer = receiver.receive(provider, incoming)
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
