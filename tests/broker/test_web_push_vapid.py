"""VAPID keys (DESIGN §3): generated on first boot into the team config, the private key sealed, stable after."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ac7_auth_helpers import bare_session, call
from broker_harness import StartBroker, Team
from cryptography.hazmat.primitives.asymmetric import ec
from push_service_fake import b64u, point, unb64u

from ac7_broker.web_push import ensure_vapid_keys
from ac7_core.config_file import create_config, file_signature, load_config
from ac7_core.config_schema import VAPID_FIELD
from ac7_core.kek import resolve_kek
from ac7_core.sealed import SealError, unseal
from ac7_core.tokens import mint_token


async def _served_key(url: str) -> str:
    async with bare_session() as s:
        reply = await call(s, "GET", f"{url}/push/vapid-public-key")
    assert reply.status == 200, reply.body
    key = reply.body["publicKey"]
    assert isinstance(key, str)
    return key


def _kek(team: Team) -> bytes:
    doc = json.loads(team.config_path.read_text())
    return resolve_kek(team.config_path.parent, doc.get("kek"), env={}, create=False).key


async def test_first_boot_writes_sealed_vapid_keys_that_stay_the_same_across_restarts(
    team: Team, start: StartBroker
) -> None:
    before = json.loads(team.config_path.read_text())
    assert "webPush" not in before

    broker = await start()
    text = team.config_path.read_text()
    doc = json.loads(text)
    web_push = doc["webPush"]
    assert set(web_push) == {"vapidPublicKey", "vapidPrivateKey", "vapidSubject"}
    assert web_push["vapidSubject"] == "mailto:admin@ac7.local"
    assert web_push["vapidPrivateKey"].startswith("enc-v1:")
    private = unseal(_kek(team), web_push["vapidPrivateKey"], VAPID_FIELD)
    assert private not in text  # the plaintext never reached the disk
    raw = unb64u(private)
    assert len(raw) == 32
    derived = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1()).public_key()
    assert b64u(point(derived)) == web_push["vapidPublicKey"]
    # Bound to its field: the ciphertext opens nowhere else.
    with pytest.raises(SealError):
        unseal(_kek(team), web_push["vapidPrivateKey"], "slots/alice/totpSecret")
    # Everything else in the config is as it was.
    assert {k: v for k, v in doc.items() if k != "webPush"} == before
    assert await _served_key(broker.url) == web_push["vapidPublicKey"]

    await broker.broker.stop()
    again = await start()
    assert team.config_path.read_text() == text  # the second boot writes nothing
    assert await _served_key(again.url) == web_push["vapidPublicKey"]


def test_keys_already_in_the_config_are_used_not_replaced(tmp_path: Path) -> None:
    # A config written by hand (or by ac7 setup) with a plaintext private key: it is sealed on load and served.
    private = b64u(bytes(range(1, 33)))
    public = b64u(point(ec.derive_private_key(int.from_bytes(bytes(range(1, 33)), "big"), ec.SECP256R1()).public_key()))
    path = tmp_path / "own" / "ac7.json"
    path.parent.mkdir()
    create_config(
        path,
        {
            "team": {"name": "acme"},
            "roles": {"lead": {}},
            "slots": [{"name": "alice", "role": "lead", "authority": "director", "token": mint_token()}],
            "webPush": {"vapidPublicKey": public, "vapidPrivateKey": private, "vapidSubject": "https://acme.test"},
        },
        env={},
    )
    loaded = load_config(path, env={})
    assert ensure_vapid_keys(loaded) is loaded
    signature = file_signature(path)
    assert ensure_vapid_keys(load_config(path, env={})).config.web_push == loaded.config.web_push
    assert file_signature(path) == signature  # idempotent: nothing rewritten


def test_ensure_vapid_keys_is_idempotent_even_from_a_stale_view(team: Team) -> None:
    stale = load_config(team.config_path, env={})
    first = ensure_vapid_keys(stale)
    assert first.config.web_push is not None
    text = team.config_path.read_text()
    second = ensure_vapid_keys(load_config(team.config_path, env={}))
    assert second.config.web_push == first.config.web_push
    # Another process that loaded the config before the keys were written must not replace them.
    racing = ensure_vapid_keys(stale)
    assert racing.config.web_push == first.config.web_push
    assert team.config_path.read_text() == text
