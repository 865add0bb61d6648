"""The browser studio: load, edit, validate, run and watch a workflow.

The page holds the node canvas (ui/canvas.py) and a JSON editor kept equal to it
(filled from an example, an uploaded workflow file, or a PNG the studio saved,
also dropped on the canvas), Validate / Run / Cancel buttons, a seed box, a
status panel, a gallery of the images a run produced, the latest live preview a
node sent (a sampler's after each step), a log of its events and the history.
While a run goes, the canvas marks each node running, done, cached or failed.

Files for LoadImage: "Upload image" saves an image into the input folder (the
first of the run settings' ``input_dirs``; never overwriting) and "Paint a mask"
saves a painted mask there as a black-and-white PNG (ui/inputs.py). LoadImage's
path lists the folder's images; "Refresh models" (and opening the page) sends the
node descriptions again, so model files added since then appear in the loaders.

The handlers live on :class:`StudioHandlers` as plain methods (``run`` and
``run_page`` are generators), so tests call them without a browser;
:func:`build_blocks` wires them to Gradio components.

Sessions: each browser tab gets its own :class:`Session` in a ``gr.State``; it
holds the cancel token of that tab's run, so Cancel never reaches another
tab's run. Runs from all tabs go straight into the job queue (up to
:data:`PAGE_RUNS` at once), which runs them in turn and tells each its place
in line; the quick handlers bypass Gradio's queue limit so a tab can validate
or cancel while another runs.

Access: :func:`serve` binds only to the host and port it is given. With a
token, the page asks for a login: user name ``studio``, password the token
(Gradio's built-in ``auth``; every page and API call then needs the login
cookie).
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import contextlib
import hashlib
import logging
import queue
import re
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from fastapi import APIRouter
from starlette.middleware import Middleware

from graph.events import (
    Event,
    NodeCached,
    NodeFailed,
    NodeFinished,
    NodePreview,
    NodeProgress,
    NodeStarted,
    RunFinished,
    RunStarted,
)
from graph.executor import MAX_SEED, Executor, RunResult
from graph.issues import InvalidWorkflow, Issue
from graph.validate import validate
from graph.workflow import Link, UnreadableFile, Workflow, read_source
from nodes import types as T
from nodes.base import CancelToken, RunSettings
from nodes.registry import Registry
from server.api import api_router, gradio_login_user
from server.guard import StudioGuard, gradio_file_roots, gradio_functions
from server.history import History, check_state_dir, default_state_dir
from server.jobs import Job, JobQueue, QueueClosed, QueueFull
from server.worker import Runner
from ui.canvas import connect_canvas, node_descriptions, workflow_canvas
from ui.history import add_history_panel
from ui.inputs import InputRefused, list_images, save_mask, save_upload

log = logging.getLogger(__name__)

#: The login user name when the studio is started with a token.
AUTH_USER = "studio"

#: What the editor holds when there is no example to start from.
EMPTY_WORKFLOW = '{\n  "version": 1,\n  "nodes": {}\n}\n'

#: Longest a value is shown in the status panel.
_MAX_VALUE_CHARS = 300
#: Most issues listed at once.
_MAX_ISSUES = 50
#: Seconds between status updates while a run goes on, and between gallery updates.
_STATUS_INTERVAL = 0.1
_GALLERY_INTERVAL = 0.5
#: Exported workflow files kept on disk (one per distinct editor text).
_MAX_EXPORTS = 20
#: Seconds between updates of the live preview image.
_PREVIEW_INTERVAL = 0.25
#: Live previews smaller than this (pixels, longer side) are enlarged with nearest-neighbour.
PREVIEW_SIZE = 256
_MAX_ENLARGE = 64
#: Runs the page lets into the job queue at once (all tabs together); the queue runs them in turn.
PAGE_RUNS = 16

_DONE = object()

GalleryItem = tuple[Any, str]
RunUpdate = tuple[str, Any, list[dict[str, Any]]]
#: A run update for the page: status, gallery, log, live preview, node states.
PageUpdate = tuple[str, Any, Any, Any, Any]


class Session:
    """What one browser tab keeps between events: the cancel token and job id of its current run."""

    def __init__(self) -> None:
        self.token: CancelToken | None = None
        self.job_id: str | None = None


# --- formatting ----------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~])")


def md_escape(text: str) -> str:
    """Text shown literally in Markdown, on one line."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def _shorten(text: str, limit: int = _MAX_VALUE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def issues_markdown(issues: Sequence[Issue], heading: str | None = None) -> str:
    """Issues as a bulleted list of their sentences."""
    count = len(issues)
    heading = heading or f"**The workflow has {count} problem{'s' if count != 1 else ''}:**"
    lines = [heading, ""]
    lines += [f"- {md_escape(str(issue))}" for issue in issues[:_MAX_ISSUES]]
    if count > _MAX_ISSUES:
        lines.append(f"- … and {count - _MAX_ISSUES} more")
    return "\n".join(lines)


def _describe_value(value: Any) -> str | None:
    if isinstance(value, str | int | float | bool):
        return _shorten(str(value))
    return None


def to_uint8_frames(image: Any) -> list[np.ndarray]:
    """An IMAGE (batch, height, width, 3) in [0, 1] as 8-bit frames for the gallery."""
    array = np.asarray(image)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4) or array.size == 0:
        return []
    if array.dtype != np.uint8:
        array = np.nan_to_num(array.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        array = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return list(array)


def enlarge(frame: np.ndarray, least: int = PREVIEW_SIZE) -> np.ndarray:
    """A small frame made at least ``least`` pixels on its longer side by repeating pixels."""
    longest = max(frame.shape[0], frame.shape[1], 1)
    factor = min(_MAX_ENLARGE, max(1, -(-least // longest)))
    if factor == 1:
        return frame
    return np.repeat(np.repeat(frame, factor, axis=0), factor, axis=1)


def _looks_like_image(value: Any) -> bool:
    shape = getattr(value, "shape", None)
    return shape is not None and len(shape) == 4 and shape[-1] in (3, 4)


def parse_seed(value: Any) -> tuple[int | None, str | None]:
    """The seed box's value as a run seed (``None`` = random), or why it cannot be one."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, None
    problem = f"the seed must be a whole number from 0 to {MAX_SEED}, or empty for a random one"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None, problem
    if not number.is_integer() or not 0 <= number <= MAX_SEED:
        return None, problem
    return int(number), None


# --- a run as the page sees it ------------------------------------------------------------


@dataclass
class RunView:
    """Everything the page shows about one run, updated event by event."""

    workflow: Workflow
    seed: int | None = None
    planned: int = 0
    visited: int = 0
    current: tuple[str, str] | None = None
    step: tuple[int, int] | None = None
    lines: list[str] = field(default_factory=list)
    files: dict[str, list[str]] = field(default_factory=dict)
    previews: dict[str, list[np.ndarray]] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)
    finished: RunFinished | None = None
    gallery_dirty: bool = False
    #: The state each node shows on the canvas: running, done, cached or failed.
    states: dict[str, str] = field(default_factory=dict)
    states_dirty: bool = False
    #: The latest preview image of the run (8-bit, enlarged for the page), and whether it is new.
    preview: np.ndarray | None = None
    preview_dirty: bool = False

    def _state(self, node_id: str, state: str) -> None:
        self.states[node_id] = state
        self.states_dirty = True

    def add(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.seed = event.seed
            self.planned = len(event.planned)
            self.states.clear()
            self.states_dirty = True
        elif isinstance(event, NodeStarted):
            self.visited += 1
            self.current = (event.node_id, event.node_type)
            self.step = None
            self._state(event.node_id, "running")
        elif isinstance(event, NodeProgress):
            self.step = (event.step, event.total)
        elif isinstance(event, NodePreview):
            frames = to_uint8_frames(event.image)
            if frames:
                self.previews[event.node_id] = frames
                self.gallery_dirty = True
                self.preview = enlarge(frames[0])
                self.preview_dirty = True
        elif isinstance(event, NodeCached):
            self._state(event.node_id, "cached")
            self.visited += 1
            self.lines.append(f"- {md_escape(event.node_id)} ({md_escape(event.node_type)}): from cache")
            self._add_files(event.node_id, event.files)
        elif isinstance(event, NodeFinished):
            self._state(event.node_id, "done")
            self.current = None
            self.step = None
            self.lines.append(
                f"- {md_escape(event.node_id)} ({md_escape(event.node_type)}): done in {event.seconds:.2f} s"
            )
            self._add_files(event.node_id, event.files)
        elif isinstance(event, NodeFailed):
            self._state(event.node_id, "failed")
            self.current = None
            self.lines.append(f"- {md_escape(event.node_id)} ({md_escape(event.node_type)}): failed")
        elif isinstance(event, RunFinished):
            self.finished = event
            if event.status == "done":
                self._mark_cached_upstream()
        if not isinstance(event, NodeProgress | NodePreview):
            entry = event.to_dict()
            entry.pop("details", None)  # tracebacks go to the server log, not the page
            self.log.append(entry)

    def _mark_cached_upstream(self) -> None:
        """Nodes feeding only cached nodes are not visited at all: their results were in the
        cache too, so the canvas shows them cached."""
        stack = [node_id for node_id, state in self.states.items() if state == "cached"]
        while stack:
            entry = self.workflow.nodes.get(stack.pop())
            for value in entry.inputs.values() if entry is not None else ():
                if (
                    isinstance(value, Link)
                    and value.node in self.workflow.nodes
                    and value.node not in self.states
                ):
                    self._state(value.node, "cached")
                    stack.append(value.node)

    def _add_files(self, node_id: str, files: list[str]) -> None:
        self.files.setdefault(node_id, []).extend(files)
        self.previews.pop(node_id, None)
        self.gallery_dirty = True

    def progress_markdown(self) -> str:
        seed = f" (seed {self.seed})" if self.seed is not None else ""
        parts = [f"**Running**{seed}", ""]
        if self.current is not None:
            node_id, node_type = self.current
            line = f"node {self.visited}/{self.planned}: {node_type} (id {node_id!r})"
            if self.step is not None:
                line += f" step {self.step[0]}/{self.step[1]}"
            parts += [md_escape(line), ""]
        parts += self.lines
        return "\n".join(parts)

    def gallery(self) -> list[GalleryItem]:
        """Images so far: saved PNGs of finished nodes, then the latest previews."""
        items: list[GalleryItem] = []
        for files in self.files.values():
            items += [(path, Path(path).name) for path in files if _is_png(path)]
        for node_id, frames in self.previews.items():
            items += [(frame, f"{node_id} (preview)") for frame in frames]
        return items


def _is_png(path: str) -> bool:
    return path.lower().endswith(".png") and Path(path).is_file()


# --- the handlers ---------------------------------------------------------------------------


class StudioHandlers:
    """The page's event handlers as plain Python, testable without a browser."""

    def __init__(
        self,
        registry: Registry,
        executor: Executor,
        settings_factory: Callable[[], RunSettings],
        examples_dir: Path,
        jobs: JobQueue | None = None,
    ) -> None:
        self.registry = registry
        self.executor = executor
        self.settings_factory = settings_factory
        self.examples_dir = Path(examples_dir)
        self._jobs = jobs
        self._jobs_lock = threading.Lock()
        self._export_dir = Path(tempfile.mkdtemp(prefix="studio-export-"))
        self._exports: OrderedDict[str, Path] = OrderedDict()
        self._export_lock = threading.Lock()

    # -- examples and files ------------------------------------------------------------

    def example_names(self) -> list[str]:
        if not self.examples_dir.is_dir():
            return []
        return sorted(p.name for p in self.examples_dir.glob("*.json") if p.is_file())

    #: Shown first when the page opens, if it can run here (its models are present).
    PREFERRED_FIRST = ("txt2img.json", "invert.json")

    def initial_text(self) -> tuple[str | None, str]:
        """The example shown when the page opens, and its text: the first one of
        :attr:`PREFERRED_FIRST` that is valid here, else the first valid one, else the first."""
        names = self.example_names()
        if not names:
            return None, EMPTY_WORKFLOW
        ordered = [n for n in self.PREFERRED_FIRST if n in names] + [
            n for n in names if n not in self.PREFERRED_FIRST
        ]
        for name in ordered:
            text, _ = self.load_example(name)
            if isinstance(text, str) and validate(text, self.registry).ok:
                return name, text
        text, _ = self.load_example(names[0])
        return names[0], text

    def load_example(self, name: str | None) -> tuple[Any, str]:
        """(editor text, status) for the chosen example; the editor is kept on a bad choice."""
        if not name:
            return gr.skip(), ""
        if name not in self.example_names():
            return gr.skip(), md_escape(f"There is no example named {name!r}.")
        try:
            source = read_source(self.examples_dir / name)
        except UnreadableFile as exc:
            return gr.skip(), md_escape(str(exc))
        return source.text, self._loaded_status(f"example {name}", source.text)

    def load_upload(self, file: Any, text: str, seed: Any) -> tuple[str, Any, str]:
        """(editor text, seed, status) for an uploaded workflow .json or studio-made .png."""
        if file is None:
            return text, seed, ""
        from PIL import Image

        from nodes.limits import bomb_text

        path = Path(getattr(file, "name", file))
        imported = self._comfy_upload(path)
        if imported is not None:
            return (text if imported[0] is None else imported[0]), seed, imported[1]
        try:
            source = read_source(path)
        except UnreadableFile as exc:
            return text, seed, md_escape(str(exc).replace(str(path.parent) + os.sep, ""))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            said = f"Not opened: {path.name} is too large to open safely: {bomb_text(exc)}."
            return text, seed, md_escape(said)
        new_seed = str(source.run_seed) if source.run_seed is not None else seed
        what = path.name + (f" (run seed {source.run_seed})" if source.run_seed is not None else "")
        return source.text, new_seed, self._loaded_status(what, source.text)

    def _comfy_upload(self, path: Path) -> tuple[str | None, str] | None:
        """(editor text or None to keep it, status) for a ComfyUI workflow (JSON or PNG),
        converted on the fly (nothing is written next to the file); None for any other file."""
        from comfy_import import ComfyError, recognise
        from comfy_import.report import summary

        try:
            found = recognise(path)
        except ComfyError as exc:
            said = str(exc).replace(str(path.parent) + os.sep, "")
            return None, md_escape(
                f"Not opened: {path.name} is a ComfyUI workflow that cannot be read: {said}"
            )
        if found is None:
            return None
        conversion = found.conversion
        head = f"{path.name}: {summary(conversion)}."
        lines = [f"{n.comfy_id} {n.comfy_type}: {n.reason}" for n in conversion.not_converted]
        lines += [f"link dropped: {d}" for d in conversion.dropped_links]
        status = md_escape(head)
        if lines:
            status += " **Not converted:**\n" + "\n".join(f"- {md_escape(_shorten(line))}" for line in lines)
        return found.text, status + "\n\n" + self._loaded_status("the converted workflow", found.text)

    def _loaded_status(self, what: str, text: str) -> str:
        checked = validate(text, self.registry)
        loaded = f"Loaded {md_escape(what)}."
        if checked.ok:
            return f"{loaded} {self._valid_summary(checked.workflow)}"
        return issues_markdown(checked.issues, f"{loaded} **It has {len(checked.issues)} problem(s):**")

    def export(self, text: str | None) -> str:
        """A file holding the editor's text, for the download button."""
        data = (text or "").encode("utf-8")
        digest = hashlib.blake2b(data, digest_size=8).hexdigest()
        with self._export_lock:
            path = self._exports.get(digest)
            if path is None or not path.is_file():
                folder = self._export_dir / digest
                folder.mkdir(parents=True, exist_ok=True)
                path = folder / "workflow.json"
                path.write_bytes(data)
                self._exports[digest] = path
            self._exports.move_to_end(digest)
            while len(self._exports) > _MAX_EXPORTS:
                _, old = self._exports.popitem(last=False)
                shutil.rmtree(old.parent, ignore_errors=True)
        return str(path)

    # -- the input folder and the node descriptions ------------------------------------

    @property
    def input_dirs(self) -> tuple[Path, ...]:
        """Where LoadImage looks for files (the run settings' input folders)."""
        return tuple(Path(folder) for folder in self.settings_factory().input_dirs)

    def input_files(self) -> list[str]:
        """The images in the input folders, as LoadImage's path takes them."""
        return list_images(self.input_dirs)

    def node_defs(self, set_file: str | None = None) -> dict[str, Any]:
        """The node descriptions for the canvas, with choices as they are now (model files,
        input images); ``set_file`` goes into the path of the selected LoadImage nodes."""
        return {
            "node_defs": node_descriptions(self.registry, self.input_files()),
            "set_file": set_file,
            "nonce": time.monotonic_ns(),
        }

    def refresh_lists(self) -> tuple[dict[str, Any], str]:
        """(node descriptions, status) for the "Refresh models" button."""
        return self.node_defs(), "Model and input image lists refreshed."

    def _input_folder(self) -> Path:
        dirs = self.input_dirs
        if not dirs:
            raise InputRefused("the studio has no input folder")
        return dirs[0]

    def upload_image(self, file: Any) -> tuple[Any, str]:
        """Save an uploaded image in the input folder: (node descriptions, status)."""
        if file is None:
            return gr.skip(), ""
        source = Path(getattr(file, "name", file))
        try:
            saved = save_upload(self._input_folder(), source, source.name)
        except InputRefused as exc:
            return gr.skip(), md_escape(f"Not saved: {exc}.")
        except OSError as exc:
            return gr.skip(), md_escape(f"Not saved: {exc.strerror or exc}.")
        said = (
            f"Saved {saved.name} in the input folder: LoadImage's path list has it "
            "(a LoadImage node selected on the canvas gets it at once)."
        )
        return self.node_defs(set_file=saved.name), md_escape(said)

    def save_mask(self, value: Any, name: str | None) -> tuple[Any, str]:
        """Save the painted mask (white = repaint) as a PNG in the input folder."""
        try:
            saved = save_mask(self._input_folder(), value, name or "mask.png")
        except InputRefused as exc:
            return gr.skip(), md_escape(f"Mask not saved: {exc}.")
        except OSError as exc:
            return gr.skip(), md_escape(f"Mask not saved: {exc.strerror or exc}.")
        said = (
            f"Saved the mask as {saved.name} in the input folder (white = repaint): "
            "load it with LoadImage and turn it into a mask with ImageToMask."
        )
        return self.node_defs(set_file=saved.name), md_escape(said)

    # -- validate, run, cancel --------------------------------------------------------

    def validate(self, text: str | None) -> str:
        checked = validate(text or "", self.registry)
        if not checked.ok:
            return issues_markdown(checked.issues)
        return self._valid_summary(checked.workflow)

    def _valid_summary(self, workflow: Workflow | None) -> str:
        assert workflow is not None
        outputs = [nid for nid, e in workflow.nodes.items() if self._is_output(e.type)]
        count = len(workflow.nodes)
        shown = ", ".join(md_escape(o) for o in outputs)
        return f"**Valid**: {count} node{'s' if count != 1 else ''}; output nodes: {shown}."

    def _is_output(self, node_type: str) -> bool:
        cls = self.registry.get(node_type)
        return cls is not None and cls.output_node

    @property
    def jobs(self) -> JobQueue:
        """The job queue runs go through (shared with the API; made here when none was given)."""
        with self._jobs_lock:
            if self._jobs is None:
                self._jobs = JobQueue(self.executor, self.registry, self.settings_factory)
            return self._jobs

    def run(self, text: str | None, seed: Any, session: Session | None = None) -> Iterator[RunUpdate]:
        """Validate, then queue the run as a job; yield (status, gallery, log) as events arrive.

        The run shares the job queue (and history) with the HTTP API. The gallery
        entry is ``gr.skip()`` while it has not changed; the last update always
        carries the full list of result images. :meth:`run_page` adds the live
        preview and the node states.
        """
        with contextlib.closing(self.run_page(text, seed, session)) as updates:
            for status, gallery, log, _preview, _states in updates:
                yield status, gallery, log

    def run_page(self, text: str | None, seed: Any, session: Session | None = None) -> Iterator[PageUpdate]:
        """:meth:`run` for the page: (status, gallery, log, preview, node states) updates.

        ``preview`` is the latest preview image a node sent (enlarged when tiny;
        ``None`` clears it when a run starts; ``gr.skip()`` while unchanged), and
        ``node states`` is ``{"states": {node id: state}}`` for the canvas.
        """
        skip = gr.skip()
        checked = validate(text or "", self.registry)
        if not checked.ok or checked.workflow is None:
            yield issues_markdown(checked.issues), [], [], skip, skip
            return
        seed_value, problem = parse_seed(seed)
        if problem:
            yield md_escape(f"Cannot run: {problem}."), skip, [], skip, skip
            return
        workflow = checked.workflow
        token = CancelToken()
        events: queue.Queue[Any] = queue.Queue()
        try:
            job = self.jobs.submit(
                workflow,
                seed_value,
                "ui",
                listener=events.put,
                on_end=lambda _job: events.put(_DONE),
                cancel=token,
            )
        except InvalidWorkflow as exc:
            yield issues_markdown(exc.issues), [], [], skip, skip
            return
        except (QueueFull, QueueClosed) as exc:
            yield md_escape(f"Cannot run: {exc}."), skip, [], skip, skip
            return
        if session is not None:
            session.token, session.job_id = token, job.id

        view = RunView(workflow)
        done = False

        def states() -> Any:
            if not view.states_dirty:
                return skip
            view.states_dirty = False
            return {"job": job.id, "states": dict(view.states)}

        try:
            ahead = self._jobs_ahead(job)
            yield self._waiting_status(ahead), [], [], None, {"job": job.id, "states": {}}
            last_status = last_gallery = last_preview = time.monotonic()
            dirty = False
            while not done:
                try:
                    batch = [events.get(timeout=_STATUS_INTERVAL)]
                except queue.Empty:
                    batch = []
                while True:
                    try:
                        batch.append(events.get_nowait())
                    except queue.Empty:
                        break
                for item in batch:
                    if item is _DONE:
                        done = True
                    else:
                        view.add(item)
                        dirty = True
                if done:
                    continue
                if not dirty and job.status == "queued":
                    now_ahead = self._jobs_ahead(job)
                    if now_ahead != ahead:
                        ahead = now_ahead
                        yield self._waiting_status(ahead), skip, [], skip, skip
                    continue
                now = time.monotonic()
                if not dirty or now - last_status < _STATUS_INTERVAL:
                    continue
                gallery: Any = skip
                if view.gallery_dirty and now - last_gallery >= _GALLERY_INTERVAL:
                    gallery, view.gallery_dirty, last_gallery = view.gallery(), False, now
                preview: Any = skip
                if view.preview_dirty and now - last_preview >= _PREVIEW_INTERVAL:
                    preview, view.preview_dirty, last_preview = view.preview, False, now
                yield view.progress_markdown(), gallery, list(view.log), preview, states()
                last_status, dirty = now, False
            for node_id in [n for n, state in view.states.items() if state == "running"]:
                del view.states[node_id]  # the run is over: nothing runs any more (cancelled)
                view.states_dirty = True
            last = view.preview if view.preview_dirty else skip
            result = job.result
            if result is None:
                yield self._ended_status(job), view.gallery(), list(view.log), last, states()
                return
            images = self._result_images(result, view)
            yield self._final_status(result, view), images, list(view.log), last, states()
        finally:
            if not done:
                token.cancel()  # the page went away or the event was stopped: stop the run too
                self.jobs.cancel(job.id)
            if session is not None and session.token is token:
                session.token, session.job_id = None, None

    def _jobs_ahead(self, job: Job) -> int:
        """How many jobs (running or queued) come before ``job``; 0 once it runs."""
        line = [queued.id for queued in self.jobs.list_queue()]
        return line.index(job.id) if job.id in line else 0

    @staticmethod
    def _waiting_status(ahead: int) -> str:
        if ahead <= 0:
            return "**Starting…**"
        return f"**Waiting in the queue**: {ahead} job{'s' if ahead != 1 else ''} before this one…"

    @staticmethod
    def _ended_status(job: Job) -> str:
        """The status of a job that ended without a run result (cancelled while queued, ...)."""
        if job.status == "cancelled":
            return "**Cancelled** before it started."
        head = {"failed": "Failed", "interrupted": "Interrupted"}.get(job.status, job.status)
        return f"**{head}**: {md_escape(job.error or 'no reason given')}"

    def cancel(self, session: Session | None) -> Any:
        """Cancel this tab's run (queued or running); the run's own handler then reports it."""
        token = session.token if session is not None else None
        if token is None:
            return gr.skip()
        token.cancel()
        if session is not None and session.job_id is not None:
            self.jobs.cancel(session.job_id)
        return "**Cancelling…**"

    def _final_status(self, result: RunResult, view: RunView) -> str:
        seconds = view.finished.seconds if view.finished else 0.0
        counts = f"{len(result.executed)} node(s) run, {len(result.cached)} from cache"
        head = {"done": "Finished", "cancelled": "Cancelled", "failed": "Failed"}.get(
            result.status, result.status
        )
        lines = [f"**{head}** in {seconds:.2f} s (seed {result.seed}): {counts}."]
        if result.error is not None:
            lines += ["", md_escape(str(result.error))]
        elif result.status == "cancelled" and view.current is not None:
            node_id, node_type = view.current
            where = f" at step {view.step[0]}/{view.step[1]}" if view.step else ""
            lines += ["", md_escape(f"Stopped in node {node_id!r} ({node_type}){where}.")]
        values = []
        for node_id, outputs in result.outputs.items():
            node_type = workflow_type(view.workflow, node_id)
            for name, value in outputs.items():
                shown = _describe_value(value)
                if shown is None:
                    continue
                label = f"{node_id} ({node_type})" + (f" {name}" if len(outputs) > 1 else "")
                values.append(f"- {md_escape(label)}: {md_escape(shown)}")
        if values:
            lines += ["", "**Results**", "", *values]
        if view.lines:
            lines += ["", "**Nodes**", "", *view.lines]
        return "\n".join(lines)

    def _result_images(self, result: RunResult, view: RunView) -> list[GalleryItem]:
        """Saved PNGs, then IMAGE outputs of output nodes that saved no file (previews)."""
        items: list[GalleryItem] = []
        seen: set[str] = set()
        for path in result.files:
            if path not in seen and _is_png(path):
                seen.add(path)
                items.append((path, Path(path).name))
        for node_id, outputs in result.outputs.items():
            if view.files.get(node_id):
                continue
            cls = self.registry.get(workflow_type(view.workflow, node_id))
            for name, value in outputs.items():
                spec = cls.output(name) if cls is not None else None
                declared = spec.type if spec is not None else T.ANY
                if declared != T.IMAGE and not (declared == T.ANY and _looks_like_image(value)):
                    continue
                frames = to_uint8_frames(value)
                for index, frame in enumerate(frames):
                    caption = node_id + (f" [{index}]" if len(frames) > 1 else "")
                    items.append((frame, caption))
        return items


def workflow_type(workflow: Workflow, node_id: str) -> str:
    entry = workflow.nodes.get(node_id)
    return entry.type if entry is not None else "?"


# --- the page ------------------------------------------------------------------------------

CSS = """
#studio-status { min-height: 6em; }
#studio-editor .cm-editor { font-size: 13px; }
"""


def build_studio(
    registry: Registry,
    executor: Executor,
    settings_factory: Callable[[], RunSettings],
    examples_dir: Path,
    jobs: JobQueue | None = None,
) -> gr.Blocks:
    """The studio page; ``settings_factory()`` gives a fresh RunSettings for each run.

    Runs go through ``jobs`` (the queue the HTTP API shares), or a queue of the page's own.
    """
    return build_blocks(StudioHandlers(registry, executor, settings_factory, examples_dir, jobs=jobs))


def build_blocks(handlers: StudioHandlers) -> gr.Blocks:
    """Wire ``handlers`` to the page's components."""
    private: dict[str, Any] = {"api_visibility": "private"}
    quick: dict[str, Any] = {**private, "concurrency_limit": None}
    first_example, first_text = handlers.initial_text()

    with gr.Blocks(title="Workflow Studio", analytics_enabled=False, delete_cache=(3600, 6 * 3600)) as demo:
        session = gr.State(Session)
        gr.Markdown("# Workflow Studio")
        canvas = workflow_canvas(
            handlers.registry, first_text, input_files=handlers.input_files(), elem_id="studio-canvas"
        )
        run_states = gr.JSON(value={}, visible="hidden", elem_id="studio-run-states")
        node_defs = gr.JSON(value=None, visible="hidden", elem_id="studio-node-defs")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=420):
                examples = gr.Dropdown(
                    choices=handlers.example_names(),
                    value=first_example,
                    label="Example workflows",
                )
                editor = gr.Code(
                    value=first_text,
                    language="json",
                    label="Workflow (JSON)",
                    lines=14,
                    max_lines=40,
                    interactive=True,
                    wrap_lines=True,
                    elem_id="studio-editor",
                )
                with gr.Row():
                    upload = gr.UploadButton(
                        "Open workflow (.json / .png)",
                        file_types=[".json", ".png"],
                        type="filepath",
                        size="md",
                        elem_id="studio-open",
                    )
                    download = gr.DownloadButton(
                        "Download workflow", value=handlers.export(first_text), size="md"
                    )
                with gr.Row():
                    upload_image = gr.UploadButton(
                        "Upload image (to input/)",
                        file_types=["image"],
                        type="filepath",
                        size="md",
                        elem_id="studio-upload-image",
                    )
                    refresh = gr.Button("Refresh models", size="md", elem_id="studio-refresh")
                    # pressed by the canvas when the page gains focus (studio_canvas.js)
                    refresh_quiet = gr.Button(
                        "Refresh lists", visible="hidden", elem_id="studio-refresh-quiet"
                    )
                with gr.Accordion("Paint a mask (for inpainting)", open=False, elem_id="studio-mask"):
                    mask_editor = gr.ImageEditor(
                        label="Open an image, paint where it should change",
                        type="numpy",
                        sources=["upload", "clipboard"],
                        brush=gr.Brush(
                            colors=[("#ffffff", 0.7)], default_color=("#ffffff", 0.7), color_mode="fixed"
                        ),
                        layers=False,
                        height=420,
                        elem_id="studio-mask-editor",
                    )
                    with gr.Row():
                        mask_name = gr.Textbox(value="mask.png", label="Mask file name", max_lines=1, scale=3)
                        mask_save = gr.Button("Save mask to input/", size="md", scale=1, min_width=80)
            with gr.Column(scale=2, min_width=360):
                seed = gr.Textbox(
                    label="Seed",
                    placeholder="empty = a random seed for each run",
                    max_lines=1,
                    elem_id="studio-seed",
                )
                with gr.Row():
                    validate_button = gr.Button("Validate", size="md", min_width=80)
                    run_button = gr.Button(
                        "Run", variant="primary", size="md", min_width=80, elem_id="studio-run"
                    )
                    cancel_button = gr.Button("Cancel", variant="stop", size="md", min_width=80)
                status = gr.Markdown(
                    "Choose an example or open a workflow, then press Run.", elem_id="studio-status"
                )
                with gr.Row(equal_height=False):
                    gallery = gr.Gallery(
                        label="Images",
                        columns=3,
                        height=420,
                        format="png",
                        object_fit="contain",
                        interactive=False,
                        scale=3,
                    )
                    preview = gr.Image(
                        label="Preview",
                        type="numpy",
                        format="png",
                        interactive=False,
                        height=420,
                        scale=2,
                        min_width=160,
                        elem_id="studio-preview",
                    )
                with gr.Accordion("Event log", open=False):
                    events_log = gr.JSON(label="Node events", value=[])
                add_history_panel(handlers, editor, seed, status)

        examples.input(handlers.load_example, inputs=examples, outputs=[editor, status], **quick)
        upload.upload(
            handlers.load_upload, inputs=[upload, editor, seed], outputs=[editor, seed, status], **quick
        )
        editor.change(handlers.export, inputs=editor, outputs=download, trigger_mode="always_last", **quick)
        validate_button.click(handlers.validate, inputs=editor, outputs=status, **quick)
        # every tab's run goes straight into the job queue (which runs them in turn and
        # tells each its place), rather than waiting unseen in Gradio's queue
        run_button.click(
            handlers.run_page,
            inputs=[editor, seed, session],
            outputs=[status, gallery, events_log, preview, run_states],
            concurrency_limit=PAGE_RUNS,
            concurrency_id="studio-run",
            **private,
        )
        cancel_button.click(handlers.cancel, inputs=session, outputs=status, **quick)
        refresh.click(handlers.refresh_lists, outputs=[node_defs, status], **quick)
        refresh_quiet.click(lambda: handlers.node_defs(), outputs=node_defs, **quick)
        upload_image.upload(handlers.upload_image, inputs=upload_image, outputs=[node_defs, status], **quick)
        mask_save.click(
            handlers.save_mask, inputs=[mask_editor, mask_name], outputs=[node_defs, status], **quick
        )
        buttons = [validate_button, run_button]
        connect_canvas(
            canvas,
            editor,
            handlers.registry,
            check_buttons=buttons,
            events_log=events_log,
            run_states=run_states,
            node_defs=node_defs,
        )
        demo.load(lambda: gr.update(choices=handlers.example_names()), outputs=examples, **quick)
        demo.load(lambda: handlers.node_defs(), outputs=node_defs, **quick)
    demo.queue(default_concurrency_limit=1)
    return demo


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


def _outside_default_paths(folder: Path) -> bool:
    """Whether Gradio would refuse to show files from ``folder`` without allowed_paths."""
    folder = folder.resolve()
    for base in (Path.cwd(), Path(tempfile.gettempdir())):
        if folder == base.resolve() or base.resolve() in folder.parents:
            return False
    return True


def serve(
    host: str,
    port: int,
    registry: Registry,
    executor: Executor,
    settings_factory: Callable[[], RunSettings],
    examples_dir: Path,
    token: str | None,
    state_dir: Path | None = None,
    runners: Sequence[Runner] | None = None,
) -> None:
    """Serve the studio on ``host:port`` until interrupted.

    Jobs run on ``runners`` (one job at a time each: worker processes, see
    server/worker.py), or without them in this process's threads through ``executor``.

    With ``token``, the browser shows a login form: user name ``studio``, password
    the token. The output folder (from one call of ``settings_factory``) is added
    to Gradio's allowed paths only when it lies outside the working directory and
    the temp folder, so the gallery can show the images saved there (Gradio's file
    routes serve only pictures, videos and page files from it, never hidden ones).

    Page runs and the HTTP API under ``/api`` (docs/api.md) share one job queue,
    whose history lives in ``state_dir`` (default: :func:`server.history.default_state_dir`),
    which must not lie inside the output folder; a history an older studio left in
    ``OUTPUT/.studio/`` is moved there. The token, when given, guards the API too
    (``Authorization: Bearer TOKEN`` or the login cookie).
    ComfyUI's routes (``/prompt``, ``/ws``, ... : server/comfy/) share the queue and
    the rules.
    """
    output_dir = Path(settings_factory().output_dir).resolve()
    state = Path(state_dir).resolve() if state_dir is not None else default_state_dir(output_dir)
    check_state_dir(state, output_dir)
    history = History.in_state_folder(state, legacy_output_dir=output_dir)
    if history.interrupted:
        count = len(history.interrupted)
        log.warning("%d job(s) left unfinished by the last server were marked interrupted", count)
    jobs = JobQueue(executor, registry, settings_factory, history, runners=runners)
    demo = build_studio(registry, executor, settings_factory, examples_dir, jobs=jobs)
    allowed = [output_dir] if _outside_default_paths(output_dir) else []
    router = api_router(
        jobs, token=token, session_user=gradio_login_user(demo), local_only=not token, bound_host=host
    )
    from server.comfy import comfy_router  # ComfyUI's routes (/prompt, /ws, ...), same access rules

    comfy = comfy_router(
        jobs, token=token, session_user=gradio_login_user(demo), local_only=not token, bound_host=host
    )
    router.routes.extend(comfy.routes)  # at the root, not under /api; after /api's own
    try:
        launch(demo, host, port, token=token, allowed_paths=allowed, api=router)
    finally:
        jobs.close()
        history.close()
