"""The database schema, in SQLAlchemy Core: one :data:`metadata`, one table per concept.

Conventions (see ``docs/storage.md``):

* Timestamps are ``BIGINT`` microseconds since the Unix epoch, UTC
  (:class:`UTCTimestamp` converts to and from aware datetimes). Integers sort,
  compare and aggregate the same way on SQLite and PostgreSQL, with no time
  zone or text-format ambiguity.
* Personal fields are ``BLOB``/``BYTEA`` AES-256-GCM envelopes
  (:class:`~commhistory.crypto.FieldCipher`), their AAD bound to table, column
  and the row's id. Identifiers, enums, timestamps and money stay plain, and so
  does ``messages.address_masked``, the masked form of a message's address
  (:mod:`commhistory.normalize.mask`), and ``events.link``, a click's link label
  (:mod:`commhistory.normalize.link`).
* Revenue is kept twice: ``revenue`` (the exact decimal string) and
  ``revenue_micros`` (an exact ``BIGINT`` of millionths), which SQL sums exactly.
* Strings are ``TEXT`` (no length limit), so both databases accept the same values.

The Alembic migrations under ``store/migrations`` create exactly this schema.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from commhistory.normalize.time import from_micros, to_micros

__all__ = [
    "NAMING_CONVENTION",
    "UTCTimestamp",
    "activities",
    "activity_names",
    "addresses",
    "attribute_definitions",
    "audit_log",
    "campaign_costs",
    "consent_events",
    "contact_attributes",
    "contacts",
    "dead_letters",
    "events",
    "journey_definitions",
    "journey_enrollments",
    "journey_intents",
    "journey_trigger_marks",
    "key_metadata",
    "messages",
    "metadata",
    "segment_definitions",
    "segment_snapshot_members",
    "segment_snapshots",
    "stored_seq",
    "suppressions",
]

NAMING_CONVENTION: Final = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata: Final = sa.MetaData(naming_convention=NAMING_CONVENTION)
"""Every table of the store."""


class UTCTimestamp(sa.TypeDecorator[datetime]):
    """An aware datetime stored as ``BIGINT`` microseconds since the epoch, UTC.

    Binds aware datetimes (and plain integers, already in microseconds); returns
    aware UTC datetimes.
    """

    impl = sa.BigInteger
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> int | None:
        """Convert an aware datetime to microseconds."""
        if value is None or isinstance(value, int):
            return value
        if isinstance(value, datetime) and value.utcoffset() is not None:
            return to_micros(value)
        raise TypeError("UTCTimestamp needs an aware datetime or integer microseconds")

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """Convert microseconds to an aware UTC datetime."""
        return None if value is None else from_micros(int(value))


ADDRESS_MASKED_COMMENT: Final = (
    "The address masked at ingest (first character and domain, country code and "
    "2 + last 4 digits, or first and last 4 characters), in the clear; NULL when the "
    "channel has no mask, before a backfill, and after erasure."
)

LINK_COMMENT: Final = (
    "The clicked URL's label (scheme, host, path with identifier-like segments masked; "
    "no query or fragment), in the clear; NULL for other events, before migration 0011, "
    "and after erasure."
)

OUTCOMES_COMMENT: Final = (
    "Bits folded from the message's events (commhistory.store.kpi.Outcome): 1 rejected, "
    "2 bounced, 4 hard bounce, 8 failed, 16 opened, 32 clicked, 64 converted, "
    "128 unsubscribed, 256 complained, the same five reactions by a non-machine event "
    "512 to 8192, 16384 conversions in several currencies."
)
CURRENCY_COMMENT: Final = (
    "The currency of the message's conversions with revenue, when they have one; "
    "NULL without any, or with several (outcomes bit 16384)."
)
REVENUE_COMMENT: Final = (
    "Sum of the revenue micros of the message's conversions in conversion_currency "
    "(machine ones included)."
)
HUMAN_REVENUE_COMMENT: Final = (
    "Sum of the revenue micros of the message's conversions not flagged machine, "
    "in conversion_currency."
)


def _id(name: str, *args: Any, **kw: Any) -> sa.Column[str]:
    return sa.Column(name, sa.Text(), *args, **kw)


def _blob(name: str, *, nullable: bool = True) -> sa.Column[bytes]:
    return sa.Column(name, sa.LargeBinary(), nullable=nullable)


STORED_SEQ_COMMENT: Final = (
    "The stored-at sequence (migration 0014): when the row was stored or last became "
    "exportable, for the analytics export's watermark. SQLite: the stored_seq counter, "
    "taken once per insert; PostgreSQL: the writing transaction's id. 0 before 0014."
)


def _stored_seq() -> sa.Column[int]:
    return sa.Column(
        "stored_seq", sa.BigInteger(), nullable=False, server_default="0",
        comment=STORED_SEQ_COMMENT,
    )  # fmt: skip


contacts: Final = sa.Table(
    "contacts",
    metadata,
    _id("contact_id", primary_key=True),
    _blob("data_key"),
    sa.Column("wrap_key_id", sa.Text(), nullable=True),
    sa.Column("created_at", UTCTimestamp(), nullable=False),
    sa.Column("erased_at", UTCTimestamp(), nullable=True),
    sa.Index(None, "wrap_key_id"),
    comment="One row per contact: its data key, wrapped under a keyring key.",
)

addresses: Final = sa.Table(
    "addresses",
    metadata,
    sa.Column("kind", sa.Text(), primary_key=True),
    sa.Column("blind_index", sa.LargeBinary(), primary_key=True),
    _id("contact_id", sa.ForeignKey("contacts.contact_id"), primary_key=True),
    sa.Column("index_key_id", sa.Text(), nullable=False),
    _blob("address", nullable=False),
    sa.Column("created_at", UTCTimestamp(), nullable=False),
    sa.Index(None, "contact_id"),
    sa.Index(None, "index_key_id"),
    comment="Blind indexes of contacts' addresses: lookups by (kind, blind_index).",
)

messages: Final = sa.Table(
    "messages",
    metadata,
    _id("message_id", primary_key=True),
    _id("contact_id", sa.ForeignKey("contacts.contact_id"), nullable=False),
    sa.Column("channel", sa.Text(), nullable=False),
    sa.Column("direction", sa.Text(), nullable=False),
    sa.Column("purpose", sa.Text(), nullable=False),
    sa.Column("campaign_id", sa.Text(), nullable=True),
    sa.Column("variant", sa.Text(), nullable=True),
    sa.Column("provider", sa.Text(), nullable=True),
    sa.Column("provider_message_id", sa.Text(), nullable=True),
    sa.Column("sent_at", UTCTimestamp(), nullable=False),
    _blob("address", nullable=False),
    _blob("subject"),
    _blob("body"),
    _blob("metadata"),
    # Migration 0005: the address masked at ingest (t***@example.com), plain, so a
    # reader without read_personal sees it without decryption; erasure sets it NULL.
    sa.Column("address_masked", sa.Text(), nullable=True, comment=ADDRESS_MASKED_COMMENT),
    # Migration 0008: what the message's events say happened to it, kept by ingest
    # in the events' transaction, so KPIs scan messages instead of grouping events.
    sa.Column(
        "outcomes",
        sa.Integer(),
        nullable=False,
        server_default=sa.text("0"),
        comment=OUTCOMES_COMMENT,
    ),
    sa.Column("conversion_currency", sa.Text(), nullable=True, comment=CURRENCY_COMMENT),
    sa.Column(
        "conversion_revenue_micros", sa.BigInteger(), nullable=True, comment=REVENUE_COMMENT
    ),
    sa.Column(
        "human_revenue_micros", sa.BigInteger(), nullable=True, comment=HUMAN_REVENUE_COMMENT
    ),
    _stored_seq(),
    sa.UniqueConstraint("provider", "provider_message_id"),
    sa.Index(None, "contact_id", "sent_at"),
    sa.Index(None, "stored_seq"),  # migration 0018: the analytics export's next run
    comment="Messages; address, subject, body and metadata encrypted.",
)

events: Final = sa.Table(
    "events",
    metadata,
    _id("event_id", primary_key=True),
    sa.Column("message_id", sa.Text(), nullable=True),
    sa.Column("contact_id", sa.Text(), nullable=True),
    sa.Column("provider", sa.Text(), nullable=True),
    sa.Column("provider_message_id", sa.Text(), nullable=True),
    sa.Column("provider_event_id", sa.Text(), nullable=True),
    sa.Column("type", sa.Text(), nullable=False),
    sa.Column("occurred_at", UTCTimestamp(), nullable=False),
    sa.Column("status_code", sa.Text(), nullable=True),
    sa.Column("bounce", sa.Text(), nullable=True),
    sa.Column("machine", sa.Boolean(), nullable=False),
    sa.Column("revenue", sa.Text(), nullable=True),
    sa.Column("revenue_micros", sa.BigInteger(), nullable=True),
    sa.Column("currency", sa.Text(), nullable=True),
    sa.Column("orphan_key_id", sa.Text(), nullable=True),
    _blob("address"),
    _blob("reason"),
    _blob("url"),
    _blob("user_agent"),
    _blob("ip"),
    _blob("metadata"),
    # Migration 0011: a click's link label (commhistory.normalize.link), plain, so
    # the report counts clicks per link without decryption; erasure sets it NULL.
    sa.Column("link", sa.Text(), nullable=True, comment=LINK_COMMENT),
    _stored_seq(),
    sa.UniqueConstraint("provider", "provider_event_id"),
    sa.Index(None, "contact_id", "occurred_at"),
    sa.Index(None, "stored_seq"),  # migration 0018: the analytics export's next run
    # Covers the KPI engine's per-message pass over events (migration 0003), and
    # every lookup by message_id (migration 0020 dropped the single-column index).
    sa.Index(
        "ix_events_kpi", "message_id", "type", "machine", "bounce", "revenue_micros", "currency"
    ),
    sa.Index(
        "ix_events_orphans",
        "provider",
        "provider_message_id",
        "message_id",
        sqlite_where=sa.text("contact_id IS NULL"),
        postgresql_where=sa.text("contact_id IS NULL"),
    ),
    comment=(
        "Events. contact_id is NULL while the message is unknown (an orphan, "
        "encrypted under the keyring's orphan subkey of orphan_key_id)."
    ),
)

consent_events: Final = sa.Table(
    "consent_events",
    metadata,
    _id("consent_id", primary_key=True),
    _id("contact_id", sa.ForeignKey("contacts.contact_id"), nullable=False),
    sa.Column("channel", sa.Text(), nullable=False),
    sa.Column("purpose", sa.Text(), nullable=False),
    sa.Column("action", sa.Text(), nullable=False),
    sa.Column("method", sa.Text(), nullable=False),
    sa.Column("occurred_at", UTCTimestamp(), nullable=False),
    sa.Column("recorded_at", UTCTimestamp(), nullable=True),
    sa.Column("notice_version", sa.Text(), nullable=True),
    sa.Column("notice_hash", sa.Text(), nullable=True),
    sa.Column("actor", sa.Text(), nullable=True),
    _blob("source"),
    _blob("ip"),
    _blob("user_agent"),
    _blob("metadata"),
    sa.Column("evidence_key_id", sa.Text(), nullable=True),
    sa.Column("retain_until", UTCTimestamp(), nullable=True),
    sa.Index(None, "contact_id", "occurred_at"),
    sa.Index(None, "channel", "purpose", "occurred_at"),
    # Migration 0019: the latest state per contact of one channel and purpose
    # (send screen, segment consent and suppression), from the index alone.
    sa.Index(None, "channel", "purpose", "contact_id", "occurred_at", "action"),
    # After an erasure, the evidence columns are encrypted under the keyring's
    # "consent-evidence" subkey of evidence_key_id and kept until retain_until.
    comment="Append-only consent ledger; source, ip, user agent and metadata encrypted.",
)

suppressions: Final = sa.Table(
    "suppressions",
    metadata,
    _id("suppression_id", primary_key=True),
    sa.Column("kind", sa.Text(), nullable=False),
    sa.Column("blind_index", sa.LargeBinary(), nullable=False),
    sa.Column("index_key_id", sa.Text(), nullable=False),
    sa.Column("channel", sa.Text(), nullable=False),
    sa.Column("purpose", sa.Text(), nullable=True),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("cause_id", sa.Text(), nullable=True),
    sa.Column("since", UTCTimestamp(), nullable=False),
    sa.Column("lifted_at", UTCTimestamp(), nullable=True),
    sa.Column("lifted_by", sa.Text(), nullable=True),
    sa.Column("created_at", UTCTimestamp(), nullable=False),
    sa.Index(None, "kind", "blind_index"),
    sa.Index(None, "channel", "since"),
    comment=(
        "Address-level suppression: a keyed blind index of the address (never the "
        "address), the scope (channel, purpose or NULL for all), reason and cause."
    ),
)

dead_letters: Final = sa.Table(
    "dead_letters",
    metadata,
    _id("dead_letter_id", primary_key=True),
    sa.Column("fingerprint", sa.LargeBinary(), nullable=False),
    sa.Column("received_at", UTCTimestamp(), nullable=False),
    sa.Column("source", sa.Text(), nullable=False),
    sa.Column("line", sa.Integer(), nullable=True),
    sa.Column("field", sa.Text(), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("key_id", sa.Text(), nullable=False),
    _blob("raw", nullable=False),
    sa.UniqueConstraint("fingerprint"),
    sa.Index(None, "received_at"),
    comment="Rejected input: raw text encrypted under the dead-letter subkey of key_id.",
)

key_metadata: Final = sa.Table(
    "key_metadata",
    metadata,
    sa.Column("key_id", sa.Text(), primary_key=True),
    sa.Column("first_seen_at", UTCTimestamp(), nullable=False),
    sa.Column("updated_at", UTCTimestamp(), nullable=False),
    sa.Column("is_current", sa.Boolean(), nullable=False),
    sa.Column("is_index", sa.Boolean(), nullable=False),
    comment="Keyring key ids this database has seen (ids only, never key material).",
)

audit_log: Final = sa.Table(
    "audit_log",
    metadata,
    sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
    sa.Column("recorded_at", UTCTimestamp(), nullable=False),
    sa.Column("actor_id", sa.Text(), nullable=False),
    sa.Column("roles", sa.Text(), nullable=False),
    sa.Column("action", sa.Text(), nullable=False),
    sa.Column("permission", sa.Text(), nullable=True),
    sa.Column("contact_id", sa.Text(), nullable=True),
    sa.Column("targets", sa.Text(), nullable=False),
    sa.Column("purpose", sa.Text(), nullable=False),
    sa.Column("outcome", sa.Text(), nullable=False),
    sa.Column("key_id", sa.Text(), nullable=False),
    sa.Column("prev_mac", sa.LargeBinary(), nullable=False),
    sa.Column("mac", sa.LargeBinary(), nullable=False),
    sa.Index(None, "contact_id"),
    sa.Index(None, "actor_id"),
    sa.Index(None, "recorded_at"),
    comment=(
        "Append-only audit log: who did what to which ids, why and with what outcome "
        "(ids only, never personal values); each row HMAC-chained to the one before "
        "under the keyring's audit subkey of key_id."
    ),
)

campaign_costs: Final = sa.Table(
    "campaign_costs",
    metadata,
    _id("cost_id", primary_key=True),
    sa.Column("campaign_id", sa.Text(), nullable=False),
    sa.Column("channel", sa.Text(), nullable=True),
    sa.Column("variant", sa.Text(), nullable=True),
    sa.Column("starts_at", UTCTimestamp(), nullable=False),
    sa.Column("ends_at", UTCTimestamp(), nullable=False),
    sa.Column("amount", sa.Text(), nullable=False),
    sa.Column("amount_micros", sa.BigInteger(), nullable=False),
    sa.Column("currency", sa.Text(), nullable=False),
    sa.Column("recorded_at", UTCTimestamp(), nullable=False),
    _stored_seq(),
    sa.Index(None, "campaign_id", "starts_at"),
    sa.Index(None, "stored_seq"),  # migration 0018: the analytics export's next run
    comment=(
        "Campaign costs (migration 0009): money spent on a campaign, or on one channel "
        "or variant of it, over [starts_at, ends_at); all plain, nothing personal."
    ),
)

activity_names: Final = sa.Table(
    "activity_names",
    metadata,
    sa.Column("name", sa.Text(), primary_key=True),
    sa.Column("plain_keys", sa.Text(), nullable=False),
    sa.Column("declared_at", UTCTimestamp(), nullable=False),
    comment=(
        "The activity names the host declared (migration 0007), each with the JSON "
        "array of its property keys stored in the clear."
    ),
)

activities: Final = sa.Table(
    "activities",
    metadata,
    _id("activity_id", primary_key=True),
    # No foreign key, as on events: ingest creates the contact row first, in the
    # same transaction, and a per-row key check would cost PostgreSQL's COPY a third.
    _id("contact_id", nullable=False),
    sa.Column("name", sa.Text(), nullable=False),
    sa.Column("occurred_at", UTCTimestamp(), nullable=False),
    sa.Column("revenue", sa.Text(), nullable=True),
    sa.Column("revenue_micros", sa.BigInteger(), nullable=True),
    sa.Column("currency", sa.Text(), nullable=True),
    sa.Column("plain_properties", sa.Text(), nullable=True),
    _blob("properties"),
    sa.Column("attributed_message_id", sa.Text(), nullable=True),
    _stored_seq(),
    # Segment queries (migration 0007): a contact's activities of a name in time
    # order, and every contact's activities of a name in a period.
    sa.Index(None, "contact_id", "name", "occurred_at"),
    sa.Index(None, "name", "occurred_at"),
    sa.Index(None, "stored_seq"),  # migration 0018: the analytics export's next run
    comment=(
        "What contacts did outside messages (migration 0007): plain_properties holds "
        "the keys declared plain as JSON; properties the others, encrypted."
    ),
)

# Migration 0014: the SQLite counter behind stored_seq (one row; unused on PostgreSQL,
# where stored_seq defaults to the writing transaction's id).
stored_seq: Final = sa.Table(
    "stored_seq",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("value", sa.BigInteger(), nullable=False),
    comment=(
        "The last stored-at sequence value taken on SQLite (one row, id 1); inserts "
        "into messages, events, activities and campaign_costs take the next one."
    ),
)

# Migration 0006: contact attributes (see commhistory.store.attributes).
attribute_definitions: Final = sa.Table(
    "attribute_definitions",
    metadata,
    sa.Column("name", sa.Text(), primary_key=True),
    sa.Column("type", sa.Text(), nullable=False),
    sa.Column("personal", sa.Boolean(), nullable=False),
    sa.Column("allowed", sa.Text(), nullable=True),
    sa.Column("description", sa.Text(), nullable=True),
    sa.Column("declared_at", UTCTimestamp(), nullable=False),
    sa.Column("updated_at", UTCTimestamp(), nullable=False),
    comment=(
        "The host's declared contact attributes: type, personal flag, an enum's "
        "allowed values (a JSON array)."
    ),
)

_CURRENT = "valid_to IS NULL"


def _current_index(column: str) -> sa.Index:
    return sa.Index(
        f"ix_contact_attributes_current_{column.removeprefix('value_')}",
        "name",
        column,
        sqlite_where=sa.text(_CURRENT),
        postgresql_where=sa.text(_CURRENT),
    )


contact_attributes: Final = sa.Table(
    "contact_attributes",
    metadata,
    _id("contact_id", sa.ForeignKey("contacts.contact_id"), primary_key=True),
    sa.Column("name", sa.Text(), primary_key=True),
    sa.Column("valid_from", UTCTimestamp(), primary_key=True, autoincrement=False),
    sa.Column("valid_to", UTCTimestamp(), nullable=True),
    sa.Column("value_type", sa.Text(), nullable=False),
    sa.Column("value_text", sa.Text(), nullable=True),
    sa.Column("value_int", sa.BigInteger(), nullable=True),
    sa.Column("value_micros", sa.BigInteger(), nullable=True),
    sa.Column("value_bool", sa.Boolean(), nullable=True),
    sa.Column("value_date", sa.Text(), nullable=True),
    sa.Column("value_ts", UTCTimestamp(), nullable=True),
    _blob("value_secret"),
    sa.Column("recorded_at", UTCTimestamp(), nullable=False),
    # "Current value of X is ...": one partial index per typed column, current rows only.
    _current_index("value_text"),
    _current_index("value_int"),
    _current_index("value_micros"),
    _current_index("value_date"),
    _current_index("value_ts"),
    comment=(
        "Contact attribute values over [valid_from, valid_to) (valid_to NULL: current). "
        "Plain values in the typed column of their type; personal ones encrypted in "
        "value_secret under the contact's data key."
    ),
)


# Migration 0013: saved segments (see commhistory.store.segments).
segment_definitions: Final = sa.Table(
    "segment_definitions",
    metadata,
    sa.Column("name", sa.Text(), primary_key=True),
    sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("definition", sa.Text(), nullable=False),
    sa.Column("saved_at", UTCTimestamp(), nullable=False),
    comment=(
        "Saved segment definitions (migration 0013): each version's condition tree as "
        "canonical JSON; attribute names, operators and values, never personal data."
    ),
)

segment_snapshots: Final = sa.Table(
    "segment_snapshots",
    metadata,
    _id("snapshot_id", primary_key=True),
    sa.Column("name", sa.Text(), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("at", UTCTimestamp(), nullable=False),
    sa.Column("taken_at", UTCTimestamp(), nullable=False),
    sa.Index(None, "name", "taken_at"),
    comment="Membership snapshots of saved segments (migration 0013).",
)

segment_snapshot_members: Final = sa.Table(
    "segment_snapshot_members",
    metadata,
    _id("snapshot_id", sa.ForeignKey("segment_snapshots.snapshot_id"), primary_key=True),
    _id("contact_id", primary_key=True),
    sa.Index(None, "contact_id"),
    comment=(
        "The contact ids of each snapshot (migration 0013); erasure deletes a contact's rows."
    ),
)


# Migration 0015: journey definitions, enrollments and claimed intents (see
# commhistory.store.journeys).
journey_definitions: Final = sa.Table(
    "journey_definitions",
    metadata,
    sa.Column("journey_key", sa.Text(), primary_key=True),
    sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("definition", sa.Text(), nullable=False),
    sa.Column("saved_at", UTCTimestamp(), nullable=False),
    comment=(
        "Journey definitions (migration 0015): each version's JSON form; a stored version "
        "is never changed. Template keys, durations and activity names, never personal data."
    ),
)

journey_enrollments: Final = sa.Table(
    "journey_enrollments",
    metadata,
    _id("enrollment_id", primary_key=True),
    sa.Column("journey_key", sa.Text(), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    _id("contact_id", nullable=False),
    sa.Column("trigger_id", sa.Text(), nullable=False),
    sa.Column("entered_at", UTCTimestamp(), nullable=False),
    sa.Column("entry_properties", sa.Text(), nullable=False),
    sa.Column("step_id", sa.Text(), nullable=True),
    sa.Column("since", UTCTimestamp(), nullable=False),
    sa.Column("status", sa.Text(), nullable=False),
    sa.Column("visits", sa.Text(), nullable=False),
    sa.Column("wake_at", UTCTimestamp(), nullable=True),
    sa.Column("revision", sa.Integer(), nullable=False),
    sa.UniqueConstraint("journey_key", "trigger_id"),
    sa.Index(None, "status", "wake_at"),
    sa.Index(None, "contact_id", "journey_key"),
    comment=(
        "Journey enrollments (migration 0015): where each contact stands in a journey "
        "version and when due() next looks at it (wake_at); plain entry properties only. "
        "Erasure deletes a contact's rows."
    ),
)

journey_intents: Final = sa.Table(
    "journey_intents",
    metadata,
    sa.Column("intent_key", sa.Text(), primary_key=True),
    _id("enrollment_id", nullable=False),
    sa.Column("step_id", sa.Text(), nullable=False),
    sa.Column("issued_at", UTCTimestamp(), nullable=False),
    sa.Column("recorded_at", UTCTimestamp(), nullable=True),
    sa.Column("outcome", sa.Text(), nullable=True),
    _id("message_id", nullable=True),
    # Migration 0017: why send planning made due() skip the step (a reason code).
    sa.Column("reason", sa.Text(), nullable=True),
    sa.Index(None, "enrollment_id"),
    comment=(
        "Journey send intents claimed by due() (migration 0015): inserting the key is the "
        "claim, so no step is handed out twice; recorded_at/outcome when the host recorded "
        "the send (sent or skipped) and the message it sent."
    ),
)

# Migration 0016: how far each journey's triggers read the history (see
# commhistory.journeys.triggers).
journey_trigger_marks: Final = sa.Table(
    "journey_trigger_marks",
    metadata,
    sa.Column("journey_key", sa.Text(), primary_key=True),
    sa.Column("source", sa.Text(), primary_key=True),
    sa.Column("watermark", sa.BigInteger(), nullable=False),
    sa.Column("until", UTCTimestamp(), nullable=True),
    sa.Column("snapshot_id", sa.Text(), nullable=True),
    sa.Column("updated_at", UTCTimestamp(), nullable=False),
    comment=(
        "How far each journey's triggers read the stored history (migration 0016): the "
        "stored_seq bound, the latest instant and the last segment snapshot consumed, "
        "per journey key and source ('*': the feeds that wake enrollments)."
    ),
)
