"""`enc-v1` fields: AES-256-GCM under the KEK, bound to the field's identity as associated data.

Format: ``enc-v1:<b64url iv(12)>:<b64url tag(16)>:<b64url ciphertext>``. The field identity (for example
``slots/alice/totpSecret``) is the AAD, so a ciphertext pasted into another field fails to decrypt.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ac7_core.errors import Ac7Error

PREFIX = "enc-v1:"
SEALED_RE = re.compile(r"^enc-v1:[A-Za-z0-9_-]+:[A-Za-z0-9_-]+:[A-Za-z0-9_-]*\Z")
_IV_LEN = 12
_TAG_LEN = 16
KEY_LEN = 32


class SealError(Ac7Error):
    """A sealed field could not be opened; the message names the field."""


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX)


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _check_key(key: bytes) -> None:
    if len(key) != KEY_LEN:
        raise SealError(f"key-encryption key must be {KEY_LEN} bytes, got {len(key)}")


def seal(key: bytes, plaintext: str, field: str) -> str:
    _check_key(key)
    iv = secrets.token_bytes(_IV_LEN)
    sealed = AESGCM(key).encrypt(iv, plaintext.encode("utf-8"), field.encode("utf-8"))
    ciphertext, tag = sealed[:-_TAG_LEN], sealed[-_TAG_LEN:]
    return f"{PREFIX}{_b64e(iv)}:{_b64e(tag)}:{_b64e(ciphertext)}"


def unseal(key: bytes, value: str, field: str) -> str:
    _check_key(key)
    parts = value.split(":")
    if len(parts) != 4 or parts[0] != "enc-v1" or not SEALED_RE.match(value):
        raise SealError(f"{field}: malformed enc-v1 value (expected enc-v1:<iv>:<tag>:<ciphertext>)")
    try:
        iv, tag, ciphertext = (_b64d(p) for p in parts[1:])
    except (binascii.Error, ValueError):
        raise SealError(f"{field}: malformed enc-v1 value (bad base64url)") from None
    if len(iv) != _IV_LEN or len(tag) != _TAG_LEN:
        raise SealError(f"{field}: malformed enc-v1 value (iv must be 12 bytes and tag 16)")
    try:
        plaintext = AESGCM(key).decrypt(iv, ciphertext + tag, field.encode("utf-8"))
    except InvalidTag:
        raise SealError(
            f"{field}: cannot decrypt: wrong key-encryption key, or the value was altered or copied from another field"
        ) from None
    try:
        return plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise SealError(f"{field}: decrypted value is not UTF-8") from None
