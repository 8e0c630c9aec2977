"""Starlette and FastAPI receivers: one ``POST /{provider}`` route per adapter.

Starlette::

    from starlette.applications import Starlette
    from starlette.routing import Mount
    from commhistory.web.starlette import webhook_app

    app = Starlette(routes=[Mount("/webhooks", app=webhook_app([sendgrid, twilio], repo))])

FastAPI::

    from commhistory.web.starlette import webhook_router

    app.include_router(webhook_router([sendgrid, twilio], repo), prefix="/webhooks")

The body is read from ``request.stream()`` against the adapter's limit and
refused (413) as soon as it crosses it, or before reading when
``Content-Length`` announces more; see :mod:`commhistory.web`.

The repository is called in Starlette's thread pool, so a blocking database
driver does not stall the event loop. Needs ``commhistory[fastapi]``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from commhistory.providers.base import WebhookAdapter, WebhookRequest
from commhistory.store.protocol import HistoryWriter
from commhistory.web import WebhookReceiver, read_body_async

if TYPE_CHECKING:
    from fastapi import APIRouter
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

__all__ = ["webhook_app", "webhook_router", "webhook_routes"]


def _endpoint(receiver: WebhookReceiver, provider: str) -> Any:
    from starlette.concurrency import run_in_threadpool  # noqa: PLC0415
    from starlette.requests import Request as RuntimeRequest  # noqa: PLC0415
    from starlette.responses import JSONResponse  # noqa: PLC0415
    from starlette.responses import Response as RuntimeResponse  # noqa: PLC0415

    limit = receiver.body_limit(provider) or 0

    async def endpoint(request: Request) -> Response:
        early = receiver.before_body(
            provider, request.method, request.headers.get("content-length")
        )
        if early is None:
            async with aclosing(request.stream()) as chunks:
                body = await read_body_async(chunks, limit)
            if body is not None:
                return await _answer(request, body)
            early = receiver.too_large(provider)
        return JSONResponse(
            dict(early.body), status_code=early.status, headers=dict(early.headers)
        )

    async def _answer(request: Request, body: bytes) -> Response:
        incoming = WebhookRequest(
            body=body,
            headers=list(request.headers.items()),
            url=str(request.url),
            method=request.method,
        )
        answer = await run_in_threadpool(receiver.receive, provider, incoming)
        return JSONResponse(
            dict(answer.body), status_code=answer.status, headers=dict(answer.headers)
        )

    endpoint.__name__ = f"commhistory_webhook_{provider}"
    # FastAPI reads annotations at runtime to inject the request; give it real classes.
    endpoint.__annotations__ = {"request": RuntimeRequest, "return": RuntimeResponse}
    return endpoint


def webhook_routes(
    adapters: Iterable[WebhookAdapter] | Mapping[str, WebhookAdapter], repository: HistoryWriter
) -> list[Route]:
    """Return one Starlette ``Route`` per adapter, at ``/{provider}``.

    Args:
        adapters: The adapters (served at their names, or at the mapping's keys).
        repository: Where records are stored.

    Returns:
        Routes to put in a Starlette app or router.
    """
    from starlette.routing import Route  # noqa: PLC0415

    receiver = WebhookReceiver(adapters, repository)
    return [
        Route(f"/{name}", _endpoint(receiver, name), methods=["POST"], name=f"webhook_{name}")
        for name in receiver.adapters
    ]


def webhook_app(
    adapters: Iterable[WebhookAdapter] | Mapping[str, WebhookAdapter], repository: HistoryWriter
) -> Starlette:
    """Return a Starlette app serving the webhook routes (mount it anywhere).

    Args:
        adapters: The adapters.
        repository: Where records are stored.
    """
    from starlette.applications import Starlette  # noqa: PLC0415

    return Starlette(routes=webhook_routes(adapters, repository))


def webhook_router(
    adapters: Iterable[WebhookAdapter] | Mapping[str, WebhookAdapter], repository: HistoryWriter
) -> APIRouter:
    """Return a FastAPI ``APIRouter`` with one ``POST /{provider}`` route per adapter.

    The routes are left out of the OpenAPI schema (providers, not people, call them).

    Args:
        adapters: The adapters.
        repository: Where records are stored.
    """
    from fastapi import APIRouter  # noqa: PLC0415

    receiver = WebhookReceiver(adapters, repository)
    router = APIRouter()
    for name in receiver.adapters:
        router.add_api_route(
            f"/{name}",
            _endpoint(receiver, name),
            methods=["POST"],
            name=f"webhook_{name}",
            include_in_schema=False,
        )
    return router
