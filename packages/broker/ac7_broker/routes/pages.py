"""The web UI: HTML shells, their static assets and the service worker, with strict security headers.

Everything the browser runs comes from `ac7_broker/ui/` (no build step). The files are read once, at import, into
memory: `/static/{file}` can only ever answer with one of them (a dictionary lookup, so no path can traverse out),
each with its content type and a content-hash ETag. Pages carry a CSP that allows no inline script or style.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Final
from urllib.parse import quote

from aiohttp import web

from ac7_broker.auth import CALLER_KEY, Caller
from ac7_broker.errors import not_found
from ac7_core.config_schema import NAME_RE

routes = web.RouteTableDef()

# 'self' in connect-src also matches the page's own host and port over ws:/wss: (CSP Level 3; Chromium, Firefox
# and Safari 15.4+), so the subscribe sockets need no origin of their own here; the browser tests prove it.
CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'; "
    # Chromium enforces these: assigning a string to innerHTML (or any other DOM XSS sink) throws instead of
    # parsing markup. The UI builds every node with DOM APIs; its one policy, "ac7", lets exactly one script
    # URL through: /sw.js, for registering the service worker (push.js).
    "require-trusted-types-for 'script'; trusted-types ac7"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}

_CONTENT_TYPES: Final = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".html": "text/html; charset=utf-8",
}
# Served under /static/: everything in ui/ but the pages themselves and the service worker (which must come from
# the root to control the whole origin).
_STATIC_SUFFIXES: Final = frozenset({".css", ".js", ".json", ".svg", ".png"})
_ROOT_ONLY: Final = frozenset({"sw.js"})


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def _load_assets() -> dict[str, Asset]:
    assets: dict[str, Asset] = {}
    for entry in resources.files("ac7_broker").joinpath("ui").iterdir():
        name = entry.name
        suffix = name[name.rfind(".") :] if "." in name else ""
        if not entry.is_file() or suffix not in _CONTENT_TYPES or name.startswith("."):
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        assets[name] = Asset(body, _CONTENT_TYPES[suffix], etag)
    return assets


ASSETS: Final = _load_assets()


def _with_security_headers(response: web.StreamResponse) -> web.StreamResponse:
    response.headers.update(SECURITY_HEADERS)
    return response


def _serve(request: web.Request, name: str, cache_control: str) -> web.StreamResponse:
    asset = ASSETS.get(name)
    if asset is None:
        raise not_found("no such file")
    headers = {"Cache-Control": cache_control, "ETag": asset.etag}
    if asset.etag in {tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")}:
        return _with_security_headers(web.Response(status=304, headers=headers))
    response = web.Response(body=asset.body, headers=headers)
    response.headers["Content-Type"] = asset.content_type
    return _with_security_headers(response)


def _session_caller(request: web.Request) -> Caller | None:
    """The caller if signed in with a session cookie (a page is never opened with a bearer token)."""
    caller: Caller | None = request.get(CALLER_KEY)
    return caller if caller is not None and caller.via == "session" else None


def _redirect(location: str) -> web.StreamResponse:
    response = web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})
    return _with_security_headers(response)


def _page(request: web.Request, name: str) -> web.StreamResponse:
    # Shells hold no data, but no-store keeps a signed-out browser from showing a cached signed-in view.
    return _serve(request, name, "no-store")


def _to_login(request: web.Request) -> web.StreamResponse:
    target = request.path_qs
    return _redirect("/login" if target == "/" else "/login?next=" + quote(target, safe="/"))


@routes.get("/login")
async def login_page(request: web.Request) -> web.StreamResponse:
    if _session_caller(request) is not None:
        return _redirect("/")  # never to `next`: the server does not redirect to a caller-supplied place
    return _page(request, "login.html")


@routes.get("/")
async def index_page(request: web.Request) -> web.StreamResponse:
    if _session_caller(request) is None:
        return _to_login(request)
    return _page(request, "index.html")


@routes.get("/agents/{name}")
async def agent_page(request: web.Request) -> web.StreamResponse:
    if not NAME_RE.match(request.match_info["name"]):
        raise not_found("no such page")
    if _session_caller(request) is None:
        return _to_login(request)
    # Served to anyone signed in: the page asks the API, which alone decides (403 for another agent's traces
    # unless the caller is a director), and shows that answer.
    return _page(request, "agent.html")


@routes.get("/static/{file}")
async def static_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["file"]
    suffix = name[name.rfind(".") :] if "." in name else ""
    if suffix not in _STATIC_SUFFIXES or name in _ROOT_ONLY:
        raise not_found("no such file")
    # Unversioned URLs (no build step), so the browser revalidates each time and gets a 304 while unchanged.
    return _serve(request, name, "no-cache")


@routes.get("/sw.js")
async def service_worker(request: web.Request) -> web.StreamResponse:
    return _serve(request, "sw.js", "no-cache")
