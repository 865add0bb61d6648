"""How the API's routes read requests and answer: JSON errors, bodies, served files' headers.

Shared by the job routes (server/api.py), the page's routes (server/page_api.py) and
ComfyUI's (server/comfy/).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from graph.workflow import parse_json

log = logging.getLogger("server.api")

#: Largest request body taken (a workflow with embedded text is far smaller; so is a file to import).
MAX_BODY_BYTES = 16 * 1024 * 1024
#: Headers of a served file: never sniffed into a page, never run as one.
SERVED_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cache-Control": "no-cache",
}


class ApiError(Exception):
    """An error answer: ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


class SafeJSONResponse(JSONResponse):
    """JSON that always renders: ASCII only (a lone surrogate becomes an escape), and a
    number JSON cannot hold (infinity, NaN) as its text instead of a failure."""

    def render(self, content: Any) -> bytes:
        try:
            text = json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
        except ValueError:
            text = json.dumps(_finite(content), ensure_ascii=True, allow_nan=False, separators=(",", ":"))
        return text.encode("ascii")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return SafeJSONResponse({"error": message}, status_code=status, headers=headers)


def _validation_text(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("query", "path", "body"))
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg")))
    return "bad request: " + "; ".join(parts)


class _JsonErrorRoute(APIRoute):
    """Turns every error inside a route (its dependencies included) into ``{"error": ...}``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except ApiError as exc:
                return error_response(exc.status, exc.message, exc.headers)
            except RequestValidationError as exc:
                return error_response(400, _validation_text(exc))
            except HTTPException as exc:
                return error_response(exc.status_code, str(exc.detail), dict(exc.headers or {}))
            except Exception:
                log.exception("%s %s failed", request.method, request.url.path)
                return error_response(500, "the studio failed to answer this request (see its log)")

        return route


def only_keys(body: Any, required: tuple[str, ...], optional: tuple[str, ...], shape: str) -> dict[str, Any]:
    """``body`` when it is an object with the ``required`` keys and no others but ``optional``."""
    if not isinstance(body, dict) or any(key not in body for key in required):
        raise ApiError(400, f"send a JSON object: {shape}")
    unknown = sorted(set(body) - {*required, *optional})
    if unknown:
        raise ApiError(400, f"unknown keys in the request: {', '.join(unknown)}")
    return body


async def read_body(request: Request, limit: int | None = None) -> bytes:
    """The request's body, at most ``limit`` bytes (default :data:`MAX_BODY_BYTES`; a 413 beyond,
    before reading it all)."""
    limit = MAX_BODY_BYTES if limit is None else limit
    too_large = f"the request is larger than {limit // (1024 * 1024)} MB"
    declared = request.headers.get("content-length", "").strip()
    if declared.isascii() and declared.isdecimal() and int(declared) > limit:
        raise ApiError(413, too_large)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, too_large)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request) -> Any:
    """The request's body as strict JSON (``400`` naming what is wrong)."""
    raw = await read_body(request)
    try:
        return parse_json(raw.decode("utf-8") or "null")
    except RecursionError:
        raise ApiError(400, "the request body is nested too deep") from None
    except ValueError as exc:  # UnicodeDecodeError and json's errors are ValueErrors
        raise ApiError(400, f"the request body is not JSON the studio takes: {exc}") from None
