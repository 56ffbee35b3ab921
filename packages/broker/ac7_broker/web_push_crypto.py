"""Web Push cryptography: subscription keys, the aes128gcm payload (RFC 8291), VAPID keys and signatures (RFC 8292).

Encryption is `http_ece.encrypt`, the call pywebpush's `WebPusher.encode` makes for aes128gcm (record size 4096, the
sender's fresh P-256 public key as the key id); calling it directly lets the RFC 8291 known-answer test inject the
spec's salt and sender key. Signing is py-vapid's `Vapid02` (`Authorization: vapid t=<JWT>,k=<key>`).
"""

from __future__ import annotations

import base64
import binascii
import re
import time

import http_ece  # type: ignore[import-untyped]
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02  # type: ignore[import-untyped]

P256_POINT_BYTES = 65
AUTH_SECRET_BYTES = 16
RECORD_SIZE = 4096
# Every push service accepts at least 4096 bytes of body: RFC 8188 header (86) + tag (16) + delimiter (1).
MAX_PLAINTEXT_BYTES = RECORD_SIZE - 86 - 16 - 1
VAPID_TOKEN_LIFETIME = 12 * 3600  # RFC 8292 §2: at most 24 h
# A cached token is reused until this much of its lifetime is left, so every token sent has hours to spare.
VAPID_REFRESH_MARGIN = 6 * 3600
_MAX_CACHED_AUDIENCES = 256
_B64URL_RE = re.compile(r"^[A-Za-z0-9_-]+={0,2}\Z")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict base64url (padding optional); ValueError for anything else."""
    if not _B64URL_RE.match(text):
        raise ValueError("is not base64url")
    bare = text.rstrip("=")
    try:
        return base64.urlsafe_b64decode(bare + "=" * (-len(bare) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("is not base64url") from None


def parse_p256dh(text: str) -> ec.EllipticCurvePublicKey:
    """A browser's `keys.p256dh`: base64url of an uncompressed P-256 point that lies on the curve."""
    raw = b64url_decode(text)
    if len(raw) != P256_POINT_BYTES or raw[0] != 0x04:
        raise ValueError(f"must be a {P256_POINT_BYTES}-byte uncompressed P-256 point")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError:
        raise ValueError("is not a point on the P-256 curve") from None


def parse_auth(text: str) -> bytes:
    raw = b64url_decode(text)
    if len(raw) != AUTH_SECRET_BYTES:
        raise ValueError(f"must be {AUTH_SECRET_BYTES} bytes")
    return raw


def public_point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def encrypt_payload(
    plaintext: bytes,
    p256dh: str,
    auth: str,
    *,
    salt: bytes | None = None,
    sender_key: ec.EllipticCurvePrivateKey | None = None,
) -> bytes:
    """The RFC 8291 aes128gcm body for one subscription. `salt` and `sender_key` are fresh unless a test pins them."""
    if len(plaintext) > MAX_PLAINTEXT_BYTES:
        raise ValueError(f"push payload larger than {MAX_PLAINTEXT_BYTES} bytes")
    receiver = public_point(parse_p256dh(p256dh))
    secret = parse_auth(auth)
    if sender_key is None:
        sender_key = ec.generate_private_key(ec.SECP256R1())
    body: bytes = http_ece.encrypt(
        plaintext,
        salt=salt,
        private_key=sender_key,
        dh=receiver,
        auth_secret=secret,
        rs=RECORD_SIZE,
        version="aes128gcm",
    )
    return body


# --- VAPID ----------------------------------------------------------------------------------------------------------


def private_key_from_raw(private_b64: str) -> ec.EllipticCurvePrivateKey:
    """The VAPID private key as stored in the config: base64url of the raw 32-byte P-256 scalar."""
    raw = b64url_decode(private_b64)
    if len(raw) != 32:
        raise ValueError("a VAPID private key is 32 bytes")
    return ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())


def generate_vapid_keys() -> tuple[str, str]:
    """A fresh (public, private) pair: base64url of the uncompressed point and of the raw 32-byte scalar.

    The same forms the JavaScript `web-push` library and pywebpush/py-vapid (`Vapid.from_string`) use, and what a
    browser's `applicationServerKey` takes.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_numbers().private_value.to_bytes(32, "big")
    return b64url(public_point(key.public_key())), b64url(private)


def vapid_public_for(private_b64: str) -> str:
    return b64url(public_point(private_key_from_raw(private_b64).public_key()))


class VapidSigner:
    """`Authorization` header values for one VAPID key, cached per push-service origin (`aud`)."""

    def __init__(self, private_b64: str, subject: str) -> None:
        # no-strict: the config schema already requires a mailto:/https: subject; py-vapid's own e-mail regex would
        # otherwise fail every send for an address it happens not to like.
        self._vapid = Vapid02(private_key_from_raw(private_b64), conf={"no-strict": True})
        self.subject = subject
        self._cache: dict[str, tuple[str, int]] = {}

    def authorization(self, audience: str, now: float | None = None) -> str:
        now = time.time() if now is None else now
        cached = self._cache.get(audience)
        if cached is not None and cached[1] - now > VAPID_REFRESH_MARGIN:
            return cached[0]
        exp = int(now) + VAPID_TOKEN_LIFETIME
        header: str = self._vapid.sign({"aud": audience, "exp": exp, "sub": self.subject})["Authorization"]
        if len(self._cache) >= _MAX_CACHED_AUDIENCES:
            self._cache.clear()
        self._cache[audience] = (header, exp)
        return header
