"""What the trace host captures of one HTTP exchange, handed off the relay path to become an activity event.

The proxy fills this in as bytes flow (never delaying them); `ac7_core.trace_entry` turns it into a redacted
`llm_exchange` or `opaque_http` event. Bodies are bounded copies: `*_truncated` says the cap was hit.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CapturedExchange:
    started_at_ms: int  # epoch ms when the request head arrived from the client
    host: str  # the traced host (SNI / CONNECT host), lowercase, no port
    port: int
    method: str
    path: str  # path plus query, as sent
    http_version: str  # "HTTP/1.1", "HTTP/2.0"
    request_headers: list[tuple[str, str]] = field(default_factory=list)
    request_body: bytes = b""
    request_truncated: bool = False
    request_bytes: int = 0  # the full size on the wire, even when the copy was capped
    status: int | None = None  # None: no response head arrived (upstream failure)
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    # The response body as arrived: (ms since started_at_ms, chunk). Kept per chunk so first-token latency can
    # be found after the fact without parsing on the relay path.
    response_chunks: list[tuple[float, bytes]] = field(default_factory=list)
    response_truncated: bool = False  # the copy hit its cap (the client still got everything)
    response_bytes: int = 0
    first_byte_ms: float | None = None  # ms from request sent upstream to first response byte
    ended_at_ms: int | None = None
    error: str | None = None  # the stream was cut or the upstream failed: the entry is partial

    @property
    def response_body(self) -> bytes:
        return b"".join(chunk for _, chunk in self.response_chunks)
