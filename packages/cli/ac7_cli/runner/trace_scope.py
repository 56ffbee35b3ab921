"""Which hosts the trace host decrypts: `anthropic.com` and its subdomains, plus the hosts the runner adds.

Pure functions, no mitmproxy. A traced *domain* covers itself and every subdomain (`anthropic.com` covers
`api.anthropic.com`, never `evil-anthropic.com` or `anthropic.com.evil.net`); a traced IP address covers exactly that
address. Matching is case-insensitive and ignores ports. Everything outside the scope is a blind tunnel.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

DEFAULT_TRACED_DOMAINS: tuple[str, ...] = ("anthropic.com",)

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _strip_port(value: str) -> str:
    if value.startswith("["):  # [v6] or [v6]:port
        end = value.find("]")
        if end < 0:
            raise ValueError(f"not a host: {value!r}")
        return value[1:end]
    if value.count(":") == 1:  # host:port (a bare IPv6 address has several colons)
        return value.split(":", 1)[0]
    return value


def normalize_host(value: str) -> str:
    """`value` (a host, `host:port`, `[v6]:port` or a URL) as the scope compares it.

    Lowercase, no port, brackets or trailing dot; internationalised names as IDNA A-labels; IP addresses in their
    canonical text form. Raises ValueError for anything that is not a single concrete host (wildcards, empty).
    """
    text = value.strip()
    text = (urlsplit(text).hostname or "") if "://" in text else _strip_port(text)
    text = text.rstrip(".").lower()
    if not text:
        raise ValueError(f"not a host: {value!r}")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    try:
        ascii_name = text.encode("ascii").decode("ascii")
    except UnicodeEncodeError:
        try:
            ascii_name = text.encode("idna").decode("ascii")
        except UnicodeError as e:
            raise ValueError(f"not a host: {value!r}") from e
    if len(ascii_name) > 253 or not all(_LABEL.match(label) for label in ascii_name.split(".")):
        raise ValueError(f"not a host: {value!r}")
    return ascii_name


def parse_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


class TraceScope:
    """The set of traced hosts. `matches(host)` is the one decision the proxy makes per CONNECT."""

    def __init__(self, hosts: Iterable[str], *, include_defaults: bool = True) -> None:
        names: list[str] = list(DEFAULT_TRACED_DOMAINS) if include_defaults else []
        names.extend(normalize_host(h) for h in hosts)
        self.hosts: tuple[str, ...] = tuple(dict.fromkeys(names))  # ordered, deduplicated
        self.ips: frozenset[IPAddress] = frozenset(ip for h in self.hosts if (ip := parse_ip(h)) is not None)
        self.domains: tuple[str, ...] = tuple(h for h in self.hosts if parse_ip(h) is None)

    def matches(self, host: str) -> bool:
        try:
            name = normalize_host(host)
        except ValueError:
            return False
        ip = parse_ip(name)
        if ip is not None:
            return ip in self.ips
        return any(name == d or name.endswith("." + d) for d in self.domains)

    def __repr__(self) -> str:
        return f"TraceScope({list(self.hosts)!r})"
