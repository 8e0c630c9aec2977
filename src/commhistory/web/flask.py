"""Flask receiver: a blueprint with one ``POST /<provider>`` endpoint per adapter.

::

    from commhistory.web.flask import webhook_blueprint

    app.register_blueprint(webhook_blueprint([sendgrid, twilio], repo), url_prefix="/webhooks")

The body is read from ``request.stream`` in chunks against the adapter's
limit: a ``Content-Length`` over it is answered 413 unread, and a streamed
(chunked) body as soon as it crosses it. A chunked body reaches the view only
when the WSGI server de-chunks it and sets ``wsgi.input_terminated``
(Werkzeug's rule). Flask's own ``MAX_CONTENT_LENGTH``, when lower, also answers
413. Needs ``commhistory[flask]``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from commhistory.providers.base import WebhookAdapter, WebhookRequest
from commhistory.store.protocol import HistoryWriter
from commhistory.web import WebhookReceiver, WebhookResponse, read_body

if TYPE_CHECKING:
    from flask import Blueprint, Response

__all__ = ["webhook_blueprint"]


def webhook_blueprint(
    adapters: Iterable[WebhookAdapter] | Mapping[str, WebhookAdapter],
    repository: HistoryWriter,
    *,
    name: str = "commhistory_webhooks",
) -> Blueprint:
    """Return a Flask blueprint serving ``POST /<provider>`` for each adapter.

    Args:
        adapters: The adapters (served at their names, or at the mapping's keys).
        repository: Where records are stored.
        name: The blueprint's name.
    """
    from flask import Blueprint, jsonify, request  # noqa: PLC0415
    from werkzeug.exceptions import RequestEntityTooLarge  # noqa: PLC0415

    receiver = WebhookReceiver(adapters, repository)
    blueprint = Blueprint(name, __name__)

    def answer_for(provider: str) -> WebhookResponse:
        early = receiver.before_body(
            provider, request.method, request.headers.get("Content-Length")
        )
        if early is not None:
            return early
        try:
            body = read_body(request.stream.read, receiver.body_limit(provider) or 0)
        except RequestEntityTooLarge:  # the app's MAX_CONTENT_LENGTH
            body = None
        if body is None:
            return receiver.too_large(provider)
        incoming = WebhookRequest(
            body=body,
            headers=list(request.headers.items()),
            url=request.url,
            method=request.method,
        )
        return receiver.receive(provider, incoming)

    def endpoint(provider: str) -> Response:
        answer = answer_for(provider)
        response = jsonify(dict(answer.body))
        response.status_code = answer.status
        response.headers.update(dict(answer.headers))
        return response

    blueprint.add_url_rule("/<provider>", "webhook", endpoint, methods=["POST"])
    return blueprint
