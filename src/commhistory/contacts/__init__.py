"""Contacts: what a business knows about each customer beyond its messages.

* :mod:`commhistory.contacts.attributes`: the host's declared attribute schema
  (:class:`AttributeSchema`, :class:`AttributeDefinition`, :class:`AttributeType`)
  and the rules values follow; personal attributes are encrypted, plain ones
  filterable in SQL, and every value keeps its history.
* :mod:`commhistory.contacts.activities`: what contacts did outside messages
  (a purchase, a page view, a signup): the host's declared activity names,
  which properties are plain, the guard against personal data in plain
  properties, and revenue attribution to the last clicked message.

See ``docs/contacts.md`` and ``docs/activities.md``.

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
)
from commhistory.contacts.attributes import (
    AttributeDefinition,
    AttributeSchema,
    AttributeType,
    SchemaCache,
    json_value,
    looks_personal,
    merge_declarations,
)

__all__ = [
    "ActivityCatalog",
    "AttributeDefinition",
    "AttributeSchema",
    "AttributeType",
    "SchemaCache",
    "admit",
    "admit_records",
    "attribute",
    "attribution_feed",
    "check_window",
    "json_value",
    "looks_personal",
    "merge_declarations",
    "parse_declarations",
]
