"""The API's error shape for requests aiohttp refuses before any handler runs: malformed HTTP.

Left alone, aiohttp answers a request it cannot parse (a header line without a colon, a non-numeric
Content-Length, an 8 KiB header, TLS sent to the plain-HTTP port) with a `text/plain` 400 that echoes the offending
bytes, and logs each one at ERROR with a traceback that echoes them again. A malformed `Authorization` line would
put a bearer token in the broker's log, and anyone who can reach the port could fill the log at will. Here the
answer is `{"error", "code"}` JSON that names the problem without repeating the request, and the log gets one
DEBUG line.

aiohttp has no option for this: the answer comes from `RequestHandler.handle_error`, and the handler class is
fixed in `web.Server.__call__`, hence the two small subclasses.
"""

from __future__ import annotations

import logging

from aiohttp import http_exceptions, web, web_protocol
from aiohttp.web_request import BaseRequest

from ac7_broker.errors import error_response

log = logging.getLogger("ac7.broker")


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, http_exceptions.LineTooLong):
        return "a request line or header is too long"
    if isinstance(exc, http_exceptions.BadHttpMethod):
        return "not an HTTP request (TLS to a plain-HTTP port?)"
    return "malformed HTTP request"


class _JsonErrorRequestHandler(web_protocol.RequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            # As aiohttp does: part of a response went out already, so the connection cannot carry another.
            raise ConnectionError("response already started; cannot send an error response")
        if status >= 500:
            # Not reached through the API (error_middleware answers every handler error); a bug if it is.
            log.error("unhandled error answering %s %s (%d)", request.method, request.path, status, exc_info=exc)
            resp = error_response(status, "internal", "internal error")
        else:
            log.debug("refused a malformed HTTP request: %s", type(exc).__name__ if exc else status)
            resp = error_response(status, "bad_request", _describe(exc))
        resp.force_close()
        return resp


class _JsonErrorServer(web.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        return _JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class BrokerAppRunner(web.AppRunner):
    """`web.AppRunner` whose connections answer malformed HTTP in the API's error shape."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The application builds its own `web.Server`; re-classing it (a subclass with no state of its own) keeps
        # everything aiohttp configured and swaps only the request handler it hands each new connection.
        server.__class__ = _JsonErrorServer
        return server
