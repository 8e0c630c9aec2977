"""commhistory: a business's whole communication history with its customers, kept safe and useful.

Import it as ``import commhistory as ch``; every public name is re-exported here.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

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

try:
    __version__ = _version("commhistory")
except _PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

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
