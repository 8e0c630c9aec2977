"""Consent and privacy methods shared by every repository that ships here.

They are thin: each delegates to :mod:`commhistory.consent` or
:mod:`commhistory.privacy`, which work against any repository through the
store's data access. One definition serves :class:`~commhistory.SQLRepository`
and :class:`~commhistory.MemoryRepository`.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from commhistory.consent import ConsentLedger, SendDecision, SuppressionList
    from commhistory.model import Channel, Purpose
    from commhistory.privacy import ErasureReport

__all__ = ["ComplianceMethods"]


class ComplianceMethods:
    """Mixin: ``consent``, ``suppression``, ``can_send``, ``filter_sendable``, export, erasure."""

    __slots__ = ()

    @property
    def consent(self) -> ConsentLedger:
        """The consent ledger (see :class:`~commhistory.consent.ConsentLedger`)."""
        from commhistory.consent import ConsentLedger  # noqa: PLC0415 - imports store

        return ConsentLedger(self)

    @property
    def suppression(self) -> SuppressionList:
        """The suppression list (see :class:`~commhistory.consent.SuppressionList`)."""
        from commhistory.consent import SuppressionList  # noqa: PLC0415

        return SuppressionList(self)

    def can_send(
        self,
        contact_id: str,
        channel: Channel | str,
        purpose: Purpose | str,
        at: datetime | None = None,
        *,
        address: str | None = None,
    ) -> SendDecision:
        """Decide whether a message may be sent; see :func:`commhistory.consent.can_send`."""
        from commhistory.consent import can_send  # noqa: PLC0415

        return can_send(self, contact_id, channel, purpose, at, address=address)

    def filter_sendable(
        self,
        contact_ids: Iterable[str],
        channel: Channel | str,
        purpose: Purpose | str,
        at: datetime | None = None,
    ) -> list[str]:
        """Keep the sendable contacts; see :func:`commhistory.consent.filter_sendable`."""
        from commhistory.consent import filter_sendable  # noqa: PLC0415

        return filter_sendable(self, contact_ids, channel, purpose, at)

    def export_subject(self, contact_id: str) -> dict[str, Any]:
        """Export everything held on a person; see :func:`commhistory.privacy.export_subject`."""
        from commhistory.privacy import export_subject  # noqa: PLC0415

        return export_subject(self, contact_id)

    def erase_subject(self, contact_id: str) -> ErasureReport:
        """Erase a person (crypto-shredding); see :func:`commhistory.privacy.erase_subject`."""
        from commhistory.privacy import erase_subject  # noqa: PLC0415

        return erase_subject(self, contact_id)
