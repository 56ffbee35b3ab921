"""Running a broker process: open state, serve, reload config on change, shut down promptly on a signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from ac7_broker.app import create_app
from ac7_broker.protocol_errors import BrokerAppRunner
from ac7_broker.settings import Settings
from ac7_broker.state import STATE_KEY, BrokerState
from ac7_broker.store import Store
from ac7_broker.web_push import ensure_vapid_keys
from ac7_core.config_file import load_config
from ac7_core.config_schema import TeamConfig
from ac7_core.errors import Ac7Error

log = logging.getLogger("ac7.broker")


def _ssl_context(config: TeamConfig, base: Path) -> ssl.SSLContext | None:
    if config.https.mode == "off":
        return None
    assert config.https.cert_path is not None and config.https.key_path is not None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(base / config.https.cert_path, base / config.https.key_path)
    except (OSError, ssl.SSLError) as exc:
        raise Ac7Error(f"https: cannot load certificate/key: {exc}") from None
    return context


class RunningBroker:
    """A broker serving on a socket, with its config watcher running; `stop()` shuts it down."""

    def __init__(self, url: str, state: BrokerState, runner: web.AppRunner, store: Store) -> None:
        self.url = url
        self.state = state
        self._runner = runner
        self._store = store
        self._watcher = asyncio.create_task(state.watch_config(), name="config-watch")

    async def stop(self) -> None:
        self._watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watcher
        # Close sockets first: aiohttp's cleanup would otherwise wait out its grace on every open WebSocket.
        await self.state.messages.close_all(grace=0.5)
        await self.state.activity_streams.close_all(grace=0.5)
        try:
            await self._runner.cleanup()
        finally:
            try:
                await self.state.web_push.close()
            finally:
                await self._store.close()


async def start_broker(config_path: Path, host: str, port: int, settings: Settings | None = None) -> RunningBroker:
    settings = settings or Settings()
    config_dir = await asyncio.to_thread(lambda: config_path.resolve().parent)
    loaded = await asyncio.to_thread(load_config, config_path)
    for change in loaded.migrated:
        log.info("config migrated: %s", change)
    ssl_context = _ssl_context(loaded.config, config_dir)
    store = await Store.open(config_dir)
    runner = BrokerAppRunner(
        create_app(BrokerState(loaded, store, settings, secure=ssl_context is not None)),
        access_log=None,
        shutdown_timeout=settings.shutdown_grace,
    )
    try:
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        try:
            await site.start()
        except OSError as exc:
            raise Ac7Error(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        # VAPID keys on first boot (DESIGN §3). After the bind, so a start that cannot listen prints only its
        # error; the running state picks the rewritten config up before anyone is told the URL.
        if await asyncio.to_thread(ensure_vapid_keys, loaded) is not loaded:
            await runner.app[STATE_KEY].reload_if_changed()
    except BaseException:
        await runner.cleanup()
        await store.close()
        raise
    bound_port = runner.addresses[0][1]
    scheme = "https" if ssl_context else "http"
    url = f"{scheme}://{host if ':' not in host else f'[{host}]'}:{bound_port}"
    state = runner.app[STATE_KEY]
    log.info("ac7 broker for team %r listening on %s", loaded.config.team.name, url)
    return RunningBroker(url, state, runner, store)


async def run_broker(
    config_path: Path,
    host: str,
    port: int,
    *,
    settings: Settings | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM. `on_ready` gets the base URL once the socket listens."""
    broker = await start_broker(config_path, host, port, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if on_ready is not None:
            on_ready(broker.url)
        await stop.wait()
        log.info("shutting down")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await broker.stop()
