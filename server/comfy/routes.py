"""The router: ComfyUI's routes wired to their handlers over one job queue.

:func:`comfy_router` builds the handlers (each over the services it needs, all
sharing one :class:`~server.comfy.info.ComfyJobs` and one websocket hub) and
puts every route behind the access checks of :mod:`.auth` and ``/api``'s
same-origin rule. The studio serves them at the root of its site (``ui/studio.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends

from server.answers import SafeJSONResponse, _JsonErrorRoute
from server.api import SessionUser, StudioApi
from server.comfy import system
from server.comfy.auth import ComfyAccess
from server.comfy.files import ComfyFiles
from server.comfy.hub import EventHub
from server.comfy.info import ComfyJobs
from server.comfy.object_info import ObjectInfo
from server.comfy.prompt import PromptIntake
from server.comfy.views import QueueViews
from server.comfy.websocket import ComfySocket
from server.jobs import JobQueue


def comfy_router(
    jobs: JobQueue,
    *,
    token: str | None = None,
    session_user: SessionUser | None = None,
    local_only: bool = False,
    bound_host: str | None = None,
) -> APIRouter:
    """ComfyUI's routes over ``jobs``, under the access rules of ``server.api.api_router``."""
    checks = StudioApi(jobs, token, session_user, local_only, bound_host)
    access = ComfyAccess(checks)
    comfy = ComfyJobs(jobs)
    hub = EventHub(comfy)
    prompts = PromptIntake(comfy, checks, hub)
    views = QueueViews(comfy, checks)
    files = ComfyFiles(jobs)
    nodes = ObjectInfo(jobs.registry)
    embeddings = system.Embeddings(jobs.registry.services.paths)

    router = APIRouter(route_class=_JsonErrorRoute, default_response_class=SafeJSONResponse, tags=["comfyui"])
    guarded = [Depends(access.authorize), Depends(checks.same_origin)]

    def route(path: str, handler: Callable[..., Any], method: str) -> None:
        router.add_api_route(path, handler, methods=[method], dependencies=guarded, response_model=None)

    route("/prompt", prompts.post_prompt, "POST")
    route("/prompt", prompts.get_prompt, "GET")
    route("/queue", views.get_queue, "GET")
    route("/queue", views.post_queue, "POST")
    route("/interrupt", views.interrupt, "POST")
    route("/history", views.get_history, "GET")
    route("/history/{prompt_id}", views.get_history_item, "GET")
    route("/object_info", nodes.get_object_info, "GET")
    route("/object_info/{node_class}", nodes.get_object_info_class, "GET")
    route("/view", files.view, "GET")
    route("/upload/image", files.upload_image, "POST")
    route("/system_stats", system.system_stats, "GET")
    route("/embeddings", embeddings.get, "GET")
    router.add_api_websocket_route("/ws", ComfySocket(access, hub).websocket)
    return router
