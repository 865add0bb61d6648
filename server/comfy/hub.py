"""The websocket hub: connected ComfyUI clients and the loop that feeds them the queue's news.

One task on the server's event loop looks at the queue every 50 ms while a client
is connected (``JobQueue.events`` with no wait: it never blocks the loop), as
``/api/jobs/{id}/stream`` does. Execution messages (:mod:`.messages`) go to the
client whose id the prompt named (to every client when it named none), ``status``
to all. Previews come from the job's listener (in the job's thread) through a
bounded deque. Each client has a bounded backlog: one that does not read loses
messages instead of growing the server's memory.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from dataclasses import dataclass, field

from server.comfy.info import ComfyInfo, ComfyJobs
from server.comfy.messages import Followed, status_message, translate
from server.comfy.previews import preview_frame

log = logging.getLogger(__name__)

#: How often (seconds) the hub looks at the queue.
_POLL = 0.05
#: Messages waiting for one websocket client before progress and previews are dropped.
_CLIENT_BACKLOG = 1000
#: Ended or forgotten prompts kept followed for a client that has yet to connect, at most.
_MAX_FOLLOWED = 500
#: Preview frames waiting for the next tick, at most (older ones are dropped).
_MAX_PREVIEWS = 64


@dataclass(eq=False)
class Client:
    """One websocket connection: its client id and the messages waiting to be sent."""

    sid: str
    queue: asyncio.Queue[str | bytes] = field(default_factory=lambda: asyncio.Queue(_CLIENT_BACKLOG))


class EventHub:
    """Sends ComfyUI's websocket messages for the queue's jobs to the connected clients.

    Everything but :meth:`wants_preview` and :meth:`add_preview` runs on the event loop.
    """

    def __init__(self, comfy: ComfyJobs) -> None:
        self.comfy = comfy
        self.jobs = comfy.jobs
        self._clients: dict[str, set[Client]] = {}
        self._followed: collections.OrderedDict[str, Followed] = collections.OrderedDict()
        self._previews: collections.deque[tuple[str | None, bytes]] = collections.deque(maxlen=_MAX_PREVIEWS)
        self._remaining: int | None = None
        self._task: asyncio.Task[None] | None = None

    # -- clients -------------------------------------------------------------------------------

    def connect(self, sid: str) -> Client:
        client = Client(sid)
        self._clients.setdefault(sid, set()).add(client)
        self._put(client, json.dumps(status_message(len(self.jobs.list_queue()), sid)))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return client

    def disconnect(self, client: Client) -> None:
        group = self._clients.get(client.sid)
        if group is not None:
            group.discard(client)
            if not group:
                del self._clients[client.sid]

    def follow(self, job_id: str, info: ComfyInfo) -> None:
        """Follow a submitted prompt from its first event (its client may connect later).

        A job the loop found in the queue first is followed already, and from its
        start: it is kept as it is (starting it over would send its messages twice).
        """
        if job_id in self._followed:
            return
        self._followed[job_id] = Followed(info)
        excess = len(self._followed) - _MAX_FOLLOWED
        if excess > 0:  # drop the oldest no longer in the queue; those in it still have news
            live = {job.id for job in self.jobs.list_queue()}
            for old in [old for old in self._followed if old not in live][:excess]:
                del self._followed[old]

    def wants_preview(self, sid: str | None) -> bool:
        """Whether a preview for the client ``sid`` (all when None) has anyone to go to."""
        return bool(self._clients) if sid is None else sid in self._clients

    def add_preview(self, sid: str | None, png: bytes) -> None:
        """Called from the job's thread: a preview for the client ``sid`` (all when None)."""
        if self.wants_preview(sid):
            self._previews.append((sid, preview_frame(png)))

    # -- the loop --------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            first = True
            while self._clients:
                self.tick(first)
                first = False
                await asyncio.sleep(_POLL)
        except Exception:  # noqa: BLE001 - the hub must not die silently; the next client restarts it
            log.exception("the ComfyUI websocket hub failed")
        finally:
            self._task = None

    def tick(self, first: bool = False) -> None:
        """Send what happened since the last tick: events, then previews, then the queue's size.

        A job already in the queue when the hub starts (``first``) is followed from
        its present; one that came since the last tick from its start, so a job
        that started at once still sends ``execution_start``.
        """
        queue = self.jobs.list_queue()
        for job in queue:
            if job.id not in self._followed:
                followed = Followed(self.comfy.info_of_job(job), after=len(job.events) if first else 0)
                followed.started = first and job.status == "running"
                self._followed[job.id] = followed
        for job_id, followed in list(self._followed.items()):
            batch = self.jobs.events(job_id, followed.after, 0.0)
            if batch is None:
                del self._followed[job_id]
                continue
            for entry in batch:
                followed.after = entry["seq"]
                for message in translate(job_id, followed, entry, self.comfy.relative_files):
                    self._send(followed.info.client_id, json.dumps(message))
            if followed.ended:
                del self._followed[job_id]
        while self._previews:
            sid, frame = self._previews.popleft()
            self._send(sid, frame)
        remaining = len(queue)
        if remaining != self._remaining:
            self._remaining = remaining
            self._broadcast(json.dumps(status_message(remaining)))

    def _send(self, sid: str | None, message: str | bytes) -> None:
        if sid is None:
            self._broadcast(message)
            return
        for client in self._clients.get(sid, ()):
            self._put(client, message)

    def _broadcast(self, message: str | bytes) -> None:
        for group in self._clients.values():
            for client in group:
                self._put(client, message)

    @staticmethod
    def _put(client: Client, message: str | bytes) -> None:
        try:
            client.queue.put_nowait(message)
        except asyncio.QueueFull:
            log.warning("websocket client %s is not reading; a message was dropped", client.sid[:40])
