"""Reading a JSON request body within a size limit, with 4xx answers for every way it can be wrong."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from ac7_broker.errors import ApiError, bad_request

_CHUNK = 64 * 1024


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"request body larger than {limit} bytes")


def check_json_content_type(request: web.Request) -> None:
    content_type = request.headers.get("Content-Type", "application/json")
    # Only JSON: a cross-site HTML form can send form or text bodies, never application/json.
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, "unsupported_media_type", "request body must be application/json")


async def read_json(request: web.Request, limit: int) -> Any:
    check_json_content_type(request)
    return parse_json(await read_body(request, limit), strict_numbers=True)


def parse_json(data: bytes, *, strict_numbers: bool = False) -> Any:
    """Parse a request body; every way it can be malformed is a 400. `strict_numbers` refuses NaN/inf."""
    hooks: dict[str, Any] = {"parse_constant": _reject_constant, "parse_float": _finite_float} if strict_numbers else {}
    try:
        return json.loads(data, **hooks)
    except UnicodeDecodeError:
        raise bad_request("request body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise bad_request(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise bad_request("invalid JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer past Python's 4300-digit conversion limit, NaN, 1e999
        raise bad_request(f"invalid JSON: {str(exc).split(';')[0]}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # 1e999 parses to inf, which no JSON encoder can write back out; refuse it on the way in.
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


async def read_body(request: web.Request, limit: int) -> bytes:
    """The raw body, at most `limit` bytes (413 beyond), whether or not a Content-Length was sent."""
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := await request.content.read(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
    except (RequestPayloadError, HttpProcessingError):
        # e.g. a body that claims Content-Encoding: gzip and is not, or a broken chunked encoding
        raise bad_request("request body could not be decoded") from None
    return b"".join(chunks)


async def no_body(request: web.Request, limit: int) -> None:
    """For endpoints that take no body: still enforce the size limit rather than act on a huge request."""
    await read_body(request, limit)


def json_object(value: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_request("request body must be a JSON object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise bad_request(f"unknown field {unknown[0]!r}")
    return value


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(data), content_type="application/json")
