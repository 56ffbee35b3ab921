"""RFC 6238 TOTP (SHA-1, 6 digits, 30 s, ±1 step) that reports the matched time-step for the replay guard."""

from __future__ import annotations

import hmac
import re
import time
import urllib.parse

import pyotp

STEP_SECONDS = 30
DIGITS = 6
WINDOW = 1
_CODE_RE = re.compile(r"^[0-9]{6}\Z")
SECRET_RE = re.compile(r"^[A-Z2-7]{16,128}=*\Z")


def new_secret() -> str:
    """160 random bits (the RFC 4226 recommended key length), base32."""
    return pyotp.random_base32(32)


def hotp(secret: str, counter: int, digits: int = DIGITS) -> str:
    return pyotp.HOTP(secret, digits=digits).at(counter)


def step_at(unix_time: float) -> int:
    return int(unix_time // STEP_SECONDS)


def code_at(secret: str, unix_time: float, digits: int = DIGITS) -> str:
    return hotp(secret, step_at(unix_time), digits)


def match_step(secret: str, code: str, *, now: float | None = None, after_step: int | None = None) -> int | None:
    """The time-step `code` is valid for (within ±1 of now), or None.

    Steps at or before `after_step` never match: that is the replay guard, and it also stops an older code in the
    window from being accepted once a newer one has been. Every candidate is compared, in constant time.
    """
    code = code.strip()
    if not _CODE_RE.match(code):
        return None
    current = step_at(time.time() if now is None else now)
    matched: int | None = None
    for step in range(current - WINDOW, current + WINDOW + 1):
        ok = hmac.compare_digest(hotp(secret, step).encode("ascii"), code.encode("ascii"))
        if ok and (after_step is None or step > after_step):
            matched = step
    return matched


def provisioning_uri(secret: str, account: str, issuer: str) -> str:
    """An ``otpauth://totp/`` URI that authenticator apps import (also rendered as the enrolment QR code)."""
    label = urllib.parse.quote(f"{issuer}:{account}", safe=":@")
    query = urllib.parse.urlencode(
        {"secret": secret, "issuer": issuer, "algorithm": "SHA1", "digits": DIGITS, "period": STEP_SECONDS}
    )
    return f"otpauth://totp/{label}?{query}"
