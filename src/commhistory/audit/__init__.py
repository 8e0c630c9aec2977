"""Access control and the tamper-evident audit log.

* :mod:`~commhistory.audit.access`: :class:`Actor`, :class:`Permission`, the
  built-in roles and :class:`Policy`; the guarded view that checks every call
  and audits what must be audited is the facade's
  (:class:`~commhistory.facade.guarded.GuardedRepository`, ``repo.as_actor(...)``);
* :mod:`~commhistory.audit.log`: :class:`AuditLog`, append-only entries in one
  HMAC chain under the keyring's ``"audit"`` subkey, and
  :meth:`AuditLog.verify_chain`;
* :mod:`~commhistory.audit.masked`: masked timelines read from plain columns
  only (nothing decrypted), with the masked addresses stored at ingest; the
  masks themselves live in :mod:`commhistory.normalize.mask`.

Without a guarded view nothing is checked; the facade still audits erasure,
subject export, key rotation, a real purge and consent and suppression changes
as its default actor (``api:<process user>``). See ``docs/access.md``.

.. versionadded:: 0.3.0
"""

from __future__ import annotations

from commhistory.audit.access import (
    BUILTIN_ROLES,
    DEFAULT_POLICY,
    Actor,
    Permission,
    Policy,
    process_user,
)
from commhistory.audit.log import (
    AUDIT_SUBKEY_PURPOSE,
    AuditEntry,
    AuditLog,
    AuditStore,
    ChainReport,
    Outcome,
)
from commhistory.audit.masked import (
    MaskedEntry,
    MaskedEvent,
    MaskedMessage,
    mask_address,
    mask_email,
    mask_line_user_id,
    mask_phone,
    masked_timeline,
)

__all__ = [
    "AUDIT_SUBKEY_PURPOSE",
    "BUILTIN_ROLES",
    "DEFAULT_POLICY",
    "Actor",
    "AuditEntry",
    "AuditLog",
    "AuditStore",
    "ChainReport",
    "MaskedEntry",
    "MaskedEvent",
    "MaskedMessage",
    "Outcome",
    "Permission",
    "Policy",
    "mask_address",
    "mask_email",
    "mask_line_user_id",
    "mask_phone",
    "masked_timeline",
    "process_user",
]
