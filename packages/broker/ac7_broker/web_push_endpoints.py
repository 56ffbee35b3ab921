"""Which push endpoints the broker will POST to.

A subscription's endpoint is a URL a client hands us, and the broker then sends requests to it: without limits that
is a server-side request forgery primitive. Endpoints must be https:// URLs of public hosts; at connect time a
resolver drops non-public addresses, so a name that resolves (or re-resolves) to an internal address is refused
too. Tests running a loopback push service set `allow_insecure`, which admits http://127.0.0.1 / localhost.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp import DefaultResolver
from aiohttp.abc import AbstractResolver, ResolveResult

MAX_ENDPOINT_CHARS = 2048
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_DEFAULT_PORTS = {"https": 443, "http": 80}


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_public_host(host: str) -> bool:
    """An IP literal must be globally routable; a name must be a dotted, non-local DNS name."""
    address = _ip(host)
    if address is not None:
        return address.is_global and not address.is_multicast
    name = host.rstrip(".").lower()
    return "." in name and not name.endswith((".localhost", ".local", ".internal")) and name != "localhost"


def check_endpoint(endpoint: str, *, allow_insecure: bool = False) -> str:
    """The endpoint if the broker may send to it; otherwise ValueError with a sentence for the client."""
    if not 1 <= len(endpoint) <= MAX_ENDPOINT_CHARS:
        raise ValueError(f"endpoint must be 1..{MAX_ENDPOINT_CHARS} characters")
    if not endpoint.isascii() or not endpoint.isprintable() or " " in endpoint:
        raise ValueError("endpoint must be an absolute URL (printable ASCII, no spaces)")
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError:
        raise ValueError("endpoint is not a valid URL") from None
    host = parts.hostname
    scheme = parts.scheme.lower()
    if not host or scheme not in _DEFAULT_PORTS:
        raise ValueError("endpoint must be an https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("endpoint must not carry credentials")
    if "#" in endpoint:
        raise ValueError("endpoint must not have a fragment")
    if port == 0:
        raise ValueError("endpoint port must be 1..65535")
    if scheme == "http":
        if not (allow_insecure and host in LOOPBACK_HOSTS):
            raise ValueError("endpoint must be an https:// URL")
    elif not allow_insecure and not is_public_host(host):
        raise ValueError("endpoint must be a push service on a public host")
    return endpoint


def endpoint_origin(endpoint: str) -> str:
    """scheme://host[:port] of an endpoint: the VAPID `aud` (RFC 8292 §2), default ports omitted."""
    parts = urlsplit(endpoint)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    return f"{scheme}://{host}" if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{scheme}://{host}:{port}"


def endpoint_host(endpoint: str) -> str:
    """The host alone, for logs: the path of an endpoint is the subscription's capability and stays out of them."""
    return urlsplit(endpoint).hostname or "?"


class PublicOnlyResolver(AbstractResolver):
    """Resolves like aiohttp's default resolver, then keeps only globally routable addresses."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        public = [r for r in found if is_public_host(r["host"])]
        if not public:
            raise OSError(f"{host} resolves only to non-public addresses")
        return public

    async def close(self) -> None:
        await self._inner.close()
