"""Keys, field encryption and blind indexes for personal data at rest.

* :mod:`~commhistory.crypto.keyring`: root keys (:class:`KeyProvider`, the local
  :class:`Keyring` file) and HKDF subkeys (:func:`derive_subkey`);
* :mod:`~commhistory.crypto.fields`: per-contact data keys, wrapped under the
  current root key, and the AES-256-GCM envelope of each personal field
  (:class:`FieldCipher`);
* :mod:`~commhistory.crypto.blind_index`: HMAC lookups by normalized email,
  phone or LINE id (:class:`BlindIndexer`).

See ``docs/keys.md`` for the formats, the rotation model and how to plug in a KMS.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from commhistory.crypto.blind_index import BLIND_INDEX_KINDS, BlindIndexer
from commhistory.crypto.fields import (
    DATA_KEY_SIZE,
    ENVELOPE_FORMAT,
    BytesLike,
    ContactTextOpener,
    FieldCipher,
    NoncePool,
    RowSealer,
    TextOpener,
    contact_text_opener,
    envelope_key_ref,
    new_data_key,
    rewrap_data_key,
    unwrap_data_key,
    wrap_data_key,
    wrap_data_keys,
    wrapped_key_id,
)
from commhistory.crypto.keyring import (
    KEYRING_FORMAT,
    ROOT_KEY_SIZE,
    SUBKEY_PURPOSES,
    KeyProvider,
    Keyring,
    derive_subkey,
    lookup_key_ids,
)

__all__ = [
    "BLIND_INDEX_KINDS",
    "DATA_KEY_SIZE",
    "ENVELOPE_FORMAT",
    "KEYRING_FORMAT",
    "ROOT_KEY_SIZE",
    "SUBKEY_PURPOSES",
    "BlindIndexer",
    "BytesLike",
    "ContactTextOpener",
    "FieldCipher",
    "KeyProvider",
    "Keyring",
    "NoncePool",
    "RowSealer",
    "TextOpener",
    "contact_text_opener",
    "derive_subkey",
    "envelope_key_ref",
    "lookup_key_ids",
    "new_data_key",
    "rewrap_data_key",
    "unwrap_data_key",
    "wrap_data_key",
    "wrap_data_keys",
    "wrapped_key_id",
]
