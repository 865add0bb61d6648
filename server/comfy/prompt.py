"""``POST /prompt`` and ``GET /prompt``: a ComfyUI prompt in, a queued studio job out.

The prompt is converted with the importer (:mod:`comfy_import`), validated and
queued on the same :class:`~server.jobs.JobQueue` as the page's runs and ``/api``'s
jobs. A prompt that cannot be converted whole, has no output node or is invalid
is not queued: it is answered with ComfyUI's ``400`` shape (:mod:`.errors`) naming
the ComfyUI nodes at fault. The job's workflow keeps the prompt in ComfyUI's terms
(:class:`~server.comfy.info.ComfyInfo`) for ``/history`` and the websocket.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import Request, Response
from starlette.concurrency import run_in_threadpool

from graph.events import Event, NodePreview
from graph.issues import InvalidWorkflow
from server.answers import SafeJSONResponse, read_json
from server.api import StudioApi
from server.comfy.errors import (
    PromptRefused,
    conversion_errors,
    error_body,
    failed_validation,
    issue_errors,
)
from server.comfy.hub import EventHub
from server.comfy.info import ComfyInfo, ComfyJobs
from server.comfy.previews import png, wants_previews
from server.jobs import QueueClosed, QueueFull

if TYPE_CHECKING:
    from comfy_import import Conversion


@dataclass
class Queued:
    """A prompt that was queued: its job, its info, and the importer's approximations."""

    job_id: str
    info: ComfyInfo
    warnings: list[str] = field(default_factory=list)

    def answer(self) -> dict[str, Any]:
        """ComfyUI's answer to ``POST /prompt``."""
        return {
            "prompt_id": self.job_id,
            "number": self.info.number,
            "node_errors": {},
            "warnings": self.warnings,
        }


class PromptIntake:
    """Takes ComfyUI prompts onto the job queue."""

    def __init__(self, comfy: ComfyJobs, checks: StudioApi, hub: EventHub) -> None:
        self.comfy = comfy
        self.jobs = comfy.jobs
        self.checks = checks
        self.hub = hub

    async def post_prompt(self, request: Request) -> Response:
        body = await read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), dict):
            answer = error_body("invalid_prompt", 'send {"prompt": {node id: {"class_type", "inputs"}}, ...}')
            return SafeJSONResponse(answer, status_code=400)
        client_id = body.get("client_id")
        extra = body.get("extra_data") if isinstance(body.get("extra_data"), dict) else {}
        try:
            queued = await run_in_threadpool(
                self.submit, body["prompt"], client_id if isinstance(client_id, str) else None, extra
            )
        except PromptRefused as exc:
            return SafeJSONResponse(exc.body, status_code=exc.status)
        self.hub.follow(queued.job_id, queued.info)  # here, on the event loop, where the hub runs
        return SafeJSONResponse(queued.answer())

    def get_prompt(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": len(self.jobs.list_queue())}}

    def submit(self, prompt: dict[str, Any], client_id: str | None, extra: dict[str, Any]) -> Queued:
        """Convert, validate and queue a ComfyUI prompt; :class:`PromptRefused` when it cannot run."""
        conversion = _convert(prompt)
        workflow = conversion.workflow
        info = ComfyInfo(
            number=None,
            client_id=client_id,
            prompt=prompt,
            extra_data={k: v for k, v in extra.items() if k != "extra_pnginfo"},
            ids={our: item.comfy_id for item in conversion.converted for our, _ in item.nodes},
            previews=wants_previews(extra),
        )
        self._set_previews(workflow, info.previews)
        outputs = [our for our, node in workflow["nodes"].items() if self.comfy.is_output_type(node["type"])]
        info.outputs = sorted({str(info.comfy_id(our)) for our in outputs})
        if not info.outputs:
            body = error_body(
                "prompt_no_outputs", "Prompt has no outputs", "add a SaveImage or PreviewImage node"
            )
            raise PromptRefused(400, body)
        info.number = self.comfy.new_number()
        workflow.setdefault("metadata", {})["comfy"] = info.to_json()
        listener = self._preview_listener(client_id) if info.previews else None
        try:
            job = self.jobs.submit(workflow, None, "api", listener=listener)
        except InvalidWorkflow as exc:
            errors, loose = issue_errors(exc.issues, info, prompt)
            details = loose or "; ".join(f"node {k}: {e['errors'][0]['message']}" for k, e in errors.items())
            raise failed_validation(details, errors) from None
        except QueueFull as exc:
            raise PromptRefused(429, error_body("queue_full", str(exc))) from None
        except QueueClosed as exc:
            raise PromptRefused(503, error_body("server_closing", str(exc))) from None
        return Queued(job.id, info, list(conversion.warnings))

    def _set_previews(self, workflow: dict[str, Any], wanted: bool) -> None:
        """Turn the samplers' previews on or off as the prompt asked (off saves their work)."""
        for node in workflow["nodes"].values():
            cls = self.jobs.registry.get(node["type"])
            spec = cls.input("preview") if cls is not None else None
            if spec is not None and spec.type == "BOOLEAN" and "preview" not in node["inputs"]:
                node["inputs"]["preview"] = wanted

    def _preview_listener(self, sid: str | None) -> Callable[[Event], None]:
        """The job's listener (in its thread): previews to the hub, encoded only when someone listens."""
        hub = self.hub

        def listener(event: Event) -> None:
            if isinstance(event, NodePreview) and hub.wants_preview(sid):
                hub.add_preview(sid, png(event.image))

        return listener


def _convert(prompt: dict[str, Any]) -> Conversion:
    """The importer's conversion of the whole prompt; :class:`PromptRefused` when part is lost."""
    from comfy_import import ComfyError, convert, read_prompt

    try:
        conversion = convert(read_prompt(prompt), "POST /prompt")
    except ComfyError as exc:
        raise PromptRefused(400, error_body("invalid_prompt", f"Cannot read the prompt: {exc}")) from None
    node_errors = conversion_errors(conversion)
    if node_errors:
        names = ", ".join(f"{k} ({v['class_type']})" for k, v in node_errors.items())
        raise failed_validation(f"the studio cannot run node(s) {names}", node_errors)
    return conversion
