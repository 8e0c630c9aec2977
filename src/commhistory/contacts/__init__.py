"""Contacts: what a business knows about each customer beyond its messages.

* :mod:`commhistory.contacts.attributes`: the host's declared attribute schema
  (:class:`AttributeSchema`, :class:`AttributeDefinition`, :class:`AttributeType`)
  and the rules values follow; personal attributes are encrypted, plain ones
  filterable in SQL, and every value keeps its history.

See ``docs/contacts.md``.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

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
    "AttributeDefinition",
    "AttributeSchema",
    "AttributeType",
    "SchemaCache",
    "json_value",
    "looks_personal",
    "merge_declarations",
]
