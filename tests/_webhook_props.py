"""Shared property checks for provider parsers: records or PayloadError, nothing else."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from commhistory.errors import PayloadError
from commhistory.model import ConsentEvent, Event, Message
from commhistory.providers.base import WebhookAdapter, WebhookRequest

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)


def parse_or_payload_error(adapter: WebhookAdapter, body: bytes, **request: Any) -> None:
    """Parse *body*; the outcome must be canonical records/errors or a PayloadError."""
    try:
        result = adapter.parse(WebhookRequest(body=body, **request))
    except PayloadError:
        return
    for line in result.lines:
        if line.record is not None:
            assert isinstance(line.record, Message | Event | ConsentEvent)
        else:
            assert isinstance(line.error, PayloadError | ValueError)
            json.dumps(line.raw)  # the raw text is kept and serialisable


def mutate_keys(event: dict[str, Any], value: Any, key: str) -> dict[str, Any]:
    out = dict(event)
    out[key] = value
    return out
