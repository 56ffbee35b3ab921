"""VAPID bootstrap: a team config without a `webPush` block gets a fresh P-256 key pair on first boot (DESIGN §3)."""

from __future__ import annotations

import logging
from typing import Any

from ac7_broker.web_push_crypto import generate_vapid_keys, vapid_public_for
from ac7_core.config_file import LoadedConfig, update_config
from ac7_core.config_schema import DEFAULT_VAPID_SUBJECT, VAPID_FIELD
from ac7_core.errors import Ac7Error
from ac7_core.sealed import seal

log = logging.getLogger("ac7.broker.webpush")


def ensure_vapid_keys(loaded: LoadedConfig) -> LoadedConfig:
    """`loaded`, or the config reloaded after writing new VAPID keys into it. Blocking file I/O: run in a thread.

    Idempotent, also across processes: the edit runs under the config lock on a fresh read and adds keys only if
    the file still has none. The private key is sealed (`enc-v1`, field `webPush/vapidPrivateKey`) inside the edit,
    so its plaintext never reaches the disk. Keys are never replaced: that would orphan every browser subscription.
    A config that cannot be written leaves Web Push off (logged) rather than stopping the broker.
    """
    existing = loaded.config.web_push
    if existing is not None:
        try:
            matches = vapid_public_for(existing.private_key) == existing.public_key.rstrip("=")
        except ValueError as exc:
            log.error("web push will not work: webPush.vapidPrivateKey is not a raw P-256 key (%s)", exc)
        else:
            if not matches:
                log.error("web push will not work: webPush.vapidPublicKey does not match webPush.vapidPrivateKey")
        return loaded

    public, private = generate_vapid_keys()

    def add_keys(doc: dict[str, Any], key: bytes) -> bool:
        if "webPush" in doc:
            return False  # another process got there first
        doc["webPush"] = {
            "vapidPublicKey": public,
            "vapidPrivateKey": seal(key, private, VAPID_FIELD),
            "vapidSubject": DEFAULT_VAPID_SUBJECT,
        }
        return True

    try:
        reloaded, added = update_config(loaded.path, add_keys, kek=loaded.kek)
    except (OSError, Ac7Error) as exc:
        log.warning("web push is off: could not write VAPID keys to %s: %s", loaded.path, exc)
        return loaded
    if added:
        log.info("web push: generated VAPID keys (public key %s)", public)
    return reloaded
