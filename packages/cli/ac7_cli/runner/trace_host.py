"""The trace host: a per-session CA and an in-process mitmproxy on loopback that decrypts only traced hosts.

    host = TraceHost(["llm-gateway.corp"], upstream_ca=None, on_exchange=queue.put_nowait, on_inflight=busy.set)
    await host.start()             # HTTPS_PROXY=host.proxy_url, NODE_EXTRA_CA_CERTS=host.ca_cert_path
    ...
    await host.stop()              # listener and live tunnels closed, CA directory deleted

- Scope (`trace_scope`): `anthropic.com` and subdomains, plus the hosts given; everything else is a blind TCP tunnel.
  A traced tunnel whose ClientHello SNI differs from its CONNECT host is refused (`trace_layers`).
- TLS (`session_ca`, `trace_tls`): leaves from the in-memory, name-constrained session CA; upstream servers verified
  against certifi + the system store + the runner's `SSL_CERT_FILE` + `upstream_ca`. Nothing private is written.
- Access (`trace_proxy_auth`): the proxy wants per-session credentials, carried in `proxy_url`, so another local
  user cannot use it. Log `proxy_address`, never `proxy_url`.
- Capture (`trace_capture`): every traced response and request streams through a tee that keeps a capped copy;
  `on_exchange(CapturedExchange)` is called once per exchange (complete or failed) and `on_inflight(n)` whenever
  the number of open traced exchanges changes, both from the event loop on a later iteration than the relay work,
  so they must not block: enqueue and return.

mitmproxy runs inside the caller's event loop, but not through `Master.run()`: that would switch the whole loop to
an eager task factory and install its own exception handler for the session. `start()` performs the same steps
(set up servers, `running` hook) and `stop()` the teardown mitmproxy lacks (closing the listener and every live
tunnel) before the `done` hook. mitmproxy keeps its master in module globals, so one TraceHost runs per process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import mitmproxy.net.tls as _mitm_net_tls
from mitmproxy import master as mitm_master
from mitmproxy import options as mitm_options
from mitmproxy.addons import core as mitm_core
from mitmproxy.addons import proxyserver as mitm_proxyserver
from mitmproxy.proxy import server_hooks

from ac7_cli.runner.session_ca import SessionCA
from ac7_cli.runner.trace_capture import (
    DEFAULT_REQUEST_CAP,
    DEFAULT_RESPONSE_CAP,
    OnExchange,
    OnInflight,
    TraceAddon,
)
from ac7_cli.runner.trace_layers import ScopedNextLayer, Tunnels
from ac7_cli.runner.trace_proxy_auth import USERNAME, ProxyAuth, new_proxy_password
from ac7_cli.runner.trace_scope import TraceScope, normalize_host, parse_ip
from ac7_cli.runner.trace_tls import SessionTlsConfig, system_trust_paths, upstream_trust_sources

# mitmproxy.net.tls reads SSLKEYLOGFILE / MITMPROXY_SSLKEYLOGFILE at import time and would append every TLS secret
# of the traced (decrypted) sessions to that file. Never honour it.
_mitm_net_tls.log_master_secret = None

log = logging.getLogger("ac7.runner.trace")

LISTEN_HOST = "127.0.0.1"
UPSTREAM_BUNDLE = "upstream-trust.pem"
STOP_GRACE_S = 2.0

_active: TraceHost | None = None


class TraceHostError(RuntimeError):
    """The trace host could not start (the runner then continues without tracing)."""


class _ConnectOverrides:
    """Dial a fixed address instead of resolving a host; the host still names SNI and upstream verification.

    For tests and offline end-to-end runs (a fake API answering as api.anthropic.com); empty in production.
    """

    def __init__(self, overrides: Mapping[str, tuple[str, int]]) -> None:
        self._map = {normalize_host(h): addr for h, addr in overrides.items()}

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        address = data.server.address
        if address is None:
            return
        try:
            host = normalize_host(str(address[0]))
        except ValueError:
            return
        target = self._map.get(host)
        if target is None:
            return
        if data.server.sni is None and parse_ip(host) is None:
            data.server.sni = host
        data.server.address = (target[0], target[1])


def quiet_mitmproxy_logs() -> None:
    """mitmproxy logs every connect and disconnect at INFO; keep its loggers at WARNING."""
    logging.getLogger("mitmproxy").setLevel(logging.WARNING)


class TraceHost:
    def __init__(
        self,
        traced_hosts: Iterable[str],
        *,
        upstream_ca: Path | None,
        on_exchange: OnExchange,
        on_inflight: OnInflight,
        body_cap: int = DEFAULT_RESPONSE_CAP,
        request_cap: int = DEFAULT_REQUEST_CAP,
        name_constraints: bool = True,
        tmp_root: Path | None = None,
        env: Mapping[str, str] | None = None,
        connect_overrides: Mapping[str, tuple[str, int]] | None = None,
    ) -> None:
        """`traced_hosts` are added to the default `anthropic.com` scope (hosts, `host:port` or URLs; a domain
        covers its subdomains). `env` is the runner's environment (for `SSL_CERT_FILE`; default `os.environ`).
        `tmp_root` is where the CA's 0700 directory is made (default: the system temp dir). Raises ValueError for
        a traced host that is not a host."""
        if body_cap < 0 or request_cap < 0:
            raise ValueError("capture caps must be >= 0")
        self.scope = TraceScope(traced_hosts)
        self.upstream_ca = Path(upstream_ca) if upstream_ca is not None else None
        self.name_constraints = name_constraints
        self.tmp_root = tmp_root
        self._env = dict(os.environ if env is None else env)
        self._overrides = dict(connect_overrides or {})
        self._tunnels = Tunnels()
        self._trace = TraceAddon(
            self.scope,
            self._tunnels,
            on_exchange=on_exchange,
            on_inflight=on_inflight,
            request_cap=request_cap,
            response_cap=body_cap,
        )
        self._proxy_password = new_proxy_password()
        self._proxy_auth = ProxyAuth(self._proxy_password)
        self.ca: SessionCA | None = None
        self.port: int | None = None
        self._master: mitm_master.Master | None = None
        self._proxyserver: mitm_proxyserver.Proxyserver | None = None
        self._stopped = False

    # --- what the runner hands to the child ---------------------------------------------------------------------

    @property
    def traced_hosts(self) -> tuple[str, ...]:
        return self.scope.hosts

    @property
    def proxy_url(self) -> str:
        """`http://ac7:<password>@127.0.0.1:<port>`: a secret for the child's environment, never for a log line."""
        return f"http://{USERNAME}:{self._proxy_password}@{self.proxy_address}"

    @property
    def proxy_address(self) -> str:
        if self.port is None:
            raise RuntimeError("trace host not started")
        return f"{LISTEN_HOST}:{self.port}"

    @property
    def refused_requests(self) -> int:
        """Requests answered 407 for want of the session's proxy credentials."""
        return self._proxy_auth.refused

    @property
    def ca_cert_path(self) -> Path:
        if self.ca is None or self.ca.cert_path is None:
            raise RuntimeError("trace host not started")
        return self.ca.cert_path

    @property
    def inflight(self) -> int:
        return self._trace.inflight

    @property
    def live_connections(self) -> int:
        return len(self._proxyserver.connections) if self._proxyserver is not None else 0

    # --- lifecycle ----------------------------------------------------------------------------------------------

    async def start(self) -> int:
        """Generate the CA, write its public certificate, start listening on 127.0.0.1:<ephemeral>; the port."""
        global _active
        if self._master is not None or self._stopped:
            raise RuntimeError("a TraceHost starts once")
        if _active is not None:
            raise TraceHostError("another trace host is running in this process (mitmproxy's master is global)")
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        quiet_mitmproxy_logs()
        _active = self
        try:
            try:
                SessionCA.clean_stale(self.tmp_root)  # directories of runners that were kill -9'd
            except OSError:
                log.debug("trace host: stale CA dir cleanup failed", exc_info=True)
            ca = self.ca = SessionCA.generate(self.scope.hosts, name_constraints=self.name_constraints)
            ca.write_public_cert(self.tmp_root)
            bundle = ca.write_bundle(UPSTREAM_BUNDLE, upstream_trust_sources(self._env, self.upstream_ca))
            _, capath = system_trust_paths()
            assert ca.directory is not None
            opts = mitm_options.Options(
                listen_host=LISTEN_HOST,
                listen_port=0,
                mode=["regular"],
                confdir=str(ca.directory),  # nothing reads or writes it (SessionTlsConfig), but never ~/.mitmproxy
                ssl_insecure=False,
                ssl_verify_upstream_trusted_ca=str(bundle),
                ssl_verify_upstream_trusted_confdir=str(capath) if capath else None,
                http2=True,
                upstream_cert=False,
            )
            m = self._master = mitm_master.Master(opts, event_loop=loop, with_termlog=False)
            # Master.__init__ hooks the *root* logger so every record in this process schedules a deprecated
            # `add_log` event on the loop; nothing here uses it.
            m._legacy_log_events.uninstall()
            ps = self._proxyserver = mitm_proxyserver.Proxyserver()  # type: ignore[no-untyped-call]
            self._trace.bind(loop)
            addons: list[object] = [
                mitm_core.Core(),
                ps,
                self._proxy_auth,  # first to see http_connect/requestheaders: a refused flow goes nowhere
                ScopedNextLayer(self.scope, self._tunnels),
                SessionTlsConfig(ca, self._tunnels.leaf_host),
                self._trace,
            ]
            if self._overrides:
                addons.insert(2, _ConnectOverrides(self._overrides))
            m.addons.add(*addons)  # type: ignore[no-untyped-call]
            # Addon-declared options exist only now. Eager: the upstream is dialled at CONNECT (an unreachable
            # host fails the CONNECT with 502) and, for a traced tunnel, the upstream TLS handshake runs with the
            # client's SNI and ALPN offer before the client's handshake completes, so the client is offered
            # exactly the protocol (h2 or HTTP/1.1) the upstream chose: no translation, accurate ALPN.
            opts.update(connection_strategy="eager")  # type: ignore[no-untyped-call]
            ok = await ps.setup_servers()
            addrs = ps.listen_addrs()
            if not ok or not addrs:
                raise TraceHostError(f"the trace proxy could not listen on {LISTEN_HOST}")
            await m.running()
        except BaseException:
            await self._teardown()
            raise
        self.port = int(addrs[0][1])
        log.info(
            "trace host: started on %s (%d traced host(s), CA %s, %.1f ms)",
            self.proxy_address,
            len(self.scope.hosts),
            ca.cert_path,
            (time.perf_counter() - t0) * 1000,
        )
        return self.port

    async def stop(self) -> None:
        """Close the listener and every live tunnel, report open exchanges as failed, delete the CA directory.
        Idempotent; never raises for an already stopped host."""
        if self._stopped:
            return
        self._stopped = True
        await self._teardown()
        log.info("trace host: stopped")

    async def _teardown(self) -> None:
        global _active
        ps, m = self._proxyserver, self._master
        try:
            if ps is not None:
                # mitmproxy has no teardown for this: after the `done` hook the listening socket is still open and
                # established tunnels are still served.
                try:
                    await ps.servers.update([])
                except Exception:
                    log.debug("trace host: closing the listener failed", exc_info=True)
                await self._close_connections(ps)
            self._trace.abandon_all("trace host stopped")
            if m is not None:
                try:
                    await m.done()
                except Exception:
                    log.debug("trace host: mitmproxy done hook failed", exc_info=True)
                m._legacy_log_events.uninstall()
            await asyncio.sleep(0)  # let the last consumer callbacks (scheduled with call_soon) run
        finally:
            if self.ca is not None:
                self.ca.cleanup()
                self.ca.discard_keys()  # mitmproxy's module globals keep the addons (and this CA) alive
            if _active is self:
                _active = None

    @staticmethod
    async def _close_connections(ps: mitm_proxyserver.Proxyserver) -> None:
        handlers = list(ps.connections.values())
        for handler in handlers:
            io = handler.transports.get(handler.client)
            if io is not None and io.handler is not None:
                io.handler.cancel("ac7 trace host stopping")
        deadline = time.monotonic() + STOP_GRACE_S
        # mitmproxy signals nothing when a connection unregisters, so poll (briefly) for it.
        while ps.connections and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        if ps.connections:
            # A handler that had no task yet (still in its client_connected hook): close its transports directly.
            for handler in list(ps.connections.values()):
                for io in list(handler.transports.values()):
                    if io.writer is not None:
                        io.writer.close()
                    if io.handler is not None:
                        io.handler.cancel("ac7 trace host stopping")
            log.debug("trace host: %d connection(s) still closing at stop", len(ps.connections))
