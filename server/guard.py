"""The guard in front of every route the studio serves: page, Gradio's API, files and ``/api``.

:class:`StudioGuard` is a pure ASGI middleware; ``ui.studio.launch`` installs it on
the whole app Gradio builds, so no route is reached without passing it. It refuses,
with ``403 {"error": "plain words"}`` (a WebSocket is closed before it is accepted):

- **a Host that is not this machine**, when the studio runs without a token: only
  ``localhost``, ``127.0.0.0/8``, ``::1`` and the address the server is bound to are
  answered, so a web page cannot reach a loopback studio through DNS rebinding. With a
  token the studio may be reached by any name (the token guards it instead).
- **a request from a page of another site**: any method but GET, HEAD and OPTIONS (and
  every WebSocket) whose ``Origin`` does not name the host the request is addressed to.
- **a file Gradio would serve that is not a picture, a video or page code**: on the
  file routes (``/gradio_api/file=PATH``, ``/gradio_api/file/PATH``) only the suffixes
  of :data:`SERVED_SUFFIXES` are served, never a path with a part starting with ``.``
  below the folder it is served from, and never a URL.

It also answers requests Gradio itself would fail on with a plain-text 500: a call
of an event handler the page does not have (``404``), with the wrong number of
values or through ``run/`` while the page queues it (``422``), a body that is not
JSON text (``400``), Gradio's ``/gradio_api/call/`` API (``404``: it serves public handlers and
the studio's are all private; its HTTP API is ``/api``), and any route that raises
before it answers (a JSON ``500``, the traceback in the log only).

The checks are plain functions, shared with ``server.api`` and ``server.files``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from server.net import is_loopback

log = logging.getLogger(__name__)

#: What the file routes serve: pictures, videos, and the page's own code and workflow downloads.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".webm"})
PAGE_SUFFIXES = frozenset({".js", ".css", ".json"})
SERVED_SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES | PAGE_SUFFIXES
NOT_SERVED = "only pictures, videos and page files (.js, .css, .json) are served"

#: Methods a page of another site may send (they change nothing).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

#: Gradio's routes that serve a file by its path on the server.
_FILE_ROUTE = re.compile(r"^/(?:gradio_api/)?file[=/](?P<path>.*)$", re.IGNORECASE | re.DOTALL)
#: Gradio's routes that call an event handler (by number in the body, or by name in the path).
_GRADIO_CALL = re.compile(r"^/gradio_api/(?:queue/join|(?:run|api)/(?P<api>[^/]+))/?$", re.IGNORECASE)
#: Gradio's "simple" call API (``/call/NAME``, ``/call/v2/NAME``): for public handlers only, and
#: the studio has none (its HTTP API is /api); Gradio fails with a 500 on the names it lacks.
_GRADIO_SIMPLE_CALL = re.compile(r"^/gradio_api/call(?:/|$)", re.IGNORECASE)
#: Largest body of such a call the guard reads to check it (files go through /upload).
MAX_CALL_BYTES = 16 * 2**20
#: A URL rather than a path (``http://``, ``data:``, ...); Gradio would fetch it.
_URL_LIKE = re.compile(r"^[a-z][a-z0-9+.\-]+:", re.IGNORECASE)

ASGIApp = Callable[..., Any]
FileRoots = Callable[[], Iterable[str | os.PathLike[str]]]
Functions = Callable[[], Mapping[int, "Handler"]]


def split_host(host_header: str) -> tuple[str, int | None] | None:
    """``(name, port)`` of a Host header (the name lowercased, IPv6 without brackets); None if malformed."""
    text = host_header.strip().lower()
    port_text = ""
    if text.startswith("["):
        name, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:]
    elif text.count(":") == 1:
        name, _, port_text = text.partition(":")
    elif ":" in text:
        return None  # a bare IPv6 address must be in brackets
    else:
        name = text
    if not name or any(ch.isspace() or ch in "/\\@?#" for ch in name):
        return None
    if port_text and not (port_text.isascii() and port_text.isdecimal() and len(port_text) <= 5):
        return None
    return name.removesuffix("."), int(port_text) if port_text else None


def _same_address(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a == b


def is_this_machine(host_header: str, bound: str | None = None) -> bool:
    """Whether a Host header names this machine: a loopback name or the address bound to.

    A wildcard bind (``0.0.0.0``, ``::``) adds nothing: without a token the studio
    answers only to loopback names.
    """
    parsed = split_host(host_header)
    if parsed is None:
        return False
    name = parsed[0]
    if is_loopback(name):
        return True
    if not bound:
        return False
    bound = bound.strip().strip("[]").lower().removesuffix(".")
    if bound in ("", "0.0.0.0", "::"):
        return False
    return _same_address(name, bound)


def origin_matches(origin: str, host_header: str, scheme: str = "http") -> bool:
    """Whether an Origin header names the host a request is addressed to (default ports alike)."""
    try:
        parts = urlsplit(origin.strip())
        origin_port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    host = split_host(host_header)
    if host is None:
        return False
    defaults = {"http": 80, "https": 443, "ws": 80, "wss": 443}
    host_port = host[1] if host[1] is not None else defaults.get(scheme, 80)
    origin_port = origin_port if origin_port is not None else defaults[parts.scheme]
    return parts.hostname.lower().removesuffix(".") == host[0] and origin_port == host_port


def served_file_refusal(requested: str, roots: Iterable[str | os.PathLike[str]] = ()) -> str | None:
    """Why a Gradio file route must not serve ``requested`` (a path on the server), or None.

    A part starting with ``.`` is looked for below the deepest of ``roots`` (the folders
    Gradio serves from) that holds the path, or in the whole path if none does; the
    same for the path with symbolic links followed.
    """
    if not requested or "\x00" in requested:
        return "give the path of a file"
    if _URL_LIKE.match(requested):
        return "the studio does not fetch URLs for others"
    suffix = PurePosixPath(requested.replace("\\", "/")).suffix.lower()
    if suffix not in SERVED_SUFFIXES:
        return NOT_SERVED
    lexical = os.path.abspath(requested)
    root_list = [os.path.abspath(os.fspath(root)) for root in roots]
    if _hidden_below(lexical, root_list):
        return "hidden files and folders are not served"
    try:
        resolved = os.path.realpath(lexical)
    except (OSError, ValueError):
        return "that path cannot be served"
    if resolved != lexical:
        if PurePosixPath(resolved).suffix.lower() not in SERVED_SUFFIXES:
            return "that link leads to a file of a kind that is not served"
        if _hidden_below(resolved, [os.path.realpath(root) for root in root_list]):
            return "hidden files and folders are not served"
    return None


def _hidden_below(path: str, roots: list[str]) -> bool:
    base = ""
    for root in roots:
        inside = path == root or path.startswith(root.rstrip(os.sep) + os.sep)
        if inside and len(root) > len(base):
            base = root
    below = path[len(base) :] if base else path
    return any(part.startswith(".") for part in re.split(r"[/\\]", below) if part)


class Refusal(NamedTuple):
    """An answer in place of the route's: ``status`` and ``{"error": message}``."""

    status: int
    message: str


class Handler(NamedTuple):
    """What the guard knows of one of the page's Gradio event handlers."""

    name: str | None  # its API name
    inputs: int  # how many values it takes
    queued: bool  # called through the queue (``queue/join``) rather than ``run/NAME``


def gradio_call_refusal(body: bytes, api_name: str | None, handlers: Mapping[int, Handler]) -> Refusal | None:
    """Why a call of a Gradio event handler is refused, or None.

    ``api_name``: None for ``queue/join``, the NAME of ``run/NAME`` (``api/NAME``).
    Gradio answers these with a 500 (a KeyError or ValueError inside): a handler
    number or name the page lacks, the wrong number of values, a body that is not
    UTF-8 or holds a lone surrogate (its error message repeats the body); and
    ``run/`` runs queued handlers outside the queue, failing with a 500 on bad values
    (the page calls only unqueued ones that way). ``handlers``: the page's, by number.
    """
    try:
        data = json.loads(body.decode("utf-8"))
        json.dumps(data, ensure_ascii=False).encode("utf-8")  # a lone surrogate fails here
    except (ValueError, RecursionError):  # UnicodeError is a ValueError
        return Refusal(400, "the request body is not JSON of UTF-8 text")
    if not isinstance(data, dict):
        return None  # Gradio's own checks answer 422
    index = data.get("fn_index")
    if isinstance(index, float) and index.is_integer():
        index = int(index)
    elif isinstance(index, str) and index.strip().isascii() and index.strip().lstrip("+-").isdecimal():
        index = int(index)
    if isinstance(index, int) and not isinstance(index, bool):
        if index not in handlers:
            return Refusal(404, f"there is no event handler number {index}")
        number: int | None = index
    elif index is None and api_name is not None:
        number = next((n for n, h in handlers.items() if h.name == api_name), None)
        if number is None:
            return Refusal(404, f"there is no event handler named {api_name[:80]!r}")
    else:
        return None  # no handler named: Gradio answers 400 or 422
    handler = handlers[number]
    if api_name is not None and handler.queued:
        return Refusal(422, f"event handler {number} runs through the queue (/gradio_api/queue/join)")
    values = data.get("data")
    if isinstance(values, list) and len(values) != handler.inputs:
        return Refusal(422, f"event handler {number} takes {handler.inputs} value(s), not {len(values)}")
    return None


def _header(scope: dict[str, Any], name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in scope.get("headers", ()) if key.lower() == name]


def _route_path(scope: dict[str, Any]) -> str:
    path = scope.get("path", "")
    root_path = scope.get("root_path", "")
    return path[len(root_path) :] if root_path and path.startswith(root_path) else path


async def _respond(send: Any, refusal: Refusal) -> None:
    body = json.dumps({"error": refusal.message}).encode("utf-8")
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("ascii")),
        (b"x-content-type-options", b"nosniff"),
    ]
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class StudioGuard:
    """ASGI middleware: the Host, Origin, served-file and handler checks in front of every route.

    ``check_host``: refuse Hosts that are not this machine (no token); ``bound``: the
    address the server listens on; ``file_roots``: the folders Gradio serves files from;
    ``functions``: the page's event handler numbers and API names (see
    :func:`gradio_call_refusal`). A route that fails before it answers gets a JSON
    ``500`` (the traceback goes to the log), not Starlette's plain text.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        check_host: bool = True,
        bound: str | None = None,
        file_roots: FileRoots | None = None,
        functions: Functions | None = None,
    ) -> None:
        self.app = app
        self.check_host = check_host
        self.bound = bound
        self.file_roots = file_roots
        self.functions = functions

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is None and scope["type"] == "http" and self.functions is not None:
            call = _GRADIO_CALL.match(_route_path(scope))
            if call is not None and scope.get("method", "").upper() == "POST":
                body, complete = await _read_body(receive)
                refusal = (
                    gradio_call_refusal(body, call.group("api"), self.functions())
                    if complete
                    else Refusal(413, f"the request is larger than {MAX_CALL_BYTES // 2**20} MB")
                )
                receive = _replay(body, receive)
        if refusal is not None:
            log.info(
                "refused %s %s: %s", scope.get("method", "WEBSOCKET"), scope.get("path"), refusal.message
            )
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            else:
                await _respond(send, refusal)
            return
        await self._answer(scope, receive, send)

    async def _answer(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        started = False

        async def watched(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] in ("http.response.start", "websocket.accept")
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            if started or scope["type"] != "http":
                raise
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            await _respond(send, Refusal(500, "the studio failed to answer this request (see its log)"))

    def refusal(self, scope: dict[str, Any]) -> Refusal | None:
        """Why the request of ``scope`` is refused (from its head alone), or None."""
        hosts = _header(scope, b"host")
        host = hosts[0] if len(hosts) == 1 else ""
        if self.check_host and not is_this_machine(host, self.bound):
            return Refusal(403, "without a token, the studio answers only requests addressed to localhost")
        origins = _header(scope, b"origin")
        unsafe = scope["type"] == "websocket" or scope.get("method", "GET").upper() not in SAFE_METHODS
        if unsafe and origins:
            scheme = scope.get("scheme", "http")
            if len(origins) != 1 or not origin_matches(origins[0], host, scheme):
                return Refusal(403, "requests from pages of other sites are refused")
        if scope["type"] == "http":
            if _GRADIO_SIMPLE_CALL.match(_route_path(scope)):
                return Refusal(
                    404, "Gradio's call API is closed: the studio's HTTP API is /api (docs/api.md)"
                )
            match = _FILE_ROUTE.match(_route_path(scope))
            if match is not None:
                roots = list(self.file_roots()) if self.file_roots is not None else []
                why = served_file_refusal(match.group("path"), roots)
                return Refusal(403, why) if why is not None else None
        return None


async def _read_body(receive: Any) -> tuple[bytes, bool]:
    """The request body, and whether it was whole (False past :data:`MAX_CALL_BYTES`)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), True  # the client went away; the route will see it too
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_CALL_BYTES:
            return b"", False
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), True


def _replay(body: bytes, receive: Any) -> Any:
    """A ``receive`` that gives ``body`` once, then waits on the real one (for the disconnect)."""
    given = False

    async def replay() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def gradio_functions(blocks: Any) -> Functions:
    """The event handlers of a Gradio ``blocks`` by number, read on each call."""

    def functions() -> dict[int, Handler]:
        fns = dict(getattr(blocks, "fns", {}) or {})
        return {
            number: Handler(getattr(fn, "api_name", None), len(fn.inputs), bool(getattr(fn, "queue", True)))
            for number, fn in fns.items()
        }

    return functions


def gradio_file_roots(allowed_paths: Iterable[str | os.PathLike[str]] = ()) -> FileRoots:
    """The folders Gradio's file routes serve from: ``allowed_paths``, its static paths,
    its upload folder and its cache, read afresh on each call (static paths are set late)."""
    allowed = [Path(p) for p in allowed_paths]

    def roots() -> list[str | os.PathLike[str]]:
        from gradio import utils
        from gradio.data_classes import _StaticFiles

        found: list[str | os.PathLike[str]] = [*allowed, *getattr(_StaticFiles, "all_paths", [])]
        found += [utils.get_upload_folder(), utils.get_cache_folder()]
        return found

    return roots
