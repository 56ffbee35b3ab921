"""A fake Web Push service on loopback that speaks the real protocol (RFC 8030 / 8291 / 8292).

For every POST to `/push/<subscription id>` it checks the VAPID `Authorization: vapid t=<JWT>, k=<key>` header
(ES256 signature under `k`, `aud` equal to its own origin, `exp` in the future and at most 24 h ahead, a mailto: or
https: `sub`, and `k` equal to the applicationServerKey the subscription was made with), requires `TTL` and
`Content-Encoding: aes128gcm`, refuses bodies over 4096 bytes, and decrypts the body with the subscription's own
private key and auth secret. The decryption (`decrypt_aes128gcm`) is written here from RFC 8291 §3.4 / RFC 8188
with `cryptography` alone, independent of the http_ece code the broker encrypts with.

Each subscription answers 201 by default; a test can script 404, 410, 500 or "hang" (never answer). Requests that
break the protocol are answered 400/401/403/413 and listed in `rejections`, which the fixture asserts is empty.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from broker_harness import Running, StartBroker
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAX_BODY = 4096
MAX_VAPID_EXP = 24 * 3600
CLOCK_SKEW = 60


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


# --- RFC 8291 decryption, from the RFC ------------------------------------------------------------------------------


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


class DecryptError(ValueError):
    pass


def decrypt_aes128gcm(body: bytes, ua_private: ec.EllipticCurvePrivateKey, auth_secret: bytes) -> bytes:
    """RFC 8291 §3.4 + RFC 8188 §2: the plaintext of a Web Push message body addressed to `ua_private`."""
    if len(body) < 21:
        raise DecryptError("body shorter than the RFC 8188 header")
    salt, rs, idlen = body[:16], struct.unpack("!I", body[16:20])[0], body[20]
    keyid = body[21 : 21 + idlen]
    if idlen != 65 or len(keyid) != 65 or keyid[0] != 0x04:
        raise DecryptError("keyid must be the sender's 65-byte uncompressed P-256 key")
    if rs < 18:
        raise DecryptError("record size too small")
    as_public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), keyid)
    ua_public = point(ua_private.public_key())
    ecdh_secret = ua_private.exchange(ec.ECDH(), as_public)
    # IKM = HKDF(salt=auth_secret, ikm=ecdh_secret, info="WebPush: info" 0x00 ua_public as_public, L=32)
    prk_key = _hmac(auth_secret, ecdh_secret)
    ikm = _hmac(prk_key, b"WebPush: info\x00" + ua_public + keyid + b"\x01")
    # CEK / NONCE = HKDF(salt, IKM, "Content-Encoding: aes128gcm|nonce" 0x00)
    prk = _hmac(salt, ikm)
    cek = _hmac(prk, b"Content-Encoding: aes128gcm\x00\x01")[:16]
    nonce = _hmac(prk, b"Content-Encoding: nonce\x00\x01")[:12]
    records = body[21 + idlen :]
    if not records:
        raise DecryptError("no records")
    plaintext = b""
    aead = AESGCM(cek)
    chunks = [records[i : i + rs] for i in range(0, len(records), rs)]
    for seq, chunk in enumerate(chunks):
        iv = (int.from_bytes(nonce, "big") ^ seq).to_bytes(12, "big")
        try:
            padded = aead.decrypt(iv, chunk, None)
        except InvalidTag:
            raise DecryptError(f"record {seq} does not authenticate") from None
        unpadded = padded.rstrip(b"\x00")
        if not unpadded:
            raise DecryptError("record has no padding delimiter")
        last = seq == len(chunks) - 1
        delimiter = unpadded[-1]
        if delimiter != (0x02 if last else 0x01):
            raise DecryptError(f"record {seq} has padding delimiter {delimiter:#04x}")
        plaintext += unpadded[:-1]
    return plaintext


# --- VAPID verification ---------------------------------------------------------------------------------------------


class VapidError(ValueError):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def verify_vapid(header: str | None, audience: str, expected_key: str | None) -> dict[str, Any]:
    """RFC 8292 §3: the claims of a valid `vapid t=..., k=...` header; VapidError (with the status) otherwise."""
    if header is None:
        raise VapidError(401, "no Authorization header")
    scheme, _, params = header.partition(" ")
    if scheme.lower() != "vapid":
        raise VapidError(401, f"Authorization scheme {scheme!r} is not vapid")
    values: dict[str, str] = {}
    for param in params.split(","):
        name, sep, value = param.strip().partition("=")
        if not sep:
            raise VapidError(401, "malformed vapid parameters")
        values[name.strip().lower()] = value.strip()
    token, key = values.get("t"), values.get("k")
    if not token or not key:
        raise VapidError(401, "vapid needs both t and k")
    try:
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64u(key))
        head_b64, claims_b64, sig_b64 = token.split(".")
        head = json.loads(unb64u(head_b64))
        claims = json.loads(unb64u(claims_b64))
        sig = unb64u(sig_b64)
    except ValueError as exc:
        raise VapidError(401, f"malformed JWT or key: {exc}") from None
    if head.get("alg") != "ES256":
        raise VapidError(401, f"JWT alg must be ES256, got {head.get('alg')!r}")
    if len(sig) != 64:
        raise VapidError(401, "ES256 signature must be 64 bytes (r || s)")
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        public.verify(der, f"{head_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise VapidError(401, "JWT signature does not verify under k") from None
    if claims.get("aud") != audience:
        raise VapidError(401, f"aud {claims.get('aud')!r} is not {audience!r}")
    exp = claims.get("exp")
    now = time.time()
    if not isinstance(exp, int) or exp <= now or exp > now + MAX_VAPID_EXP + CLOCK_SKEW:
        raise VapidError(401, f"exp {exp!r} must be in the future and at most 24 h ahead")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.startswith(("mailto:", "https:")):
        raise VapidError(401, f"sub {sub!r} must be a mailto: or https: URI")
    if expected_key is not None and key != expected_key:
        raise VapidError(403, "k is not the applicationServerKey this subscription was created with")
    return dict(claims)


# --- the service ----------------------------------------------------------------------------------------------------


@dataclass
class FakeSubscription:
    """One browser's subscription: its endpoint, its private key and auth secret, and the scripted answer."""

    id: str
    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    application_server_key: str | None
    status: int | str = 201  # 201, 404, 410, 500, ... or "hang"
    delay: float = 0.0  # seconds to think before answering

    @property
    def p256dh(self) -> str:
        return b64u(point(self.private_key.public_key()))

    def subscription_json(self) -> dict[str, Any]:
        """What the browser's PushSubscription.toJSON() gives, and the UI posts to /push/subscriptions."""
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": self.p256dh, "auth": b64u(self.auth)},
        }


@dataclass
class PushRequest:
    sub_id: str
    status: int  # what the fake answered
    plaintext: bytes
    headers: dict[str, str]
    claims: dict[str, Any]

    def json(self) -> Any:
        return json.loads(self.plaintext)


@dataclass
class FakePushService:
    requests: list[PushRequest] = field(default_factory=list)  # every well-formed request, whatever the answer
    rejections: list[tuple[str, str]] = field(default_factory=list)  # (sub id, why) for protocol violations
    subscriptions: dict[str, FakeSubscription] = field(default_factory=dict)
    origin: str = ""
    in_flight: int = 0
    max_in_flight: int = 0  # the most requests this service was handling at once
    _runner: web.AppRunner | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post("/push/{sub_id}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.origin = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def close(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def new_subscription(
        self, application_server_key: str | None = None, status: int | str = 201, delay: float = 0.0
    ) -> FakeSubscription:
        sub_id = secrets.token_urlsafe(12)
        sub = FakeSubscription(
            sub_id,
            f"{self.origin}/push/{sub_id}",
            ec.generate_private_key(ec.SECP256R1()),
            secrets.token_bytes(16),
            application_server_key,
            status,
            delay,
        )
        self.subscriptions[sub_id] = sub
        return sub

    def delivered(self, sub: FakeSubscription | None = None) -> list[PushRequest]:
        """Requests answered 201 (to `sub`, or to anyone)."""
        return [r for r in self.requests if r.status == 201 and (sub is None or r.sub_id == sub.id)]

    def to(self, sub: FakeSubscription) -> list[PushRequest]:
        return [r for r in self.requests if r.sub_id == sub.id]

    async def wait_for(
        self, count: int, sub: FakeSubscription | None = None, deadline: float = 20.0
    ) -> list[PushRequest]:
        """Wait until at least `count` requests (to `sub`, or in all) arrived; they are returned."""

        def found() -> list[PushRequest]:
            return self.requests if sub is None else self.to(sub)

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(found()) >= count), deadline)
        return found()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        sub_id = request.match_info["sub_id"]
        sub = self.subscriptions.get(sub_id)
        if sub is None:
            return web.Response(status=404)
        try:
            claims = verify_vapid(request.headers.get("Authorization"), self.origin, sub.application_server_key)
            if request.headers.get("Content-Encoding", "").lower() != "aes128gcm":
                raise VapidError(400, f"Content-Encoding {request.headers.get('Content-Encoding')!r} is not aes128gcm")
            ttl = request.headers.get("TTL")
            if ttl is None or not ttl.isdigit():
                raise VapidError(400, f"TTL header missing or not a non-negative integer: {ttl!r}")
            urgency = request.headers.get("Urgency")
            if urgency is not None and urgency not in ("very-low", "low", "normal", "high"):
                raise VapidError(400, f"Urgency {urgency!r} is not one of RFC 8030's values")
            body = await request.read()
            if len(body) > MAX_BODY:
                raise VapidError(413, f"body of {len(body)} bytes is over {MAX_BODY}")
            try:
                plaintext = decrypt_aes128gcm(body, sub.private_key, sub.auth)
            except (DecryptError, ValueError) as exc:
                raise VapidError(400, f"cannot decrypt: {exc}") from None
        except VapidError as exc:
            await self._note(rejection=(sub_id, str(exc)))
            return web.Response(status=exc.status, text=str(exc))
        answer = sub.status
        if sub.delay:
            await asyncio.sleep(sub.delay)
        await self._note(
            request=PushRequest(
                sub_id, 0 if answer == "hang" else int(answer), plaintext, dict(request.headers), claims
            )
        )
        if answer == "hang":
            await self._release.wait()
            return web.Response(status=503)
        headers = {"Location": f"/message/{secrets.token_urlsafe(8)}"} if answer == 201 else None
        return web.Response(status=int(answer), headers=headers)

    async def _note(self, *, request: PushRequest | None = None, rejection: tuple[str, str] | None = None) -> None:
        async with self._changed:
            if request is not None:
                self.requests.append(request)
            if rejection is not None:
                self.rejections.append(rejection)
            self._changed.notify_all()


@pytest.fixture
async def push_service() -> AsyncIterator[FakePushService]:
    service = FakePushService()
    await service.start()
    yield service
    await service.close()
    # Every request the broker made must have been protocol-correct.
    assert service.rejections == [], service.rejections


@pytest.fixture
async def web_push_broker(start: StartBroker) -> Running:
    """A real broker that may send to the loopback fake (Settings.push_allow_insecure_endpoints)."""
    return await start(push_allow_insecure_endpoints=True)


# --- the browser's side of the broker API ---------------------------------------------------------------------------


async def vapid_public_key(http: aiohttp.ClientSession, broker: Running) -> str:
    async with http.get(f"{broker.url}/push/vapid-public-key") as r:
        assert r.status == 200, await r.text()
        key = (await r.json())["publicKey"]
        assert isinstance(key, str)
        return key


async def register(
    http: aiohttp.ClientSession, broker: Running, service: FakePushService, slot: str, status: int | str = 201
) -> tuple[FakeSubscription, str]:
    """Subscribe a new fake browser for `slot` the way the UI does; returns it and the broker's subscription id."""
    sub = service.new_subscription(await vapid_public_key(http, broker), status)
    async with http.post(
        f"{broker.url}/push/subscriptions", json=sub.subscription_json(), headers=broker.auth(slot)
    ) as r:
        body = await r.json()
        assert r.status == 201, body
        assert set(body) == {"id"}
        return sub, body["id"]


__all__ = [
    "FakePushService",
    "FakeSubscription",
    "PushRequest",
    "b64u",
    "decrypt_aes128gcm",
    "point",
    "push_service",
    "register",
    "unb64u",
    "vapid_public_key",
    "verify_vapid",
    "web_push_broker",
]
