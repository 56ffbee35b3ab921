"""Bearer tokens: minting, hashing for storage, constant-time verification."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

TOKEN_PREFIX = "ac7_"  # noqa: S105 - a public prefix, not a secret
TOKEN_RE = re.compile(r"^ac7_[A-Za-z0-9_-]{43}\Z")
TOKEN_HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}\Z")


def mint_token() -> str:
    """A fresh `ac7_` token carrying 256 random bits."""
    raw = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")
    return TOKEN_PREFIX + raw


def hash_token(token: str) -> str:
    # No salt or slow KDF: the token is 256 random bits, so a fast hash is not brute-forceable.
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_matches(token: str, token_hash: str) -> bool:
    return hmac.compare_digest(hash_token(token).encode("ascii"), token_hash.encode("ascii", "replace"))


def find_token_owner(token: str, hashes: dict[str, str]) -> str | None:
    """The name whose hash matches `token`, comparing against every entry so timing reveals nothing."""
    candidate = hash_token(token).encode("ascii")
    owner: str | None = None
    for name, token_hash in hashes.items():
        if hmac.compare_digest(candidate, token_hash.encode("ascii", "replace")):
            owner = name
    return owner
