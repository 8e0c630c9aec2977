"""The facade: :class:`CommHistory`, what :func:`open_repository` returns, and its guarded view.

* :class:`CommHistory` composes consent, KPIs, privacy and access control over
  one storage :class:`~commhistory.store.protocol.Repository`;
* :class:`GuardedRepository` (``repo.as_actor(...)``) is the facade bound to one
  actor and purpose, every call checked and audited.

See ``docs/design/architecture.md``.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

from commhistory.facade.guarded import GuardedConsent, GuardedRepository, GuardedSuppression
from commhistory.facade.history import CommHistory, open_repository, rotate_keys

__all__ = [
    "CommHistory",
    "GuardedConsent",
    "GuardedRepository",
    "GuardedSuppression",
    "open_repository",
    "rotate_keys",
]
