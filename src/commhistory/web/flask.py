"""Flask receiver: a blueprint with one ``POST /<provider>`` endpoint per adapter.

::

    from commhistory.web.flask import webhook_blueprint

    app.register_blueprint(webhook_blueprint([sendgrid, twilio], repo), url_prefix="/webhooks")

Needs ``commhistory[flask]``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from commhistory.providers.base import WebhookAdapter, WebhookRequest
from commhistory.store.protocol import HistoryWriter
from commhistory.web import WebhookReceiver

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

    receiver = WebhookReceiver(adapters, repository)
    blueprint = Blueprint(name, __name__)

    def endpoint(provider: str) -> Response:
        incoming = WebhookRequest(
            body=request.get_data(cache=False),
            headers=list(request.headers.items()),
            url=request.url,
            method=request.method,
        )
        answer = receiver.receive(provider, incoming)
        response = jsonify(dict(answer.body))
        response.status_code = answer.status
        response.headers.update(dict(answer.headers))
        return response

    blueprint.add_url_rule("/<provider>", "webhook", endpoint, methods=["POST"])
    return blueprint
