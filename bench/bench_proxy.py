"""Latency the trace host adds to an agent's LLM traffic, against a direct connection measured in the same run.

Three processes (the box has 2 cores): this one is the client, a fake HTTPS upstream (aiohttp) runs in a second, and
each proxy (`TraceHost`, tracing on) in its own process, so proxy CPU never competes with the client's event loop.
Every round sends one request down each path in turn, on warm keep-alive connections:

- `direct`   client → upstream
- `traced`   client → trace host (decrypting, teeing, capturing) → upstream; its consumer just counts exchanges
- `stalled`  the same, but its consumer stalls 10 s on every exchange (a broker that does not answer)
- `blind`    client → trace host → upstream through an untraced host: a blind TCP tunnel, for reference

Workloads: a small GET; an SSE stream of 10 events 5 ms apart, each carrying the upstream's CLOCK_MONOTONIC send
time so the client measures every event's one-way latency (same host, same clock); and a 1 MiB POST answered by a
200 KiB streamed response, timed to the end of the stream.

Targets (added = traced p50 - direct p50): small request ≤ 2.5 ms; SSE first event ≤ 3 ms; every SSE event's added
one-way latency ≤ 2 ms; 1 MiB + 200 KiB end of stream ≤ 5 ms; the stalled consumer adds ≤ 0.5 ms over `traced` to
the small request, the SSE first event and every SSE event (noise level: it should add nothing). Prints one JSON
object; never fails the build.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ipaddress
import json
import os
import resource
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from _common import MachineMeter, log, percentile, report, run

ROUNDS_SMALL = 400
ROUNDS_SSE = 100
ROUNDS_BIG = 100
WARMUP = 20
SSE_EVENTS = 10
SSE_GAP_S = 0.005
BIG_REQUEST = 1024 * 1024
BIG_RESPONSE = 200 * 1024
BIG_CHUNK = 16 * 1024  # a full TLS record per write
BIG_CHUNK_STRESS = 4096  # many small writes back to back: a throughput stress, reported without a target
STALL_S = 10.0
BUDGET_S = 300.0
TARGETS_MS = {"small_p50": 2.5, "sse_first_event_p50": 3.0, "sse_event_max_p50": 2.0, "big_p50": 5.0, "stall": 0.5}
PATHS = ("direct", "traced", "stalled", "blind")


# --- test PKI (the upstream's certificate) --------------------------------------------------------------------------


def make_pki(directory: Path) -> Path:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench upstream CA")])
    ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ku = {
        "content_commitment": False,
        "key_encipherment": False,
        "data_encipherment": False,
        "key_agreement": False,
        "encipher_only": False,
        "decipher_only": False,
    }
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, key_cert_sign=True, crl_sign=True, **ku), critical=True)
        .add_extension(ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, **ku), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "server.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (directory / "server.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return directory / "ca.pem"


# --- roles run in child processes -----------------------------------------------------------------------------------


async def serve_upstream(pki: Path) -> None:
    async def small(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def sse(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(SSE_EVENTS):
            if i:
                await asyncio.sleep(SSE_GAP_S)
            data = json.dumps({"type": "content_block_delta", "i": i, "sent_ns": time.perf_counter_ns()})
            await resp.write(f"event: content_block_delta\ndata: {data}\n\n".encode())
        await resp.write_eof()
        return resp

    async def exchange(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        assert len(body) == BIG_REQUEST
        chunk = int(request.query.get("chunk", BIG_CHUNK))
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = BIG_RESPONSE
        await resp.prepare(request)
        for offset in range(0, BIG_RESPONSE, chunk):
            await resp.write(b"x" * min(chunk, BIG_RESPONSE - offset))
        await resp.write_eof()
        return resp

    app = web.Application(client_max_size=4 * BIG_REQUEST)
    app.router.add_get("/small", small)
    app.router.add_post("/sse", sse)
    app.router.add_post("/exchange", exchange)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki / "server.pem", pki / "server.key")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    print(json.dumps({"port": site._server.sockets[0].getsockname()[1]}), flush=True)  # type: ignore[union-attr]
    await _until_stdin_closes()
    await runner.cleanup()


async def serve_proxy(pki: Path, stall_s: float, tmp_root: Path) -> None:
    from ac7_cli.runner.trace_host import TraceHost
    from ac7_core.capture import CapturedExchange

    queue: asyncio.Queue[CapturedExchange] = asyncio.Queue()
    done = 0

    async def consumer() -> None:
        nonlocal done
        while True:
            ex = await queue.get()
            if stall_s:
                await asyncio.sleep(stall_s)  # a broker that does not answer
            _ = ex.response_body  # what the event builder starts with
            done += 1

    task = asyncio.create_task(consumer())
    host = TraceHost(
        ["localhost"],
        upstream_ca=pki / "ca.pem",
        on_exchange=queue.put_nowait,
        on_inflight=lambda n: None,
        env={},
        tmp_root=tmp_root,
    )
    port = await host.start()
    print(json.dumps({"port": port, "proxy_url": host.proxy_url, "ca": str(host.ca_cert_path)}), flush=True)
    await _until_stdin_closes()
    log(f"proxy (stall {stall_s}s): {done} exchanges consumed, {queue.qsize()} still queued at exit")
    await host.stop()
    task.cancel()


async def _until_stdin_closes() -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.buffer.read)


# --- the client -----------------------------------------------------------------------------------------------------


class Child:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=Path(__file__).parent
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"child {args} did not start")
        self.info: dict[str, Any] = json.loads(line)

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _ms(ns: float) -> float:
    return round(ns / 1e6, 3)


def _p50(values: list[float]) -> float:
    return percentile(sorted(values), 50)


def _summary(ns: list[float]) -> dict[str, float]:
    s = sorted(ns)
    return {"p50": _ms(percentile(s, 50)), "p90": _ms(percentile(s, 90)), "p99": _ms(percentile(s, 99))}


async def small(session: aiohttp.ClientSession, url: str, **kw: Any) -> float:
    t0 = time.perf_counter_ns()
    async with session.get(url + "/small", **kw) as r:
        await r.read()
    return time.perf_counter_ns() - t0


async def sse(session: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[float, list[float]]:
    """(time to the first complete event, per-event one-way latency from the upstream's send time)."""
    t0 = time.perf_counter_ns()
    first = 0.0
    latencies: list[float] = []
    buf = b""
    async with session.post(url + "/sse", data=b'{"stream":true}', **kw) as r:
        while True:
            chunk = await r.content.readany()
            if not chunk:
                break
            now = time.perf_counter_ns()
            buf += chunk
            while b"\n\n" in buf:
                frame, buf = buf.split(b"\n\n", 1)
                data = json.loads(frame.split(b"data: ", 1)[1])
                latencies.append(now - data["sent_ns"])
                if not first:
                    first = now - t0
    assert len(latencies) == SSE_EVENTS
    return first, latencies


async def big(session: aiohttp.ClientSession, url: str, payload: bytes, chunk: int, **kw: Any) -> float:
    t0 = time.perf_counter_ns()
    async with session.post(f"{url}/exchange?chunk={chunk}", data=payload, **kw) as r:
        n = 0
        async for chunk in r.content.iter_any():
            n += len(chunk)
    assert n == BIG_RESPONSE
    return time.perf_counter_ns() - t0


def _self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Phase:
    """CPU seconds of each of our processes and of the whole machine over one workload."""

    def __init__(self, children: dict[str, Child]) -> None:
        self.children = children
        self.cpu0 = {name: c.cpu_s() for name, c in children.items()}
        self.self0 = _self_cpu_s()
        self.meter = MachineMeter()
        self.wall0 = time.monotonic()

    def end(self, exchanges_per_path: int) -> dict[str, Any]:
        wall = time.monotonic() - self.wall0
        ours = {name: c.cpu_s() - self.cpu0[name] for name, c in self.children.items()}
        ours["client"] = _self_cpu_s() - self.self0
        busy = self.meter.busy_cores()
        return {
            "proxy_cpu_ms_per_exchange": {
                p: round(ours[p] / exchanges_per_path * 1000, 3) for p in ("traced", "stalled", "blind")
            },
            "machine_busy_cores": busy,
            "outside_busy_cores": round(max(0.0, busy - sum(ours.values()) / wall), 2),
        }


async def measure(tmp: Path) -> dict[str, Any]:
    pki_dir = tmp / "pki"
    pki_dir.mkdir()
    ca = make_pki(pki_dir)
    children: dict[str, Child] = {}
    try:
        children["upstream"] = Child("--role", "upstream", "--pki", str(pki_dir))
        for name, stall in (("traced", 0.0), ("stalled", STALL_S), ("blind", 0.0)):
            children[name] = Child("--role", "proxy", "--pki", str(pki_dir), "--tmp", str(tmp), "--stall", str(stall))
        up_port = children["upstream"].info["port"]
        direct_ctx = ssl.create_default_context(cafile=str(ca))

        def via(child: Child) -> dict[str, Any]:
            ctx = ssl.create_default_context(cafile=child.info["ca"])
            return {"proxy": child.info["proxy_url"], "ssl": ctx}

        kwargs = {
            "direct": {"ssl": direct_ctx},
            "traced": via(children["traced"]),
            "stalled": via(children["stalled"]),
            "blind": {"proxy": children["blind"].info["proxy_url"], "ssl": direct_ctx},
        }
        urls = dict.fromkeys(PATHS, f"https://localhost:{up_port}")
        urls["blind"] = f"https://127.0.0.1:{up_port}"  # 127.0.0.1 is not traced: a blind tunnel
        timeout = aiohttp.ClientTimeout(total=30)
        sessions = {p: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), timeout=timeout) for p in PATHS}
        payload = os.urandom(BIG_REQUEST)
        phases: dict[str, Any] = {}
        try:
            for p in PATHS:  # warm: TLS sessions, keep-alive tunnels, leaf cache, code paths
                for _ in range(WARMUP):
                    await small(sessions[p], urls[p], **kwargs[p])
                await sse(sessions[p], urls[p], **kwargs[p])
                await big(sessions[p], urls[p], payload, BIG_CHUNK, **kwargs[p])

            async def rounds(name: str, n: int, fn: Callable[[str], Awaitable[Any]]) -> dict[str, list[Any]]:
                log(f"proxy bench: {name}")
                phase = Phase(children)
                out: dict[str, list[Any]] = {p: [] for p in PATHS}
                for i in range(n):
                    for p in PATHS if i % 2 == 0 else PATHS[::-1]:
                        out[p].append(await fn(p))
                phases[name] = phase.end(n)
                return out

            small_ns = await rounds("small", ROUNDS_SMALL, lambda p: small(sessions[p], urls[p], **kwargs[p]))
            sse_res = await rounds("sse", ROUNDS_SSE, lambda p: sse(sessions[p], urls[p], **kwargs[p]))
            big_ns = await rounds(
                "big", ROUNDS_BIG, lambda p: big(sessions[p], urls[p], payload, BIG_CHUNK, **kwargs[p])
            )
            stress_ns = await rounds(
                "big_4k", ROUNDS_BIG, lambda p: big(sessions[p], urls[p], payload, BIG_CHUNK_STRESS, **kwargs[p])
            )
        finally:
            for session in sessions.values():
                await session.close()
    finally:
        for child in children.values():
            child.stop()

    first = {p: [f for f, _ in sse_res[p]] for p in PATHS}
    per_event = {p: [[lat[i] for _, lat in sse_res[p]] for i in range(SSE_EVENTS)] for p in PATHS}
    event_p50 = {p: [_p50(per_event[p][i]) for i in range(SSE_EVENTS)] for p in PATHS}

    def added(metric: dict[str, list[float]], path: str, base: str = "direct") -> float:
        return _ms(_p50(metric[path]) - _p50(metric[base]))

    event_added = {p: [_ms(event_p50[p][i] - event_p50["direct"][i]) for i in range(SSE_EVENTS)] for p in PATHS}
    proxied = PATHS[1:]
    results: dict[str, Any] = {
        "small_request_ms": {p: _summary(small_ns[p]) for p in PATHS},
        "small_added_p50_ms": {p: added(small_ns, p) for p in proxied},
        "sse_first_event_ms": {p: _summary(first[p]) for p in PATHS},
        "sse_first_event_added_p50_ms": {p: added(first, p) for p in proxied},
        "sse_event_latency_p50_ms": {p: [_ms(v) for v in event_p50[p]] for p in PATHS},
        "sse_event_added_p50_ms": {p: event_added[p] for p in proxied},
        "sse_event_added_max_p50_ms": {p: max(event_added[p]) for p in proxied},
        "sse_event_latency_p99_ms": {
            p: _ms(percentile(sorted(v for ev in per_event[p] for v in ev), 99)) for p in PATHS
        },
        "big_exchange_ms": {p: _summary(big_ns[p]) for p in PATHS},
        "big_added_p50_ms": {p: added(big_ns, p) for p in proxied},
        "big_4k_chunks_ms": {p: _summary(stress_ns[p]) for p in PATHS},
        "big_4k_chunks_added_p50_ms": {p: added(stress_ns, p) for p in proxied},
        "stalled_consumer_vs_traced_p50_ms": {
            "small": added(small_ns, "stalled", "traced"),
            "sse_first_event": added(first, "stalled", "traced"),
            "sse_event_max": round(max(event_added["stalled"]) - max(event_added["traced"]), 3),
            "big": added(big_ns, "stalled", "traced"),
        },
        "cpu": phases,
    }
    checks = {
        "small_p50": results["small_added_p50_ms"]["traced"],
        "sse_first_event_p50": results["sse_first_event_added_p50_ms"]["traced"],
        "sse_event_max_p50": results["sse_event_added_max_p50_ms"]["traced"],
        "big_p50": results["big_added_p50_ms"]["traced"],
        # The streaming metrics: the big exchange's p50 swings by several ms between two identical proxies on a
        # shared 2-core box, so it is reported (stalled_consumer_vs_traced_p50_ms.big) but not part of the check.
        "stall": max(v for k, v in results["stalled_consumer_vs_traced_p50_ms"].items() if k != "big"),
    }
    results["targets"] = {
        k: {"value": v, "target_ms": TARGETS_MS[k], "pass": v <= TARGETS_MS[k]} for k, v in checks.items()
    }
    out = report(
        "proxy",
        metric="small_request_added_p50",
        value=checks["small_p50"],
        unit="ms",
        target=TARGETS_MS["small_p50"],
        higher_is_better=False,
        baseline={"description": "direct HTTPS to the same upstream, same run, alternating with the proxied paths"},
        results=results,
        params={
            "rounds": {"small": ROUNDS_SMALL, "sse": ROUNDS_SSE, "big": ROUNDS_BIG, "warmup": WARMUP},
            "sse": {"events": SSE_EVENTS, "gap_ms": SSE_GAP_S * 1000},
            "big": {"request_bytes": BIG_REQUEST, "response_bytes": BIG_RESPONSE, "chunk": BIG_CHUNK},
            "stall_s": STALL_S,
            "processes": "client (aiohttp, this process) | upstream (aiohttp HTTPS) | one process per proxy path",
            "connections": "keep-alive, one per path, warmed up; paths alternate within each round",
        },
        notes=[
            "added = p50(path) - p50(direct); SSE event latency = client receive time - upstream send time "
            "(CLOCK_MONOTONIC, same host).",
            "blind = CONNECT to an untraced host: mitmproxy relays the bytes without TLS (reference only).",
            "big_4k_chunks: the 200 KiB response written as 50 back-to-back 4 KiB writes, which the proxy relays one "
            "by one; a throughput stress, no target.",
            "outside_busy_cores > 0 means something else competed for the 2 cores during that phase.",
        ],
    )
    out["pass"] = all(t["pass"] for t in results["targets"].values())
    return out


async def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ac7-bench-proxy-") as tmp:
        return await measure(Path(tmp))


def _child_main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--role", choices=("upstream", "proxy"))
    parser.add_argument("--pki", type=Path)
    parser.add_argument("--tmp", type=Path)
    parser.add_argument("--stall", type=float, default=0.0)
    args = parser.parse_args()
    if args.role == "upstream":
        asyncio.run(serve_upstream(args.pki))
    else:
        asyncio.run(serve_proxy(args.pki, args.stall, args.tmp))


if __name__ == "__main__":
    if "--role" in sys.argv:
        _child_main()
    else:
        run(main, BUDGET_S)
