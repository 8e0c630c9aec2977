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

**Bodies are read in chunks against the adapter's limit**
(``max_body_bytes``, 5 MiB by default), never buffered whole first: a
``Content-Length`` over the limit is answered 413 before any of the body is
read, and a body that crosses the limit while it streams in (chunked, or a
wrong length) is answered 413 as soon as it does. A receiver holds at most the
limit plus one chunk of a request body (:func:`read_body`,
:func:`read_body_async`). An unknown provider is answered 404, a method
other than POST 405, both before reading.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterable, Callable, Iterable, Mapping
from typing import Any, Final

import attrs

from commhistory.errors import PayloadError, SignatureError, StorageError
from commhistory.providers.base import WebhookAdapter, WebhookRequest
from commhistory.store.protocol import HistoryWriter

__all__ = [
    "READ_CHUNK_BYTES",
    "WebhookReceiver",
    "WebhookResponse",
    "read_body",
    "read_body_async",
]

_log = logging.getLogger("commhistory.web")

READ_CHUNK_BYTES: Final = 64 * 1024
"""How much of a body the WSGI receivers (Flask, Django) read at a time."""


def read_body(
    read: Callable[[int], bytes], limit: int, *, chunk_size: int = READ_CHUNK_BYTES
) -> bytes | None:
    """Read a body in chunks; ``None`` as soon as it is longer than *limit*.

    Holds at most *limit* plus one chunk, however long the body is.

    Args:
        read: Reads up to ``n`` bytes (``b""`` at the end), like a file's ``read``.
        limit: The most bytes accepted.
        chunk_size: How many bytes to ask for at a time.

    Returns:
        The body, or ``None`` when it is longer than *limit* (the rest is left unread).

    .. versionadded:: 0.4.0
    """
    buffer = io.BytesIO()
    size = 0
    while True:
        chunk = read(min(chunk_size, limit - size + 1))
        if not chunk:
            return buffer.getvalue()
        size += len(chunk)
        if size > limit:
            return None
        buffer.write(chunk)


async def read_body_async(chunks: AsyncIterable[bytes], limit: int) -> bytes | None:
    """Collect a streamed body; ``None`` as soon as it is longer than *limit*.

    Holds at most *limit* plus the chunk being looked at (the server decides
    chunk sizes). Stops pulling chunks at the limit.

    Args:
        chunks: The body's chunks (Starlette's ``request.stream()``).
        limit: The most bytes accepted.

    Returns:
        The body, or ``None`` when it is longer than *limit*.

    .. versionadded:: 0.4.0
    """
    buffer = io.BytesIO()
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            return None
        buffer.write(chunk)
    return buffer.getvalue()


def _content_length(value: str | None) -> int | None:
    if value is None:
        return None
    text = value.strip()
    return int(text) if text.isdigit() else None


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

    def body_limit(self, provider: str) -> int | None:
        """Return the largest body *provider*'s adapter accepts (``None``: no such provider).

        .. versionadded:: 0.4.0
        """
        adapter = self.adapters.get(provider)
        return None if adapter is None else adapter.max_body_bytes

    def before_body(
        self, provider: str, method: str, content_length: str | None = None
    ) -> WebhookResponse | None:
        """Answer what can be answered before reading the body, or ``None`` to read it.

        Args:
            provider: The path segment the request arrived at.
            method: The HTTP method.
            content_length: The ``Content-Length`` header, if any.

        Returns:
            404 for an unknown provider, 405 for a method other than POST, 413
            when ``Content-Length`` announces more than the limit; else ``None``.

        .. versionadded:: 0.4.0
        """
        limit = self.body_limit(provider)
        if limit is None:
            return WebhookResponse(status=404, body={"error": "unknown provider"})
        if method.upper() != "POST":
            return WebhookResponse(
                status=405, body={"error": "use POST"}, headers={"Allow": "POST"}
            )
        announced = _content_length(content_length)
        if announced is not None and announced > limit:
            return self.too_large(provider)
        return None

    def too_large(self, provider: str) -> WebhookResponse:
        """The 413 answer for a body over *provider*'s limit.

        .. versionadded:: 0.4.0
        """
        limit = self.body_limit(provider)
        exc = PayloadError(field="<body>", reason=f"larger than the limit of {limit} bytes")
        _log.warning("webhook %s refused: %s", provider, exc)
        return WebhookResponse(status=413, body={"error": str(exc)})

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
