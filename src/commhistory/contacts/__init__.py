"""Contacts: what the host knows of each contact beyond its messages.

* :mod:`commhistory.contacts.activities`: what contacts did outside messages
  (a purchase, a page view, a signup): the host's declared activity names,
  which properties are plain, the guard against personal data in plain
  properties, and revenue attribution to the last clicked message.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

from commhistory.contacts.activities import (
    ActivityCatalog,
    admit,
    admit_records,
    attribute,
    attribution_feed,
    check_window,
    parse_declarations,
    personal_kind,
)

__all__ = [
    "ActivityCatalog",
    "admit",
    "admit_records",
    "attribute",
    "attribution_feed",
    "check_window",
    "parse_declarations",
    "personal_kind",
]
