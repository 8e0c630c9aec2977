"""Data-subject rights and retention: export, erasure by crypto-shredding, purging.

* :func:`export_subject` (``repo.export_subject``): everything held on a person,
  one versioned JSON document (APPI Art. 33, GDPR Art. 15 and 20);
* :func:`erase_subject` (``repo.erase_subject``): destroy the person's data key
  and blind indexes; keep opt-outs as keyed hashes and consent evidence until
  its retention date; KPIs unchanged (GDPR Art. 17, APPI Art. 35);
* :func:`purge` with a :class:`RetentionPolicy`: delete what is due.

See ``docs/privacy.md`` and ``docs/compliance.md``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from commhistory.privacy.erase import ErasureItem, ErasureReport, erase_subject
from commhistory.privacy.export import EXPORT_SCHEMA, export_subject
from commhistory.privacy.retention import PurgeItem, PurgeReport, RetentionPolicy, purge

__all__ = [
    "EXPORT_SCHEMA",
    "ErasureItem",
    "ErasureReport",
    "PurgeItem",
    "PurgeReport",
    "RetentionPolicy",
    "erase_subject",
    "export_subject",
    "purge",
]
