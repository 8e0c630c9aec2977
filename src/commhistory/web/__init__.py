"""Web receivers: mount one webhook endpoint per configured provider.

The framework integrations (:mod:`commhistory.web.starlette` for Starlette and
FastAPI, :mod:`commhistory.web.flask`, :mod:`commhistory.web.django`) are thin
shells around :class:`WebhookReceiver`, which decides every answer:

========================================  =======  ===================================
outcome                                   status   body
========================================  =======  ===================================
stored (some items may be dead letters)   200      ``{"inserted", "duplicates", "rejected"}``
verified, body unparseable                200      the same (kept as one dead letter)
signature, credentials or time refused    401/403  ``{"error": "<why>"}``
body larger than the limit                413      ``{"error": "<why>"}``
unknown provider / wrong method           404/405
storage failed                            503      the provider retries later
========================================  =======  ===================================

The framework modules import their framework lazily, so the core installs
without any of them (extras ``commhistory[fastapi]``, ``[flask]``, ``[django]``).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from commhistory.errors import PayloadError, SignatureError, StorageError
from commhistory.providers.base import WebhookAdapter, WebhookRequest
from commhistory.store.protocol import HistoryWriter

__all__ = ["WebhookReceiver", "WebhookResponse"]

_log = logging.getLogger("commhistory.web")


@attrs.frozen(kw_only=True)
class WebhookResponse:
    """The answer to give a provider.

    Attributes:
        status: The HTTP status code.
        body: A small JSON object (counts, or the reason for a refusal).
        headers: Extra response headers.
    """

    status: int
    body: Mapping[str, Any]
    headers: Mapping[str, str] = attrs.field(factory=dict)


class WebhookReceiver:
    """Routes provider requests to their adapters and the repository.

    Args:
        adapters: The adapters; each is served at its provider name, or at the
            key when a mapping ``{path segment: adapter}`` is given.
        repository: Where records are stored.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        adapters: Iterable[WebhookAdapter] | Mapping[str, WebhookAdapter],
        repository: HistoryWriter,
    ) -> None:
        if isinstance(adapters, Mapping):
            self.adapters: dict[str, WebhookAdapter] = dict(adapters)
        else:
            self.adapters = {a.name: a for a in adapters}
        self.repository = repository

    def __repr__(self) -> str:
        return f"WebhookReceiver(providers={sorted(self.adapters)})"

    def receive(self, provider: str, request: WebhookRequest) -> WebhookResponse:
        """Verify, parse and store one request; return the answer for the provider.

        Args:
            provider: The path segment the request arrived at.
            request: The request.

        Returns:
            The response to send (never raises for bad input).

        Raises:
            StorageError: Never; a storage failure is answered 503 so the
                provider retries.
        """
        adapter = self.adapters.get(provider)
        if adapter is None:
            return WebhookResponse(status=404, body={"error": "unknown provider"})
        if request.method.upper() != "POST":
            return WebhookResponse(
                status=405, body={"error": "use POST"}, headers={"Allow": "POST"}
            )
        try:
            outcome = adapter.handle(request, self.repository)
        except SignatureError as exc:
            _log.warning("webhook %s refused: %s", provider, exc)
            headers = {}
            if adapter.auth_failure_status == 401:
                headers["WWW-Authenticate"] = 'Basic realm="commhistory"'
            return WebhookResponse(
                status=adapter.auth_failure_status, body={"error": str(exc)}, headers=headers
            )
        except PayloadError as exc:
            _log.warning("webhook %s refused: %s", provider, exc)
            return WebhookResponse(status=413, body={"error": str(exc)})
        except StorageError as exc:
            _log.error("webhook %s not stored: %s", provider, type(exc).__name__)
            return WebhookResponse(status=503, body={"error": "storage unavailable; retry"})
        report = outcome.report
        return WebhookResponse(
            status=200,
            body={
                "inserted": report.inserted,
                "duplicates": report.duplicates,
                "rejected": report.rejected,
            },
        )
