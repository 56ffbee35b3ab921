"""A small synchronous client for the broker's HTTP API, for the CLI verbs."""

from __future__ import annotations

import http.client
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import click

from ac7_core.errors import Ac7Error

DEFAULT_URL = "http://127.0.0.1:8717"
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]{1,512}")
_TIMEOUT = 15.0


def broker_options[F: Callable[..., Any]](func: F) -> F:
    func = click.option(
        "--token", envvar="AC7_TOKEN", help="Bearer token of the slot to act as (env AC7_TOKEN).", required=True
    )(func)
    return click.option(
        "--url", envvar="AC7_URL", default=DEFAULT_URL, show_default=True, help="Broker URL (env AC7_URL)."
    )(func)


class BrokerClient:
    def __init__(self, url: str, token: str) -> None:
        try:
            parsed = urllib.parse.urlsplit(url)
            parsed.port  # noqa: B018 - urlsplit only checks the port when asked
        except ValueError as exc:
            raise Ac7Error(f"--url is not a valid URL ({exc}): {url!r}") from None
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise Ac7Error(f"--url must be an http(s) URL, got {url!r}")
        # Printable ASCII only: anything else cannot be an ac7 token, and the error must not echo it.
        if not _TOKEN_CHARS.fullmatch(token):
            raise Ac7Error("--token (or AC7_TOKEN) holds characters no ac7 token has; check how it was copied")
        self.url = url.rstrip("/")
        self._token = token

    def call(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None) -> Any:
        target = self.url + path
        if query:
            target += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(target, data=data, method=method)  # noqa: S310 - scheme checked above
        request.add_header("Authorization", f"Bearer {self._token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:  # noqa: S310
                payload = response.read()
        except urllib.error.HTTPError as exc:
            raise Ac7Error(f"broker answered {exc.code}: {_error_text(exc)}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise Ac7Error(f"cannot reach the broker at {self.url} ({reason}); is `ac7 serve` running?") from None
        if not payload:
            return None
        try:
            return json.loads(payload)
        except ValueError:
            raise Ac7Error(f"{self.url} did not answer like an ac7 broker (the reply is not JSON)") from None


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read())
        return str(body.get("error", exc.reason))
    except (ValueError, AttributeError, OSError):
        return str(exc.reason)
