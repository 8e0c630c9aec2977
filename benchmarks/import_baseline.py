"""The hand-written baseline of ``bench_import_e2e``: the same import job at its leanest.

``python benchmarks/import_baseline.py FILE URL`` reads a canonical JSON lines
file and stores it the way a careful developer would by hand, with no library
of ours: ``json.loads`` per line; a random AES-256 data key per contact, wrapped
under one master key; every personal field (address, subject, body, an event's
url and user agent) sealed with AES-256-GCM and AAD naming table, column and
row; an HMAC-SHA256 blind index of the lower-cased email address; rows written in
batches of 10,000 (``executemany`` on SQLite in WAL mode, binary ``COPY`` on
PostgreSQL) with the primary keys deduplicating. No validation beyond what
``json`` and the driver do, no dead letters, no suppression feed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sqlite3
import sys
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

BATCH = 10_000
MASTER = AESGCM(bytes(32))
INDEX_KEY = b"\x01" * 32

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS contacts (contact_id TEXT PRIMARY KEY, data_key BYTEA NOT NULL)",
    "CREATE TABLE IF NOT EXISTS messages (message_id TEXT PRIMARY KEY, contact_id TEXT NOT NULL,"
    " channel TEXT, direction TEXT, purpose TEXT, campaign_id TEXT, variant TEXT,"
    " sent_at BIGINT, address BYTEA, subject BYTEA, body BYTEA)",
    "CREATE TABLE IF NOT EXISTS addresses (blind_index BYTEA, contact_id TEXT,"
    " PRIMARY KEY (blind_index, contact_id))",
    "CREATE TABLE IF NOT EXISTS events (event_id TEXT PRIMARY KEY, message_id TEXT, type TEXT,"
    " occurred_at BIGINT, url BYTEA, user_agent BYTEA)",
)


def _micros(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1_000_000)


class Keys:
    """Per-contact AES-GCM keys, created on first use, wrapped for storage."""

    def __init__(self) -> None:
        self.ciphers: dict[str, AESGCM] = {}
        self.new: list[tuple[str, bytes]] = []
        self.contact_of: dict[str, str] = {}
        self.indexed: set[tuple[bytes, str]] = set()

    def cipher(self, contact_id: str) -> AESGCM:
        """Return the contact's cipher, creating (and queueing for storage) its key."""
        found = self.ciphers.get(contact_id)
        if found is None:
            key = AESGCM.generate_key(bit_length=256)
            nonce = os.urandom(12)
            self.new.append((contact_id, nonce + MASTER.encrypt(nonce, key, contact_id.encode())))
            found = self.ciphers[contact_id] = AESGCM(key)
        return found


def seal(cipher: AESGCM, value: str | None, aad: str) -> bytes | None:
    if value is None:
        return None
    nonce = os.urandom(12)
    return nonce + cipher.encrypt(nonce, value.encode(), aad.encode())


def rows(path: str, keys: Keys) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """Yield ``(table, row)`` for every line of the file."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            if d["kind"] == "message":
                mid, cid = d["message_id"], d["contact_id"]
                keys.contact_of[mid] = cid
                c = keys.cipher(cid)
                address = d["address"].lower()
                yield "messages", (
                    mid, cid, d["channel"], d["direction"], d.get("purpose", "marketing"),
                    d.get("campaign_id"), d.get("variant"), _micros(d["sent_at"]),
                    seal(c, address, f"messages|address|{mid}"),
                    seal(c, d.get("subject"), f"messages|subject|{mid}"),
                    seal(c, d.get("body"), f"messages|body|{mid}"),
                )  # fmt: skip
                digest = hmac.new(INDEX_KEY, b"email\x00" + address.encode(), hashlib.sha256)
                key = (digest.digest()[:16], cid)
                if key not in keys.indexed:
                    keys.indexed.add(key)
                    yield "addresses", key
            elif d["kind"] == "event":
                eid, mid = d["event_id"], d["message_id"]
                c = keys.cipher(keys.contact_of[mid])
                yield "events", (
                    eid, mid, d["type"], _micros(d["occurred_at"]),
                    seal(c, d.get("url"), f"events|url|{eid}"),
                    seal(c, d.get("user_agent"), f"events|user_agent|{eid}"),
                )  # fmt: skip


INSERTS = {
    "contacts": "INSERT INTO contacts VALUES (?, ?) ON CONFLICT DO NOTHING",
    "messages": "INSERT INTO messages VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
    "addresses": "INSERT INTO addresses VALUES (?, ?) ON CONFLICT DO NOTHING",
    "events": "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
}


def batches(path: str) -> Iterator[dict[str, list[tuple[Any, ...]]]]:
    """Yield the file's rows by table, BATCH records at a time, new contacts' keys included."""
    keys = Keys()
    pending: dict[str, list[tuple[Any, ...]]] = {t: [] for t in INSERTS}
    count = 0
    for table, row in rows(path, keys):
        pending[table].append(row)
        if table != "addresses":
            count += 1
        if count >= BATCH:
            pending["contacts"], keys.new = keys.new, []
            yield pending
            pending = {t: [] for t in INSERTS}
            count = 0
    pending["contacts"], keys.new = keys.new, []
    yield pending


def _records(batch: dict[str, list[tuple[Any, ...]]]) -> int:
    return len(batch["messages"]) + len(batch["events"])


def import_sqlite(path: str, db: str) -> int:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    for ddl in SCHEMA:
        conn.execute(ddl.replace("BYTEA", "BLOB"))
    stored = 0
    for batch in batches(path):
        conn.execute("BEGIN")
        for table, batch_rows in batch.items():
            if batch_rows:
                conn.executemany(INSERTS[table], batch_rows)
        conn.execute("COMMIT")
        stored += _records(batch)
    conn.close()
    return stored


def import_postgres(path: str, url: str) -> int:
    import psycopg

    stored = 0
    with psycopg.connect(url, autocommit=True) as conn:
        for ddl in SCHEMA:
            conn.execute(ddl)
        for batch in batches(path):
            with conn.transaction():
                for table, batch_rows in batch.items():
                    if batch_rows:
                        with conn.cursor().copy(f"COPY {table} FROM STDIN") as copy:
                            for r in batch_rows:
                                copy.write_row(r)
            stored += _records(batch)
    return stored


if __name__ == "__main__":
    source, target = sys.argv[1], sys.argv[2]
    if target.startswith("postgresql"):
        n = import_postgres(source, target)
    else:
        n = import_sqlite(source, target.removeprefix("sqlite:///"))
    print(json.dumps({"stored": n}))
