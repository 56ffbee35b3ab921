"""The Web Push subscription API (DESIGN §4): public key, strict validation, ownership, upsert, the per-slot cap."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from ac7_auth_helpers import assert_error, bare_session, call, code_for, cookie_header, login, session_cookie
from broker_harness import Running, StartBroker
from cryptography.hazmat.primitives.asymmetric import ec
from push_service_fake import FakePushService, b64u, point, push_service, register, unb64u, web_push_broker

from ac7_broker.web_push import MAX_SUBSCRIPTIONS_PER_SLOT
from ac7_core.config_file import load_config

__all__ = ["push_service", "web_push_broker"]  # fixtures

GOOD_P256DH = b64u(point(ec.generate_private_key(ec.SECP256R1()).public_key()))
GOOD_AUTH = b64u(b"0123456789abcdef")
ENDPOINT = "https://fcm.googleapis.com/fcm/send/dXNlci1hZ2VudC1zdWJzY3JpcHRpb24"


def subscription(endpoint: str = ENDPOINT, p256dh: str = GOOD_P256DH, auth: str = GOOD_AUTH) -> dict[str, Any]:
    return {"endpoint": endpoint, "expirationTime": None, "keys": {"p256dh": p256dh, "auth": auth}}


async def post_sub(broker: Running, slot: str, body: Any) -> Any:
    async with bare_session() as s:
        return await call(s, "POST", f"{broker.url}/push/subscriptions", json=body, headers=broker.auth(slot))


async def delete_sub(broker: Running, slot: str, sub_id: str) -> Any:
    async with bare_session() as s:
        return await call(s, "DELETE", f"{broker.url}/push/subscriptions/{sub_id}", headers=broker.auth(slot))


async def test_vapid_public_key_is_public_and_matches_the_configs_private_key(broker: Running) -> None:
    async with bare_session() as s:
        reply = await call(s, "GET", f"{broker.url}/push/vapid-public-key")
    assert reply.status == 200, reply.body
    assert set(reply.body) == {"publicKey"}
    raw = unb64u(reply.body["publicKey"])
    ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)  # a point on P-256
    config = load_config(broker.team.config_path).config
    assert config.web_push is not None
    assert reply.body["publicKey"] == config.web_push.public_key
    private = ec.derive_private_key(int.from_bytes(unb64u(config.web_push.private_key), "big"), ec.SECP256R1())
    assert b64u(point(private.public_key())) == reply.body["publicKey"]


async def test_subscriptions_need_authentication(broker: Running) -> None:
    async with bare_session() as s:
        created = await call(s, "POST", f"{broker.url}/push/subscriptions", json=subscription())
        deleted = await call(s, "DELETE", f"{broker.url}/push/subscriptions/whatever")
        bad_token = await call(
            s,
            "POST",
            f"{broker.url}/push/subscriptions",
            json=subscription(),
            headers={"Authorization": "Bearer ac7_x"},
        )
    for reply in (created, deleted, bad_token):
        assert_error(reply, 401, "unauthenticated")
    assert await broker.broker.state.store.push.count() == 0


def _with(path: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    def mutate(body: dict[str, Any]) -> Any:
        target = body
        *parents, leaf = path.split(".")
        for key in parents:
            target = target[key]
        if value is KeyError:
            del target[leaf]
        else:
            target[leaf] = value
        return body

    return mutate


OFF_CURVE = b64u(b"\x04" + b"\x01" * 64)

BAD_BODIES = [
    pytest.param(lambda b: [b], "JSON object", id="not-an-object"),
    pytest.param(_with("endpoint", KeyError), "endpoint", id="no-endpoint"),
    pytest.param(_with("endpoint", 42), "endpoint", id="endpoint-not-string"),
    pytest.param(_with("endpoint", "http://fcm.googleapis.com/fcm/send/x"), "https://", id="http-endpoint"),
    pytest.param(_with("endpoint", "http://127.0.0.1:9/push/x"), "https://", id="loopback-http-without-flag"),
    pytest.param(_with("endpoint", "https://127.0.0.1/push/x"), "public", id="loopback-https"),
    pytest.param(_with("endpoint", "https://192.168.1.5/push/x"), "public", id="private-ip"),
    pytest.param(_with("endpoint", "https://localhost/push/x"), "public", id="localhost"),
    pytest.param(_with("endpoint", "javascript:alert(1)"), "https://", id="javascript"),
    pytest.param(_with("endpoint", "fcm.googleapis.com/fcm/send/x"), "https://", id="no-scheme"),
    pytest.param(_with("endpoint", "https://fcm.googleapis.com/" + "a" * 2030), "2048", id="too-long"),
    pytest.param(_with("endpoint", "https://u:p@fcm.googleapis.com/x"), "credentials", id="userinfo"),
    pytest.param(_with("keys", KeyError), "keys", id="no-keys"),
    pytest.param(_with("keys", "p256dh"), "keys", id="keys-not-object"),
    pytest.param(_with("keys.p256dh", KeyError), "p256dh", id="no-p256dh"),
    pytest.param(_with("keys.auth", KeyError), "auth", id="no-auth"),
    pytest.param(_with("keys.extra", "x"), "extra", id="unknown-key-field"),
    pytest.param(_with("extra", 1), "extra", id="unknown-field"),
    pytest.param(_with("expirationTime", "soon"), "expirationTime", id="bad-expiration"),
    pytest.param(_with("keys.p256dh", "not+base64/url="), "base64url", id="p256dh-not-b64url"),
    pytest.param(_with("keys.p256dh", b64u(b"\x04" + b"\x01" * 31)), "65-byte", id="p256dh-short"),
    pytest.param(_with("keys.p256dh", b64u(b"\x03" + b"\x01" * 32)), "65-byte", id="p256dh-compressed"),
    pytest.param(_with("keys.p256dh", OFF_CURVE), "curve", id="p256dh-not-on-curve"),
    pytest.param(_with("keys.p256dh", "A" * 400), "p256dh", id="p256dh-huge"),
    pytest.param(_with("keys.auth", b64u(b"x" * 15)), "16 bytes", id="auth-short"),
    pytest.param(_with("keys.auth", b64u(b"x" * 17)), "16 bytes", id="auth-long"),
    pytest.param(_with("keys.auth", "!!!!"), "base64url", id="auth-not-b64url"),
    pytest.param(_with("keys.auth", 12), "auth", id="auth-not-string"),
]


@pytest.mark.parametrize(("mutate", "mentions"), BAD_BODIES)
async def test_invalid_subscriptions_are_refused_with_a_reason(
    broker: Running, mutate: Callable[[dict[str, Any]], Any], mentions: str
) -> None:
    reply = await post_sub(broker, "ivy", mutate(copy.deepcopy(subscription())))
    assert_error(reply, 400, "bad_request")
    assert mentions in reply.body["error"], reply.body
    assert await broker.broker.state.store.push.count() == 0


async def test_a_valid_subscription_is_stored_and_resubscribing_is_idempotent(broker: Running) -> None:
    first = await post_sub(broker, "ivy", subscription())
    assert first.status == 201, first.body
    assert set(first.body) == {"id"}
    again = await post_sub(broker, "ivy", subscription(auth=b64u(b"fedcba9876543210")))
    assert again.status == 201 and again.body["id"] == first.body["id"]
    rows = await broker.broker.state.store.push.list_for_slot("ivy")
    assert [(r.id, r.endpoint, r.p256dh, r.auth) for r in rows] == [
        (first.body["id"], ENDPOINT, GOOD_P256DH, b64u(b"fedcba9876543210"))
    ]


async def test_loopback_http_endpoints_need_the_test_switch(start: StartBroker) -> None:
    broker = await start(push_allow_insecure_endpoints=True)
    assert (await post_sub(broker, "ivy", subscription("http://127.0.0.1:9/push/a"))).status == 201
    assert_error(await post_sub(broker, "ivy", subscription("http://push.example.net/push/a")), 400, "bad_request")


async def test_an_endpoint_subscribed_by_another_slot_moves_to_it(broker: Running) -> None:
    store = broker.broker.state.store.push
    ivys = (await post_sub(broker, "ivy", subscription())).body["id"]
    dans = await post_sub(broker, "dan", subscription())
    assert dans.status == 201 and dans.body["id"] != ivys
    assert await store.list_for_slot("ivy") == []
    assert [r.id for r in await store.list_for_slot("dan")] == [dans.body["id"]]
    # ivy's old id names nothing of hers any more, and cannot remove dan's subscription.
    assert_error(await delete_sub(broker, "ivy", ivys), 404, "not_found")
    assert_error(await delete_sub(broker, "ivy", dans.body["id"]), 404, "not_found")
    assert len(await store.list_for_slot("dan")) == 1


async def test_only_the_owner_deletes_a_subscription(broker: Running) -> None:
    store = broker.broker.state.store.push
    sub_id = (await post_sub(broker, "ivy", subscription())).body["id"]
    assert_error(await delete_sub(broker, "alice", sub_id), 404, "not_found")  # not even a director
    assert_error(await delete_sub(broker, "dan", sub_id), 404, "not_found")
    assert_error(await delete_sub(broker, "ivy", "no-such-id"), 404, "not_found")
    assert_error(await delete_sub(broker, "ivy", "x" * 500), 404, "not_found")
    assert await store.get(sub_id) is not None
    reply = await delete_sub(broker, "ivy", sub_id)
    assert reply.status == 204 and reply.body is None
    assert await store.get(sub_id) is None
    assert_error(await delete_sub(broker, "ivy", sub_id), 404, "not_found")


async def test_each_slot_keeps_at_most_the_cap_newest_first_replaced_oldest(broker: Running) -> None:
    store = broker.broker.state.store.push
    ids = []
    for i in range(MAX_SUBSCRIPTIONS_PER_SLOT + 2):
        reply = await post_sub(broker, "ivy", subscription(f"{ENDPOINT}-{i}"))
        assert reply.status == 201
        ids.append(reply.body["id"])
    await post_sub(broker, "dan", subscription(f"{ENDPOINT}-dan"))
    kept = {r.id for r in await store.list_for_slot("ivy")}
    assert kept == set(ids[2:])  # the two oldest made room
    assert len(await store.list_for_slot("dan")) == 1  # another slot's subscriptions are not touched


async def test_a_browser_session_subscribes_with_its_cookie_and_csrf_applies(broker: Running) -> None:
    async with bare_session() as s:
        reply = await login(s, broker.url, code_for(broker.team.totp["hana"]), "hana")
        assert reply.status == 200, reply.body
        cookie = cookie_header(session_cookie(reply)[0])
        url = f"{broker.url}/push/subscriptions"
        cross = await call(s, "POST", url, json=subscription(), headers={**cookie, "Sec-Fetch-Site": "cross-site"})
        assert_error(cross, 403, "csrf_denied")
        ok = await call(s, "POST", url, json=subscription(), headers={**cookie, "Sec-Fetch-Site": "same-origin"})
        assert ok.status == 201, ok.body
        assert [r.id for r in await broker.broker.state.store.push.list_for_slot("hana")] == [ok.body["id"]]
        gone = await call(s, "DELETE", f"{url}/{ok.body['id']}", headers={**cookie, "Sec-Fetch-Site": "same-origin"})
        assert gone.status == 204


async def test_a_removed_slots_subscriptions_are_forgotten(
    web_push_broker: Running, push_service: FakePushService, http: aiohttp.ClientSession
) -> None:
    state = web_push_broker.broker.state
    await register(http, web_push_broker, push_service, "dan")
    await register(http, web_push_broker, push_service, "ivy")

    def remove_dan(doc: dict[str, Any], _key: bytes) -> None:
        doc["slots"] = [s for s in doc["slots"] if s["name"] != "dan"]

    await state.edit_config(remove_dan)
    await state.settle()
    assert await state.store.push.list_for_slot("dan") == []
    assert len(await state.store.push.list_for_slot("ivy")) == 1
