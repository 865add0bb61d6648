"""``/queue``, ``/interrupt`` and ``/history``: the job queue in ComfyUI's shapes.

A queue item is ComfyUI's ``[number, prompt_id, prompt, extra_data, outputs]``; a
history entry adds the job's pictures by ComfyUI node, its status and the
messages of its run. Jobs from the page and ``/api`` are listed too, with an
empty prompt and our node ids. Ended jobs come from the run history (or, on a
queue that keeps none, from the recently finished jobs it holds in memory).
"""

from __future__ import annotations

from typing import Any

from fastapi import Query, Request, Response

from server.answers import ApiError, read_json
from server.api import StudioApi
from server.comfy.info import ComfyJobs
from server.comfy.outputs import files_by_prefix, outputs_by_node
from server.history import FINAL_STATUSES
from server.jobs import Job

#: Jobs ``/history`` lists when not told how many.
DEFAULT_HISTORY_ITEMS = 200
#: Most jobs a queue without a history holds in memory (queued, running and finished), with room.
_ALL_IN_MEMORY = 1_000_000


class QueueViews:
    """The queue and the history as ComfyUI clients read and change them."""

    def __init__(self, comfy: ComfyJobs, checks: StudioApi) -> None:
        self.comfy = comfy
        self.jobs = comfy.jobs
        self.checks = checks

    # -- the queue -----------------------------------------------------------------------------------

    def _queue_item(self, job: Job) -> list[Any]:
        info = self.comfy.info_of_job(job)
        return [info.number, job.id, info.prompt, info.extra_with_client(), info.outputs]

    def get_queue(self) -> dict[str, Any]:
        running, pending = [], []
        for job in self.jobs.list_queue():
            (running if job.status == "running" else pending).append(self._queue_item(job))
        return {"queue_running": running, "queue_pending": pending}

    async def post_queue(self, request: Request) -> Response:
        """``{"delete": [prompt ids]}`` takes waiting jobs out, ``{"clear": true}`` all of them."""
        body = await read_json(request)
        if not isinstance(body, dict):
            raise ApiError(400, 'send {"delete": [prompt ids]} or {"clear": true}')
        targets: list[str] = []
        if body.get("clear") is True:
            targets += [job.id for job in self.jobs.list_queue() if job.status == "queued"]
        delete = body.get("delete", [])
        if not isinstance(delete, list) or not all(isinstance(item, str) for item in delete):
            raise ApiError(400, '"delete" takes a list of prompt ids')
        for job_id in delete:
            job = self.jobs.get(job_id)
            if job is not None and job.status == "queued":
                targets.append(job_id)
        for job_id in targets:
            self.jobs.cancel(job_id)
        return Response(status_code=200)

    async def interrupt(self, request: Request) -> Response:
        """Stop the running job (only the one named by ``prompt_id`` when the body names one)."""
        body = await read_json(request)  # an empty body is None; the size limit holds
        prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
        for job in self.jobs.list_queue():
            if job.status == "running" and (prompt_id is None or job.id == prompt_id):
                self.jobs.cancel(job.id)
        return Response(status_code=200)

    # -- the history ---------------------------------------------------------------------------------

    def get_history(
        self,
        max_items: int | None = Query(None, ge=1, le=10000),
        offset: int = Query(0, ge=0, le=2**62),
    ) -> dict[str, Any]:
        records = self._ended_records(max_items or DEFAULT_HISTORY_ITEMS, offset)
        return {record["id"]: self.history_entry(record) for record in reversed(records)}

    def get_history_item(self, prompt_id: str) -> dict[str, Any]:
        record = self.jobs.lookup(prompt_id)
        if record is None or record.get("status") not in FINAL_STATUSES:
            return {}
        return {prompt_id: self.history_entry(record)}

    def _ended_records(self, limit: int, offset: int) -> list[dict[str, Any]]:
        """Ended jobs as JSON with their workflows, newest first."""
        history = self.jobs.history
        if history is not None:
            return [r.to_dict() for r in history.list(limit, offset, sorted(FINAL_STATUSES))]
        recent = self.jobs.recent(_ALL_IN_MEMORY)  # newest first, without workflows
        ended = [r["id"] for r in recent if r.get("status") in FINAL_STATUSES][offset : offset + limit]
        return [record for job_id in ended if (record := self.jobs.lookup(job_id)) is not None]

    def history_entry(self, record: dict[str, Any]) -> dict[str, Any]:
        """One ended job as ComfyUI's history shows it."""
        job_id = record["id"]
        workflow = record.get("workflow") if isinstance(record.get("workflow"), dict) else {}
        info = self.comfy.info_of_workflow(workflow, job_id)
        files = self._files_by_node(job_id)
        if files is None:  # no longer in memory: only the list of saved files is left
            files = files_by_prefix(list(record.get("outputs") or []), workflow, info)
        outputs = outputs_by_node(files, info)
        status = record.get("status")
        return {
            "prompt": [info.number, job_id, info.prompt, info.extra_with_client(), info.outputs],
            "outputs": outputs,
            "status": {
                "status_str": "success" if status == "done" else "error",
                "completed": status == "done",
                "messages": _history_messages(job_id, record),
                "studio_status": status,
                "error": record.get("error"),
            },
            "meta": {
                node: {"node_id": node, "display_node": node, "parent_node": None, "real_node_id": node}
                for node in outputs
            },
        }

    def _files_by_node(self, job_id: str) -> dict[str, list[str]] | None:
        """Our node id -> the files it saved, from the events of a job still in memory (else None)."""
        events = self.jobs.events(job_id, 0, 0.0)
        if events is None:
            return None
        files: dict[str, list[str]] = {}
        for entry in events:
            if entry.get("event") in ("node_finished", "node_cached") and entry.get("files"):
                files.setdefault(entry["node_id"], []).extend(self.comfy.relative_files(entry["files"]))
        return files


def _history_messages(job_id: str, record: dict[str, Any]) -> list[list[Any]]:
    """The run's start and end as the messages ComfyUI's history lists."""
    started = int((record.get("started") or record.get("submitted") or 0) * 1000)
    finished = int((record.get("finished") or 0) * 1000)
    messages: list[list[Any]] = []
    if record.get("started") is not None:
        messages.append(["execution_start", {"prompt_id": job_id, "timestamp": started}])
    status = record.get("status")
    if status == "done":
        messages.append(["execution_success", {"prompt_id": job_id, "timestamp": finished}])
    elif status in ("cancelled", "interrupted"):
        messages.append(["execution_interrupted", {"prompt_id": job_id, "timestamp": finished}])
    else:
        data = {"prompt_id": job_id, "exception_message": record.get("error") or "", "timestamp": finished}
        messages.append(["execution_error", data])
    return messages
