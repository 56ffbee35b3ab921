"""Web Push building blocks: the RFC 8291 known-answer vector, VAPID signing, policy words, payloads, endpoints."""

from __future__ import annotations

import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from push_service_fake import b64u, decrypt_aes128gcm, point, unb64u, verify_vapid
from py_vapid import Vapid  # type: ignore[import-untyped]

from ac7_broker.store.messages import Message
from ac7_broker.web_push import build_payload, encode_payload, mentioned_names, push_targets
from ac7_broker.web_push_crypto import (
    MAX_PLAINTEXT_BYTES,
    VapidSigner,
    encrypt_payload,
    generate_vapid_keys,
    parse_auth,
    parse_p256dh,
    vapid_public_for,
)
from ac7_broker.web_push_endpoints import PublicOnlyResolver, check_endpoint, endpoint_origin

# RFC 8291 Appendix A (all base64url).
RFC_PLAINTEXT = b"When I grow up, I want to be a watermelon"
RFC_AS_PRIVATE = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"
RFC_AS_PUBLIC = "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8"
RFC_UA_PRIVATE = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"
RFC_UA_PUBLIC = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
RFC_AUTH = "BTBZMqHH6r4Tts7J_aSIgg"
RFC_SALT = "DGv6ra1nlYgDCS1FRnbzlw"
RFC_BODY = (
    "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3"
    "jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
)


def _private(raw_b64: str) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int.from_bytes(unb64u(raw_b64), "big"), ec.SECP256R1())


def test_rfc8291_vector_keys_are_consistent() -> None:
    assert b64u(point(_private(RFC_AS_PRIVATE).public_key())) == RFC_AS_PUBLIC
    assert b64u(point(_private(RFC_UA_PRIVATE).public_key())) == RFC_UA_PUBLIC


def test_rfc8291_vector_decrypts_with_the_fake_push_services_decryptor() -> None:
    plaintext = decrypt_aes128gcm(unb64u(RFC_BODY), _private(RFC_UA_PRIVATE), unb64u(RFC_AUTH))
    assert plaintext == RFC_PLAINTEXT


def test_rfc8291_vector_decryption_fails_with_another_auth_secret() -> None:
    with pytest.raises(ValueError, match="authenticate"):
        decrypt_aes128gcm(unb64u(RFC_BODY), _private(RFC_UA_PRIVATE), b"\x00" * 16)


def test_rfc8291_vector_is_reproduced_byte_for_byte_by_the_brokers_encryption() -> None:
    body = encrypt_payload(
        RFC_PLAINTEXT, RFC_UA_PUBLIC, RFC_AUTH, salt=unb64u(RFC_SALT), sender_key=_private(RFC_AS_PRIVATE)
    )
    assert b64u(body) == RFC_BODY


def test_broker_encryption_round_trips_through_the_independent_decryptor() -> None:
    receiver = ec.generate_private_key(ec.SECP256R1())
    auth = bytes(range(16))
    payload = json.dumps({"body": "ünïcode 🚒" * 20}, ensure_ascii=False).encode()
    first = encrypt_payload(payload, b64u(point(receiver.public_key())), b64u(auth))
    second = encrypt_payload(payload, b64u(point(receiver.public_key())), b64u(auth))
    assert first != second  # fresh salt and sender key every time
    for body in (first, second):
        assert decrypt_aes128gcm(body, receiver, auth) == payload
    with pytest.raises(ValueError, match="larger than"):
        encrypt_payload(b"x" * (MAX_PLAINTEXT_BYTES + 1), b64u(point(receiver.public_key())), b64u(auth))


@pytest.mark.parametrize(
    ("p256dh", "reason"),
    [
        ("not base64!", "base64url"),
        (b64u(b"\x04" + b"\x01" * 63), "65-byte"),
        (b64u(b"\x02" + b"\x01" * 64), "65-byte"),  # right length, but not the uncompressed form
        (b64u(b"\x04" + b"\x01" * 64), "not a point on the P-256 curve"),
    ],
)
def test_p256dh_must_be_an_uncompressed_point_on_the_curve(p256dh: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_p256dh(p256dh)


def test_auth_secret_must_be_16_bytes() -> None:
    assert parse_auth(b64u(b"a" * 16)) == b"a" * 16
    for bad in (b64u(b"a" * 15), b64u(b"a" * 17), "a+b/" * 6):
        with pytest.raises(ValueError):
            parse_auth(bad)


# --- VAPID ----------------------------------------------------------------------------------------------------------


def test_generated_vapid_keys_have_the_forms_browsers_and_py_vapid_take() -> None:
    public, private = generate_vapid_keys()
    assert len(unb64u(public)) == 65 and unb64u(public)[0] == 4
    assert len(unb64u(private)) == 32
    assert "=" not in public + private
    assert vapid_public_for(private) == public
    # pywebpush's own loader (Vapid.from_string) reads the stored form as a raw key and gets the same pair.
    assert b64u(point(Vapid.from_string(private).public_key)) == public


def test_vapid_header_verifies_as_rfc8292_requires() -> None:
    public, private = generate_vapid_keys()
    signer = VapidSigner(private, "mailto:ops@acme.test")
    now = time.time()
    header = signer.authorization("https://push.example.net", now)
    claims = verify_vapid(header, "https://push.example.net", public)
    assert claims["sub"] == "mailto:ops@acme.test"
    assert now + 11 * 3600 < claims["exp"] <= now + 12 * 3600 + 1
    # Bound to the audience: the same header is refused by another push service.
    with pytest.raises(ValueError, match="aud"):
        verify_vapid(header, "https://other.example.net", public)
    # Cached while it has hours left, re-signed before it gets close to expiring.
    assert signer.authorization("https://push.example.net", now + 3600) == header
    fresh = signer.authorization("https://push.example.net", now + 7 * 3600)
    assert fresh != header
    assert verify_vapid(fresh, "https://push.example.net", public)["exp"] > now + 18 * 3600


# --- policy and payload ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "mentioned"),
    [
        ("@ivy can you look?", True),
        ("ping @IVY, please", True),
        ("thanks (@Ivy)", True),
        ("thanks @ivy.", True),
        ("@ivy!", True),
        ("ivy can you look?", False),
        ("@ivybot can you look?", False),
        ("@ivy.bot can you look?", False),
        ("@ivy-2 can you look?", False),
        ("mail ivy@example.com or me@ivy", False),
        ("a@ivy", False),
        ("@ivy_2 can you look?", False),
        ("@ivy.. can you look?", False),
        ("@@ivy look", True),
        ("x_@ivy look", False),
        ("first @dan then @ivy", True),
        ("an @ then ivy", False),
    ],
)
def test_mentions_are_whole_names_case_insensitively(body: str, mentioned: bool) -> None:
    assert ("ivy" in mentioned_names(body)) is mentioned


def _message(
    sender: str = "ivy", to: str | None = None, body: str = "hi", level: str = "info", title: str | None = None
) -> Message:
    return Message("0190a0b0-0000-7000-8000-000000000001", 1, sender, to, title, body, level, {})


def test_push_targets_follow_the_policy() -> None:
    team = ["alice", "ivy", "dan", "mike"]
    nobody_live = lambda _name: False  # noqa: E731
    assert push_targets(_message(to="dan"), ["dan", "ivy"], nobody_live) == ["dan"]
    assert push_targets(_message(to="ivy"), ["ivy"], nobody_live) == []  # a DM to oneself
    assert push_targets(_message(), team, nobody_live) == []
    assert push_targets(_message(level="notice"), team, nobody_live) == []
    for level in ("warning", "error", "critical"):
        assert push_targets(_message(level=level), team, nobody_live) == ["alice", "dan", "mike"]
    assert push_targets(_message(body="@dan @mike look"), team, nobody_live) == ["dan", "mike"]
    assert push_targets(_message(body="thanks @Mike."), team, nobody_live) == ["mike"]
    dotted = ["ivy", "ivy.bot", "dan"]
    assert push_targets(_message(sender="dan", body="@ivy.bot, over to you"), dotted, nobody_live) == ["ivy.bot"]
    assert push_targets(_message(level="error"), team, lambda name: name == "dan") == ["alice", "mike"]


def test_payload_for_a_dm_and_for_a_broadcast() -> None:
    assert build_payload(_message(to="dan", body="CI is red")) == {
        "title": "ivy",
        "body": "CI is red",
        "tag": "ac7:dm:ivy",
        "url": "/?dm=ivy",
        "severity": "info",
        "messageId": "0190a0b0-0000-7000-8000-000000000001",
    }
    broadcast = build_payload(_message(body="deploy done", level="warning", title="Deploy"))
    assert broadcast["title"] == "ivy → #team — Deploy"
    assert (broadcast["tag"], broadcast["url"], broadcast["severity"]) == ("ac7:team", "/", "warning")


def test_payload_stays_within_one_record_for_the_largest_message() -> None:
    worst = _message(sender="x" * 64, to="y" * 64, title="😀" * 256, body="😀" * 65536, level="critical")
    payload = build_payload(worst)
    assert len(payload["body"]) == 180 and payload["body"].endswith("…")
    assert len(encode_payload(payload)) <= MAX_PLAINTEXT_BYTES


# --- endpoints ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://fcm.googleapis.com/fcm/send/abc",
        "https://localhost/push",
        "https://127.0.0.1/push",
        "https://10.1.2.3/push",
        "https://169.254.169.254/latest",
        "https://[::1]/push",
        "https://[::ffff:127.0.0.1]/push",
        "https://intranet/push",
        "https://printer.local/push",
        "https://user:pw@fcm.googleapis.com/push",
        "https://fcm.googleapis.com/push#frag",
        "https://fcm.googleapis.com:0/push",
        "https://fcm.googleapis.com:99999/push",
        "https:///push",
        "ftp://fcm.googleapis.com/push",
        "/relative/push",
        "https://fcm.googleapis.com/push\nX-Injected: 1",
        "https://fcm.googleapis.com/" + "a" * 2048,
    ],
)
def test_endpoints_that_are_refused(endpoint: str) -> None:
    with pytest.raises(ValueError):
        check_endpoint(endpoint)


def test_endpoints_that_are_accepted_and_their_origins() -> None:
    for endpoint, origin in [
        ("https://fcm.googleapis.com/fcm/send/abc:def", "https://fcm.googleapis.com"),
        ("https://updates.push.services.mozilla.com/wpush/v2/gAAA", "https://updates.push.services.mozilla.com"),
        ("https://Web.Push.Apple.com:443/QGx", "https://web.push.apple.com"),
        ("https://push.example.net:8443/x", "https://push.example.net:8443"),
    ]:
        assert check_endpoint(endpoint) == endpoint
        assert endpoint_origin(endpoint) == origin
    # Loopback http only with the test switch, and still never another scheme or a remote http host.
    assert check_endpoint("http://127.0.0.1:8080/push/a", allow_insecure=True)
    assert check_endpoint("http://localhost:8080/push/a", allow_insecure=True)
    with pytest.raises(ValueError):
        check_endpoint("http://fcm.googleapis.com/push", allow_insecure=True)
    assert endpoint_origin("http://127.0.0.1:8080/push/a") == "http://127.0.0.1:8080"


async def test_resolver_refuses_names_that_resolve_to_internal_addresses() -> None:
    resolver = PublicOnlyResolver()
    try:
        with pytest.raises(OSError, match="non-public"):
            await resolver.resolve("localhost", 443)
    finally:
        await resolver.close()
