"""Loopback TLS fixtures for the trace host tests: a test PKI, a fake HTTPS upstream (HTTP/1.1 via aiohttp and
HTTP/2 via the h2 package), and raw CONNECT tunnels through the proxy.

The test PKI's leaves carry SKI + AKI and a critical basicConstraints on the CA, which Python 3.13's
VERIFY_X509_STRICT default requires.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import json
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

UPSTREAM_NAMES = ("localhost", "127.0.0.1", "api.anthropic.com", "untraced.test")


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass
class UpstreamPKI:
    """A CA and one server certificate for UPSTREAM_NAMES, written (test keys only) under `directory`."""

    directory: Path
    ca_cert: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey
    server_cert: x509.Certificate
    server_key: ec.EllipticCurvePrivateKey

    @property
    def ca_pem_path(self) -> Path:
        return self.directory / "test-ca.pem"

    @property
    def server_cert_der(self) -> bytes:
        return self.server_cert.public_bytes(serialization.Encoding.DER)

    @classmethod
    def create(cls, directory: Path, names: tuple[str, ...] = UPSTREAM_NAMES, label: str = "test") -> UpstreamPKI:
        directory.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{label} upstream CA")])
        ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(ca_ski, critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = []
        for n in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        pki = cls(directory, ca_cert, ca_key, cert, key)
        pki.ca_pem_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        (directory / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (directory / "server.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return pki

    def server_context(self, alpn: list[str] | None = None) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.directory / "server.pem", self.directory / "server.key")
        if alpn:
            ctx.set_alpn_protocols(alpn)
        return ctx


def client_context(cafile: Path, alpn: list[str] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cafile))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


# --- fake HTTP/1.1 upstream ----------------------------------------------------------------------------------------

SSE_EVENTS = [
    {"type": "message_start", "message": {"id": "msg_1", "model": "claude-test", "usage": {"input_tokens": 3}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " world"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}},
    {"type": "message_stop"},
]


def sse_frame(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


@dataclass
class FakeUpstream:
    """An HTTPS server on 127.0.0.1 whose SSE endpoint waits for `release` after the first event."""

    pki: UpstreamPKI
    port: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    first_sent: asyncio.Event = field(default_factory=asyncio.Event)
    last_sent: asyncio.Event = field(default_factory=asyncio.Event)
    requests: list[tuple[str, str, bytes, dict[str, str]]] = field(default_factory=list)
    gate_sse: bool = True

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_get("/json", self.json)
        app.router.add_get("/big", self.big)
        app.router.add_post("/upload", self.upload)
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/cut", self.cut)
        return app

    async def _record(self, request: web.Request) -> bytes:
        body = await request.read()
        self.requests.append((request.method, request.path_qs, body, dict(request.headers)))
        return body

    async def messages(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        await resp.write(sse_frame(SSE_EVENTS[0]))
        self.first_sent.set()
        if self.gate_sse:
            await self.release.wait()
        for event in SSE_EVENTS[1:]:
            await resp.write(sse_frame(event))
        self.last_sent.set()
        await resp.write_eof()
        return resp

    async def json(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response({"ok": True, "n": 42})

    async def big(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        n = int(request.query.get("n", "1048576"))
        chunk = int(request.query.get("chunk", "65536"))
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = n
        await resp.prepare(request)
        sent = 0
        while sent < n:
            part = min(chunk, n - sent)
            await resp.write(bytes([sent // chunk % 251]) * part)
            sent += part
        await resp.write_eof()
        return resp

    async def upload(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        return web.json_response({"received": len(body)})

    async def cut(self, request: web.Request) -> web.StreamResponse:
        """One SSE event, then the connection drops mid-stream (chunked framing never finished)."""
        await self._record(request)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(sse_frame(SSE_EVENTS[0]))
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.abort()
        return resp

    async def slow(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        await resp.write(b"tick\n")
        await self.release.wait()
        await resp.write(b"tock\n")
        await resp.write_eof()
        return resp


@asynccontextmanager
async def run_upstream(pki: UpstreamPKI, **kw: Any) -> AsyncIterator[FakeUpstream]:
    up = FakeUpstream(pki, **kw)
    runner = web.AppRunner(up.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pki.server_context(["http/1.1"]))
    await site.start()
    server = site._server
    assert server is not None and server.sockets
    up.port = server.sockets[0].getsockname()[1]
    try:
        yield up
    finally:
        up.release.set()
        await runner.cleanup()


# --- fake HTTP/2 upstream (h2 package, which mitmproxy depends on) --------------------------------------------------


@dataclass
class H2Upstream:
    port: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    first_sent: asyncio.Event = field(default_factory=asyncio.Event)
    protocols: list[str | None] = field(default_factory=list)
    requests: list[dict[str, str]] = field(default_factory=list)


async def _serve_h2(up: H2Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    import h2.config
    import h2.connection
    import h2.events

    ssl_obj = writer.get_extra_info("ssl_object")
    up.protocols.append(ssl_obj.selected_alpn_protocol() if ssl_obj else None)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
    conn.initiate_connection()
    writer.write(conn.data_to_send())
    tasks: set[asyncio.Task[None]] = set()

    async def respond(stream_id: int) -> None:
        conn.send_headers(stream_id, [(":status", "200"), ("content-type", "text/event-stream")])
        conn.send_data(stream_id, sse_frame(SSE_EVENTS[0]))
        writer.write(conn.data_to_send())
        await writer.drain()
        up.first_sent.set()
        await up.release.wait()
        for event in SSE_EVENTS[1:]:
            conn.send_data(stream_id, sse_frame(event))
        conn.end_stream(stream_id)
        writer.write(conn.data_to_send())
        await writer.drain()

    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    up.requests.append({str(k): str(v) for k, v in event.headers or []})
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    t = asyncio.ensure_future(respond(event.stream_id))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
            writer.write(conn.data_to_send())
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        for t in tasks:
            t.cancel()
        writer.close()


@asynccontextmanager
async def run_h2_upstream(pki: UpstreamPKI) -> AsyncIterator[H2Upstream]:
    up = H2Upstream()
    server = await asyncio.start_server(
        lambda r, w: _serve_h2(up, r, w), "127.0.0.1", 0, ssl=pki.server_context(["h2"])
    )
    up.port = server.sockets[0].getsockname()[1]
    try:
        yield up
    finally:
        up.release.set()
        server.close()


# --- raw CONNECT tunnels --------------------------------------------------------------------------------------------


def basic_proxy_authorization(userinfo: str) -> str:
    """A `Proxy-Authorization: Basic` header line (with its CRLF) for `user:password`."""
    return f"Proxy-Authorization: Basic {base64.b64encode(userinfo.encode()).decode()}\r\n"


def proxy_authorization(proxy_url: str) -> str:
    """The `Proxy-Authorization` header line a client derives from `http://user:password@host:port`."""
    parts = urllib.parse.urlsplit(proxy_url)
    if parts.username is None:
        return ""
    return basic_proxy_authorization(
        f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
    )


async def open_tunnel(
    proxy_url: str, host: str, port: int, *, authorization: str | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """CONNECT host:port through the proxy, with the credentials in `proxy_url` (or the raw header line given as
    `authorization`); returns the stream and the proxy's response head."""
    parts = urllib.parse.urlsplit(proxy_url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    auth = proxy_authorization(proxy_url) if authorization is None else authorization
    writer.write(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{auth}\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    return reader, writer, head


async def tls_through_tunnel(
    proxy_url: str,
    host: str,
    port: int,
    ctx: ssl.SSLContext,
    server_hostname: str | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer, head = await open_tunnel(proxy_url, host, port)
    if not head.startswith(b"HTTP/1.1 200"):
        writer.close()
        raise ConnectionError(f"CONNECT refused: {head!r}")
    await asyncio.wait_for(writer.start_tls(ctx, server_hostname=server_hostname or host), 10)
    return reader, writer


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.01)


async def until(awaitable: Awaitable[Any], timeout: float = 10.0) -> Any:
    return await asyncio.wait_for(awaitable, timeout)
