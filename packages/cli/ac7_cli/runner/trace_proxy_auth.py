"""Proxy authentication for the trace host: only the runner's own child holds the session's proxy credentials.

The proxy listens on 127.0.0.1, which every local user can reach. Without credentials, another user's process
could use it for the session's lifetime and have its traffic to traced hosts decrypted, and recorded as the
agent's. The password is random per session and reaches the child only through `HTTPS_PROXY`
(`http://ac7:<password>@127.0.0.1:<port>`), which Claude Code, curl, Python and Node all turn into a
`Proxy-Authorization: Basic` header. Processes of the same user can read the child's environment, so this keeps
out other users, not the agent's own uid.

mitmproxy ships a `proxyauth` addon, but its single-user check compares with `==`; this one compares in constant
time and never echoes what it was sent.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import secrets
import weakref

from mitmproxy import connection, http

USERNAME = "ac7"
_HEADER = "Proxy-Authorization"
_REFUSAL = b"ac7 trace proxy: proxy authentication required\n"

log = logging.getLogger(__name__)


def new_proxy_password() -> str:
    """256 random bits, URL-safe, so the password goes into a proxy URL without percent-encoding."""
    return secrets.token_urlsafe(32)


def credentials_match(header_value: str, expected: bytes) -> bool:
    """Whether a `Proxy-Authorization` value is `Basic base64(expected)`; constant-time in the credentials."""
    scheme, _, token = header_value.strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(given, expected)


class ProxyAuth:
    """mitmproxy addon: every CONNECT, and every plain proxied request outside an authenticated tunnel, must carry
    the session's credentials, or it is answered 407 here and never reaches an upstream. Must come before the
    addons that act on `http_connect` and `requestheaders`, which skip flows already answered."""

    def __init__(self, password: str) -> None:
        self._expected = f"{USERNAME}:{password}".encode()
        # Requests inside a tunnel share the CONNECT's client connection; mitmproxy keeps no flag for "this
        # tunnel was authenticated", so remember the connections (weakly: they go away on disconnect).
        self._tunnels: weakref.WeakSet[connection.Client] = weakref.WeakSet()
        self.refused = 0

    def http_connect(self, flow: http.HTTPFlow) -> None:
        if self._admit(flow):
            self._tunnels.add(flow.client_conn)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.client_conn not in self._tunnels:
            self._admit(flow)

    def _admit(self, flow: http.HTTPFlow) -> bool:
        value = flow.request.headers.get(_HEADER, "")
        if credentials_match(value, self._expected):
            # The credentials are for this proxy only; they must not travel upstream or into a trace.
            del flow.request.headers[_HEADER]
            return True
        self.refused += 1
        if self.refused == 1 or self.refused % 100 == 0:
            log.warning("trace host: refused %d request(s) without the session's proxy credentials", self.refused)
        flow.response = http.Response.make(
            407,
            _REFUSAL,
            {"Proxy-Authenticate": 'Basic realm="ac7"', "Content-Type": "text/plain; charset=utf-8"},
        )
        return False
