"""Scoping for the embedded mitmproxy: decrypt traced CONNECT tunnels, pass everything else through blind.

`ScopedNextLayer` replaces mitmproxy's NextLayer addon (same name, so Proxyserver does not warn). It records each
CONNECT's authority in the `http_connect` hook, keyed by client connection, *before* any `server_connect` rewrite
can touch `context.server.address`, and decides the tunnel's layer from that:

- CONNECT host outside the scope → `TCPLayer(ignore=True)`: a blind byte relay with no flow objects, decided on the
  tunnel's first bytes without parsing them, so the client sees the real upstream certificate.
- CONNECT host in scope, TLS → the ClientHello is parsed first; an SNI that differs from the CONNECT host (after
  normalisation: case, trailing dot, IDNA) is refused by closing the connection before any ServerHello. A missing
  SNI (IP literals) is accepted: mitmproxy then uses the CONNECT host for the leaf and for upstream verification.
- TLS straight to the proxy port (a "secure web proxy" handshake) is refused: its SNI would be the only name there is.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from mitmproxy import connection, http
from mitmproxy.addons import next_layer
from mitmproxy.net.tls import starts_like_tls_record
from mitmproxy.proxy import commands, events, layer, layers
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers import modes
from mitmproxy.proxy.layers.http import HttpStream
from mitmproxy.proxy.layers.tls import parse_client_hello

from ac7_cli.runner.trace_scope import TraceScope, normalize_host

log = logging.getLogger("ac7.runner.trace")


@dataclass
class Tunnel:
    """One CONNECT, as the client asked for it."""

    host: str  # normalised CONNECT host
    port: int
    traced: bool
    tls_ok: bool = False  # a ClientHello arrived and its SNI (if any) named `host`


class Tunnels:
    """CONNECT authorities by client connection id; shared by the scoping, TLS and capture addons."""

    def __init__(self) -> None:
        self._by_client: dict[str, Tunnel] = {}

    def get(self, client_id: str) -> Tunnel | None:
        return self._by_client.get(client_id)

    def add(self, client_id: str, tunnel: Tunnel) -> None:
        self._by_client[client_id] = tunnel

    def drop(self, client_id: str) -> None:
        self._by_client.pop(client_id, None)

    def leaf_host(self, ctx: Context) -> str | None:
        """The only name a client-facing certificate may carry on this connection, or None."""
        tunnel = self._by_client.get(ctx.client.id)
        if tunnel is None or not tunnel.traced or not tunnel.tls_ok:
            return None
        return tunnel.host

    def __len__(self) -> int:
        return len(self._by_client)


class RefuseConnection(layer.Layer):
    """Close the client connection (and an eagerly opened server connection) on the first event."""

    def __init__(self, context: Context, reason: str) -> None:
        super().__init__(context)
        self.reason = reason
        self._closed = False

    def _handle_event(self, event: events.Event) -> layer.CommandGenerator[None]:
        if self._closed:
            return
        self._closed = True
        log.debug("trace host: refusing %s: %s", self.context.client.peername, self.reason)
        if self.context.server.connected:
            yield commands.CloseConnection(self.context.server)
        yield commands.CloseConnection(self.context.client)


# Where a CONNECT tunnel's first layer is decided: the proxy, its HTTP layer, and the CONNECT's stream (passthrough).
_TUNNEL_STACK: tuple[type[layer.Layer], ...] = (modes.HttpProxy, layers.HttpLayer, HttpStream)


def _stack_is(context: Context, kinds: Sequence[type[layer.Layer]]) -> bool:
    return next_layer.stack_match(context, list(kinds))


class ScopedNextLayer(next_layer.NextLayer):
    name = "nextlayer"

    def __init__(self, scope: TraceScope, tunnels: Tunnels) -> None:
        self.scope = scope
        self.tunnels = tunnels

    # --- hooks --------------------------------------------------------------------------------------------------

    def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return  # answered by the proxy itself (407): no tunnel will follow
        raw_host = flow.request.host
        try:
            host = normalize_host(raw_host)
        except ValueError:
            host = raw_host.lower()
            traced = False
        else:
            traced = self.scope.matches(host)
        self.tunnels.add(flow.client_conn.id, Tunnel(host, flow.request.port, traced))

    def client_disconnected(self, client: connection.Client) -> None:
        self.tunnels.drop(client.id)

    # --- the decision -------------------------------------------------------------------------------------------

    def _next_layer(self, context: Context, data_client: bytes, data_server: bytes) -> layer.Layer | None:
        if _stack_is(context, [modes.HttpProxy]) and starts_like_tls_record(data_client):
            return RefuseConnection(context, "TLS to the proxy port itself")
        tunnel = self.tunnels.get(context.client.id)
        if tunnel is not None and _stack_is(context, _TUNNEL_STACK):
            if not tunnel.traced:
                return layers.TCPLayer(context, ignore=True)
            if starts_like_tls_record(data_client):
                refusal = self._check_client_hello(tunnel, data_client)
                if refusal is not None:
                    return RefuseConnection(context, refusal)
                tunnel.tls_ok = True
        return super()._next_layer(context, data_client, data_server)

    @staticmethod
    def _check_client_hello(tunnel: Tunnel, data_client: bytes) -> str | None:
        try:
            hello = parse_client_hello(data_client)
        except ValueError:
            return "unparseable ClientHello"
        if hello is None:
            raise next_layer.NeedsMoreData
        if hello.sni is None:
            return None
        try:
            sni = normalize_host(hello.sni)
        except ValueError:
            return f"invalid SNI {hello.sni!r}"
        if sni != tunnel.host:
            return f"SNI {hello.sni!r} differs from the CONNECT host {tunnel.host!r}"
        return None
