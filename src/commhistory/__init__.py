"""commhistory: a business's whole communication history with its customers, kept safe and useful.

Import it as ``import commhistory as ch``; every public name is re-exported here.
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    __version__: str

    from commhistory import kpi
    from commhistory.audit import Actor, Permission, Policy
    from commhistory.consent import (
        ConsentLedger,
        ConsentState,
        ConsentStatus,
        SendDecision,
        SuppressionEntry,
        SuppressionList,
        SuppressionReason,
    )
    from commhistory.contacts import ActivityCatalog
    from commhistory.crypto import KeyProvider, Keyring
    from commhistory.errors import (
        CommHistoryError,
        ConsentRequired,
        CryptoError,
        DatabaseNotFoundError,
        DatabaseUnavailableError,
        DecryptionError,
        InvalidInputError,
        KeyNotFoundError,
        KeyringExistsError,
        NormalizationError,
        NotFoundError,
        PayloadError,
        PermissionDenied,
        PersonalDataError,
        SchemaError,
        SignatureError,
        StorageError,
        UnknownActivityError,
    )
    from commhistory.facade import CommHistory, GuardedRepository, open_repository, rotate_keys
    from commhistory.kpi import ABResult, KpiRow, KpiTable
    from commhistory.model import (
        Activity,
        BounceClass,
        Channel,
        ConsentAction,
        ConsentEvent,
        ConsentMethod,
        Direction,
        Event,
        EventType,
        Message,
        Purpose,
    )
    from commhistory.normalize import normalize_email, normalize_phone
    from commhistory.privacy import ErasureReport, RetentionPolicy
    from commhistory.store import (
        ActivityEntry,
        DeadLetter,
        IngestReport,
        MemoryRepository,
        Repository,
        RotationReport,
        SQLRepository,
        TimelineEntry,
    )

# Every public name is imported on first use (PEP 562), so a command that needs
# little (``commhistory validate``) does not pay for SQLAlchemy, Alembic,
# cryptography and the rest at start-up. Name -> the module that defines it.
_LAZY: _typing.Final[dict[str, str]] = {
    "ABResult": "commhistory.kpi",
    "Activity": "commhistory.model",
    "ActivityCatalog": "commhistory.contacts",
    "ActivityEntry": "commhistory.store",
    "Actor": "commhistory.audit",
    "BounceClass": "commhistory.model",
    "Channel": "commhistory.model",
    "CommHistory": "commhistory.facade",
    "CommHistoryError": "commhistory.errors",
    "ConsentAction": "commhistory.model",
    "ConsentEvent": "commhistory.model",
    "ConsentLedger": "commhistory.consent",
    "ConsentMethod": "commhistory.model",
    "ConsentRequired": "commhistory.errors",
    "ConsentState": "commhistory.consent",
    "ConsentStatus": "commhistory.consent",
    "CryptoError": "commhistory.errors",
    "DatabaseNotFoundError": "commhistory.errors",
    "DatabaseUnavailableError": "commhistory.errors",
    "DeadLetter": "commhistory.store",
    "DecryptionError": "commhistory.errors",
    "Direction": "commhistory.model",
    "ErasureReport": "commhistory.privacy",
    "Event": "commhistory.model",
    "EventType": "commhistory.model",
    "GuardedRepository": "commhistory.facade",
    "IngestReport": "commhistory.store",
    "InvalidInputError": "commhistory.errors",
    "KeyNotFoundError": "commhistory.errors",
    "KeyProvider": "commhistory.crypto",
    "Keyring": "commhistory.crypto",
    "KeyringExistsError": "commhistory.errors",
    "kpi": "commhistory.kpi",
    "KpiRow": "commhistory.kpi",
    "KpiTable": "commhistory.kpi",
    "MemoryRepository": "commhistory.store",
    "Message": "commhistory.model",
    "NormalizationError": "commhistory.errors",
    "normalize_email": "commhistory.normalize",
    "normalize_phone": "commhistory.normalize",
    "NotFoundError": "commhistory.errors",
    "open_repository": "commhistory.facade",
    "PayloadError": "commhistory.errors",
    "Permission": "commhistory.audit",
    "PermissionDenied": "commhistory.errors",
    "PersonalDataError": "commhistory.errors",
    "Policy": "commhistory.audit",
    "Purpose": "commhistory.model",
    "Repository": "commhistory.store",
    "RetentionPolicy": "commhistory.privacy",
    "rotate_keys": "commhistory.facade",
    "RotationReport": "commhistory.store",
    "SchemaError": "commhistory.errors",
    "SendDecision": "commhistory.consent",
    "SignatureError": "commhistory.errors",
    "SQLRepository": "commhistory.store",
    "StorageError": "commhistory.errors",
    "SuppressionEntry": "commhistory.consent",
    "SuppressionList": "commhistory.consent",
    "SuppressionReason": "commhistory.consent",
    "TimelineEntry": "commhistory.store",
    "UnknownActivityError": "commhistory.errors",
}


def __getattr__(name: str) -> _typing.Any:
    """Import a public name on first use and keep it in the package."""
    if name == "__version__":
        value: _typing.Any = _version()
    else:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        imported = _importlib.import_module(module)
        value = imported if module == f"{__name__}.{name}" else getattr(imported, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415 - start-up

    try:
        return version("commhistory")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
        return "0.0.0"


__all__ = [
    "ABResult",
    "Activity",
    "ActivityCatalog",
    "ActivityEntry",
    "Actor",
    "BounceClass",
    "Channel",
    "CommHistory",
    "CommHistoryError",
    "ConsentAction",
    "ConsentEvent",
    "ConsentLedger",
    "ConsentMethod",
    "ConsentRequired",
    "ConsentState",
    "ConsentStatus",
    "CryptoError",
    "DatabaseNotFoundError",
    "DatabaseUnavailableError",
    "DeadLetter",
    "DecryptionError",
    "Direction",
    "ErasureReport",
    "Event",
    "EventType",
    "GuardedRepository",
    "IngestReport",
    "InvalidInputError",
    "KeyNotFoundError",
    "KeyProvider",
    "Keyring",
    "KeyringExistsError",
    "KpiRow",
    "KpiTable",
    "MemoryRepository",
    "Message",
    "NormalizationError",
    "NotFoundError",
    "PayloadError",
    "Permission",
    "PermissionDenied",
    "PersonalDataError",
    "Policy",
    "Purpose",
    "Repository",
    "RetentionPolicy",
    "RotationReport",
    "SQLRepository",
    "SchemaError",
    "SendDecision",
    "SignatureError",
    "StorageError",
    "SuppressionEntry",
    "SuppressionList",
    "SuppressionReason",
    "TimelineEntry",
    "UnknownActivityError",
    "__version__",
    "kpi",
    "normalize_email",
    "normalize_phone",
    "open_repository",
    "rotate_keys",
]
