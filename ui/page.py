"""The studio page: one Gradio ``gr.HTML`` mount that loads the bundled React app.

The page itself (canvas, tabs, queue, gallery, mask editor, library: ``ui/web/src``)
is bundled by esbuild into ``ui/static/dist`` (``npm run build``, run by setup.sh)
and talks to the server only through the HTTP API under ``/api`` (docs/api.md). So
the queue, the history and the workflow library belong to the server: every tab
sees the same queue, and closing a tab cancels nothing. Gradio serves the page and
the bundle's files (``gr.set_static_paths``); it holds no event handlers.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import gradio as gr

DIST_DIR = Path(__file__).resolve().parent / "static" / "dist"
SCRIPT = DIST_DIR / "studio.js"
STYLE = DIST_DIR / "studio.css"

TEMPLATE = '<div class="studio-mount" data-testid="studio-mount"></div>'

MISSING_TEMPLATE = (
    '<div class="studio-missing" data-testid="studio-missing"><h1>Workflow Studio</h1>'
    "<p>The studio page is not built yet: run <code>bash setup.sh</code> (it installs the "
    "page's libraries with npm and bundles them with esbuild), then reload.</p>"
    "<p>Workflows still run headless: <code>.venv/bin/python app.py run WORKFLOW</code>, and the "
    "HTTP API under <code>/api</code> works (docs/api.md).</p></div>"
)

#: Runs once the component is on the page; the bundle in ``head`` may still be loading.
JS_ON_LOAD = """
const start = () => {
  if (!window.WorkflowStudio) { setTimeout(start, 30); return; }
  window.WorkflowStudio.mount(element);
};
start();
"""

#: Gradio's own page around the mount: no padding, no footer, nothing to scroll.
CSS = """
footer { display: none !important; }
.gradio-container { padding: 0 !important; max-width: none !important; }
.studio-missing { max-width: 46em; margin: 3em auto; font-size: 16px; line-height: 1.5; }
"""


def bundle_built() -> bool:
    """Whether ``npm run build`` (setup.sh) has put the page's bundle in place."""
    return SCRIPT.is_file() and STYLE.is_file()


def _url(path: Path) -> str:
    """A relative URL under Gradio's file route, versioned by content so caches refresh."""
    digest = hashlib.blake2b(path.read_bytes(), digest_size=6).hexdigest()
    return f"gradio_api/file={path}?v={digest}"


def head_html() -> str:
    """The ``<head>`` tags that load the bundle."""
    return f'<link rel="stylesheet" href="{_url(STYLE)}">\n<script src="{_url(SCRIPT)}"></script>'


def build_page() -> gr.Blocks:
    """The page: the bundle's mount, or how to build it when it is missing."""
    built = bundle_built()
    if built:
        gr.set_static_paths([DIST_DIR])
    with gr.Blocks(title="Workflow Studio", analytics_enabled=False) as page:
        gr.HTML(
            value="",
            html_template=TEMPLATE if built else MISSING_TEMPLATE,
            js_on_load=JS_ON_LOAD if built else None,
            head=head_html() if built else None,
            apply_default_css=False,
            elem_id="studio-mount",
        )
    return page
