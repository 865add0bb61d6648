"""Helpers for the browser journeys (tests/test_browser.py) and the studio benchmark.

A :class:`Studio` is the real server (``ui.serve.serve``, jobs in its own threads) over
the built-in nodes and the test pack, with its own input, output, library and state
folders. A :class:`StudioPage` is one Playwright page on it, with what the journeys need:
the page's errors, answers for ``window.prompt``, the jobs the page submitted, and ways to
drag, drop files and read the page's store (``window.studioStore``).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "workflows"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Job statuses that do not change any more.
FINAL = frozenset({"done", "failed", "cancelled", "interrupted"})
#: The example's node ids (workflows/txt2img.json).
TXT2IMG_NODES = ("ck", "pos", "neg", "lat", "s", "d", "save")

Page = Any  # playwright.sync_api.Page
Locator = Any  # playwright.sync_api.Locator


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the server ----------------------------------------------------------------------------


@dataclass
class Studio:
    """The served studio: its address, its folders and the server to close."""

    url: str
    input_dir: Path
    output_dir: Path
    library_dir: Path
    server: Any  # ui.serve.StudioServer
    registry: Any  # nodes.registry.Registry

    def close(self) -> None:
        self.server.close()

    def call(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> tuple[int, Any]:
        """One API call from outside the page (no Origin header: as a script would)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url.rstrip("/") + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                raw = answer.read()
                status = answer.status
        except urllib.error.HTTPError as error:
            raw, status = error.read(), error.code
        try:
            return status, json.loads(raw or b"null")
        except ValueError:
            return status, raw

    def get(self, path: str) -> Any:
        status, body = self.call("GET", path)
        assert status == 200, (path, status, body)
        return body

    def job(self, job_id: str) -> dict[str, Any]:
        return self.get(f"/api/jobs/{job_id}")

    def wait_job(self, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """The job once it has ended (done, failed, cancelled or interrupted)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in FINAL:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job['status']} after {timeout:.0f} s")
            time.sleep(0.1)

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Until nothing runs or waits (a journey starts on an empty queue)."""
        deadline = time.monotonic() + timeout
        while True:
            queue = self.get("/api/queue")
            if not queue.get("running") and not queue.get("queued"):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the queue is still busy: {queue}")
            time.sleep(0.1)

    def history_ids(self) -> set[str]:
        return {entry["id"] for entry in self.get("/api/history?limit=500")["jobs"]}


def start_studio(
    root: Path,
    *,
    packs: tuple[str, ...] = ("tests.packs.testing",),
    models: Path | None = None,
    models_first: bool = False,
) -> Studio:
    """Serve the studio on 127.0.0.1 and a free port, its folders under ``root``; jobs run in
    the server's threads (``runners=None``). ``models``: a models folder searched after the
    repository's, or before it with ``models_first`` (then files the studio writes, such as a
    trained LoRA, land there and never in the repository). Close it with :meth:`Studio.close`."""
    from graph.executor import Executor
    from nodes.base import RunSettings
    from nodes.registry import default_registry
    from server.folders import StudioFolders
    from ui.serve import serve

    output_dir, input_dir, library_dir, state_dir = (
        root / name for name in ("output", "input", "library", "state")
    )
    for folder in (output_dir, input_dir, state_dir):
        folder.mkdir(parents=True, exist_ok=True)
    if models is not None and models_first:
        from models.paths import REPO_MODELS, ModelPaths
        from models.services import Services

        registry = default_registry(services=Services(paths=ModelPaths((models, REPO_MODELS))))
    elif models is not None:
        from tests.fixtures.services import services_over

        registry = default_registry(services=services_over(models))
    else:
        registry = default_registry()
    for pack in packs:
        registry.add_pack(pack)
    services = registry.services

    def settings() -> RunSettings:
        return RunSettings(output_dir=output_dir, input_dirs=(input_dir, EXAMPLES), services=services)

    folders = StudioFolders(input_dir=input_dir, library_dir=library_dir, examples_dir=EXAMPLES)
    port = free_port()
    server = serve(
        "127.0.0.1",
        port,
        registry,
        Executor(registry),
        settings,
        folders,
        None,
        state_dir=state_dir,
        block=False,
    )
    assert server is not None
    return Studio(f"http://127.0.0.1:{port}/", input_dir, output_dir, library_dir, server, registry)


def launch_browser(playwright: Any) -> Any:
    """Debian's chromium, headless (never a browser Playwright downloads)."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)


# --- in the page -----------------------------------------------------------------------------

#: The store's view of the active tab's workflow (the file the page would save or run).
ACTIVE_WORKFLOW_JS = (
    "(() => { const s = window.studioStore.getState(); return s.tabWorkflow(s.activeTabId); })()"
)

#: Remembers the highest value the whole-run progress bar showed (aria-valuenow, 0-100).
WATCH_PROGRESS_JS = """
(() => {
  window.__runProgressMax = 0;
  const read = () => {
    const bar = document.querySelector('[data-testid=run-progress]');
    if (!bar) return;
    let value = Number(bar.getAttribute('aria-valuenow'));
    if (bar.tagName === 'PROGRESS') value = 100 * bar.value / (bar.max || 1);
    if (Number.isFinite(value)) window.__runProgressMax = Math.max(window.__runProgressMax, value);
  };
  new MutationObserver(read).observe(document.body, {subtree: true, attributes: true, childList: true});
  read();
})()
"""

#: Drop a file (built from base64 bytes) on the element matching the selector, as a drag from
#: the desktop would: dragenter, dragover, drop, each with a DataTransfer holding the file.
DROP_FILE_JS = """
([selector, name, mime, b64, x, y]) => {
  const target = document.querySelector(selector);
  if (!target) throw new Error('nothing matches ' + selector);
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], name, {type: mime}));
  for (const type of ['dragenter', 'dragover', 'drop']) {
    target.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: data,
                                              clientX: x, clientY: y}));
  }
}
"""

#: A screen point on the React Flow edge with the given id where the edge itself is on top
#: (edges pass behind nodes): the first of points along its path that hits the edge.
EDGE_POINT_JS = """
(edgeId) => {
  const group = [...document.querySelectorAll('.react-flow__edge')]
    .find((g) => g.getAttribute('data-id') === edgeId);
  if (!group) return null;
  const path = group.querySelector('path.react-flow__edge-path') || group.querySelector('path');
  const length = path.getTotalLength();
  const m = path.getScreenCTM();
  for (const t of [0.5, 0.4, 0.6, 0.3, 0.7, 0.2, 0.8, 0.15, 0.85, 0.1, 0.9, 0.05, 0.95]) {
    const p = path.getPointAtLength(length * t);
    const x = p.x * m.a + p.y * m.c + m.e, y = p.x * m.b + p.y * m.d + m.f;
    const hit = document.elementFromPoint(x, y);
    if (hit && hit.closest('.react-flow__edge') === group) return {x, y};
  }
  return null;
}
"""


@dataclass
class StudioPage:
    """One browser page on the studio, and what it saw."""

    page: Page
    studio: Studio
    label: str  # the viewport, e.g. "1280x800": part of screenshot names
    errors: list[str] = field(default_factory=list)  # uncaught exceptions in the page
    console_errors: list[str] = field(default_factory=list)
    prompt_answers: list[str] = field(default_factory=list)  # window.prompt answers, in order
    dialogs: list[str] = field(default_factory=list)  # "type: message" of every dialog
    submitted: list[str] = field(default_factory=list)  # job ids the page created (POST /api/jobs 201)
    refused: list[int] = field(default_factory=list)  # statuses of refused POST /api/jobs

    def __post_init__(self) -> None:
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("console", self._console)
        self.page.on("dialog", self._dialog)
        self.page.on("response", self._response)

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        if dialog.type == "prompt" and self.prompt_answers:
            dialog.accept(self.prompt_answers.pop(0))
        else:
            dialog.accept()

    def _response(self, response: Any) -> None:
        request = response.request
        if request.method != "POST" or not response.url.split("?")[0].endswith("/api/jobs"):
            return
        if response.status == 201:
            from playwright.sync_api import Error

            try:
                self.submitted.append(response.json()["id"])
            except Error as exc:  # the body is gone when the page navigated away
                self.errors.append(f"could not read a job id: {exc}")
        else:
            self.refused.append(response.status)

    # -- finding things ------------------------------------------------------------------

    def testid(self, testid: str) -> Locator:
        return self.page.get_by_test_id(testid)

    def node(self, node_id: str) -> Locator:
        return self.testid(f"node-{node_id}")

    def widget(self, node_id: str, name: str) -> Locator:
        return self.testid(f"widget-{node_id}-{name}")

    def handle(self, node_id: str, socket_name: str, kind: str) -> Locator:
        """A node's socket: ``kind`` "source" (an output) or "target" (an input)."""
        return self.node(node_id).locator(f'.react-flow__handle.{kind}[data-handleid="{socket_name}"]')

    # -- the store -----------------------------------------------------------------------

    def workflow(self) -> dict[str, Any]:
        """The active tab's workflow as the page would save it."""
        return self.page.evaluate(ACTIVE_WORKFLOW_JS)

    def node_ids(self) -> set[str]:
        return set(self.workflow()["nodes"])

    def tab_count(self) -> int:
        return int(self.page.evaluate("window.studioStore.getState().tabs.length"))

    # -- doing things --------------------------------------------------------------------

    def open(self) -> None:
        """Load the page and wait until the store and the active tab's nodes are there."""
        self.page.goto(self.studio.url)
        self.wait_ready()

    def wait_ready(self) -> None:
        self.testid("studio-root").wait_for()
        self.page.wait_for_function(
            "window.studioStore && window.studioStore.getState().tabs.length > 0"
            " && document.querySelector('[data-testid=canvas]')"
        )

    def open_txt2img(self) -> None:
        """Load the page on a fresh context: the example txt2img, drawn."""
        self.open()
        for node_id in TXT2IMG_NODES:
            self.node(node_id).wait_for(state="attached")

    def open_file(self, path: Path) -> None:
        """Open a workflow file with the toolbar's Open (a hidden file input) and wait for its tab."""
        before = self.tab_count()
        self.testid("toolbar-open").set_input_files(str(path))
        self.page.wait_for_function(f"window.studioStore.getState().tabs.length > {before}")

    def run(self, count: int = 1, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Click Run; wait for the ``count`` jobs it submits to end; the jobs."""
        before = len(self.submitted)
        self.testid("run-button").click()
        return [self.studio.wait_job(job_id, timeout) for job_id in self.wait_submitted(count, after=before)]

    def wait_submitted(self, count: int, *, after: int, timeout: float = 15.0) -> list[str]:
        """The ids of the ``count`` jobs the page submits after the first ``after``."""
        deadline = time.monotonic() + timeout
        while len(self.submitted) < after + count:
            got = len(self.submitted) - after
            assert time.monotonic() < deadline, (
                f"the page submitted {got} of {count} jobs (refused: {self.refused})"
            )
            self.page.wait_for_timeout(50)
        return self.submitted[after : after + count]

    def drag(self, start: tuple[float, float], end: tuple[float, float], steps: int = 12) -> None:
        mouse = self.page.mouse
        mouse.move(*start)
        mouse.down()
        mouse.move(*end, steps=steps)
        mouse.up()

    def connect(self, source: tuple[str, str], target: tuple[str, str]) -> None:
        """Drag a link from a node's output (node id, output name) to an input."""
        self.drag(center(self.handle(*source, "source")), center(self.handle(*target, "target")))

    def drop_file(self, selector: str, name: str, data: bytes, mime: str) -> None:
        box = self.page.locator(selector).first.bounding_box()
        assert box is not None, selector
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        self.page.evaluate(DROP_FILE_JS, [selector, name, mime, base64.b64encode(data).decode(), x, y])

    def edge_into(self, node_id: str, input_name: str) -> str:
        """The id of the canvas edge into that input."""
        edge_id = self.page.evaluate(
            """([node, input]) => {
                const s = window.studioStore.getState();
                const tab = s.tabs.find((t) => t.id === s.activeTabId);
                const edge = tab.edges.find((e) => e.target === node && e.targetHandle === input);
                return edge ? edge.id : null;
            }""",
            [node_id, input_name],
        )
        assert edge_id, f"no edge into {node_id}.{input_name}"
        return str(edge_id)

    def edge_point(self, edge_id: str) -> tuple[float, float]:
        """Where a click hits that edge (not a node over it)."""
        point = self.page.evaluate(EDGE_POINT_JS, edge_id)
        assert point, f"edge {edge_id} is not drawn, or hidden behind nodes all along"
        return point["x"], point["y"]

    def watch_progress(self) -> None:
        self.page.evaluate(WATCH_PROGRESS_JS)

    def progress_max(self) -> float:
        return float(self.page.evaluate("window.__runProgressMax"))

    def shot(self, name: str) -> Path:
        """A screenshot of the viewport in test-artifacts/, named for the journey and the size."""
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"studio-{name}-{self.label}.png"
        self.page.screenshot(path=str(path))
        return path


def center(locator: Locator) -> tuple[float, float]:
    box = locator.bounding_box()
    assert box is not None, f"{locator} is not drawn"
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def inside(box: dict[str, float] | None, width: int, height: int) -> bool:
    """Whether a bounding box lies wholly inside a width x height viewport."""
    return (
        box is not None
        and box["x"] >= 0
        and box["y"] >= 0
        and box["x"] + box["width"] <= width + 0.5
        and box["y"] + box["height"] <= height + 0.5
    )


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    """Poll ``predicate`` until it is truthy; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.1)
