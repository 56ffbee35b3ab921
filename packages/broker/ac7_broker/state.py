"""One broker's live state: the current config (reloaded on change), storage, fanouts, presence and limiters."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ac7_broker.fanout import CLOSE_REVOKED, Fanout, Subscriber
from ac7_broker.lockout import FailureCounter
from ac7_broker.presence import Presence
from ac7_broker.rate_limit import TokenBucket
from ac7_broker.settings import Settings
from ac7_broker.store import Store
from ac7_core.config_file import ConfigWatcher, LoadedConfig, file_signature, load_config, update_config
from ac7_core.config_schema import Slot, TeamConfig
from ac7_core.errors import Ac7Error
from ac7_core.tokens import find_token_owner

log = logging.getLogger("ac7.broker")


class BrokerState:
    def __init__(self, loaded: LoadedConfig, store: Store, settings: Settings) -> None:
        self.settings = settings
        self.store = store
        self.messages = Fanout(settings.send_queue)
        self.activity_streams = Fanout(settings.send_queue)
        self.presence = Presence(self.messages, settings.busy_ttl)
        self.slot_failures = FailureCounter(
            settings.login_slot_failures, settings.login_window, settings.login_tracked_keys
        )
        self.codeless_failures = FailureCounter(settings.login_codeless_failures, settings.login_window, 1)
        self.ip_failures = FailureCounter(
            settings.login_ip_failures, settings.login_window, settings.login_tracked_keys
        )
        self.history_limiter = TokenBucket(settings.history_rate, settings.history_burst)
        self._watcher = ConfigWatcher(loaded.path, loaded.signature)
        self._loaded = loaded
        self._hashes: dict[str, str] = {}
        self._apply(loaded)

    @property
    def config(self) -> TeamConfig:
        return self._loaded.config

    @property
    def secure(self) -> bool:
        return self.config.https.mode != "off"

    def slot(self, name: str) -> Slot | None:
        return self.config.slot(name)

    def slot_for_token(self, token: str) -> Slot | None:
        owner = find_token_owner(token, self._hashes)
        return None if owner is None else self.config.slot(owner)

    def _apply(self, loaded: LoadedConfig) -> None:
        self._loaded = loaded
        self._watcher.mark_seen(loaded.signature)
        self._hashes = {s.name: s.token_hash for s in loaded.config.slots if s.token_hash is not None}
        self.presence.forget({s.name for s in loaded.config.slots})
        # A rotated token or a removed slot must not keep a socket it opened earlier.
        self.messages.close_where(CLOSE_REVOKED, "credentials revoked", self._still_valid)
        self.activity_streams.close_where(CLOSE_REVOKED, "credentials revoked", self._still_valid)

    def _still_valid(self, sub: Subscriber) -> bool:
        # credential is "bearer:<slot>/<token hash>" or "session:<slot>/<session id hash>"
        kind, _, value = sub.credential.partition(":")
        owner, _, secret_hash = value.partition("/")
        if kind == "bearer":
            return self._hashes.get(owner) == secret_hash
        return self.config.slot(owner) is not None

    async def reload_if_changed(self) -> bool:
        if not self._watcher.changed():
            return False
        try:
            loaded = await asyncio.to_thread(load_config, self._loaded.path, kek=self._loaded.kek)
        except Ac7Error as exc:
            log.error("config reload failed, keeping the last good config: %s", exc)
            # Retry when the file changes again, not on every poll.
            self._watcher.mark_seen(file_signature(self._loaded.path))
            return False
        self._apply(loaded)
        log.info("config reloaded: %d slot(s)", len(loaded.config.slots))
        return True

    async def edit_config[T](self, edit: Callable[[dict[str, Any], bytes], T]) -> T:
        loaded, result = await asyncio.to_thread(update_config, self._loaded.path, edit, kek=self._loaded.kek)
        self._apply(loaded)
        return result

    async def watch_config(self) -> None:
        while True:
            await asyncio.sleep(self.settings.config_poll_interval)
            await self.reload_if_changed()


STATE_KEY: web.AppKey[BrokerState] = web.AppKey("ac7_state", BrokerState)
