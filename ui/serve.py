"""Serving the studio: the page (ui/page.py), the HTTP API and ComfyUI's routes on one port.

:func:`serve` binds only to the host and port it is given. With a token, the page
asks for a login: user name ``studio``, password the token (Gradio's built-in
``auth``; every page and API call then needs the login cookie or the token).
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from fastapi import APIRouter
from starlette.middleware import Middleware

from graph.executor import Executor
from nodes.base import RunSettings
from nodes.registry import Registry
from server.api import api_router, gradio_login_user
from server.folders import StudioFolders
from server.guard import StudioGuard, gradio_file_roots, gradio_functions
from server.history import History, check_state_dir, default_state_dir
from server.jobs import JobQueue
from server.worker import Runner
from ui.page import CSS, build_page

log = logging.getLogger(__name__)

#: The login user name when the studio is started with a token.
AUTH_USER = "studio"


def launch(
    demo: gr.Blocks,
    host: str,
    port: int,
    *,
    token: str | None = None,
    allowed_paths: Sequence[Path | str] = (),
    prevent_thread_lock: bool = False,
    api: APIRouter | None = None,
) -> gr.Blocks:
    """Start serving ``demo`` on ``host:port`` only; with a token, log in as ``studio`` / token.

    ``api`` (the routes of ``server.api.api_router``) is served by the same server,
    installed before Gradio's own routes so it answers from the first request.

    Every route (page, Gradio's API and files, ``/api``) is behind
    :class:`server.guard.StudioGuard`, given to the app Gradio builds as a FastAPI
    ``middleware`` (through ``app_kwargs``, so it is there before the first request):
    without a token only Hosts naming this machine are answered (DNS rebinding);
    requests that change something from pages of other sites are refused; Gradio's
    file routes serve only pictures, videos and page files, never hidden ones; calls of
    event handlers the page does not have are answered 404 (Gradio would fail with a
    500). Gradio's CORS layer still answers preflight ``OPTIONS`` requests itself,
    with no content.
    """
    allowed = [str(Path(p).resolve()) for p in allowed_paths]
    guard = Middleware(
        StudioGuard,
        check_host=not token,
        bound=host,
        file_roots=gradio_file_roots(allowed),
        functions=gradio_functions(demo),
    )
    app_kwargs: dict[str, Any] = {"middleware": [guard]}
    if api is not None:
        app_kwargs["routes"] = list(api.routes)
    demo.launch(
        app_kwargs=app_kwargs,
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        auth=(AUTH_USER, token) if token else None,
        auth_message=f"Log in with the user name '{AUTH_USER}' and the studio's token." if token else None,
        footer_links=["settings"],
        allowed_paths=allowed or None,
        ssr_mode=False,
        mcp_server=False,
        pwa=False,
        enable_monitoring=False,
        show_error=False,
        num_workers=0,  # static-file workers would serve on other ports, past the guard
        prevent_thread_lock=prevent_thread_lock,
        css=CSS,
    )
    return demo


@dataclass
class StudioServer:
    """A studio being served: its page, job queue and history; :meth:`close` stops all three."""

    page: gr.Blocks
    jobs: JobQueue
    history: History

    def close(self) -> None:
        self.page.close()
        self.jobs.close()
        self.history.close()


def serve(
    host: str,
    port: int,
    registry: Registry,
    executor: Executor,
    settings_factory: Callable[[], RunSettings],
    folders: StudioFolders,
    token: str | None,
    state_dir: Path | None = None,
    runners: Sequence[Runner] | None = None,
    *,
    block: bool = True,
) -> StudioServer | None:
    """Serve the studio on ``host:port``: until interrupted, or (``block=False``, for tests)
    in the background, returning the :class:`StudioServer` to close.

    Jobs run on ``runners`` (one job at a time each: worker processes, see
    server/worker.py), or without them in this process's threads through ``executor``.

    The page (ui/page.py) and the HTTP API under ``/api`` (docs/api.md) share one job
    queue, whose history lives in ``state_dir`` (default:
    :func:`server.history.default_state_dir`), which must not lie inside the output
    folder; a history an older studio left in ``OUTPUT/.studio/`` is moved there.
    ``folders`` are the input folder (LoadImage's pictures, uploads, masks), the
    workflow library and the examples the page offers. ComfyUI's routes (``/prompt``,
    ``/ws``, ... : server/comfy/) share the queue and the rules.
    """
    output_dir = Path(settings_factory().output_dir).resolve()
    state = Path(state_dir).resolve() if state_dir is not None else default_state_dir(output_dir)
    check_state_dir(state, output_dir)
    history = History.in_state_folder(state, legacy_output_dir=output_dir)
    if history.interrupted:
        count = len(history.interrupted)
        log.warning("%d job(s) left unfinished by the last server were marked interrupted", count)
    jobs = JobQueue(executor, registry, settings_factory, history, runners=runners)
    page = build_page()
    login = gradio_login_user(page)
    router = api_router(
        jobs, token=token, session_user=login, local_only=not token, bound_host=host, folders=folders
    )
    from server.comfy import comfy_router  # ComfyUI's routes (/prompt, /ws, ...), same access rules

    comfy = comfy_router(jobs, token=token, session_user=login, local_only=not token, bound_host=host)
    router.routes.extend(comfy.routes)  # at the root, not under /api; after /api's own
    server = StudioServer(page, jobs, history)
    try:
        launch(page, host, port, token=token, api=router, prevent_thread_lock=not block)
    except BaseException:
        server.close()
        raise
    if not block:
        return server
    server.close()
    return None
