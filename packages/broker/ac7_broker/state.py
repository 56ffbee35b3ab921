"""One broker's live state: the current config (reloaded on change), storage, fanouts, presence and limiters."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from ac7_broker.fanout import CLOSE_REVOKED, Fanout, Subscriber
from ac7_broker.lockout import FailureCounter
from ac7_broker.presence import Presence
from ac7_broker.rate_limit import TokenBucket
from ac7_broker.settings import Settings
from ac7_broker.store import Store
from ac7_broker.web_push import WebPushNotifier
from ac7_core.config_file import ConfigWatcher, LoadedConfig, file_signature, load_config, update_config
from ac7_core.config_schema import Slot, TeamConfig
from ac7_core.errors import Ac7Error
from ac7_core.tokens import find_token_owner

log = logging.getLogger("ac7.broker")


class BrokerState:
    def __init__(self, loaded: LoadedConfig, store: Store, settings: Settings, *, secure: bool = False) -> None:
        self.settings = settings
        self.store = store
        # Fixed at boot from the real transport: a reloaded https setting must not change cookie names mid-run.
        self.secure = secure
        # Login is check-then-verify-then-record; one lock makes that atomic so a burst of parallel guesses
        # cannot all pass the lockout check before any failure is counted.
        self.login_lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()
        self.messages = Fanout(settings.send_queue, settings.send_queue_bytes)
        self.activity_streams = Fanout(settings.send_queue, settings.send_queue_bytes)
        self.presence = Presence(self.messages, settings.busy_ttl)
        self.slot_failures = FailureCounter(
            settings.login_slot_failures,
            settings.login_window,
            settings.login_tracked_keys,
            protected=lambda name: self.config.slot(name) is not None,
        )
        self.codeless_failures = FailureCounter(settings.login_codeless_failures, settings.login_window, 1)
        self.ip_failures = FailureCounter(
            settings.login_ip_failures, settings.login_window, settings.login_tracked_keys
        )
        self.history_limiter = TokenBucket(settings.history_rate, settings.history_burst)
        self.web_push = WebPushNotifier(
            store.push,
            lambda: self.config.web_push,
            allow_insecure_endpoints=settings.push_allow_insecure_endpoints,
        )
        self._watcher = ConfigWatcher(loaded.path, loaded.signature)
        self._loaded = loaded
        self._hashes: dict[str, str] = {}
        self._apply(loaded)

    @property
    def config(self) -> TeamConfig:
        return self._loaded.config

    def slot(self, name: str) -> Slot | None:
        return self.config.slot(name)

    def slot_for_token(self, token: str) -> Slot | None:
        owner = find_token_owner(token, self._hashes)
        return None if owner is None else self.config.slot(owner)

    def _apply(self, loaded: LoadedConfig) -> None:
        previous = {s.name: s for s in self._loaded.config.slots} if loaded is not self._loaded else {}
        self._loaded = loaded
        self._watcher.mark_seen(loaded.signature)
        self._hashes = {s.name: s.token_hash for s in loaded.config.slots if s.token_hash is not None}
        self.presence.forget({s.name for s in loaded.config.slots})
        # A rotated token or a removed slot must not keep a socket it opened earlier.
        self.messages.close_where(CLOSE_REVOKED, "credentials revoked", self._still_valid)
        self.activity_streams.close_where(CLOSE_REVOKED, "credentials revoked", self._still_valid)
        # A removed slot's sessions, and the sessions of a slot whose authenticator was replaced, end now, so
        # a slot later re-created with the same name does not inherit them. A new secret also starts a fresh
        # replay guard (its codes have nothing to do with the old one's steps).
        for name, old in previous.items():
            new = loaded.config.slot(name)
            if new is None or new.totp_secret != old.totp_secret:
                self._spawn(self._end_sessions(name, reset_totp=new is not None))

    async def _end_sessions(self, name: str, *, reset_totp: bool) -> None:
        await self.store.sessions.delete_for_slot(name)
        # Browsers subscribed under the old credentials (or a removed slot) stop getting its notifications.
        await self.store.push.delete_for_slot(name)
        if reset_totp:
            await self.store.totp.reset(name)
        prefix = f"session:{name}/"
        for fanout in (self.messages, self.activity_streams):
            fanout.close_where(CLOSE_REVOKED, "session ended", lambda s: not s.credential.startswith(prefix))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def settle(self) -> None:
        """Wait for the follow-up work of config changes (ending sessions); for shutdown and tests."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

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
        # The version we are about to read: if loading fails we wait for a change after *this* one, so a file
        # completed while we were reading a half-written one is not mistaken for what failed.
        before = file_signature(self._loaded.path)
        try:
            loaded = await asyncio.to_thread(load_config, self._loaded.path, kek=self._loaded.kek)
        except Ac7Error as exc:
            log.error("config reload failed, keeping the last good config: %s", exc)
            self._watcher.mark_seen(before)
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
            try:
                await self.reload_if_changed()
            except Exception:
                # Whatever went wrong, the watcher must outlive it: live reload is how rotation takes effect.
                log.exception("config reload failed unexpectedly; keeping the last good config")


STATE_KEY: web.AppKey[BrokerState] = web.AppKey("ac7_state", BrokerState)
