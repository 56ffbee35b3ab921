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
from ac7_broker.settings import Settings
from ac7_broker.state import BrokerState
from ac7_broker.store import Store
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


async def run_broker(
    config_path: Path,
    host: str,
    port: int,
    *,
    settings: Settings | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM. `on_ready` gets the base URL once the socket listens."""
    settings = settings or Settings()
    config_dir = await asyncio.to_thread(lambda: config_path.resolve().parent)
    loaded = await asyncio.to_thread(load_config, config_path)
    for change in loaded.migrated:
        log.info("config migrated: %s", change)
    store = await Store.open(config_dir)
    state = BrokerState(loaded, store, settings)
    app = create_app(state)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=settings.shutdown_grace)
    await runner.setup()
    ssl_context = _ssl_context(loaded.config, config_dir)
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        try:
            await site.start()
        except OSError as exc:
            raise Ac7Error(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        bound = runner.addresses[0]
        scheme = "https" if ssl_context else "http"
        url = f"{scheme}://{host if ':' not in host else f'[{host}]'}:{bound[1]}"
        log.info("ac7 broker for team %r listening on %s", loaded.config.team.name, url)
        if on_ready is not None:
            on_ready(url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        watcher = asyncio.create_task(state.watch_config(), name="config-watch")
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        log.info("shutting down")
        await state.messages.close_all(grace=0.5)
        await state.activity_streams.close_all(grace=0.5)
    finally:
        await runner.cleanup()
        await store.close()
