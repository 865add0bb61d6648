"""Who may use ComfyUI's routes: ``/api``'s rules, plus what ComfyUI clients send.

Access is that of ``/api`` (``server.api.StudioApi``'s checks: the Host must name
this machine when there is no token; with one, ``Authorization: Bearer TOKEN`` or
the page's login cookie; no changes from pages of other sites). ComfyUI client
libraries send HTTP Basic, so ``studio:TOKEN`` is taken too. A websocket is held
to the same rules and, since browsers let any page open one, to its ``Origin``.
"""

from __future__ import annotations

import base64
import binascii
import secrets

from fastapi import Request, WebSocket

from server.answers import ApiError
from server.api import StudioApi
from server.guard import origin_matches

#: The user name of HTTP Basic access (the page's login name); the password is the token.
BASIC_USER = "studio"


class ComfyAccess:
    """``/api``'s token rule with HTTP Basic ``studio:TOKEN`` too, for requests and websockets."""

    def __init__(self, checks: StudioApi) -> None:
        self.checks = checks

    def authorize(self, request: Request) -> None:
        """Raise :class:`~server.api.ApiError` (401 or 403) unless the request may come in."""
        if self.checks.token is not None and self._basic_ok(request.headers.get("authorization", "")):
            return
        self.checks.authorize(request)

    def _basic_ok(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic" or self.checks.token is None:
            return False
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return user == BASIC_USER and secrets.compare_digest(
            password.encode("utf-8"), self.checks.token.encode("utf-8")
        )

    def websocket_refusal(self, websocket: WebSocket) -> str | None:
        """Why a websocket is refused: ``/api``'s Host and token rules; any other site's Origin."""
        try:
            self.authorize(websocket)  # type: ignore[arg-type] - reads only headers and cookies
        except ApiError as exc:
            return exc.message
        origin = websocket.headers.get("origin")
        host = websocket.headers.get("host", "")
        if origin is not None and not origin_matches(origin, host, websocket.url.scheme):
            return "websockets from pages of other sites are refused"
        return None
