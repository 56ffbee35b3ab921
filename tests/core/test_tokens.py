"""Bearer tokens: format, randomness, storage hash and constant-time lookup."""

from __future__ import annotations

import base64
import hashlib
import re

from ac7_core import tokens

TOKEN_FORMAT = re.compile(r"^ac7_[A-Za-z0-9_-]{43}$")


def test_minted_token_format() -> None:
    for _ in range(50):
        token = tokens.mint_token()
        assert TOKEN_FORMAT.match(token), token
        assert tokens.TOKEN_RE.match(token)


def test_minted_token_carries_256_random_bits() -> None:
    token = tokens.mint_token()
    raw = base64.urlsafe_b64decode(token.removeprefix("ac7_") + "=")
    assert len(raw) == 32


def test_minted_tokens_are_unique() -> None:
    minted = [tokens.mint_token() for _ in range(500)]
    assert len(set(minted)) == len(minted)
    # Not just a unique prefix or suffix: the random bodies differ throughout.
    assert len({t[4:14] for t in minted}) == len(minted)


def test_hash_format_is_sha256_of_the_utf8_token() -> None:
    token = tokens.mint_token()
    hashed = tokens.hash_token(token)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", hashed)
    assert tokens.TOKEN_HASH_RE.match(hashed)
    assert hashed == "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def test_hash_uses_utf8_for_non_ascii_tokens() -> None:
    token = "ac7_ünïcödé-plaintext-from-an-old-config"
    assert tokens.hash_token(token) == "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def test_hash_is_deterministic_and_distinguishes_tokens() -> None:
    token = tokens.mint_token()
    assert tokens.hash_token(token) == tokens.hash_token(token)
    assert tokens.hash_token(token) != tokens.hash_token(token[:-1] + ("A" if token[-1] != "A" else "B"))


def test_token_matches() -> None:
    token = tokens.mint_token()
    other = tokens.mint_token()
    stored = tokens.hash_token(token)
    assert tokens.token_matches(token, stored) is True
    assert tokens.token_matches(other, stored) is False
    assert tokens.token_matches(token, stored.upper()) is False
    assert tokens.token_matches(token, "") is False
    # A corrupted stored hash (non-ASCII) is a mismatch, not a crash.
    assert tokens.token_matches(token, "sha256:" + "é" * 64) is False


def test_token_matches_compares_against_the_hash_not_the_token() -> None:
    token = tokens.mint_token()
    assert tokens.token_matches(token, token) is False


def test_find_token_owner() -> None:
    minted = {name: tokens.mint_token() for name in ("alice", "bob", "carol")}
    hashes = {name: tokens.hash_token(t) for name, t in minted.items()}
    for name, token in minted.items():
        assert tokens.find_token_owner(token, hashes) == name
    assert tokens.find_token_owner(tokens.mint_token(), hashes) is None
    assert tokens.find_token_owner(minted["alice"], {}) is None
    assert tokens.find_token_owner(minted["alice"], {"x": "garbage", "y": "sha256:é"}) is None
