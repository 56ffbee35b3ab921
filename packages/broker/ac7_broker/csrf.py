"""Cross-site request forgery defence by Fetch Metadata and Origin, without tokens.

Applies to cookie-authenticated unsafe requests and WebSocket upgrades (and to login, against login CSRF). A
request carrying a bearer token and no cookie at all is not ambient-credentialed, so it is exempt.
"""

from __future__ import annotations

from aiohttp import web

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_ALLOWED_SITES = frozenset({"same-origin", "none"})


def is_websocket_upgrade(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def needs_check(request: web.Request) -> bool:
    if request.method not in SAFE_METHODS or is_websocket_upgrade(request):
        scheme = request.headers.get("Authorization", "").split(" ", 1)[0]
        bearer_only = scheme.lower() == "bearer" and "Cookie" not in request.headers
        return not bearer_only
    return False


def own_origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}".lower()


def is_cross_site(request: web.Request) -> bool:
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site.lower() not in _ALLOWED_SITES
    origin = request.headers.get("Origin")
    if origin is None:
        return False  # neither header: not a browser (or a very old one), so no ambient cookie ride-along
    return origin.lower() != own_origin(request)
