"""The consent feed: what each stored batch implies for suppression and consent.

The facade installs :func:`batch_feed` on its repository
(``set_batch_feed("consent", ...)``). The repository calls it inside every write
batch's transaction with a :class:`~commhistory.store.protocol.StoredBatch`;
the rules here turn the batch's bounces, complaints, unsubscribes, SMS and
WhatsApp keywords and LINE follows and unfollows into suppression entries and
ledger events, written through the
repository's :class:`~commhistory.store.consent.ConsentStore`, so a batch and
what it implies are stored together or not at all.

.. versionadded:: 0.4.0
   Replaces ``commhistory.consent._feed``, which read the tables itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from commhistory.consent.suppression import KEYWORD_CHANNELS, apply_feed, signals
from commhistory.model import Channel, Direction, EventType
from commhistory.store.consent import ConsentStore
from commhistory.store.protocol import BatchFeed, StoredBatch

__all__ = ["CONSENT_CHANNELS", "INTERESTING", "batch_feed", "feed"]

INTERESTING: Final = frozenset(
    {EventType.BOUNCED, EventType.COMPLAINED, EventType.UNSUBSCRIBED, EventType.SUBSCRIBED}
)
"""The event types that can change suppression or consent."""

CONSENT_CHANNELS: Final = KEYWORD_CHANNELS | {Channel.LINE}
"""The channels whose consent events the rules read (keyword dedupe, LINE follows)."""


def feed(store: ConsentStore, batch: StoredBatch, *, soft_bounce_limit: int) -> list[str]:
    """Apply what one stored batch implies; return the ids of what changed.

    Args:
        store: The repository's consent store.
        batch: The batch, inside its transaction.
        soft_bounce_limit: Consecutive soft bounces that suppress an address.

    Returns:
        See :func:`~commhistory.consent.suppression.apply_feed`.
    """
    consents = [c for c in batch.consents if c.channel in CONSENT_CHANNELS]
    if (
        not batch.messages
        and not consents
        and not any(e.type in INTERESTING for e in batch.events)
    ):
        return []
    pairs = batch.reactions(INTERESTING)
    inbound = [
        m
        for m in batch.messages
        if m.direction is Direction.INBOUND and m.channel in KEYWORD_CHANNELS
    ]
    if not pairs and not inbound and not consents:
        return []
    return apply_feed(
        store,
        signals(pairs, inbound, consents),
        outcomes=batch.deliveries,
        soft_bounce_limit=soft_bounce_limit,
    )


def batch_feed(store: ConsentStore, soft_bounce_limit: Callable[[], int]) -> BatchFeed:
    """Return the feed to install on a repository whose consent store is *store*.

    Args:
        store: The repository's consent store.
        soft_bounce_limit: Read at each batch (the facade's setting may change).
    """

    def run(batch: StoredBatch) -> list[str]:
        return feed(store, batch, soft_bounce_limit=soft_bounce_limit())

    return run
