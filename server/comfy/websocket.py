"""``GET /ws?clientId=ID``: one ComfyUI websocket connection.

A connection refused by :class:`~server.comfy.auth.ComfyAccess` is closed before
it is accepted (the client sees ``403``, or close code 1008). An accepted one is
registered with the :class:`~server.comfy.hub.EventHub` under its client id (a new
one when it gave none) and sends what the hub queues for it until either side
goes. What the client sends is read and ignored.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from fastapi import WebSocket, WebSocketDisconnect

from server.comfy.auth import ComfyAccess
from server.comfy.hub import Client, EventHub

log = logging.getLogger(__name__)

#: Longest client id kept (ids are echoed back in the first ``status`` message).
_MAX_SID = 200


class ComfySocket:
    """The websocket route's handler."""

    def __init__(self, access: ComfyAccess, hub: EventHub) -> None:
        self.access = access
        self.hub = hub

    async def websocket(self, websocket: WebSocket) -> None:
        refusal = self.access.websocket_refusal(websocket)
        if refusal is not None:
            log.info("refused a ComfyUI websocket: %s", refusal)
            await websocket.close(code=1008)
            return
        sid = websocket.query_params.get("clientId") or uuid.uuid4().hex
        await websocket.accept()
        client = self.hub.connect(sid[:_MAX_SID])
        sender = asyncio.create_task(_send_loop(websocket, client))
        receiver = asyncio.create_task(_receive_loop(websocket))
        try:
            await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.hub.disconnect(client)
            for task in (sender, receiver):
                task.cancel()


async def _send_loop(websocket: WebSocket, client: Client) -> None:
    try:
        while True:
            message = await client.queue.get()
            if isinstance(message, bytes):
                await websocket.send_bytes(message)
            else:
                await websocket.send_text(message)
    except (WebSocketDisconnect, RuntimeError, OSError):
        return


async def _receive_loop(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends, to notice when it goes."""
    try:
        while True:
            message = await websocket.receive()
            if message.get("type") == "websocket.disconnect":
                return
    except (WebSocketDisconnect, RuntimeError):
        return
