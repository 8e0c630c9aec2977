"""How an address becomes a suppression key: its kind, its normalized form, entry ids.

.. versionadded:: 0.4.0
   Moved here from ``commhistory.consent._data``.
"""

from __future__ import annotations

import hashlib

from commhistory.errors import PayloadError
from commhistory.model import ADDRESS_KINDS, Channel, Purpose, SuppressionReason
from commhistory.normalize import normalize_email, normalize_line_user_id, normalize_phone
from commhistory.store.consent import AddressKey

__all__ = ["kind_of", "normalize_address", "suppression_id"]


def kind_of(channel: Channel) -> str | None:
    """The blind-index kind of a channel's addresses (``None``: not address-indexed)."""
    return ADDRESS_KINDS.get(channel)


def normalize_address(channel: Channel, address: str) -> tuple[str, str]:
    """Return ``(kind, normalized address)`` for a channel.

    Raises:
        PayloadError: The channel has no indexed addresses.
        NormalizationError: The address is invalid for the channel.
    """
    kind = kind_of(channel)
    if kind is None:
        raise PayloadError(field="channel", reason="channel has no address-level suppression")
    if not isinstance(address, str):
        raise PayloadError(field="address", reason="expected a string")
    if kind == "email":
        return kind, normalize_email(address)
    if kind == "phone":
        return kind, normalize_phone(address)
    return kind, normalize_line_user_id(address)


def suppression_id(
    key: AddressKey,
    channel: Channel,
    purpose: Purpose | None,
    reason: SuppressionReason,
    cause_id: str | None,
) -> str:
    """Derive a suppression entry's id from its content (idempotent feeding)."""
    parts = (
        key.kind,
        key.digest.hex(),
        channel.value,
        "*" if purpose is None else purpose.value,
        reason.value,
        cause_id or "",
    )
    return "sup:" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]
