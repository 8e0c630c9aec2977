"""Contact attributes: the host's declared schema and the rules values must follow.

A host declares each attribute once (:class:`AttributeDefinition`): its name,
its type (:class:`AttributeType`), whether it is personal, and for an enum the
values allowed. :class:`AttributeSchema` holds the declarations and turns what
callers give (Python values, or JSON and CSV text) into typed values, or
refuses them with a typed error naming the attribute and the reason:

* :class:`~commhistory.errors.UnknownAttributeError`: not declared;
* :class:`~commhistory.errors.AttributeTypeError`: not of the declared type;
* :class:`~commhistory.errors.AttributeEnumError`: not an allowed enum value;
* :class:`~commhistory.errors.PersonalValueError`: an email address, a phone
  number or a LINE user id in an attribute declared plain (it would be stored
  in the clear; the rule is :func:`commhistory.normalize.personal_kind`).

Personal attributes (a name, a birth date, a postal address) are encrypted
under the contact's data key like every personal field; plain ones (a member
tier, a region code, a spend band, a signup date) are stored in typed columns
so SQL can filter them. No SQL here: :mod:`commhistory.store.attributes` stores
what this module produces.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final

import attrs

from commhistory.errors import (
    AttributeEnumError,
    AttributeSchemaError,
    AttributeTypeError,
    AttributeValueError,
    InvalidInputError,
    PersonalValueError,
    UnknownAttributeError,
)
from commhistory.model import ContactUpdate, check_attribute_name
from commhistory.normalize.personal import personal_kind
from commhistory.normalize.time import parse_timestamp
from commhistory.store.attributes import (
    DECIMAL_PLACES,
    AttributeStore,
    AttributeValue,
    StoredDefinition,
    TypedValue,
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

_INT64: Final = 2**63 - 1
_ONE: Final = Decimal(1)
_MICRO: Final = Decimal(1).scaleb(-DECIMAL_PLACES)
_MAX_TEXT: Final = 4096
"""The longest text (or list item) an attribute holds."""
_MAX_ITEMS: Final = 256
"""The most strings a list attribute holds."""
_TRUE: Final = frozenset({"true", "1", "yes", "y", "t"})
_FALSE: Final = frozenset({"false", "0", "no", "n", "f"})
_INTEGER: Final = re.compile(r"[+-]?\d{1,19}")
_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")


class AttributeType(enum.StrEnum):
    """The type of a contact attribute; each value is its lower-case name.

    .. versionadded:: 0.4.0
    """

    STR = "str"
    """Text (at most 4096 characters)."""
    INT = "int"
    """A 64-bit integer."""
    DECIMAL = "decimal"
    """An exact decimal with at most 6 places (money, scores)."""
    BOOL = "bool"
    """True or false."""
    DATE = "date"
    """A calendar date (``2026-04-01``)."""
    DATETIME = "datetime"
    """An instant, stored in UTC (``2026-04-01T09:00:00+09:00``)."""
    ENUM = "enum"
    """One of the declared ``values``."""
    LIST = "list"
    """A list of strings (tags), order kept, at most 256."""


def _type_of(value: object) -> AttributeType:
    if isinstance(value, AttributeType):
        return value
    try:
        return AttributeType(str(value).strip().lower())
    except ValueError:
        allowed = ", ".join(t.value for t in AttributeType)
        raise AttributeSchemaError(
            attribute="<type>", reason=f"type must be one of: {allowed}"
        ) from None


def _str_tuple(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


@attrs.frozen(kw_only=True)
class AttributeDefinition:
    """One declared contact attribute.

    Attributes:
        name: Lower-case letters, digits and ``_``, starting with a letter (at
            most 63 characters).
        type: Its :class:`AttributeType`.
        personal: Whether values are personal data: encrypted under the
            contact's data key, never filterable in SQL, erased with the contact.
        values: For an ``enum``, the allowed values (at least one); empty otherwise.
        description: What it means, for people (optional, plain text).

    Raises:
        AttributeSchemaError: The declaration is malformed.

    .. versionadded:: 0.4.0
    """

    name: str
    type: AttributeType = attrs.field(converter=_type_of)
    personal: bool = False
    values: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    description: str | None = None

    def __attrs_post_init__(self) -> None:
        try:
            check_attribute_name(self.name, field="name")
        except InvalidInputError as exc:
            raise AttributeSchemaError(attribute="<name>", reason=exc.reason) from None
        if not isinstance(self.personal, bool):
            raise AttributeSchemaError(attribute=self.name, reason="personal must be a boolean")
        if self.type is AttributeType.ENUM:
            if not self.values:
                raise AttributeSchemaError(
                    attribute=self.name, reason="an enum needs at least one allowed value"
                )
            for v in self.values:
                given: object = v
                if not isinstance(given, str) or not given or len(given) > 255:
                    raise AttributeSchemaError(
                        attribute=self.name, reason="enum values are non-empty strings (<= 255)"
                    )
            if len(set(self.values)) != len(self.values):
                raise AttributeSchemaError(attribute=self.name, reason="enum values repeat")
            if not self.personal and any(looks_personal(v) for v in self.values):
                raise AttributeSchemaError(
                    attribute=self.name,
                    reason="an allowed value looks like an email address, a phone number or a "
                    "LINE user id",
                )
        elif self.values:
            raise AttributeSchemaError(
                attribute=self.name, reason="only an enum has allowed values"
            )
        if self.description is not None and not isinstance(self.description, str):
            raise AttributeSchemaError(attribute=self.name, reason="description must be text")

    def to_json(self) -> dict[str, Any]:
        """Return the declaration as a JSON-ready dict (what :meth:`from_json` reads)."""
        out: dict[str, Any] = {"name": self.name, "type": self.type.value}
        if self.personal:
            out["personal"] = True
        if self.values:
            out["values"] = list(self.values)
        if self.description is not None:
            out["description"] = self.description
        return out

    @classmethod
    def from_json(cls, obj: object) -> AttributeDefinition:
        """Read one declaration: ``{"name": ..., "type": ..., "personal": ..., "values": [...]}``.

        Raises:
            AttributeSchemaError: Not an object, an unknown key, or a malformed declaration.
        """
        if not isinstance(obj, Mapping):
            raise AttributeSchemaError(attribute="<schema>", reason="a declaration is an object")
        name = obj.get("name")
        shown = name if isinstance(name, str) and len(name) < 64 else "<name>"
        unknown = set(obj) - {"name", "type", "personal", "values", "description"}
        if unknown:
            raise AttributeSchemaError(
                attribute=shown, reason="unknown key; expected name, type, personal, values"
            )
        if "type" not in obj:
            raise AttributeSchemaError(attribute=shown, reason="type is required")
        values = obj.get("values", ())
        if not isinstance(values, list | tuple):
            raise AttributeSchemaError(attribute=shown, reason="values must be a list")
        return cls(
            name=name,  # type: ignore[arg-type]  # checked by the class
            type=obj["type"],
            personal=obj.get("personal", False),
            values=tuple(values),
            description=obj.get("description"),
        )

    def stored(self) -> StoredDefinition:
        """Return the declaration as the store keeps it."""
        return StoredDefinition(
            name=self.name,
            type=self.type.value,
            personal=self.personal,
            values=self.values,
            description=self.description,
        )

    @classmethod
    def from_stored(cls, row: StoredDefinition) -> AttributeDefinition:
        """Rebuild a declaration the store kept."""
        return cls(
            name=row.name,
            type=row.type,
            personal=row.personal,
            values=row.values,
            description=row.description,
        )

    def coerce(self, value: object) -> TypedValue | None:
        """Return *value* as this attribute's type (``None`` stays ``None``: unset).

        Text forms are accepted for every type (CSV cells are text): ``"42"``
        for an int, ``"12.50"`` for a decimal, ``"true"``/``"no"`` for a bool,
        ``"2026-04-01"`` for a date, an ISO 8601 timestamp with an offset for a
        datetime.

        Raises:
            AttributeTypeError: Not of the type (or out of its range).
            AttributeEnumError: Not one of an enum's allowed values.
            PersonalValueError: The attribute is plain and the value looks like
                an email address or a phone number.
        """
        if value is None:
            return None
        typed = _COERCE[self.type](self, value)
        # An enum's values were checked when it was declared.
        if not self.personal and self.type is not AttributeType.ENUM:
            _check_not_personal(self.name, typed)
        return typed


def _wrong(d: AttributeDefinition, value: object, expected: str) -> AttributeTypeError:
    return AttributeTypeError(
        attribute=d.name, reason=f"expected {expected}, got {type(value).__name__}"
    )


def _to_str(d: AttributeDefinition, value: object) -> str:
    if not isinstance(value, str):
        raise _wrong(d, value, "a string")
    _check_text(d, value)
    return value


def _check_text(d: AttributeDefinition, value: str) -> None:
    if len(value) > _MAX_TEXT:
        raise AttributeTypeError(attribute=d.name, reason=f"longer than {_MAX_TEXT} characters")
    if "\x00" in value:
        raise AttributeTypeError(attribute=d.name, reason="contains a NUL character")


def _to_int(d: AttributeDefinition, value: object) -> int:
    if isinstance(value, bool):
        raise _wrong(d, value, "an integer")
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        value = int(value.strip())
    if isinstance(value, float | Decimal) and math.isfinite(value) and value == int(value):
        value = int(value)
    if not isinstance(value, int):
        raise _wrong(d, value, "an integer")
    if abs(value) > _INT64:
        raise AttributeTypeError(attribute=d.name, reason="outside the 64-bit integer range")
    return value


def _to_decimal(d: AttributeDefinition, value: object) -> Decimal:
    if isinstance(value, bool):
        raise _wrong(d, value, "a decimal number")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise AttributeTypeError(attribute=d.name, reason="not a finite number")
        value = Decimal(repr(value))
    elif isinstance(value, int):
        value = Decimal(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            value = Decimal(text) if len(text) <= 40 else None
        except InvalidOperation:
            value = None
        if value is None:
            raise AttributeTypeError(attribute=d.name, reason="expected a decimal number")
    if not isinstance(value, Decimal):
        raise _wrong(d, value, "a decimal number")
    if not value.is_finite():
        raise AttributeTypeError(attribute=d.name, reason="not a finite number")
    # value x 10^6 must fit in 64 bits: at most 13 integer digits (|value| < 9.2e12).
    if value.adjusted() > 12:
        raise AttributeTypeError(attribute=d.name, reason="too large to store")
    micro = value.quantize(_MICRO)  # exact (at most 19 digits); comparisons are exact too
    if micro != value:
        raise AttributeTypeError(
            attribute=d.name, reason=f"more than {DECIMAL_PLACES} decimal places"
        )
    if abs(int(micro.scaleb(DECIMAL_PLACES))) > _INT64:
        raise AttributeTypeError(attribute=d.name, reason="too large to store")
    # Normalized so equal amounts compare and print the same ("1.50" == "1.5").
    normal = micro.normalize()
    exponent = normal.as_tuple().exponent
    if isinstance(exponent, int) and exponent > 0:
        normal = normal.quantize(_ONE)
    return normal


def _to_bool(d: AttributeDefinition, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        folded = value.strip().lower()
        if folded in _TRUE:
            return True
        if folded in _FALSE:
            return False
    raise _wrong(d, value, "true or false")


def _to_date(d: AttributeDefinition, value: object) -> date:
    if isinstance(value, datetime):
        raise _wrong(d, value, "a date (not a datetime)")
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _DATE.fullmatch(value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
        raise AttributeTypeError(attribute=d.name, reason="not a valid calendar date")
    raise _wrong(d, value, "a date like 2026-04-01")


def _to_datetime(d: AttributeDefinition, value: object) -> datetime:
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise AttributeTypeError(attribute=d.name, reason="naive datetime; give an offset")
        return value.astimezone(UTC)
    if isinstance(value, str):
        try:
            return parse_timestamp(value, field=f"attributes.{d.name}")
        except InvalidInputError as exc:
            raise AttributeTypeError(attribute=d.name, reason=exc.reason) from None
    raise _wrong(d, value, "a timestamp with an offset")


def _to_enum(d: AttributeDefinition, value: object) -> str:
    if not isinstance(value, str):
        raise _wrong(d, value, "a string")
    if value not in d.values:
        raise AttributeEnumError(
            attribute=d.name, reason=f"not an allowed value (allowed: {', '.join(d.values)})"
        )
    return value


def _to_list(d: AttributeDefinition, value: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise _wrong(d, value, "a list of strings")
    if len(value) > _MAX_ITEMS:
        raise AttributeTypeError(attribute=d.name, reason=f"more than {_MAX_ITEMS} items")
    for item in value:
        if not isinstance(item, str):
            raise _wrong(d, item, "a list of strings")
        _check_text(d, item)
    return tuple(value)


_COERCE: Final[dict[AttributeType, Callable[[AttributeDefinition, Any], TypedValue]]] = {
    AttributeType.STR: _to_str,
    AttributeType.INT: _to_int,
    AttributeType.DECIMAL: _to_decimal,
    AttributeType.BOOL: _to_bool,
    AttributeType.DATE: _to_date,
    AttributeType.DATETIME: _to_datetime,
    AttributeType.ENUM: _to_enum,
    AttributeType.LIST: _to_list,
}


_Plan = tuple[
    Callable[["AttributeDefinition", Any], TypedValue], bool, str, bool, "AttributeDefinition"
]
"""``(coerce, check for personal-looking text, type name, personal, definition)``."""


def looks_personal(text: str, region: str = "JP") -> bool:
    """Whether *text* holds an email address, a phone number or a LINE user id.

    The rule is :func:`commhistory.normalize.personal_kind`'s, the one every
    value stored in the clear is checked with: codes like ``"2026-04"``,
    ``"10000-20000"`` or a postcode ``"150-0002"`` pass while
    ``"090-1234-5678"`` or ``"taro@example.com"`` do not.

    .. versionadded:: 0.4.0
    """
    return personal_kind(text, region) is not None


def _check_not_personal(name: str, value: TypedValue) -> None:
    texts: Iterable[str]
    if isinstance(value, str):
        texts = (value,)
    elif isinstance(value, tuple):
        texts = value
    else:
        return
    for text in texts:
        kind = personal_kind(text, "JP")
        if kind is not None:
            raise PersonalValueError(
                attribute=name,
                reason=f"looks like {kind.phrase}, and the attribute is not personal "
                "(declare it personal to store it encrypted)",
            )


def _index(definitions: Iterable[AttributeDefinition]) -> Mapping[str, AttributeDefinition]:
    out: dict[str, AttributeDefinition] = {}
    for d in definitions:
        if not isinstance(d, AttributeDefinition):
            raise AttributeSchemaError(
                attribute="<schema>", reason="expected AttributeDefinition objects"
            )
        if d.name in out:
            raise AttributeSchemaError(attribute=d.name, reason="declared more than once")
        out[d.name] = d
    return out


@attrs.frozen
class AttributeSchema:
    """The declared attributes, by name; validates contact updates.

    Args:
        definitions: The declarations (names must be unique).

    Raises:
        AttributeSchemaError: A name repeats.

    .. versionadded:: 0.4.0
    """

    _by_name: Mapping[str, AttributeDefinition] = attrs.field(
        converter=_index, alias="definitions"
    )
    _plans: Mapping[str, _Plan] = attrs.field(init=False, eq=False, repr=False)

    @_plans.default
    def _plan_all(self) -> Mapping[str, _Plan]:
        # The per-value work bound once per schema: the bulk path checks millions.
        return {
            name: (
                _COERCE[d.type],
                not d.personal and d.type is not AttributeType.ENUM,
                d.type.value,
                d.personal,
                d,
            )
            for name, d in self._by_name.items()
        }

    def __iter__(self) -> Iterator[AttributeDefinition]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __getitem__(self, name: str) -> AttributeDefinition:
        """Return the declaration of *name*.

        Raises:
            UnknownAttributeError: It is not declared.
        """
        found = self._by_name.get(name)
        if found is None:
            raise UnknownAttributeError(attribute=_safe_name(name), reason="not declared")
        return found

    @property
    def names(self) -> tuple[str, ...]:
        """The declared names, sorted."""
        return tuple(sorted(self._by_name))

    def to_json(self) -> dict[str, Any]:
        """Return ``{"attributes": [declaration, ...]}`` (what :meth:`from_json` reads)."""
        return {"attributes": [self._by_name[n].to_json() for n in self.names]}

    @classmethod
    def from_json(cls, obj: object) -> AttributeSchema:
        """Read ``{"attributes": [...]}`` or a bare list of declarations.

        Raises:
            AttributeSchemaError: The document is malformed.
        """
        if isinstance(obj, Mapping):
            if set(obj) - {"attributes"}:
                raise AttributeSchemaError(
                    attribute="<schema>", reason='expected {"attributes": [...]}'
                )
            obj = obj.get("attributes")
        if not isinstance(obj, list):
            raise AttributeSchemaError(
                attribute="<schema>", reason="expected a list of attribute declarations"
            )
        return cls([AttributeDefinition.from_json(item) for item in obj])

    @classmethod
    def load(cls, path: str | Path) -> AttributeSchema:
        """Read a schema from a JSON file (see :meth:`from_json`).

        Raises:
            AttributeSchemaError: The file is not JSON, or the document is malformed.
            OSError: The file cannot be read.
        """
        text = Path(path).read_text(encoding="utf-8")
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AttributeSchemaError(
                attribute="<schema>", reason=f"invalid JSON: {exc.msg} at line {exc.lineno}"
            ) from None
        return cls.from_json(obj)

    def values_of(self, attributes: Mapping[str, object]) -> list[AttributeValue]:
        """Validate and type ``{name: value}``; ``None`` unsets an attribute.

        Every attribute is checked before anything is returned, so a caller
        stores all of them or none.

        Raises:
            UnknownAttributeError: A name is not declared.
            AttributeTypeError: A value is not of its attribute's type.
            AttributeEnumError: A value is not allowed by its enum.
            PersonalValueError: A plain attribute holds an email address, a phone number
                or a LINE user id.
        """
        out = []
        plans = self._plans
        for name, value in attributes.items():
            plan = plans.get(name)
            if plan is None:
                raise UnknownAttributeError(attribute=_safe_name(name), reason="not declared")
            coerce, check, kind, personal, d = plan
            typed = None if value is None else coerce(d, value)
            if check and typed is not None:
                _check_not_personal(name, typed)
            out.append(AttributeValue(name=name, type=kind, value=typed, personal=personal))
        return out

    def validate(self, update: ContactUpdate) -> list[AttributeValue]:
        """Validate a :class:`~commhistory.model.ContactUpdate` (see :meth:`values_of`)."""
        return self.values_of(update.attributes)


def _safe_name(name: object) -> str:
    """The name to show in an error: declared names are plain; anything else is not shown."""
    if isinstance(name, str) and re.fullmatch(r"[a-z][a-z0-9_]{0,62}", name):
        return name
    return "<name>"


def merge_declarations(
    current: AttributeSchema,
    declared: Iterable[AttributeDefinition],
    *,
    allow_changes: bool = False,
) -> list[AttributeDefinition]:
    """Return the declarations that are new or differ from *current* (what to save).

    Declaring an attribute again as it is changes nothing. An enum's allowed
    values and a description may change freely (values stored before stay as
    they are). Changing an attribute's type or its personal flag needs
    *allow_changes*: values stored before keep the type and the encryption
    they were stored with.

    Raises:
        AttributeSchemaError: A type or personal flag changes without *allow_changes*.

    .. versionadded:: 0.4.0
    """
    out = []
    for d in AttributeSchema(declared):
        old = current._by_name.get(d.name)
        if old == d:
            continue
        if old is not None and not allow_changes:
            if old.type is not d.type:
                raise AttributeSchemaError(
                    attribute=d.name,
                    reason=f"declared as {old.type.value}; changing it to {d.type.value} "
                    "needs allow_changes",
                )
            if old.personal != d.personal:
                raise AttributeSchemaError(
                    attribute=d.name,
                    reason="changing whether it is personal needs allow_changes",
                )
        out.append(d)
    return out


def json_value(value: TypedValue | None) -> Any:
    """Return a typed attribute value as JSON: ISO dates and timestamps, decimal strings.

    .. versionadded:: 0.4.0
    """
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


class SchemaCache:
    """The declared schema of one store, read once and again only when it may have changed.

    The facade checks every contact update against it. A refused update
    (an unknown attribute, a value the cached declaration refuses) reads the
    schema again once before the refusal stands, so a declaration made by
    another process is seen without reading the table for every update.

    Args:
        port: The store's attribute port.

    .. versionadded:: 0.4.0
    """

    def __init__(self, port: AttributeStore) -> None:
        self._port = port
        self._schema: AttributeSchema | None = None

    def get(self) -> AttributeSchema:
        """Return the schema (read from the store the first time)."""
        schema = self._schema
        if schema is None:
            schema = self.refresh()
        return schema

    def refresh(self) -> AttributeSchema:
        """Read the schema from the store again and return it."""
        schema = AttributeSchema(
            AttributeDefinition.from_stored(row) for row in self._port.definitions()
        )
        self._schema = schema
        return schema

    def values_of(self, attributes: Mapping[str, object]) -> list[AttributeValue]:
        """Validate and type ``{name: value}`` (see :meth:`AttributeSchema.values_of`)."""
        try:
            return self.get().values_of(attributes)
        except AttributeValueError:
            return self.refresh().values_of(attributes)

    def codec(self, update: ContactUpdate) -> list[AttributeValue]:
        """Validate a contact update: the store's attribute codec (see ``set_attribute_codec``)."""
        return self.values_of(update.attributes)

    def declare(
        self, declared: Iterable[AttributeDefinition], *, allow_changes: bool = False
    ) -> AttributeSchema:
        """Save new or changed declarations (see :func:`merge_declarations`); return the schema."""
        changed = merge_declarations(self.refresh(), declared, allow_changes=allow_changes)
        if changed:
            self._port.save_definitions([d.stored() for d in changed])
        return self.refresh()
