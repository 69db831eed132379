"""Encryption at rest for credential secrets: AES-256-GCM under keys from CONVEYOR_SECRET_KEY.

``CONVEYOR_SECRET_KEY`` holds one or more comma-separated keys, newest first. The newest
encrypts; every key decrypts, so keys rotate by prepending a new one, re-encrypting
(``SecretBox.needs_rotation`` tells which blobs still use an old key), then dropping the old.
Each given string is stretched to a 32-byte AES key with HKDF-SHA256; give high-entropy
strings (``python -c "import secrets; print(secrets.token_urlsafe(32))"``).

A sealed blob is ``b"\\x01" | key id (4 bytes) | nonce (12 bytes) | ciphertext + tag``. The
associated data binds a blob to its row, so a ciphertext copied onto another credential does
not decrypt.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

FORMAT_VERSION = b"\x01"
KEY_ID_BYTES = 4
NONCE_BYTES = 12
_HKDF_SALT = b"conveyor/credentials"
_HKDF_INFO = b"aes-256-gcm/v1"


class CryptoError(Exception):
    """Base of the encryption errors."""


class MissingSecretKey(CryptoError):
    """CONVEYOR_SECRET_KEY is not set, so nothing can be encrypted or decrypted."""


class DecryptionFailed(CryptoError):
    """The blob is damaged, belongs to another row, or its key is no longer configured."""


def derive_key(secret: str) -> bytes:
    """A 32-byte AES key from one configured key string."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_HKDF_SALT, info=_HKDF_INFO).derive(
        secret.encode()
    )


def key_id(key: bytes) -> bytes:
    """A short public fingerprint of a derived key, stored with each blob."""
    return hashlib.sha256(b"conveyor/key-id/" + key).digest()[:KEY_ID_BYTES]


class SecretBox:
    """Seal and open secrets with the configured keys (newest first)."""

    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise MissingSecretKey(
                "CONVEYOR_SECRET_KEY is not set: credentials are encrypted with it. Set it to "
                "a long random string (several, comma-separated, newest first, to rotate)."
            )
        keys = [derive_key(s) for s in secrets]
        self._current = keys[0]
        self._current_id = key_id(keys[0])
        self._keys = {key_id(k): AESGCM(k) for k in reversed(keys)}

    @property
    def current_key_id(self) -> str:
        """The hex id of the key that encrypts."""
        return self._current_id.hex()

    def seal(self, plaintext: bytes, *, aad: bytes) -> bytes:
        """Encrypt with the newest key."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self._current).encrypt(nonce, plaintext, aad)
        return FORMAT_VERSION + self._current_id + nonce + sealed

    def open(self, blob: bytes, *, aad: bytes) -> bytes:
        """Decrypt with whichever configured key sealed ``blob``."""
        if len(blob) < 1 + KEY_ID_BYTES + NONCE_BYTES + 16 or blob[:1] != FORMAT_VERSION:
            raise DecryptionFailed("not a sealed secret (unknown format)")
        kid = blob[1 : 1 + KEY_ID_BYTES]
        aes = self._keys.get(kid)
        if aes is None:
            raise DecryptionFailed(
                f"sealed with key {kid.hex()}, which is not in CONVEYOR_SECRET_KEY any more"
            )
        nonce = blob[1 + KEY_ID_BYTES : 1 + KEY_ID_BYTES + NONCE_BYTES]
        try:
            return aes.decrypt(nonce, blob[1 + KEY_ID_BYTES + NONCE_BYTES :], aad)
        except InvalidTag as exc:
            raise DecryptionFailed("the secret does not decrypt (damaged or moved)") from exc

    def needs_rotation(self, blob: bytes) -> bool:
        """True when ``blob`` was sealed with an older key than the newest."""
        return blob[1 : 1 + KEY_ID_BYTES] != self._current_id

    def seal_json(self, value: Any, *, aad: bytes) -> bytes:
        """Encrypt a JSON value."""
        return self.seal(json.dumps(value, separators=(",", ":")).encode(), aad=aad)

    def open_json(self, blob: bytes, *, aad: bytes) -> Any:
        """Decrypt a JSON value."""
        return json.loads(self.open(blob, aad=aad))
