"""The trace addon: fills a CapturedExchange as a traced exchange's bytes flow, without ever holding them back.

Every traced request and response is *streamed* (`.stream` set to a tee in the `requestheaders` /
`responseheaders` hooks, never later: by the `response` hook a buffered body is already complete). The tee keeps a
capped copy and hands each chunk straight back to mitmproxy. The `response` hook stays on the critical path for the
final chunk and for the next request on the connection, so it only finishes bookkeeping; the consumer callbacks run
on a later loop iteration (`call_soon`), after mitmproxy has written the end of the stream.

Untraced flows (only plain-HTTP proxy requests can produce them: untraced CONNECTs are blind tunnels) are streamed
through untouched and never reported.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mitmproxy import http

from ac7_cli.runner.trace_layers import Tunnels
from ac7_cli.runner.trace_scope import TraceScope, normalize_host
from ac7_core.capture import CapturedExchange

log = logging.getLogger("ac7.runner.trace")

DEFAULT_RESPONSE_CAP = 8 * 1024 * 1024
DEFAULT_REQUEST_CAP = 8 * 1024 * 1024

OnExchange = Callable[[CapturedExchange], None]
OnInflight = Callable[[int], None]


@dataclass
class _Capture:
    ex: CapturedExchange
    request_cap: int
    response_cap: int
    mono_origin: float  # perf_counter() value that corresponds to ex.started_at_ms
    request_parts: list[bytes] = field(default_factory=list)
    request_kept: int = 0
    response_kept: int = 0

    def offset_ms(self) -> float:
        return (time.perf_counter() - self.mono_origin) * 1000.0

    def tee_request(self, chunk: bytes) -> bytes:
        if chunk:
            self.ex.request_bytes += len(chunk)
            room = self.request_cap - self.request_kept
            if room > 0:
                kept = chunk if len(chunk) <= room else chunk[:room]
                self.request_parts.append(kept)
                self.request_kept += len(kept)
            if len(chunk) > room:
                self.ex.request_truncated = True
        return chunk

    def tee_response(self, chunk: bytes) -> bytes:
        if chunk:
            ex = self.ex
            ex.response_bytes += len(chunk)
            room = self.response_cap - self.response_kept
            if room > 0:
                kept = chunk if len(chunk) <= room else chunk[:room]
                ex.response_chunks.append((self.offset_ms(), kept))
                self.response_kept += len(kept)
            if len(chunk) > room:
                ex.response_truncated = True
        return chunk


def _headers(headers: http.Headers) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers.items(multi=True)]  # type: ignore[no-untyped-call]  # untyped in mitmproxy


class TraceAddon:
    """Captures traced HTTP exchanges; `on_exchange` gets each one exactly once, complete or failed."""

    def __init__(
        self,
        scope: TraceScope,
        tunnels: Tunnels,
        *,
        on_exchange: OnExchange,
        on_inflight: OnInflight,
        request_cap: int = DEFAULT_REQUEST_CAP,
        response_cap: int = DEFAULT_RESPONSE_CAP,
    ) -> None:
        self.scope = scope
        self.tunnels = tunnels
        self.on_exchange = on_exchange
        self.on_inflight = on_inflight
        self.request_cap = request_cap
        self.response_cap = response_cap
        self._open: dict[str, _Capture] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- delivery, always on a later loop iteration ------------------------------------------------------------

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def _later(self, fn: Callable[[], None]) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon(self._guarded, fn)
        else:
            self._guarded(fn)

    @staticmethod
    def _guarded(fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            log.exception("trace host: a trace consumer callback failed")

    def _inflight_changed(self) -> None:
        self._later(functools.partial(self.on_inflight, len(self._open)))

    def _deliver(self, cap: _Capture, error: str | None, ended_at: float | None) -> None:
        ex = cap.ex
        if cap.request_parts:
            ex.request_body = b"".join(cap.request_parts)
            cap.request_parts.clear()
        if error is not None and ex.error is None:
            ex.error = error
        ex.ended_at_ms = int((ended_at or time.time()) * 1000)
        self._later(functools.partial(self.on_exchange, ex))

    def _finish(self, flow: http.HTTPFlow, error: str | None) -> None:
        cap = self._open.pop(flow.id, None)
        if cap is None:
            return
        self._deliver(cap, error, flow.response.timestamp_end if flow.response is not None else None)
        self._inflight_changed()

    def abandon_all(self, reason: str) -> None:
        """Report every still-open exchange as failed (the proxy is stopping)."""
        if not self._open:
            return
        for cap in self._open.values():
            self._deliver(cap, reason, None)
        self._open.clear()
        self._inflight_changed()

    @property
    def inflight(self) -> int:
        return len(self._open)

    # --- mitmproxy hooks -----------------------------------------------------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return  # answered by the proxy itself (407): nothing went upstream, nothing of the agent's to trace
        req = flow.request
        tunnel = self.tunnels.get(flow.client_conn.id)
        if tunnel is not None:
            # Flows only exist on traced tunnels: untraced ones are blind TCP relays.
            host, port, traced = tunnel.host, tunnel.port, tunnel.traced
        else:  # a plain-HTTP proxy request (absolute-form)
            try:
                host = normalize_host(req.host)
            except ValueError:
                host = req.host
            port, traced = req.port, self.scope.matches(host)
        if not traced:
            req.stream = True
            return
        now_wall, now_mono = time.time(), time.perf_counter()
        started = req.timestamp_start or now_wall
        ex = CapturedExchange(
            started_at_ms=int(started * 1000),
            host=host,
            port=port,
            method=req.method,
            path=req.path,
            http_version=req.http_version,
            request_headers=_headers(req.headers),
        )
        cap = _Capture(
            ex,
            self.request_cap,
            self.response_cap,
            mono_origin=now_mono - (now_wall - ex.started_at_ms / 1000.0),
        )
        self._open[flow.id] = cap
        req.stream = cap.tee_request
        self._inflight_changed()

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        resp = flow.response
        assert resp is not None
        cap = self._open.get(flow.id)
        if cap is None:
            resp.stream = True  # untraced: relay as it comes, keep nothing
            return
        ex = cap.ex
        ex.status = resp.status_code
        ex.response_headers = _headers(resp.headers)
        sent = flow.request.timestamp_end or resp.timestamp_start
        ex.first_byte_ms = max(0.0, (resp.timestamp_start - sent) * 1000.0)
        resp.stream = cap.tee_response

    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow, None)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow, flow.error.msg if flow.error is not None else "unknown error")
