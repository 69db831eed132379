"""API keys as data: the caller a key authenticates, and key generation and hashing."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from app.statuses import Role

KEY_PREFIX = "cvk_"


@dataclass(frozen=True)
class Caller:
    """The authenticated key behind the current request."""

    key_id: str
    workspace_id: str
    role: str
    name: str
    key_prefix: str

    def has_role(self, role: str) -> bool:
        """True when this key's role is ``role`` or above."""
        return Role(self.role).includes(role)


def generate_key() -> tuple[str, str, str]:
    """A new key as ``(full_key, display_prefix, sha256_hex)``."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, key[:12], hash_key(key)


def hash_key(key: str) -> str:
    """SHA-256 of a key: keys are high-entropy, so a fast hash is the right tool."""
    return hashlib.sha256(key.encode()).hexdigest()
