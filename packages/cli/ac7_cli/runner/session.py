"""One `ac7 claude-code` session: briefing → trace host → bridge link and presence → .mcp.json → claude → teardown.

Teardown runs on every exit path (the child exits, SIGINT/SIGTERM/SIGHUP, an exception here) and each step is
independent: a failure in one is logged and the rest still run. The runner exits with the child's code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import click

from ac7_cli.runner import session_dir
from ac7_cli.runner.bridge_link import BrokerCallError, RunnerLink
from ac7_cli.runner.claude_invocation import (
    UNSAFE_TLS_BANNER,
    child_env,
    claude_argv,
    host_of,
    system_roots,
    write_bundle,
)
from ac7_cli.runner.mcp_config import SERVER_KEY, McpConfigPatch, write_private_config
from ac7_cli.runner.presence import BusyReporter, PresenceHolder
from ac7_cli.runner.session_ca import SessionCA
from ac7_cli.runner.trace_host import TraceHost
from ac7_cli.runner.uploader import ActivityUploader
from ac7_core.capture import CapturedExchange
from ac7_core.errors import Ac7Error
from ac7_core.trace_entry import build_event

log = logging.getLogger("ac7.runner")

_FLUSH_TIMEOUT = 10.0
_CONNECT_ERRORS = (aiohttp.ClientConnectionError, TimeoutError, OSError)


@dataclass
class RunnerOptions:
    url: str
    token: str
    claude: str
    claude_args: list[str]
    trace: bool = True
    unsafe_tls: bool = False
    trace_hosts: list[str] = field(default_factory=list)
    upstream_ca: Path | None = None
    skip_permissions: bool = True
    project_dir: Path = field(default_factory=Path.cwd)
    spool_dir: Path | None = None
    tmp_root: Path | None = None


def default_spool_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ac7" / "spool"


class BrokerApi:
    """The runner's own calls to the broker (the bridge reaches the broker only through these)."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {token}"}, timeout=aiohttp.ClientTimeout(total=15)
        )

    async def call(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None) -> Any:
        params = {k: str(v) for k, v in (query or {}).items() if v is not None}
        async with self._session.request(method, self.url + path, json=body, params=params) as response:
            payload = await response.json(content_type=None) if response.content_length != 0 else None
            if response.status >= 400:
                message = payload.get("error") if isinstance(payload, dict) else None
                raise BrokerCallError(response.status, str(message or response.reason))
            return payload

    async def close(self) -> None:
        await self._session.close()


async def fetch_briefing(api: BrokerApi) -> dict[str, Any]:
    try:
        briefing = await api.call("GET", "/briefing")
    except BrokerCallError as exc:
        raise Ac7Error(f"briefing failed against {api.url}: {exc}") from None
    except _CONNECT_ERRORS as exc:
        raise Ac7Error(
            f"cannot reach the broker at {api.url} ({exc or type(exc).__name__}); "
            "is `ac7 serve` running there? (start it, or pass --url)"
        ) from None
    if not isinstance(briefing, dict) or not isinstance(briefing.get("name"), str):
        raise Ac7Error(f"{api.url} answered /briefing with something that is not an ac7 briefing")
    return briefing


class _TraceWorker:
    """Turns captured exchanges into events off the relay path: the proxy only enqueues."""

    def __init__(self, uploader: ActivityUploader) -> None:
        self._uploader = uploader
        self._queue: asyncio.Queue[CapturedExchange | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="trace-builder")

    def submit(self, exchange: CapturedExchange) -> None:
        self._queue.put_nowait(exchange)

    async def _run(self) -> None:
        while (exchange := await self._queue.get()) is not None:
            try:
                # Parsing and redacting a 50 KB-2 MB exchange is CPU work; a thread keeps the loop (and the relay)
                # responsive while it happens.
                event = await asyncio.to_thread(build_event, exchange)
            except Exception:
                log.exception("could not build a trace event for %s %s", exchange.method, exchange.host)
                continue
            self._uploader.submit(event)

    async def drain(self) -> None:
        self._queue.put_nowait(None)
        await self._task


def _forward_sigint() -> bool:
    """Whether a SIGINT we receive should be passed on to claude.

    From a terminal, Ctrl-C already reaches claude (same foreground process group); a second copy would make it
    exit where the user meant to interrupt. Sent to the runner alone (kill -INT), claude must hear about it.
    """
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) != os.getpgrp()
    except (OSError, ValueError):
        return True


class Teardown:
    """Independent clean-up steps, each registered as soon as its resource exists, run once in `order`.

    Registering early means a failure halfway through start-up still undoes exactly what was done.
    """

    def __init__(self) -> None:
        self._steps: list[tuple[int, str, Callable[[], Any]]] = []
        self._done = False

    def add(self, order: int, name: str, step: Callable[[], Any]) -> None:
        self._steps.append((order, name, step))

    async def run(self) -> None:
        if self._done:
            return
        self._done = True
        for _, name, step in sorted(self._steps, key=lambda s: s[0]):
            try:
                result = step()
                if asyncio.iscoroutine(result):
                    await result
            except (Exception, asyncio.CancelledError):
                # Every step runs whatever happened to the one before: the user's .mcp.json and the CA file
                # must not depend on, say, the broker being reachable for the last flush.
                log.exception("teardown step %r failed", name)


# Teardown order: the user's .mcp.json first; then traces are completed (proxy stop finishes in-flight
# exchanges and unlinks the CA file), built and flushed; then presence; the private directory last.
_RESTORE_MCP, _STOP_PROXY, _BUILD_TRACES, _FLUSH, _NOT_BUSY, _PRESENCE, _LINK, _SESSION_DIR = range(8)


class _Signals:
    """SIGINT/SIGTERM/SIGHUP for the whole session, not just while claude runs.

    Before claude starts, a signal aborts start-up (teardown still runs). While it runs, the signal is passed on
    and claude decides. After it exits, a further signal cuts the final flush short (what is not sent is
    spooled for the next run) instead of killing the runner halfway through its teardown.
    """

    HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.child: asyncio.subprocess.Process | None = None
        self.hurry = asyncio.Event()
        self.first: signal.Signals | None = None
        self._main = asyncio.current_task()
        self._loop = asyncio.get_running_loop()
        for sig in self.HANDLED:
            self._loop.add_signal_handler(sig, self._handle, sig)

    def _handle(self, sig: signal.Signals) -> None:
        self.first = self.first or sig
        if self.child is None:
            if self._main is not None:
                self._main.cancel()
        elif self.child.returncode is None:
            if sig != signal.SIGINT or _forward_sigint():
                with contextlib.suppress(ProcessLookupError):
                    self.child.send_signal(sig)
        else:
            self.hurry.set()

    def remove(self) -> None:
        for sig in self.HANDLED:
            self._loop.remove_signal_handler(sig)


async def _flush(uploader: ActivityUploader, hurry: asyncio.Event) -> None:
    closing = asyncio.create_task(uploader.close(_FLUSH_TIMEOUT))
    hurried = asyncio.create_task(hurry.wait())
    await asyncio.wait({closing, hurried}, return_when=asyncio.FIRST_COMPLETED)
    hurried.cancel()
    if not closing.done():
        closing.cancel()  # the uploader persists what it holds to its spool when its close is cancelled
    with contextlib.suppress(asyncio.CancelledError):
        await closing


async def run_session(opts: RunnerOptions) -> int:
    SessionCA.clean_stale(opts.tmp_root)
    session_dir.clean_stale(opts.tmp_root)
    teardown = Teardown()
    signals = _Signals()
    api = BrokerApi(opts.url, opts.token)
    try:
        briefing = await fetch_briefing(api)
        return await _run(opts, api, briefing, teardown, signals)
    except asyncio.CancelledError:
        if signals.first is None:
            raise
        return 128 + signals.first  # a signal during start-up: we tore down and stop, as the child would have
    finally:
        await teardown.run()
        await api.close()
        signals.remove()


async def _run(
    opts: RunnerOptions, api: BrokerApi, briefing: dict[str, Any], teardown: Teardown, signals: _Signals
) -> int:
    agent: str = briefing["name"]
    sdir = session_dir.create(opts.tmp_root)
    teardown.add(_SESSION_DIR, "remove session dir", lambda: shutil.rmtree(sdir, ignore_errors=True))

    busy = BusyReporter(opts.url, opts.token)
    teardown.add(_NOT_BUSY, "report not busy", busy.close)
    uploader = ActivityUploader(opts.url, opts.token, agent, spool_dir=opts.spool_dir or default_spool_dir())
    await uploader.start()
    teardown.add(_FLUSH, "flush uploader", lambda: _flush(uploader, signals.hurry))

    trace_host: TraceHost | None = None
    if opts.trace:
        worker = _TraceWorker(uploader)
        teardown.add(_BUILD_TRACES, "build remaining traces", worker.drain)
        base_host = host_of(os.environ.get("ANTHROPIC_BASE_URL", ""))
        trace_host = TraceHost(
            [h for h in [base_host, *opts.trace_hosts] if h],
            upstream_ca=opts.upstream_ca,
            on_exchange=worker.submit,
            on_inflight=busy.set_inflight,
            tmp_root=opts.tmp_root,
        )
        teardown.add(_STOP_PROXY, "stop trace host", trace_host.stop)
        await trace_host.start()

    key = secrets.token_urlsafe(32)
    link = RunnerLink(sdir, key, agent, api.call, briefing=briefing)
    teardown.add(_LINK, "close bridge link", link.close)
    socket_path = await link.start()
    presence = PresenceHolder(opts.url, opts.token, agent, on_message=link.publish)
    teardown.add(_PRESENCE, "close presence", presence.close)
    await presence.start()

    ac7 = shutil.which("ac7") or str(Path(sys.executable).parent / "ac7")
    entry = {
        "command": ac7,
        "args": ["mcp-bridge"],
        "env": {"AC7_RUNNER_SOCKET": str(socket_path), "AC7_RUNNER_KEY": key},
    }
    patch = McpConfigPatch(opts.project_dir, sdir, entry)
    teardown.add(_RESTORE_MCP, "restore .mcp.json", patch.restore)
    patch.apply()
    click.echo(
        f"ac7: {patch.target}: {'merged' if patch.existed else 'created'} the {SERVER_KEY!r} MCP server", err=True
    )

    env = _child_env(opts, trace_host, sdir)
    if opts.unsafe_tls:
        click.echo(UNSAFE_TLS_BANNER, err=True)
    argv, notes = claude_argv(
        opts.claude,
        opts.claude_args,
        str(briefing.get("instructions", "")),
        skip_permissions=opts.skip_permissions,
        mcp_config=write_private_config(sdir, entry),
    )
    if notes:
        click.echo("ac7: added to the claude command line (pass a flag yourself to override):", err=True)
        for note in notes:
            click.echo(f"    {note}", err=True)
    return await _spawn_and_wait(argv, env, opts.project_dir, signals)


def _child_env(opts: RunnerOptions, trace_host: TraceHost | None, sdir: Path) -> dict[str, str]:
    if trace_host is None or trace_host.port is None:
        return child_env(
            os.environ, proxy_url=None, ca_cert=None, trust_bundle=None, traced_hosts=[], unsafe_tls=opts.unsafe_tls
        )
    ca_path = trace_host.ca_cert_path
    bundle = write_bundle(sdir, system_roots(os.environ), ca_path.read_bytes())
    click.echo(f"ac7: tracing {', '.join(trace_host.traced_hosts)} through {trace_host.proxy_address}", err=True)
    return child_env(
        os.environ,
        proxy_url=trace_host.proxy_url,
        ca_cert=ca_path,
        trust_bundle=bundle,
        traced_hosts=trace_host.traced_hosts,
        unsafe_tls=opts.unsafe_tls,
    )


async def _spawn_and_wait(argv: list[str], env: dict[str, str], cwd: Path, signals: _Signals) -> int:
    try:
        child = await asyncio.create_subprocess_exec(*argv, env=env, cwd=cwd)
    except OSError as exc:
        raise Ac7Error(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
    signals.child = child
    code = await child.wait()
    return 128 - code if code < 0 else code  # killed by signal N: the shell convention 128+N
