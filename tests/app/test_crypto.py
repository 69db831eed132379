"""AES-256-GCM sealing with rotating keys."""

from __future__ import annotations

import pytest

from app.crypto import DecryptionFailed, MissingSecretKey, SecretBox


def test_seal_and_open():
    box = SecretBox(["key-one-0123456789abcdef"])
    blob = box.seal_json({"apiKey": "sk-123"}, aad=b"row-1")
    assert b"sk-123" not in blob
    assert box.open_json(blob, aad=b"row-1") == {"apiKey": "sk-123"}
    assert box.seal(b"x", aad=b"a") != box.seal(b"x", aad=b"a")  # fresh nonce each time


def test_a_blob_does_not_open_on_another_row_or_when_damaged():
    box = SecretBox(["key-one-0123456789abcdef"])
    blob = box.seal(b"secret", aad=b"row-1")
    with pytest.raises(DecryptionFailed):
        box.open(blob, aad=b"row-2")
    with pytest.raises(DecryptionFailed):
        box.open(blob[:-1] + bytes([blob[-1] ^ 1]), aad=b"row-1")
    with pytest.raises(DecryptionFailed, match="unknown format"):
        box.open(b"junk", aad=b"row-1")


def test_keys_rotate_newest_first():
    old = SecretBox(["old-key-0123456789abcdef"])
    blob = old.seal(b"secret", aad=b"r")
    both = SecretBox(["new-key-0123456789abcdef", "old-key-0123456789abcdef"])
    assert both.open(blob, aad=b"r") == b"secret"
    assert both.needs_rotation(blob)
    resealed = both.seal(both.open(blob, aad=b"r"), aad=b"r")
    assert not both.needs_rotation(resealed)
    new_only = SecretBox(["new-key-0123456789abcdef"])
    assert new_only.open(resealed, aad=b"r") == b"secret"
    with pytest.raises(DecryptionFailed, match="not in CONVEYOR_SECRET_KEY"):
        new_only.open(blob, aad=b"r")


def test_no_key_is_a_clear_error():
    with pytest.raises(MissingSecretKey, match="CONVEYOR_SECRET_KEY is not set"):
        SecretBox([])
