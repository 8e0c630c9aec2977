"""Checking a condition tree against what the host declared.

:func:`validate` refuses, before any query runs, a tree the store could not
evaluate or should not: an attribute that is not declared, a personal
(encrypted) attribute used as a segment key, an operator the attribute's type
does not have, a value of the wrong type (or not one of an enum's values), and
an activity property filter on a key not declared plain. Each is a
:class:`~commhistory.errors.CriteriaSchemaError` naming the JSON path.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

from commhistory.contacts.activities import ActivityCatalog
from commhistory.contacts.attributes import AttributeSchema, AttributeType
from commhistory.criteria import (
    ActivityCondition,
    AttributeCondition,
    Criteria,
    coerce_attribute,
    walk,
)
from commhistory.errors import CriteriaSchemaError

__all__ = ["validate"]


def validate(
    tree: Criteria,
    schema: AttributeSchema,
    activities: ActivityCatalog | None = None,
) -> None:
    """Check *tree* against the declared attributes (and activity declarations).

    Args:
        tree: The condition tree.
        schema: The declared attribute schema (``repo.attribute_schema()``).
        activities: The declared activity names and plain keys
            (``repo.activity_catalog()``); ``None`` skips property checks.

    Raises:
        CriteriaSchemaError: The first problem found, depth first, naming its path.
    """
    for path, node in walk(tree):
        if isinstance(node, AttributeCondition):
            if node.name not in schema:
                raise CriteriaSchemaError(
                    path=f"{path}.attribute", reason="not a declared attribute"
                )
            d = schema[node.name]
            op, typed = coerce_attribute(node, d.type.value, d.personal, path)
            if d.type is AttributeType.ENUM and node.of == "value" and typed is not None:
                values = typed if isinstance(typed, tuple) else (typed,)
                for i, v in enumerate(values):
                    if v not in d.values:
                        where = f"{path}.value" + (f"[{i}]" if isinstance(typed, tuple) else "")
                        raise CriteriaSchemaError(
                            path=where,
                            reason=f"not one of the enum's values {list(d.values)}",
                        )
            del op
        elif isinstance(node, ActivityCondition) and activities is not None:
            if node.name not in activities:
                raise CriteriaSchemaError(
                    path=f"{path}.activity", reason="not a declared activity name"
                )
            plain = activities.plain_keys(node.name)
            for i, f in enumerate(node.where):
                if f.key not in plain:
                    raise CriteriaSchemaError(
                        path=f"{path}.where[{i}].property",
                        reason="not a property declared plain for this activity "
                        "(other properties are encrypted)",
                    )
