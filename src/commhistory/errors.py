"""Every error commhistory raises, in one tree.

::

    CommHistoryError
    ├── InvalidInputError (ValueError)            .field .reason
    │   ├── NormalizationError                    a value cannot be normalized
    │   ├── PayloadError                          a record or payload is malformed  (.line)
    │   ├── UnknownActivityError                  an activity name the host did not declare
    │   ├── PersonalDataError                     a plain (unencrypted) value looks personal
    │   ├── AttributeValueError                   .attribute: a contact attribute is refused
    │   │   ├── UnknownAttributeError             not declared in the schema
    │   │   ├── AttributeTypeError                not of the declared type
    │   │   ├── AttributeEnumError                not one of the enum's allowed values
    │   │   └── PersonalValueError                an email, phone or LINE id in a plain attribute
    │   ├── AttributeSchemaError                  .attribute: a declaration is refused
    │   ├── CriteriaError                         .path: a segment's condition tree is refused
    │   │   └── CriteriaSchemaError               it does not fit the declared attributes
    │   ├── JourneyDefinitionError                .field = JSON path: a journey is refused
    │   └── PlanConfigError                       a send planning configuration is refused
    ├── SignatureError (ValueError)               a signature or token does not verify
    ├── CryptoError
    │   ├── KeyNotFoundError (KeyError)           .key_id is not in the keyring
    │   ├── KeyringExistsError (FileExistsError)  .path: save() will not overwrite a keyring
    │   └── DecryptionError                       ciphertext altered, moved or under a lost key
    ├── StorageError                              the database refused or is not ready
    │   ├── SchemaError                           the schema is missing or not at head
    │   └── DatabaseUnavailableError              .target .reason .detail: cannot be reached
    │       └── DatabaseNotFoundError             the database (file or name) does not exist
    ├── NotFoundError (LookupError)               .kind .identifier
    ├── MissingExtraError (ImportError)           .extra .package: an optional extra is needed
    ├── CrmApiError                               .crm .status .reason: a CRM API call failed
    ├── PermissionDenied (PermissionError)        .permission
    └── ConsentRequired                           .reasons

Each error states *which field* and *why*; none ever carries a personal value
(an address, a phone number, a subject, a body) or key material in its message,
so errors can be logged and shown as they are.

Context is passed keyword-only, and errors from the libraries underneath are
translated where they enter (``raise NormalizationError(...) from exc``).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AttributeEnumError",
    "AttributeSchemaError",
    "AttributeTypeError",
    "AttributeValueError",
    "CommHistoryError",
    "ConsentRequired",
    "CriteriaError",
    "CriteriaSchemaError",
    "CrmApiError",
    "CrmRowError",
    "CryptoError",
    "DatabaseNotFoundError",
    "DatabaseUnavailableError",
    "DecryptionError",
    "InvalidInputError",
    "JourneyDefinitionError",
    "KeyNotFoundError",
    "KeyringExistsError",
    "MissingExtraError",
    "NormalizationError",
    "NotFoundError",
    "PayloadError",
    "PermissionDenied",
    "PersonalDataError",
    "PersonalValueError",
    "PlanConfigError",
    "SchemaError",
    "SignatureError",
    "StorageError",
    "UnknownActivityError",
    "UnknownAttributeError",
]


class CommHistoryError(Exception):
    """The root of every error raised by commhistory."""


class InvalidInputError(CommHistoryError, ValueError):
    """Input that cannot be accepted: names the field and the reason, never the value.

    Attributes:
        field: The dotted name of the offending field (``"address"``,
            ``"metadata.plan"``), or ``"<line>"`` for a whole record.
        reason: A short, value-free explanation.
    """

    def __init__(self, *, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), dict(self.__dict__)))


class NormalizationError(InvalidInputError):
    """A value (address, phone number, timestamp, status code, currency) is not valid."""


class PayloadError(InvalidInputError):
    """A record or provider payload does not fit the canonical model.

    Unknown keys, missing fields, wrong types, unknown enum values and
    inconsistent combinations (revenue without a currency) are payload errors.

    Attributes:
        line: The 1-based line (or row) number of the record in its file, when known.
    """

    def __init__(self, *, field: str, reason: str, line: int | None = None) -> None:
        super().__init__(field=field, reason=reason)
        self.line = line

    def at_line(self, line: int) -> PayloadError:
        """Return a copy of this error located at *line*."""
        return type(self)(field=self.field, reason=self.reason, line=line)

    def __str__(self) -> str:
        prefix = f"{self.line}: " if self.line is not None else ""
        return f"{prefix}{self.field}: {self.reason}"


class CrmRowError(PayloadError):
    """A row of a CRM export cannot be imported: names the row, the column and the reason.

    ``field`` is the column's header (``"Email"``, ``"Last Modified Date"``),
    ``line`` the row's line in the file; the cell's value is never shown.
    A record read from a CRM's API has ``line``, its position in the run
    (1-based), and ``record``, the CRM's record id when it could be read.

    .. versionadded:: 0.4.0
    """

    def __init__(
        self, *, field: str, reason: str, line: int | None = None, record: str | None = None
    ) -> None:
        super().__init__(field=field, reason=reason, line=line)
        self.record = record

    def for_record(self, record: str | None) -> CrmRowError:
        """Return a copy of this error naming the CRM record it is about.

        .. versionadded:: 0.4.0
        """
        return type(self)(field=self.field, reason=self.reason, line=self.line, record=record)

    def __str__(self) -> str:
        text = super().__str__()
        return text if self.record is None else f"{text} (record {self.record})"


class UnknownActivityError(InvalidInputError):
    """An activity's name is not one the host declared (``field="name"``).

    Declare names with :meth:`commhistory.CommHistory.declare_activities`
    (``commhistory declare-activities``).

    .. versionadded:: 0.4.0
    """


class PersonalDataError(InvalidInputError):
    """A value that would be stored in the clear looks like personal data.

    Raised for an activity property the host declared plain whose value holds
    an email address or a phone number (``field="properties.KEY"``). The value
    is never shown.

    .. versionadded:: 0.4.0
    """


class AttributeValueError(InvalidInputError):
    """A contact attribute value is refused by the declared schema.

    ``field`` is ``"attributes.<name>"``; the reason never quotes the value.

    Attributes:
        attribute: The attribute's name (names are declared by the host, never personal).

    .. versionadded:: 0.4.0
    """

    def __init__(self, *, attribute: str, reason: str, field: str | None = None) -> None:
        super().__init__(field=field or f"attributes.{attribute}", reason=reason)
        self.attribute = attribute


class UnknownAttributeError(AttributeValueError):
    """The attribute is not declared in the schema.

    .. versionadded:: 0.4.0
    """


class AttributeTypeError(AttributeValueError):
    """The value is not of the attribute's declared type (or out of its range).

    .. versionadded:: 0.4.0
    """


class AttributeEnumError(AttributeValueError):
    """The value is not one of the enum attribute's allowed values.

    .. versionadded:: 0.4.0
    """


class PersonalValueError(AttributeValueError):
    """A plain (not personal) attribute was given something that looks personal.

    An email address or a phone number in an attribute stored in the clear
    would leak personal data into a column every reader sees; declare the
    attribute ``personal`` instead.

    .. versionadded:: 0.4.0
    """


class AttributeSchemaError(InvalidInputError):
    """An attribute declaration is refused: malformed, or it changes a declared attribute.

    Changing an attribute's type or personal flag needs ``allow_changes=True``.

    Attributes:
        attribute: The attribute's name (``"<schema>"`` for the whole document).

    .. versionadded:: 0.4.0
    """

    def __init__(self, *, attribute: str, reason: str) -> None:
        super().__init__(field=f"schema.{attribute}", reason=reason)
        self.attribute = attribute


class JourneyDefinitionError(InvalidInputError):
    """A journey definition is refused: ``field`` is the JSON path (``$.steps[2].next``).

    Unknown fields and values, missing steps, unreachable steps and loops that
    could run without waiting are refused before anything runs.

    .. versionadded:: 0.4.0
    """


class CriteriaError(InvalidInputError):
    """A segment's condition tree is refused: names the JSON path and the reason.

    ``field`` (also ``path``) is a JSON path into the tree (``"$.all[2].op"``);
    the reason never quotes a value.

    .. versionadded:: 0.4.0
    """

    def __init__(self, *, path: str | None = None, reason: str, field: str | None = None) -> None:
        super().__init__(field=path if path is not None else field or "$", reason=reason)

    @property
    def path(self) -> str:
        """The JSON path of the offending node or field (``field``'s other name)."""
        return self.field


class CriteriaSchemaError(CriteriaError):
    """A condition does not fit the declared attributes or activities.

    An unknown attribute, a personal (encrypted) attribute used as a segment
    key, an operator the attribute's type does not have, a value of the
    wrong type, or an activity property that is not declared plain.

    .. versionadded:: 0.4.0
    """


class PlanConfigError(InvalidInputError):
    """A send planning configuration (caps, quiet hours, zones) is refused.

    ``field`` is the path of the offending value in the configuration document
    (``"caps[0].limit"``, ``"quiet_hours[1].start"``), or ``"<config>"`` for the
    whole document.

    .. versionadded:: 0.4.0
    """


class SignatureError(CommHistoryError, ValueError):
    """A webhook signature, timestamp or signed token does not verify."""


class CryptoError(CommHistoryError):
    """Base class for key and encryption failures."""


class KeyNotFoundError(CryptoError, KeyError):
    """A key id is not present in the keyring (wrong keyring, or the key was retired).

    Attributes:
        key_id: The missing key's id (an opaque identifier, never key material).
    """

    def __init__(self, key_id: str, *, hint: str = "") -> None:
        self.key_id = key_id
        self.hint = hint
        super().__init__(key_id)

    def __str__(self) -> str:
        text = f"key {self.key_id!r} is not in the keyring"
        return f"{text}; {self.hint}" if self.hint else text

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.key_id,), {"hint": self.hint})


class KeyringExistsError(CryptoError, FileExistsError):
    """:meth:`~commhistory.Keyring.save` refused to replace an existing keyring file.

    A keyring file holds the only copy of the keys its database was written
    with; replacing it by mistake makes that database unreadable for good.
    Load the file with :meth:`~commhistory.Keyring.load`, choose another path,
    or pass ``overwrite=True`` (which first writes a backup beside the file).

    Attributes:
        path: The keyring file that already exists.

    .. versionadded:: 0.4.0
    """

    def __init__(self, path: str) -> None:
        self.path = path
        CommHistoryError.__init__(self, path)

    def __str__(self) -> str:
        return (
            f"keyring file {self.path!r} already exists and was not replaced "
            "(a database written with it would become unreadable); load it with "
            "Keyring.load(path), save to another path, or pass overwrite=True, "
            "which keeps a backup beside it"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.path,))


class DecryptionError(CryptoError):
    """A ciphertext cannot be decrypted: altered, moved to another row or column, or bad key."""


class MissingExtraError(CommHistoryError, ImportError):
    """An optional dependency is not installed: names the extra that brings it.

    Attributes:
        extra: The extra to install (``pip install 'commhistory[<extra>]'``).
        package: The distribution it brings (``"hubspot-api-client"``).

    .. versionadded:: 0.4.0
    """

    def __init__(self, *, extra: str, package: str) -> None:
        self.extra = extra
        self.package = package
        super().__init__(f"{package} is not installed: pip install 'commhistory[{extra}]'")

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), dict(self.__dict__)))


class CrmApiError(CommHistoryError):
    """A call to a CRM's REST API failed (credentials, permissions, limits, the network).

    The response body is never carried (it may hold personal data); ``reason``
    is the HTTP reason phrase or the client's error class.

    Attributes:
        crm: ``"hubspot"`` or ``"salesforce"``.
        status: The HTTP status, when there was a response.
        reason: A short, value-free explanation.

    .. versionadded:: 0.4.0
    """

    def __init__(self, *, crm: str, reason: str, status: int | None = None) -> None:
        self.crm = crm
        self.status = status
        self.reason = reason
        shown = f"HTTP {status}: " if status is not None else ""
        super().__init__(f"{crm} API: {shown}{reason}")

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), dict(self.__dict__)))


class StorageError(CommHistoryError):
    """The storage backend failed or refused an operation."""


class SchemaError(StorageError):
    """The database schema is missing or not at the revision this version expects."""


class DatabaseUnavailableError(StorageError):
    """The database cannot be reached or opened: names what and why, never a credential.

    Attributes:
        target: What was opened, without user name or password: ``"SQLite file
            'data/h.db'"`` or ``"PostgreSQL database 'crm' at 127.0.0.1:5432"``.
        reason: Why, in words a user can act on (``"nothing is listening on that
            port; is the server running, is the port right?"``).
        detail: The database driver's own message (credentials removed), or ``""``.

    .. versionadded:: 0.4.0
    """

    def __init__(self, *, target: str, reason: str, detail: str = "") -> None:
        self.target = target
        self.reason = reason
        self.detail = detail
        text = f"cannot open {target}: {reason}"
        super().__init__(f"{text} (driver: {detail})" if detail else text)

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), dict(self.__dict__)))


class DatabaseNotFoundError(DatabaseUnavailableError):
    """The database does not exist: a missing SQLite file or an unknown PostgreSQL database.

    Only ``commhistory init`` and ``import`` (and ``open_repository`` with
    ``upgrade=True``) create a SQLite database file; every other command and
    ``upgrade=False`` raise this instead of creating an empty one.

    .. versionadded:: 0.4.0
    """


class NotFoundError(CommHistoryError, LookupError):
    """A record looked up by id does not exist.

    Attributes:
        kind: What was looked up (``"contact"``, ``"message"``).
        identifier: The id that was not found (ids are not personal data).
    """

    def __init__(self, *, kind: str, identifier: str) -> None:
        self.kind = kind
        self.identifier = identifier
        super().__init__(f"{kind} {identifier!r} not found")

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), dict(self.__dict__)))


class PermissionDenied(CommHistoryError, PermissionError):  # noqa: N818 - public contract name
    """The acting actor lacks a permission.

    Attributes:
        permission: The permission that was required.
    """

    def __init__(self, *, permission: str, actor: str | None = None) -> None:
        self.permission = permission
        self.actor = actor
        who = f"actor {actor!r}" if actor else "this actor"
        super().__init__(f"{who} lacks permission {permission!r}")

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), dict(self.__dict__)))


class ConsentRequired(CommHistoryError):  # noqa: N818 - public contract name
    """A send was refused because consent or suppression forbids it.

    Attributes:
        reasons: Human-readable reasons, free of personal data.
    """

    def __init__(self, *, reasons: Sequence[str]) -> None:
        self.reasons = tuple(reasons)
        super().__init__("; ".join(self.reasons) or "consent required")

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), dict(self.__dict__)))


def _rebuild(cls: type[Exception], state: dict[str, object]) -> Exception:
    """Recreate a keyword-only error when unpickling (errors cross process pools)."""
    return cls(**{k: v for k, v in state.items() if not k.startswith("_")})
