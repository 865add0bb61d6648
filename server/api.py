"""The HTTP API under ``/api``: submit, watch, cancel and list jobs; fetch output files; and
what the studio's page needs besides: the input folder, the workflow library, validation,
importing files, the checkpoints and the previews of running jobs.

:func:`api_router` returns a FastAPI ``APIRouter`` over a :class:`JobQueue`; the
studio serves it on the same server as the page (see ``ui/serve.py``). The page's own
routes (server/page_api.py) work on the folders it is given
(:class:`server.folders.StudioFolders`). Every
answer is JSON; errors are ``{"error": "plain words"}`` with a fitting status
(``422 {"issues": [...]}`` for an invalid workflow); an unexpected failure is a
``500 {"error": ...}`` whose traceback goes to the server's log only. With a token,
every route needs ``Authorization: Bearer TOKEN`` (or the page's login cookie);
requests that change something and whose ``Origin`` is another site are refused
(``server.guard`` holds the checks; in the studio it guards every route, not only
these). docs/api.md has it all.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from graph.issues import InvalidWorkflow
from server.answers import (
    SERVED_HEADERS,
    ApiError,
    SafeJSONResponse,
    _JsonErrorRoute,
    only_keys,
    read_json,
)
from server.datasets import add_dataset_routes
from server.files import FileRefused, output_file
from server.folders import StudioFolders
from server.guard import SAFE_METHODS, is_this_machine, origin_matches
from server.history import MAX_SQLITE_INT, STATUSES
from server.jobs import SOURCES, Job, JobQueue, QueueClosed, QueueFull
from server.page_api import PageApi, add_page_routes
from server.summaries import workflow_labels

log = logging.getLogger(__name__)

#: Longest a long-poll waits, in seconds, and how often waiting routes look again.
MAX_WAIT = 60.0
_POLL = 0.05
#: Seconds between keep-alive comments on an idle event stream.
_KEEP_ALIVE = 15.0

SessionUser = Callable[[Request], str | None]


def gradio_login_user(blocks: Any) -> SessionUser:
    """A check for the login cookie of a launched Gradio page (user name, or None)."""

    def user(request: Request) -> str | None:
        app = getattr(blocks, "server_app", None) or getattr(blocks, "app", None)
        cookie_id = getattr(app, "cookie_id", None)
        tokens = getattr(app, "tokens", None)
        if not cookie_id or not isinstance(tokens, dict):
            return None
        value = request.cookies.get(f"access-token-{cookie_id}") or request.cookies.get(
            f"access-token-unsecure-{cookie_id}"
        )
        found = tokens.get(value) if value else None
        return str(found) if found else None

    return user


def _event_number(text: str) -> int | None:
    """A ``Last-Event-ID`` as a number, or None (``'²'`` is a digit to ``str.isdigit``, not to ``int``)."""
    text = text.strip()
    if text.isascii() and text.isdecimal() and len(text) <= 18:
        return int(text)
    return None


def _summary(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "status": job.status,
        "source": job.source,
        "submitted": job.submitted,
        "started": job.started,
        "seed": job.seed,
    }


def _sse(entry: dict[str, Any]) -> str:
    return f"id: {entry['seq']}\nevent: {entry['event']}\ndata: {json.dumps(entry)}\n\n"


class StudioApi:
    """The job routes' handlers (and the checks every route runs), over one job queue."""

    def __init__(
        self,
        jobs: JobQueue,
        token: str | None = None,
        session_user: SessionUser | None = None,
        local_only: bool = False,
        bound_host: str | None = None,
    ) -> None:
        self.jobs = jobs
        self.token = token or None
        self.session_user = session_user
        self.local_only = local_only
        self.bound_host = bound_host

    # -- checks run before every route ---------------------------------------------

    def authorize(self, request: Request) -> None:
        if self.token is None:
            if self.local_only and not is_this_machine(request.headers.get("host", ""), self.bound_host):
                raise ApiError(
                    403, "without a token, the studio answers only requests addressed to localhost"
                )
            return
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and secrets.compare_digest(
            value.strip().encode("utf-8"), self.token.encode("utf-8")
        ):
            return
        if self.session_user is not None and self.session_user(request):
            return
        raise ApiError(
            401,
            "this studio needs its token: send the header 'Authorization: Bearer TOKEN'",
            {"WWW-Authenticate": "Bearer"},
        )

    @staticmethod
    def same_origin(request: Request) -> None:
        """Refuse requests that change something and that a page of another site made the browser send."""
        origin = request.headers.get("origin")
        if request.method.upper() in SAFE_METHODS or origin is None:
            return
        if not origin_matches(origin, request.headers.get("host", ""), request.url.scheme):
            raise ApiError(403, "requests from pages of other sites are refused")

    # -- jobs ---------------------------------------------------------------------------

    async def submit(self, request: Request) -> JSONResponse:
        body = only_keys(
            await read_json(request),
            ("workflow",),
            ("seed", "source"),
            '{"workflow": {...} or "text", "seed": optional, "source": "api" or "ui"}',
        )
        seed = body.get("seed")
        workflow = body["workflow"]
        source = body.get("source", "api")
        if source not in SOURCES:
            raise ApiError(400, f"source must be one of {', '.join(SOURCES)}")
        try:
            job = await run_in_threadpool(self.jobs.submit, workflow, seed, source)
        except InvalidWorkflow as exc:
            return SafeJSONResponse({"issues": [issue.to_dict() for issue in exc.issues]}, status_code=422)
        except QueueFull as exc:
            raise ApiError(429, str(exc)) from None
        except QueueClosed as exc:
            raise ApiError(503, str(exc)) from None
        position = self.jobs.position(job.id)
        return SafeJSONResponse(
            {"id": job.id, "status": job.status, "position": position, "url": f"/api/jobs/{job.id}"},
            status_code=201,
            headers={"Location": f"/api/jobs/{job.id}"},
        )

    def _labels(self, workflow: Any) -> dict[str, Any]:
        """A job's ``name``, ``prompt`` and ``seeds`` (server/summaries.py)."""
        return workflow_labels(workflow, self.jobs.registry)

    def job(self, job_id: str) -> dict[str, Any]:
        found = self.jobs.lookup(job_id)
        if found is None:
            raise ApiError(404, f"there is no job {job_id!r}")
        position = self.jobs.position(job_id)
        if position is not None:
            found["position"] = position
        found.update(self._labels(found.get("workflow")))
        return found

    def cancel(self, job_id: str) -> JSONResponse:
        outcome = self.jobs.cancel(job_id)
        if outcome == "unknown":
            if self.jobs.lookup(job_id) is None:
                raise ApiError(404, f"there is no job {job_id!r}")
            outcome = "finished"
        job = self.jobs.lookup(job_id) or {}
        status = job.get("status")
        if outcome == "finished":
            raise ApiError(409, f"job {job_id!r} has already ended ({status})")
        code = 200 if outcome == "removed" else 202
        return SafeJSONResponse({"id": job_id, "status": status, "cancel": outcome}, status_code=code)

    async def events(
        self,
        job_id: str,
        after: int = Query(0, ge=0, le=MAX_SQLITE_INT, description="return the events numbered above this"),
        wait: float = Query(20.0, ge=0.0, le=MAX_WAIT, description="seconds to wait for one"),
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + wait
        while True:
            batch = self.jobs.events(job_id, after, 0.0)
            if batch is None:
                return self._ended_events(job_id, after)
            job = self.jobs.get(job_id)
            if batch or job is None or job.ended or time.monotonic() >= deadline:
                return batch
            await asyncio.sleep(_POLL)

    def _ended_events(self, job_id: str, after: int) -> list[dict[str, Any]]:
        """The events of a job no longer in memory: only its end, from the history."""
        found = self.jobs.lookup(job_id)
        if found is None:
            raise ApiError(404, f"there is no job {job_id!r}")
        end = {
            "seq": 1,
            "event": "job_finished",
            "job_id": job_id,
            "status": found["status"],
            "error": found.get("error"),
            "outputs": found.get("outputs") or [],
            "results": found.get("results") or {},
        }
        return [end] if after < 1 else []

    async def stream(
        self, job_id: str, request: Request, after: int = Query(0, ge=0, le=MAX_SQLITE_INT)
    ) -> StreamingResponse:
        if self.jobs.lookup(job_id) is None:
            raise ApiError(404, f"there is no job {job_id!r}")
        last_id = _event_number(request.headers.get("last-event-id", ""))
        start = last_id if last_id is not None else after
        return StreamingResponse(
            self._stream(job_id, start),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _stream(self, job_id: str, after: int) -> AsyncIterator[str]:
        """Events as Server-Sent Events until the job ends (Starlette stops it on disconnect)."""
        quiet_since = time.monotonic()
        while True:
            batch = self.jobs.events(job_id, after, 0.0)
            if batch is None:
                for entry in self._ended_events(job_id, after):
                    yield _sse(entry)
                return
            for entry in batch:
                yield _sse(entry)
                after = entry["seq"]
                if entry["event"] == "job_finished":
                    return
            if batch:
                quiet_since = time.monotonic()
                continue
            job = self.jobs.get(job_id)
            if job is None or job.ended:
                return
            if time.monotonic() - quiet_since >= _KEEP_ALIVE:
                quiet_since = time.monotonic()
                yield ": keep-alive\n\n"
            await asyncio.sleep(_POLL)

    def queue(self) -> dict[str, Any]:
        running, queued = [], []
        for job in self.jobs.list_queue():
            summary = {**_summary(job), **self._labels(job.workflow)}
            if job.status == "running":
                running.append(summary)
            else:
                queued.append({**summary, "position": len(queued)})
        return {"running": running, "queued": queued}

    def history(
        self,
        limit: int = Query(50, ge=1, le=500),
        offset: int = Query(0, ge=0, le=MAX_SQLITE_INT),
        status: str | None = Query(None, description="comma-separated statuses to keep"),
    ) -> dict[str, Any]:
        statuses = sorted({s.strip() for s in status.split(",") if s.strip()}) if status else None
        unknown = [s for s in statuses or () if s not in STATUSES]
        if unknown:
            shown = ", ".join(repr(s[:40]) for s in unknown[:3])
            raise ApiError(400, f"unknown status {shown}: choose among {', '.join(STATUSES)}")
        history = self.jobs.history
        if history is None:
            raise ApiError(404, "this studio keeps no history")
        records = history.list(limit, offset, statuses)
        jobs = [{**record.to_dict(workflow=False), **self._labels(record.workflow)} for record in records]
        return {
            "jobs": jobs,
            "total": history.count(statuses),
            "limit": limit,
            "offset": offset,
        }

    # -- files and nodes ---------------------------------------------------------------

    def file(self, path: str) -> FileResponse:
        try:
            target = output_file(self.jobs.output_dir, path)
        except FileRefused as exc:
            raise ApiError(exc.status, exc.message) from None
        return FileResponse(target, headers=SERVED_HEADERS)

    # -- previews -------------------------------------------------------------------------

    def preview(
        self,
        job_id: str,
        node: str | None = Query(None, max_length=1024, description="the node (default: the last previewed)"),
        index: int = Query(0, ge=0, le=100000, description="which picture of the node's batch"),
    ) -> Response:
        found = self.jobs.previews.get(job_id, node)
        if found is None:
            if self.jobs.lookup(job_id) is None:
                raise ApiError(404, f"there is no job {job_id!r}")
            of = f" of node {node[:100]!r}" if node is not None else ""
            raise ApiError(404, f"job {job_id!r} has no preview{of} (yet, or any longer)")
        node_id, pngs = found
        if index >= len(pngs):
            count = f"{len(pngs)} preview picture{'s' if len(pngs) != 1 else ''}"
            where = f"node {node_id[:100]!r} of job {job_id!r}"
            raise ApiError(404, f"{where} has {count}: ask for an index from 0 to {len(pngs) - 1}")
        headers = {
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "X-Preview-Node": quote(node_id, safe=""),
            "X-Preview-Count": str(len(pngs)),
        }
        return Response(pngs[index], media_type="image/png", headers=headers)

    @staticmethod
    def no_route(request: Request) -> None:
        raise ApiError(
            404, f"there is no route {request.method} {request.url.path[:200]}: docs/api.md lists them"
        )


def api_router(
    jobs: JobQueue,
    *,
    token: str | None = None,
    session_user: SessionUser | None = None,
    local_only: bool = False,
    bound_host: str | None = None,
    folders: StudioFolders | None = None,
) -> APIRouter:
    """The ``/api`` routes over ``jobs``.

    ``folders`` are those the page works with (its input folder, the workflow library,
    the examples); without them, their routes answer ``404``.

    With ``token``, each route needs it (or a user from ``session_user``, the page's
    login). Without one and with ``local_only``, only requests whose Host header
    names this machine (a loopback name, or ``bound_host``, the address the server
    listens on) are answered, so a web page cannot reach a loopback studio through
    DNS rebinding. The studio's server also puts ``server.guard`` in front of every
    route; these checks keep the routes safe when served alone.
    """
    api = StudioApi(jobs, token, session_user, local_only, bound_host)
    page = PageApi(jobs, folders)
    router = APIRouter(
        prefix="/api",
        route_class=_JsonErrorRoute,
        default_response_class=SafeJSONResponse,
        dependencies=[Depends(api.authorize), Depends(api.same_origin)],
        tags=["studio"],
    )
    router.add_api_route("/jobs", api.submit, methods=["POST"], status_code=201, response_model=None)
    router.add_api_route("/jobs/{job_id}", api.job, methods=["GET"])
    router.add_api_route("/jobs/{job_id}/events", api.events, methods=["GET"])
    router.add_api_route("/jobs/{job_id}/stream", api.stream, methods=["GET"], response_model=None)
    router.add_api_route("/jobs/{job_id}/cancel", api.cancel, methods=["POST"], response_model=None)
    router.add_api_route("/queue", api.queue, methods=["GET"])
    router.add_api_route("/history", api.history, methods=["GET"])
    router.add_api_route("/jobs/{job_id}/preview", api.preview, methods=["GET"], response_model=None)
    router.add_api_route("/files/{path:path}", api.file, methods=["GET"], response_model=None)
    add_page_routes(router, page)
    add_dataset_routes(router, folders)
    # last: any other path under /api answers in the same JSON as the rest
    router.add_api_route(
        "/{rest:path}",
        api.no_route,
        methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
        include_in_schema=False,
        response_model=None,
    )
    return router
