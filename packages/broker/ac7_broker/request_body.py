"""Reading a JSON request body within a size limit, with 4xx answers for every way it can be wrong."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ac7_broker.errors import ApiError, bad_request

_CHUNK = 64 * 1024


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"request body larger than {limit} bytes")


async def read_json(request: web.Request, limit: int) -> Any:
    content_type = request.headers.get("Content-Type", "application/json")
    # Only JSON: a cross-site HTML form can send form or text bodies, never application/json.
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, "unsupported_media_type", "request body must be application/json")
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except UnicodeDecodeError:
        raise bad_request("request body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise bad_request(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise bad_request("invalid JSON: nested too deeply") from None


def json_object(value: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_request("request body must be a JSON object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise bad_request(f"unknown field {unknown[0]!r}")
    return value


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(data), content_type="application/json")
