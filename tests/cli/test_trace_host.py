"""The trace host end to end on loopback: a real embedded mitmproxy, a fake HTTPS upstream, real clients.

No wall-clock assertions: streaming is shown with an event handshake (the fake upstream holds the rest of the
stream until the client has seen the first event).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import ssl
import tempfile
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import mitmproxy.net.tls
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from tls_fixtures import (
    SSE_EVENTS,
    UpstreamPKI,
    basic_proxy_authorization,
    client_context,
    open_tunnel,
    run_h2_upstream,
    run_upstream,
    sse_frame,
    tls_through_tunnel,
    until,
    wait_for,
)

from ac7_cli.runner import trace_host as trace_host_module
from ac7_cli.runner.trace_host import TraceHost, TraceHostError
from ac7_core.capture import CapturedExchange

CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=20)  # a regression (say, buffering) fails instead of hanging
SSE_BODY = b"".join(sse_frame(e) for e in SSE_EVENTS)


class Recorder:
    def __init__(self) -> None:
        self.exchanges: list[CapturedExchange] = []
        self.inflight: list[int] = []
        self.arrived = asyncio.Event()

    def on_exchange(self, ex: CapturedExchange) -> None:
        self.exchanges.append(ex)
        self.arrived.set()

    def on_inflight(self, n: int) -> None:
        self.inflight.append(n)

    async def next(self) -> CapturedExchange:
        await until(self.arrived.wait())
        self.arrived.clear()
        return self.exchanges[-1]


@pytest.fixture
def pki(tmp_path: Path) -> UpstreamPKI:
    return UpstreamPKI.create(tmp_path / "pki")


@pytest.fixture
def trace_root(tmp_path: Path) -> Path:
    root = tmp_path / "tmp"
    root.mkdir()
    return root


@asynccontextmanager
async def trace_host(
    pki: UpstreamPKI, root: Path, hosts: list[str] | None = None, **kw: Any
) -> AsyncIterator[tuple[TraceHost, Recorder]]:
    rec = Recorder()
    kw.setdefault("upstream_ca", pki.ca_pem_path)
    kw.setdefault("env", {})
    host = TraceHost(
        ["localhost"] if hosts is None else hosts,
        on_exchange=rec.on_exchange,
        on_inflight=rec.on_inflight,
        tmp_root=root,
        **kw,
    )
    await host.start()
    try:
        yield host, rec
    finally:
        await host.stop()


# --- streaming and capture -----------------------------------------------------------------------------------------


async def test_sse_is_relayed_chunk_by_chunk_and_captured(pki: UpstreamPKI, trace_root: Path) -> None:
    async with run_upstream(pki) as up, trace_host(pki, trace_root) as (th, rec):
        ctx = client_context(th.ca_cert_path)
        body = json.dumps({"model": "claude-test", "stream": True, "messages": []}).encode()
        async with (
            aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as s,
            s.post(
                f"https://localhost:{up.port}/v1/messages?beta=true",
                data=body,
                headers={"Content-Type": "application/json", "x-api-key": "sk-ant-test"},
                proxy=th.proxy_url,
                ssl=ctx,
            ) as resp,
        ):
            assert resp.status == 200
            first = b""
            while len(first) < len(sse_frame(SSE_EVENTS[0])):
                first += await until(resp.content.readany())
            # The client holds the first event while the upstream has not sent the rest: nothing was buffered.
            assert first == sse_frame(SSE_EVENTS[0])
            assert up.first_sent.is_set() and not up.last_sent.is_set()
            assert th.inflight == 1
            up.release.set()
            rest = await until(resp.content.read())
        assert first + rest == SSE_BODY

        ex = await rec.next()
        assert (ex.host, ex.port, ex.method, ex.path) == ("localhost", up.port, "POST", "/v1/messages?beta=true")
        assert ex.http_version == "HTTP/1.1"
        assert ex.status == 200 and ex.error is None
        assert ("content-type", "text/event-stream") in [(k.lower(), v) for k, v in ex.response_headers]
        assert ("x-api-key", "sk-ant-test") in [(k.lower(), v) for k, v in ex.request_headers]  # redaction is later
        assert ex.request_body == body and ex.request_bytes == len(body) and not ex.request_truncated
        assert ex.response_body == SSE_BODY and ex.response_bytes == len(SSE_BODY) and not ex.response_truncated
        assert len(ex.response_chunks) >= 2
        offsets = [t for t, _ in ex.response_chunks]
        assert offsets == sorted(offsets) and offsets[0] >= 0
        assert ex.first_byte_ms is not None and ex.first_byte_ms >= 0
        assert ex.ended_at_ms is not None and ex.ended_at_ms >= ex.started_at_ms
        await wait_for(lambda: rec.inflight == [1, 0])
        assert up.requests[-1][2] == body


async def test_plain_json_response(pki: UpstreamPKI, trace_root: Path) -> None:
    async with run_upstream(pki) as up, trace_host(pki, trace_root) as (th, rec):
        async with (
            aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as s,
            s.get(f"https://localhost:{up.port}/json", proxy=th.proxy_url, ssl=client_context(th.ca_cert_path)) as r,
        ):
            assert await r.json() == {"ok": True, "n": 42}
        ex = await rec.next()
        assert ex.method == "GET" and ex.status == 200 and ex.request_body == b"" and ex.request_bytes == 0
        assert json.loads(ex.response_body) == {"ok": True, "n": 42}


async def test_request_body_cap(pki: UpstreamPKI, trace_root: Path) -> None:
    payload = os.urandom(300 * 1024)
    async with run_upstream(pki) as up, trace_host(pki, trace_root, request_cap=100 * 1024) as (th, rec):
        async with (
            aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as s,
            s.post(
                f"https://localhost:{up.port}/upload",
                data=payload,
                proxy=th.proxy_url,
                ssl=client_context(th.ca_cert_path),
            ) as r,
        ):
            assert await r.json() == {"received": len(payload)}  # the upstream got every byte
        ex = await rec.next()
        assert ex.request_truncated and ex.request_bytes == len(payload)
        assert ex.request_body == payload[: 100 * 1024]


async def test_response_cap_truncates_the_copy_not_the_stream(pki: UpstreamPKI, trace_root: Path) -> None:
    n = 1024 * 1024
    async with run_upstream(pki) as up, trace_host(pki, trace_root, body_cap=64 * 1024) as (th, rec):
        async with (
            aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as s,
            s.get(
                f"https://localhost:{up.port}/big?n={n}", proxy=th.proxy_url, ssl=client_context(th.ca_cert_path)
            ) as r,
        ):
            data = await r.read()
        assert len(data) == n
        assert data == b"".join(bytes([i % 251]) * 65536 for i in range(n // 65536))
        ex = await rec.next()
        assert ex.response_truncated and ex.response_bytes == n and ex.error is None
        assert ex.response_body == data[: 64 * 1024]


async def test_stream_cut_by_the_upstream_is_a_partial_exchange(pki: UpstreamPKI, trace_root: Path) -> None:
    async with run_upstream(pki) as up, trace_host(pki, trace_root) as (th, rec):
        async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as s:
            with pytest.raises(aiohttp.ClientPayloadError):
                async with s.get(
                    f"https://localhost:{up.port}/cut", proxy=th.proxy_url, ssl=client_context(th.ca_cert_path)
                ) as r:
                    assert r.status == 200
                    await r.read()
        ex = await rec.next()
        assert ex.status == 200 and ex.error
        assert ex.response_body == sse_frame(SSE_EVENTS[0])
        await wait_for(lambda: rec.inflight[-1:] == [0])


async def test_client_gone_mid_stream_is_a_partial_exchange(pki: UpstreamPKI, trace_root: Path) -> None:
    async with run_upstream(pki) as up, trace_host(pki, trace_root) as (th, rec):
        reader, writer = await tls_through_tunnel(th.proxy_url, "localhost", up.port, client_context(th.ca_cert_path))
        writer.write(b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}")
        await until(reader.readuntil(b"message_start"))
        writer.transport.abort()  # the agent was interrupted
        ex = await rec.next()
        assert ex.status == 200 and ex.error
        assert ex.response_body.startswith(b"event: message_start")
        up.release.set()
        await wait_for(lambda: rec.inflight[-1:] == [0])


async def test_untrusted_upstream_certificate_is_a_502_and_an_error(pki: UpstreamPKI, trace_root: Path) -> None:
    async with run_upstream(pki) as up, trace_host(pki, trace_root, upstream_ca=None) as (th, rec):
        async with (
            aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as s,
            s.get(f"https://localhost:{up.port}/json", proxy=th.proxy_url, ssl=client_context(th.ca_cert_path)) as r,
        ):
            assert r.status == 502
        ex = await rec.next()
        assert ex.status is None and ex.error
        assert "certificate" in ex.error.lower() or "tls" in ex.error.lower(), ex.error
        assert up.requests == []  # the request never reached the untrusted server
        await wait_for(lambda: rec.inflight[-1:] == [0])


async def test_ssl_cert_file_from_the_runner_env_is_trusted_upstream(pki: UpstreamPKI, trace_root: Path) -> None:
    env = {"SSL_CERT_FILE": str(pki.ca_pem_path)}
    async with run_upstream(pki) as up, trace_host(pki, trace_root, upstream_ca=None, env=env) as (th, rec):
        async with (
            aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as s,
            s.get(f"https://localhost:{up.port}/json", proxy=th.proxy_url, ssl=client_context(th.ca_cert_path)) as r,
        ):
            assert r.status == 200
        assert (await rec.next()).status == 200


async def test_upstream_ca_without_certificates_fails_start(pki: UpstreamPKI, trace_root: Path) -> None:
    bad = trace_root / "bad.pem"
    bad.write_text("not a certificate\n")
    host = TraceHost(["localhost"], upstream_ca=bad, on_exchange=print, on_inflight=print, tmp_root=trace_root)
    with pytest.raises(ValueError, match="no PEM certificate"):
        await host.start()
    assert list(trace_root.iterdir()) == [bad]  # the CA dir was removed again
    await host.stop()


async def test_default_scope_traces_anthropic_hosts(pki: UpstreamPKI, trace_root: Path) -> None:
    """api.anthropic.com is traced with no extra hosts; the fake upstream answers for it via a connect override."""
    async with (
        run_upstream(pki, gate_sse=False) as up,
        trace_host(pki, trace_root, hosts=[], connect_overrides={"api.anthropic.com": ("127.0.0.1", up.port)}) as (
            th,
            rec,
        ),
    ):
        async with (
            aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as s,
            s.post(
                "https://api.anthropic.com/v1/messages",
                json={},
                proxy=th.proxy_url,
                ssl=client_context(th.ca_cert_path),
            ) as r,
        ):
            assert await r.read() == SSE_BODY
        ex = await rec.next()
        assert (ex.host, ex.port, ex.status) == ("api.anthropic.com", 443, 200)
        assert up.requests[-1][3]["Host"] == "api.anthropic.com"


# --- scope ---------------------------------------------------------------------------------------------------------


async def test_untraced_host_is_a_blind_tunnel(pki: UpstreamPKI, trace_root: Path) -> None:
    """127.0.0.1 is not traced (only localhost is): the client sees the real upstream certificate."""
    async with run_upstream(pki) as up, trace_host(pki, trace_root) as (th, rec):
        ctx = client_context(pki.ca_pem_path)  # trusts the upstream's CA, not the session CA
        reader, writer = await tls_through_tunnel(th.proxy_url, "127.0.0.1", up.port, ctx)
        ssl_object = writer.get_extra_info("ssl_object")
        assert ssl_object.getpeercert(binary_form=True) == pki.server_cert_der
        writer.write(b"GET /json HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        response = await until(reader.read())
        writer.close()
        assert response.startswith(b"HTTP/1.1 200") and b'"n": 42' in response
        await asyncio.sleep(0.05)
        assert rec.exchanges == [] and rec.inflight == []


async def test_sni_differing_from_the_connect_host_is_refused(pki: UpstreamPKI, trace_root: Path) -> None:
    async with run_upstream(pki) as up, trace_host(pki, trace_root) as (th, _rec):
        ctx = client_context(th.ca_cert_path)
        ctx.check_hostname = False  # so only the proxy's refusal can fail these handshakes
        ctx.verify_mode = ssl.CERT_NONE
        for sni in ("evil.example", "api.anthropic.com"):  # untraced, and traced-but-different
            with pytest.raises((ConnectionError, ssl.SSLError, asyncio.IncompleteReadError)) as err:
                await tls_through_tunnel(th.proxy_url, "localhost", up.port, ctx, server_hostname=sni)
            assert not isinstance(err.value, ssl.SSLCertVerificationError)
        # Control: the same tunnel with the matching SNI works.
        reader, writer = await tls_through_tunnel(th.proxy_url, "localhost", up.port, client_context(th.ca_cert_path))
        writer.write(b"GET /json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert (await until(reader.read())).startswith(b"HTTP/1.1 200")
        writer.close()
        assert len(up.requests) == 1


async def test_tls_to_the_proxy_port_itself_is_refused(pki: UpstreamPKI, trace_root: Path) -> None:
    async with trace_host(pki, trace_root) as (th, _):
        ctx = client_context(th.ca_cert_path)
        with pytest.raises((ConnectionError, ssl.SSLError)):
            await until(asyncio.open_connection("127.0.0.1", th.port, ssl=ctx, server_hostname="localhost"))


@asynccontextmanager
async def plain_hello_server() -> AsyncIterator[tuple[int, list[dict[str, str]]]]:
    """A plain-HTTP server on 127.0.0.1 answering `GET /hello`; yields its port and the headers of each request."""
    seen: list[dict[str, str]] = []

    async def hello(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1], seen  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


async def test_plain_http_proxy_requests(pki: UpstreamPKI, trace_root: Path) -> None:
    """Absolute-form requests: traced hosts are captured, others relayed without a trace."""
    async with (
        plain_hello_server() as (port, _),
        trace_host(pki, trace_root) as (th, rec),
        aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as s,
    ):
        async with s.get(f"http://127.0.0.1:{port}/hello", proxy=th.proxy_url) as r:
            assert await r.text() == "hello"
        await asyncio.sleep(0.05)
        assert rec.exchanges == []
        async with s.get(f"http://localhost:{port}/hello", proxy=th.proxy_url) as r:
            assert await r.text() == "hello"
        ex = await rec.next()
        assert (ex.host, ex.port, ex.path, ex.response_body) == ("localhost", port, "/hello", b"hello")


# --- proxy authentication -------------------------------------------------------------------------------------------


async def test_the_proxy_wants_the_session_credentials(pki: UpstreamPKI, trace_root: Path) -> None:
    """Another local user's process cannot use the proxy: a CONNECT (traced or blind) or a plain proxied request
    without the session's credentials gets 407 and never reaches an upstream or a trace."""
    async with run_upstream(pki) as up, trace_host(pki, trace_root) as (th, rec):
        password = urllib.parse.urlsplit(th.proxy_url).password
        assert password and len(password) == 43 and th.proxy_url.startswith("http://ac7:")
        wrong = [
            "",
            basic_proxy_authorization(f"ac7:{password[:-1]}"),
            basic_proxy_authorization(f"ac8:{password}"),
            basic_proxy_authorization(f"ac7:{password}x"),
            basic_proxy_authorization(password),
            f"Proxy-Authorization: Bearer {password}\r\n",
            "Proxy-Authorization: Basic !!!notbase64\r\n",
            basic_proxy_authorization(f"ac7:{password}") * 2,  # two values are not one credential
        ]
        for host in ("localhost", "127.0.0.1"):  # traced, and a blind tunnel
            for auth in wrong:
                _, writer, head = await open_tunnel(th.proxy_url, host, up.port, authorization=auth)
                assert head.startswith(b"HTTP/1.1 407"), (host, auth, head)
                assert b'proxy-authenticate: basic realm="ac7"' in head.lower()
                assert password.encode() not in head
                writer.close()
        async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as s:
            with pytest.raises(aiohttp.ClientHttpProxyError) as refused:
                async with s.get(f"https://localhost:{up.port}/json", proxy=f"http://{th.proxy_address}"):
                    pass
            assert refused.value.status == 407
    assert up.requests == [] and rec.exchanges == []
    assert th.refused_requests == 2 * len(wrong) + 1


async def test_a_plain_proxied_request_needs_the_credentials_too(pki: UpstreamPKI, trace_root: Path) -> None:
    async with (
        plain_hello_server() as (port, seen),
        trace_host(pki, trace_root) as (th, rec),
        aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as s,
    ):
        for host in ("localhost", "127.0.0.1"):
            async with s.get(f"http://{host}:{port}/hello", proxy=f"http://{th.proxy_address}") as r:
                assert r.status == 407
        await asyncio.sleep(0.05)
        assert seen == [] and rec.exchanges == []
        # With them: relayed and traced, and the credentials go no further than the proxy.
        async with s.get(f"http://localhost:{port}/hello", proxy=th.proxy_url) as r:
            assert await r.text() == "hello"
        ex = await rec.next()
        assert not any(k.lower() == "proxy-authorization" for k in seen[0])
        assert not any(k.lower() == "proxy-authorization" for k, _ in ex.request_headers)


# --- HTTP/2 ----------------------------------------------------------------------------------------------------------


def _curl_has_http2() -> bool:
    curl = shutil.which("curl")
    if curl is None:
        return False
    import subprocess

    out = subprocess.run([curl, "--version"], capture_output=True, text=True, check=False).stdout
    return "HTTP2" in out


@pytest.mark.skipif(not _curl_has_http2(), reason="needs curl with HTTP/2 support")
async def test_http2_is_intercepted_and_streamed(pki: UpstreamPKI, trace_root: Path) -> None:
    async with run_h2_upstream(pki) as up, trace_host(pki, trace_root) as (th, rec):
        proc = await asyncio.create_subprocess_exec(
            "curl", "-sS", "--max-time", "20", "-N", "--http2", "-x", th.proxy_url, "--cacert", str(th.ca_cert_path),
            "-H", "content-type: application/json", "--data-binary", '{"stream":true}',
            "-w", "\\nHTTPVERSION=%{http_version}\\n",
            f"https://localhost:{up.port}/v1/messages",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        out = b""
        while sse_frame(SSE_EVENTS[0]) not in out:
            chunk = await until(proc.stdout.read(4096))
            assert chunk, (out, await proc.stderr.read() if proc.stderr else b"")
            out += chunk
        assert up.first_sent.is_set()
        up.release.set()  # the rest is sent only now: the first event was not buffered by the proxy
        rest, err = await until(proc.communicate())
        out += rest
        assert proc.returncode == 0, err
        assert out.startswith(SSE_BODY) and b"HTTPVERSION=2" in out
        assert up.protocols == ["h2"]
        ex = await rec.next()
        assert ex.http_version == "HTTP/2.0" and ex.status == 200 and ex.method == "POST"
        assert ex.request_body == b'{"stream":true}' and ex.response_body == SSE_BODY
        assert ex.first_byte_ms is not None


@pytest.mark.skipif(not _curl_has_http2(), reason="needs curl with HTTP/2 support")
async def test_h2_client_gets_http11_from_an_http11_upstream(pki: UpstreamPKI, trace_root: Path) -> None:
    """Eager connections mirror the upstream's ALPN choice to the client: no protocol translation."""
    async with run_upstream(pki) as up, trace_host(pki, trace_root) as (th, rec):
        proc = await asyncio.create_subprocess_exec(
            "curl", "-sS", "--max-time", "20", "--http2", "-x", th.proxy_url, "--cacert", str(th.ca_cert_path),
            "-w", "\\nHTTPVERSION=%{http_version}\\n", f"https://localhost:{up.port}/json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await until(proc.communicate())
        assert proc.returncode == 0, err
        assert b"HTTPVERSION=1.1" in out
        assert (await rec.next()).http_version == "HTTP/1.1"


# --- lifecycle -------------------------------------------------------------------------------------------------------


async def test_stop_closes_listener_and_live_tunnels(pki: UpstreamPKI, trace_root: Path) -> None:
    async with run_upstream(pki) as up:
        rec = Recorder()
        th = TraceHost(
            ["localhost"], upstream_ca=pki.ca_pem_path, on_exchange=rec.on_exchange, on_inflight=rec.on_inflight,
            tmp_root=trace_root, env={},
        )  # fmt: skip
        port = await th.start()
        ctx = client_context(th.ca_cert_path)
        # A keep-alive tunnel that has served one request...
        idle_r, idle_w = await tls_through_tunnel(th.proxy_url, "localhost", up.port, ctx)
        idle_w.write(b"GET /json HTTP/1.1\r\nHost: localhost\r\n\r\n")
        head = await until(idle_r.readuntil(b"\r\n\r\n"))
        assert head.startswith(b"HTTP/1.1 200")
        await until(idle_r.readexactly(int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])))
        # ...and one with a response in flight.
        busy_r, busy_w = await tls_through_tunnel(th.proxy_url, "localhost", up.port, ctx)
        busy_w.write(b"GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert b"tick" in await until(busy_r.readuntil(b"tick\n"))
        await wait_for(lambda: th.inflight == 1)

        await th.stop()

        for reader in (idle_r, busy_r):
            try:
                rest = await until(reader.read())
            except (ConnectionError, ssl.SSLError):
                rest = b""
            assert b"tock" not in rest
        with pytest.raises(OSError):
            await until(asyncio.open_connection("127.0.0.1", port))
        await wait_for(lambda: len(rec.exchanges) == 2)
        failed = rec.exchanges[-1]
        assert failed.path == "/slow" and failed.error and failed.status == 200
        assert failed.response_body.startswith(b"tick")
        assert rec.inflight[-1] == 0 and th.inflight == 0
        assert list(trace_root.iterdir()) == []  # the CA directory is gone
        assert th.ca is not None
        with pytest.raises(RuntimeError, match="discarded"):
            th.ca.leaf("localhost")  # nothing can mint once stopped
        for w in (idle_w, busy_w):
            w.close()
        await th.stop()  # idempotent


async def test_one_trace_host_per_process(pki: UpstreamPKI, trace_root: Path) -> None:
    async with trace_host(pki, trace_root):
        other = TraceHost([], upstream_ca=None, on_exchange=print, on_inflight=print, tmp_root=trace_root)
        with pytest.raises(TraceHostError):
            await other.start()
    # ...and a new one can start after the first stopped.
    async with trace_host(pki, trace_root) as (th, _):
        assert th.port


async def test_a_failing_consumer_does_not_break_the_relay(pki: UpstreamPKI, trace_root: Path) -> None:
    def boom(_: Any) -> None:
        raise RuntimeError("consumer bug")

    async with run_upstream(pki) as up:
        th = TraceHost(["localhost"], upstream_ca=pki.ca_pem_path, on_exchange=boom, on_inflight=boom,
                       tmp_root=trace_root, env={})  # fmt: skip
        await th.start()
        try:
            async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as s:
                for _ in range(2):
                    async with s.get(
                        f"https://localhost:{up.port}/json", proxy=th.proxy_url, ssl=client_context(th.ca_cert_path)
                    ) as r:
                        assert r.status == 200
        finally:
            await th.stop()


# --- secrets never leave memory ------------------------------------------------------------------------------------


def _key_needles(th: TraceHost) -> list[bytes]:
    assert th.ca is not None
    needles = [b"PRIVATE KEY"]
    for key in (th.ca._key, th.ca._leaf_key):
        assert key is not None
        needles.append(key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))  # fmt: skip
        needles.append(key.private_numbers().private_value.to_bytes(32, "big"))
    return needles


def _scan(root: Path, needles: list[bytes], skip: Path) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and skip not in path.parents:
            data = path.read_bytes()
            hits += [f"{path}: {n[:20]!r}" for n in needles if n in data]
    return hits


async def test_ca_private_key_never_touches_disk(
    pki: UpstreamPKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "tmp"
    home = tmp_path / "home"
    root.mkdir()
    home.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))  # the default tmp root for everything in-process
    monkeypatch.setenv("TMPDIR", str(root))
    monkeypatch.setenv("HOME", str(home))
    async with run_upstream(pki, gate_sse=False) as up:
        rec = Recorder()
        th = TraceHost(["localhost"], upstream_ca=pki.ca_pem_path, on_exchange=rec.on_exchange,
                       on_inflight=rec.on_inflight)  # fmt: skip
        await th.start()
        try:
            assert th.ca_cert_path.is_relative_to(root)
            async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as s:
                for path in ("/v1/messages", "/json"):
                    async with s.request(
                        "POST" if path == "/v1/messages" else "GET",
                        f"https://localhost:{up.port}{path}",
                        proxy=th.proxy_url,
                        ssl=client_context(th.ca_cert_path),
                    ) as r:
                        await r.read()
            await rec.next()
            needles = _key_needles(th)
            written = sorted(p.name for p in root.rglob("*") if p.is_file())
            assert written == ["session-ca.pem", "upstream-trust.pem"], written
            assert _scan(tmp_path, needles, skip=pki.directory) == []
        finally:
            await th.stop()
        assert _scan(tmp_path, needles, skip=pki.directory) == []
        assert list(root.iterdir()) == []
        assert not (home / ".mitmproxy").exists()


def test_sslkeylogfile_is_never_honoured() -> None:
    assert trace_host_module is not None
    assert mitmproxy.net.tls.log_master_secret is None


async def test_mitmproxy_stays_quiet_and_unhooks_the_root_logger(pki: UpstreamPKI, trace_root: Path) -> None:
    before = list(logging.getLogger().handlers)
    async with trace_host(pki, trace_root):
        assert logging.getLogger("mitmproxy").getEffectiveLevel() >= logging.WARNING
        assert logging.getLogger().handlers == before
    assert logging.getLogger().handlers == before
