"""The node canvas on the studio page: litegraph.js, kept in sync with the JSON editor.

The library comes from npm (``litegraph.js``, pinned in package.json, installed into
``node_modules/`` by ``setup.sh``) and is served as static files with the studio's own
``ui/static/studio_canvas.js``, which registers a litegraph node type for every
node in the registry and converts between litegraph's graph and the workflow
format in both directions.

How the page keeps the canvas and the editor equal (all in the browser):

- editor -> canvas: the editor's ``change`` copies its text into the canvas's value;
  the canvas redraws from it (text it cannot read leaves the last graph, with a note).
- canvas -> editor: after each edit (add, connect, move, widget, delete, paste, undo)
  the canvas writes the workflow into its value and fires ``change``, which copies
  the text into the editor; Run, Validate and Download then use it unchanged.
- issues -> canvas: Validate and Run also ask :meth:`CanvasBridge.issues` for the
  problems of each node; the canvas draws those nodes with a red frame and the message.
- run -> canvas: the run handler pushes the state of each node (running, done,
  cached, failed) into a hidden component; the canvas frames and badges those nodes.
- refresh -> canvas: "Refresh models" (and saving an upload or a mask) sends the node
  descriptions again, so combo widgets list model files and input images added
  since the page opened; an upload also fills the path of the selected LoadImage.
- drop -> editor: a workflow .json or studio-made .png dropped on the canvas goes
  through the page's "Open workflow" upload.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from graph.validate import validate
from nodes import types as T
from nodes.registry import Registry

ROOT = Path(__file__).resolve().parent.parent
STATIC_DIR = Path(__file__).resolve().parent / "static"
LIBRARY_DIR = ROOT / "node_modules" / "litegraph.js"
LIBRARY_SCRIPT = LIBRARY_DIR / "build" / "litegraph.core.js"
LIBRARY_CSS = LIBRARY_DIR / "css" / "litegraph.css"
CANVAS_SCRIPT = STATIC_DIR / "studio_canvas.js"
CANVAS_CSS = STATIC_DIR / "studio_canvas.css"

#: The colour of sockets whose type nodes/types.py does not list.
FALLBACK_COLOR = "#9e9e9e"

TEMPLATE = '<div class="studio-canvas-mount" data-testid="studio-canvas"></div>'

MISSING_TEMPLATE = (
    '<div class="studio-canvas-missing">The node canvas needs its library: run '
    "<code>bash setup.sh</code> (it installs litegraph.js with npm). "
    "The JSON editor below works without it.</div>"
)

#: Runs once when the component appears; the scripts in ``head`` are loaded by then.
JS_ON_LOAD = """
const start = () => {
  if (!window.StudioCanvas || !window.LiteGraph) { setTimeout(start, 50); return; }
  window.StudioCanvas.mount(element, props, trigger, watch);
};
start();
"""

COPY_TEXT_JS = "(text) => text"
SHOW_ISSUES_JS = "(issues) => { if (window.studioCanvas) window.studioCanvas.showIssues(issues || []); }"
SHOW_RUN_JS = "(log) => { if (window.studioCanvas) window.studioCanvas.showRun(log || []); }"
SHOW_STATES_JS = "(states) => { if (window.studioCanvas) window.studioCanvas.showStates(states || {}); }"
UPDATE_DEFS_JS = (
    "(defs) => { if (!defs) return; if (window.studioCanvas) window.studioCanvas.updateDefs(defs);"
    " else window.studioPendingDefs = defs; }"
)


def library_installed() -> bool:
    """Whether ``npm ci`` (setup.sh) has put the canvas library in place."""
    return LIBRARY_SCRIPT.is_file() and LIBRARY_CSS.is_file()


def socket_colors(descriptions: Sequence[dict[str, Any]]) -> dict[str, str]:
    """A colour for every socket type the nodes use: nodes/types.py's, else a neutral one."""
    colors = dict(T.COLORS)
    for description in descriptions:
        for spec in [*description["inputs"], *description["outputs"]]:
            colors.setdefault(spec["type"], FALLBACK_COLOR)
    return colors


#: Inputs naming a file in the input folder: (node type, input). The canvas offers the
#: folder's images as their choices (``file_list``), refreshed with the model lists.
FILE_INPUTS = frozenset({("LoadImage", "path")})


def node_descriptions(registry: Registry, input_files: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The registry's descriptions (choices computed now), file inputs listing ``input_files``."""
    descriptions = registry.describe()
    if input_files is None:
        return descriptions
    for description in descriptions:
        for spec in description["inputs"]:
            if (description["type"], spec["name"]) in FILE_INPUTS and "choices" not in spec:
                spec["choices"] = list(input_files)
                spec["file_list"] = True
    return descriptions


def canvas_config(registry: Registry, input_files: Sequence[str] | None = None) -> dict[str, Any]:
    """What the browser needs to register the node types: descriptions and socket colours."""
    descriptions = node_descriptions(registry, input_files)
    return {"node_defs": descriptions, "colors": socket_colors(descriptions)}


def _url(path: Path) -> str:
    """A relative URL under Gradio's file route, versioned by content so caches refresh."""
    digest = hashlib.blake2b(path.read_bytes(), digest_size=6).hexdigest()
    return f"gradio_api/file={path}?v={digest}"


def head_html() -> str:
    """The ``<head>`` tags that load litegraph.js and the studio's canvas code."""
    return "\n".join(
        [
            f'<link rel="stylesheet" href="{_url(LIBRARY_CSS)}">',
            f'<link rel="stylesheet" href="{_url(CANVAS_CSS)}">',
            f'<script src="{_url(LIBRARY_SCRIPT)}"></script>',
            f'<script src="{_url(CANVAS_SCRIPT)}"></script>',
        ]
    )


def _serve_static_files() -> None:
    """Let Gradio serve the library's and the studio's static files."""
    gr.set_static_paths([LIBRARY_SCRIPT.parent, LIBRARY_CSS.parent, STATIC_DIR])


def workflow_canvas(
    registry: Registry, value: str = "", input_files: Sequence[str] | None = None, **kwargs: Any
) -> gr.HTML:
    """A litegraph.js canvas whose value is the workflow's JSON text.

    A plain ``gr.HTML`` (a subclass would make Gradio write a ``.pyi`` stub next to
    this file at import time). Without the library it shows how to install it.
    """
    installed = library_installed()
    if installed:
        _serve_static_files()
    return gr.HTML(
        value=value,
        html_template=TEMPLATE if installed else MISSING_TEMPLATE,
        js_on_load=JS_ON_LOAD if installed else None,
        head=head_html() if installed else None,
        apply_default_css=False,
        **canvas_config(registry, input_files),
        **kwargs,
    )


class CanvasBridge:
    """What the canvas asks the server: the problems of each node in a workflow."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def issues(self, text: str | None) -> list[dict[str, Any]]:
        """The validation issues that name a node, as dicts for the canvas."""
        checked = validate(text or "", self.registry)
        return [issue.to_dict() for issue in checked.issues if issue.node_id is not None]


def connect_canvas(
    canvas: gr.HTML,
    editor: gr.Code,
    registry: Registry,
    *,
    check_buttons: Sequence[gr.Button] = (),
    events_log: gr.JSON | None = None,
    run_states: gr.JSON | None = None,
    node_defs: gr.JSON | None = None,
) -> gr.JSON:
    """Wire the canvas to the editor (both ways), the issues and the run.

    ``run_states`` (``{"states": {node id: state}}``, pushed by the run handler) marks
    the nodes; without it the event log ``events_log`` does. ``node_defs`` (the
    payload of :meth:`ui.studio.StudioHandlers.node_defs`) updates the combo widgets.

    Call inside the page's ``gr.Blocks``; returns the hidden component holding the
    issues last shown on the canvas.
    """
    quick: dict[str, Any] = {"api_visibility": "private", "concurrency_limit": None, "queue": False}
    bridge = CanvasBridge(registry)
    issues = gr.JSON(value=[], visible=False, elem_id="studio-canvas-issues")
    editor.change(None, inputs=editor, outputs=canvas, js=COPY_TEXT_JS, **quick)
    canvas.change(None, inputs=canvas, outputs=editor, js=COPY_TEXT_JS, **quick)
    for button in check_buttons:
        button.click(bridge.issues, inputs=editor, outputs=issues, **quick).then(
            None, inputs=issues, js=SHOW_ISSUES_JS, **quick
        )
    if run_states is not None:
        run_states.change(None, inputs=run_states, js=SHOW_STATES_JS, **quick)
    elif events_log is not None:
        events_log.change(None, inputs=events_log, js=SHOW_RUN_JS, **quick)
    if node_defs is not None:
        node_defs.change(None, inputs=node_defs, js=UPDATE_DEFS_JS, **quick)
    return issues
