"""The studio in a real browser: the node canvas, as a person uses it.

Playwright drives Debian's chromium (never a downloaded browser). Skipped when
playwright, /usr/bin/chromium or the canvas library (npm, setup.sh) is missing, except
in CI (the ``CI`` environment variable set, as .ci/run does), where that is a failure.
Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

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
TIMEOUT_MS = 20_000


def missing(reason: str) -> None:
    """Skip on a developer's machine; fail in CI (``CI`` set), where a silent skip would hide it."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the browser tests", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


try:
    from playwright import sync_api
except ImportError:
    missing("playwright is not installed (bash setup.sh --dev)")

if not CHROMIUM.is_file():
    missing(f"{CHROMIUM} is missing (bash setup.sh --dev installs it)")

from ui.canvas import library_installed  # noqa: E402

if not library_installed():
    missing("the canvas library is missing (bash setup.sh runs npm ci)")

Page = Any  # playwright.sync_api.Page


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Studio:
    """The served studio: its address and the folders it uses."""

    url: str
    input_dir: Path
    models_root: Path
    output_dir: Path


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    """The studio over the built-in nodes and the test pack, with its own input and models folders."""
    from graph.executor import Executor
    from nodes.base import RunSettings
    from nodes.registry import default_registry
    from tests.fixtures.services import services_over
    from ui.studio import build_studio, launch

    output = tmp_path_factory.mktemp("output")
    inputs = tmp_path_factory.mktemp("input")
    models = tmp_path_factory.mktemp("models")
    (models / "checkpoints").mkdir()
    services = services_over(models)
    registry = default_registry(services=services)
    registry.add_pack("tests.packs.testing")

    def settings() -> RunSettings:
        return RunSettings(output_dir=output, input_dirs=(inputs, EXAMPLES), services=services)

    demo = build_studio(registry, Executor(registry), settings, EXAMPLES)
    port = _free_port()
    launch(demo, "127.0.0.1", port, prevent_thread_lock=True)
    try:
        yield Studio(f"http://127.0.0.1:{port}/", inputs, models, output)
    finally:
        demo.close()


@pytest.fixture(scope="module")
def studio_url(studio: Studio) -> str:
    return studio.url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Any, studio_url: str) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(studio_url)
    page.wait_for_function("window.studioCanvas && window.studioCanvas.graph._nodes.length > 0")
    page.wait_for_timeout(300)  # let the layout settle before clicking on the canvas
    try:
        yield page
    finally:
        context.close()
    assert not errors, errors


# --- helpers --------------------------------------------------------------------------------


def shot(page: Page, name: str, *, full_page: bool = False) -> Path:
    """A screenshot of the page scrolled to the top, in test-artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_timeout(100)
    page.screenshot(path=str(path), full_page=full_page)
    return path


def canvas_workflow(page: Page) -> dict[str, Any]:
    return page.evaluate("window.studioCanvas.toWorkflow()")


def editor_text(page: Page) -> str:
    """The editor's text, read back from the canvas's copy of the editor value."""
    return page.evaluate("document.querySelector('#studio-editor .cm-content').innerText")


def editor_workflow(page: Page) -> dict[str, Any]:
    return json.loads(editor_text(page))


def wait_editor(page: Page, predicate: str) -> None:
    """Wait until ``predicate`` (JS over ``wf``, the editor's parsed JSON) is true."""
    page.wait_for_function(
        "(() => { let wf; try { wf = JSON.parse(document.querySelector('#studio-editor .cm-content')"
        f".innerText); }} catch (e) {{ return false; }} return Boolean({predicate}); }})()"
    )


def graph_part(workflow: dict[str, Any]) -> dict[str, Any]:
    """The workflow without the canvas's view (pan and zoom)."""
    copy = json.loads(json.dumps(workflow))
    metadata = copy.get("metadata")
    if isinstance(metadata, dict):
        metadata.pop("canvas", None)
        if not metadata:
            copy.pop("metadata")
    return copy


def point(page: Page, expression: str) -> tuple[float, float]:
    found = page.evaluate(f"window.studioCanvas.{expression}")
    assert found is not None, expression
    return found["x"], found["y"]


def choose_example(page: Page, name: str) -> None:
    page.get_by_label("Example workflows").click()
    page.get_by_role("option", name=name).click()


def set_editor_text(page: Page, text: str) -> None:
    page.locator("#studio-editor .cm-content").click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text(text)


# --- tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.json")))
def test_round_trip_keeps_each_example(page: Page, name: str) -> None:
    """JSON -> canvas -> JSON gives the same file (only the view is added)."""
    source = json.loads((EXAMPLES / name).read_text())
    loaded = page.evaluate("(text) => window.studioCanvas.loadText(text)", (EXAMPLES / name).read_text())
    assert loaded is True
    back = canvas_workflow(page)
    assert graph_part(back) == source
    assert set(back["metadata"]["canvas"]) == {"offset", "scale"}
    # and once more through the editor's text format
    again = page.evaluate(
        "(wf) => { const c = window.studioCanvas; c.loadText(window.StudioCanvas.formatWorkflow(wf));"
        " return c.toWorkflow(); }",
        back,
    )
    assert graph_part(again) == source


def test_example_from_the_dropdown_is_drawn(page: Page) -> None:
    choose_example(page, "switch.json")
    source = json.loads((EXAMPLES / "switch.json").read_text())
    page.wait_for_function("window.studioCanvas.nodeById('use_photo') !== null")
    ids = page.evaluate("window.studioCanvas.nodes().map(n => n.properties.id)")
    assert ids == list(source["nodes"])
    links = page.evaluate("Object.keys(window.studioCanvas.graph.links).length")
    assert links == 7
    shot(page, "canvas-switch-example")


def test_build_a_graph_and_run_it(page: Page) -> None:
    canvas = page.locator("#studio-canvas canvas")
    box = canvas.bounding_box()
    assert box is not None
    # clear the canvas: select all, delete
    page.mouse.click(box["x"] + 30, box["y"] + 30)
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    wait_editor(page, "Object.keys(wf.nodes).length === 0")

    # the palette: double-click on the canvas, search, Enter
    page.mouse.dblclick(box["x"] + 120, box["y"] + 120)
    search = page.locator(".litesearchbox input")
    search.fill("EmptyIm")
    page.wait_for_selector(".litesearchbox .lite-search-item")
    search.press("Enter")
    page.wait_for_function("window.studioCanvas.nodeById('empty_image') !== null")
    page.evaluate("window.studioCanvas.nodeById('empty_image').pos = [60, 80]")
    save_id = page.evaluate("window.studioCanvas.addNode('SaveImage', [420, 80])")
    assert save_id == "save_image"
    page.evaluate("window.studioCanvas.lgcanvas.draw(true, true)")

    # connect: drag from the output socket to the input socket
    start = point(page, "slotScreenPosition('empty_image', 'image', false)")
    end = point(page, "slotScreenPosition('save_image', 'images', true)")
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move((start[0] + end[0]) / 2, end[1] + 20, steps=5)
    page.mouse.move(*end, steps=5)
    page.mouse.up()
    wait_editor(page, "wf.nodes.save_image && wf.nodes.save_image.inputs.images")

    # a widget: click the number, type a new value
    page.evaluate("window.studioCanvas.lgcanvas.draw(true, true)")
    page.mouse.click(*point(page, "widgetScreenPosition('empty_image', 'width')"))
    dialog = page.locator(".graphdialog input")
    dialog.fill("64.4")
    dialog.press("Enter")
    page.evaluate("window.studioCanvas.setWidget('empty_image', 'height', 48)")
    page.evaluate("window.studioCanvas.setWidget('empty_image', 'color', '#cc3366')")
    wait_editor(page, "wf.nodes.empty_image.inputs.width === 64 && wf.nodes.empty_image.inputs.height === 48")
    workflow = editor_workflow(page)
    assert workflow["nodes"]["save_image"]["inputs"]["images"] == {"node": "empty_image", "output": "image"}
    assert workflow["nodes"]["empty_image"]["type"] == "EmptyImage"
    assert workflow["nodes"]["empty_image"]["inputs"]["color"] == "#cc3366"
    shot(page, "canvas-built-graph")

    # run it, watching the status as it changes
    page.evaluate(
        "window.__statuses = []; new MutationObserver(() => window.__statuses.push("
        "document.querySelector('#studio-status').innerText)).observe("
        "document.querySelector('#studio-status'), {subtree: true, childList: true, characterData: true})"
    )
    page.locator("#studio-run").click()
    page.wait_for_function("document.querySelector('#studio-status').innerText.includes('Finished')")
    statuses = page.evaluate("window.__statuses")
    assert any("Running" in s or "Starting" in s or "Queued" in s or "queue" in s for s in statuses), statuses
    page.wait_for_selector("img[src*='.png']")
    page.wait_for_function("window.studioCanvas.nodeById('save_image')._studio.runState === 'done'")
    shot(page, "canvas-after-run")


def test_validation_error_shows_on_the_node(page: Page) -> None:
    broken = json.loads((EXAMPLES / "invert.json").read_text())
    del broken["nodes"]["save"]["inputs"]["images"]
    broken["nodes"]["invert"]["inputs"]["image"] = {"node": "load", "output": "nope"}
    set_editor_text(page, json.dumps(broken, indent=2))
    page.wait_for_function(
        "window.studioCanvas.nodeById('save') && !window.studioCanvas.nodeById('save').inputs[0].link"
    )
    page.get_by_role("button", name="Validate").click()
    page.wait_for_function("window.studioCanvas.nodeIssues('save').length > 0")
    assert page.evaluate("window.studioCanvas.nodeIssues('load')") == []
    save_issues = page.evaluate("window.studioCanvas.nodeIssues('save')")
    invert_issues = page.evaluate("window.studioCanvas.nodeIssues('invert')")
    assert any(text.startswith("images") for text in save_issues), save_issues
    assert any("nope" in text for text in invert_issues), invert_issues
    # the broken link is kept as written, so the file still says what it said
    assert canvas_workflow(page)["nodes"]["invert"]["inputs"]["image"] == {"node": "load", "output": "nope"}
    shot(page, "canvas-validation-error")


def test_download_and_open_again(page: Page, tmp_path: Path) -> None:
    choose_example(page, "poster.json")
    page.wait_for_function("window.studioCanvas.nodeById('compose') !== null")
    # move a node on the canvas, so the file differs from the example
    start = point(page, "screenPosition('gray')")
    page.mouse.move(start[0] + 40, start[1] - 15)
    page.mouse.down()
    page.mouse.move(start[0] + 40, start[1] + 60, steps=5)
    page.mouse.up()
    wait_editor(page, "wf.nodes.gray.position[1] > 100")
    expected = graph_part(canvas_workflow(page))
    page.wait_for_timeout(600)  # the download button follows the editor
    with page.expect_download() as info:
        page.get_by_role("button", name="Download workflow").click()
    saved = tmp_path / "saved.json"
    info.value.save_as(saved)
    assert graph_part(json.loads(saved.read_text())) == expected

    choose_example(page, "invert.json")
    page.wait_for_function("window.studioCanvas.nodeById('compose') === null")
    page.locator("input[type=file]:has(+ #studio-open)").set_input_files(str(saved))
    page.wait_for_function("window.studioCanvas.nodeById('compose') !== null")
    assert graph_part(canvas_workflow(page)) == expected
    shot(page, "canvas-opened-again")


def test_copy_paste_delete_and_undo(page: Page) -> None:
    choose_example(page, "invert.json")
    page.wait_for_function("window.studioCanvas.nodeById('invert') !== null")
    page.wait_for_timeout(300)
    first = point(page, "screenPosition('invert')")
    page.mouse.click(first[0] + 60, first[1] - 10)  # the title bar selects the node
    page.wait_for_function("Object.keys(window.studioCanvas.lgcanvas.selected_nodes).length === 1")
    page.keyboard.press("Control+C")
    box = page.locator("#studio-canvas canvas").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + 300, box["y"] + 450)
    page.keyboard.press("Control+V")
    wait_editor(page, "wf.nodes.image_invert && wf.nodes.image_invert.type === 'ImageInvert'")
    assert page.evaluate("window.studioCanvas.nodes().map(n => n.properties.id)") == [
        "load",
        "invert",
        "save",
        "image_invert",
    ]
    page.keyboard.press("Delete")
    wait_editor(page, "!wf.nodes.image_invert")
    page.keyboard.press("Control+Z")
    wait_editor(page, "wf.nodes.image_invert")
    page.keyboard.press("Control+Z")
    wait_editor(page, "!wf.nodes.image_invert")
    page.keyboard.press("Control+Y")
    wait_editor(page, "wf.nodes.image_invert")


def test_screenshot_for_the_docs(page: Page) -> None:
    choose_example(page, "poster.json")
    page.wait_for_function("window.studioCanvas.nodeById('compose') !== null")
    page.locator("#studio-run").click()
    page.wait_for_function("document.querySelector('#studio-status').innerText.includes('Finished')")
    page.wait_for_selector("img[src*='.png']")
    page.wait_for_timeout(300)
    path = shot(page, "studio-poster", full_page=True)
    assert path.stat().st_size > 10_000


def test_what_the_canvas_cannot_draw_is_kept(page: Page) -> None:
    """Unknown types and inputs, wrong values, broken links: saved back as written."""
    odd = {
        "version": 1,
        "nodes": {
            "mystery": {"type": "NoSuchNode", "inputs": {"x": 1, "y": {"node": "load", "output": "image"}}},
            "load": {"type": "LoadImage", "inputs": {"path": 5, "extra": "?"}, "position": [0, 0]},
            "inv": {"type": "ImageInvert", "inputs": {"image": "not a link"}, "position": [300, 0]},
            "mask": {
                "type": "MaskInvert",
                "inputs": {"mask": {"node": "load", "output": "image"}},
                "position": [300, 200],
            },
            "w": {
                "type": "EmptyImage",
                "inputs": {"width": 2.5, "height": None},
                "position": [0, 300],
                "size": [300, 200],
            },
        },
        "groups": [{"title": "G", "bounds": [0, 0, 100, 100], "color": "#123456"}],
        "notes": [{"text": "hello", "position": [500, 500]}],
    }
    back = page.evaluate(
        "(text) => { window.studioCanvas.loadText(text); return window.studioCanvas.toWorkflow(); }",
        json.dumps(odd),
    )
    kept = graph_part(back)
    assert isinstance(kept["nodes"]["mystery"].pop("position"), list)  # drawn somewhere
    assert kept == odd
    # sockets of different types do not connect; "*" takes anything
    assert page.evaluate("window.studioCanvas.connect('load', 'mask', 'inv', 'image')") is False
    page.evaluate("window.studioCanvas.addNode('Switch', [600, 0])")
    assert page.evaluate("window.studioCanvas.connect('load', 'image', 'switch', 'on_true')") is True
    assert page.evaluate("window.studioCanvas.connect('switch', 'value', 'inv', 'image')") is True


# --- a run as it goes: previews, node states; refreshed lists; files in and out -------------------

LIVE = {
    "version": 1,
    "nodes": {
        "slow": {
            "type": "Sleep",
            "inputs": {"value": 3, "steps": 25, "seconds_per_step": 0.1},
            "position": [40, 60],
        },
        "show": {
            "type": "ShowValue",
            "inputs": {"value": {"node": "slow", "output": "value"}},
            "position": [360, 60],
        },
        "paint": {
            "type": "SlowPreview",
            "inputs": {"steps": 12, "seconds_per_step": 0.25, "size": 4},
            "position": [40, 300],
        },
        "peek": {
            "type": "PreviewImage",
            "inputs": {"images": {"node": "paint", "output": "image"}},
            "position": [360, 300],
        },
    },
}

FINISHED = "document.querySelector('#studio-status').innerText.includes('Finished')"
PREVIEW_SHOWN = (
    "(() => { const img = document.querySelector('#studio-preview img'); return Boolean(img && img.src); })()"
)


def test_live_preview_and_node_states_on_the_canvas(page: Page) -> None:
    set_editor_text(page, json.dumps(LIVE, indent=2))
    page.wait_for_function("window.studioCanvas.nodeById('paint') !== null")
    # what the canvas shows, sampled every 50 ms
    page.evaluate(
        "window.__seen = []; window.__watch = setInterval(() => "
        "window.__seen.push(window.studioCanvas.runStates()), 50)"
    )
    page.locator("#studio-run").click()
    # the running node is marked on the canvas while it runs
    page.wait_for_function("window.studioCanvas.runStates().paint === 'running'", timeout=30_000)
    # a preview image shows before the run finishes
    page.wait_for_function(f"{PREVIEW_SHOWN} && !{FINISHED}")
    page.wait_for_timeout(600)  # a later preview
    shot(page, "studio-running-preview", full_page=True)
    page.wait_for_function(FINISHED, timeout=30_000)
    seen = page.evaluate("clearInterval(window.__watch); window.__seen")
    assert any(states.get("slow") == "running" and "show" not in states for states in seen), seen
    page.wait_for_function("window.studioCanvas.runStates().show === 'done'")
    states = page.evaluate("window.studioCanvas.runStates()")
    assert states == {"slow": "done", "show": "done", "paint": "done", "peek": "done"}, states
    shot(page, "studio-run-done")

    # the second run comes from the cache, and the canvas says so
    page.evaluate(
        "window.__runs = 0; new MutationObserver(() => { if (document.querySelector('#studio-status')"
        ".innerText.includes('Finished')) window.__runs += 1; }).observe("
        "document.querySelector('#studio-status'), {subtree: true, childList: true, characterData: true})"
    )
    page.locator("#studio-run").click()
    page.wait_for_function("window.__runs > 0 && window.studioCanvas.runStates().show === 'cached'")
    states = page.evaluate("window.studioCanvas.runStates()")
    assert states == {"slow": "cached", "show": "cached", "paint": "cached", "peek": "cached"}, states
    shot(page, "studio-run-cached")


def test_refresh_lists_models_added_after_the_page_opened(page: Page, studio: Studio) -> None:
    page.evaluate("window.studioCanvas.addNode('CheckpointLoader', [600, 60])")
    before = page.evaluate("window.studioCanvas.widgetChoices('checkpoint_loader', 'ckpt_name')")
    assert before is not None and "dropped-in-later.safetensors" not in before
    (studio.models_root / "checkpoints" / "dropped-in-later.safetensors").write_bytes(b"x")
    page.get_by_role("button", name="Refresh models").click()
    page.wait_for_function(
        "window.studioCanvas.widgetChoices('checkpoint_loader', 'ckpt_name')"
        ".includes('dropped-in-later.safetensors')"
    )
    # a node added now offers it too
    page.evaluate("window.studioCanvas.addNode('CheckpointLoader', [600, 300])")
    later = page.evaluate("window.studioCanvas.widgetChoices('checkpoint_loader_2', 'ckpt_name')")
    assert "dropped-in-later.safetensors" in later
    # coming back to the page refreshes the lists too
    (studio.models_root / "checkpoints" / "while-away.safetensors").write_bytes(b"x")
    page.wait_for_timeout(2100)
    page.evaluate("window.dispatchEvent(new Event('focus'))")
    page.wait_for_function(
        "window.studioCanvas.widgetChoices('checkpoint_loader', 'ckpt_name')"
        ".includes('while-away.safetensors')"
    )


def test_upload_an_image_for_load_image(page: Page, studio: Studio, tmp_path: Path) -> None:
    from PIL import Image

    picture = tmp_path / "uploaded-photo.png"
    Image.new("RGB", (12, 8), (20, 200, 90)).save(picture)
    choose_example(page, "invert.json")
    page.wait_for_function("window.studioCanvas.nodeById('load') !== null")
    page.evaluate("window.studioCanvas.lgcanvas.selectNodes([window.studioCanvas.nodeById('load')])")
    page.locator("input[type=file]:has(+ #studio-upload-image)").set_input_files(str(picture))
    wait_editor(page, "wf.nodes.load.inputs.path === 'uploaded-photo.png'")
    assert (studio.input_dir / "uploaded-photo.png").read_bytes() == picture.read_bytes()
    choices = page.evaluate("window.studioCanvas.widgetChoices('load', 'path')")
    assert "uploaded-photo.png" in choices and "assets/shapes.png" in choices
    page.locator("#studio-run").click()
    page.wait_for_function(FINISHED, timeout=30_000)
    shot(page, "studio-uploaded-image")


def test_paint_a_mask_and_save_it(page: Page, studio: Studio, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    picture = tmp_path / "to-inpaint.png"
    Image.new("RGB", (256, 192), (40, 90, 160)).save(picture)
    choose_example(page, "invert.json")
    page.wait_for_function("window.studioCanvas.nodeById('load') !== null")
    page.get_by_text("Paint a mask (for inpainting)").click()
    page.wait_for_selector("#studio-mask-editor", state="visible")
    page.locator("#studio-mask-editor input[type=file]").set_input_files(str(picture))
    page.wait_for_selector("#studio-mask-editor button[aria-label='Brush']")
    page.wait_for_timeout(800)
    box = page.locator("#studio-mask-editor canvas").first.bounding_box()
    assert box is not None
    y = box["y"] + box["height"] * 0.5
    page.mouse.move(box["x"] + box["width"] * 0.35, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.65, y, steps=12)
    page.mouse.up()
    page.wait_for_timeout(500)
    page.get_by_label("Mask file name").fill("painted")
    page.locator("#studio-mask").scroll_into_view_if_needed()
    page.locator("#studio-mask").screenshot(path=str(ARTIFACTS / "studio-mask-editor.png"))
    page.get_by_role("button", name="Save mask to input/").click()
    page.wait_for_function("document.querySelector('#studio-status').innerText.includes('painted.png')")
    mask = np.asarray(Image.open(studio.input_dir / "painted.png").convert("L"))
    assert mask.shape == (192, 256)
    assert set(np.unique(mask)) == {0, 255}
    assert mask[96, 128] == 255 and mask[0, 0] == 0  # white where painted, black elsewhere
    page.wait_for_function("window.studioCanvas.widgetChoices('load', 'path').includes('painted.png')")


def test_drop_a_studio_png_on_the_canvas(page: Page, tmp_path: Path) -> None:
    import base64

    from PIL import Image, PngImagePlugin

    source = (EXAMPLES / "switch.json").read_text()
    info = PngImagePlugin.PngInfo()
    info.add_text("workflow", source)
    info.add_text("run_seed", "4242")
    made = tmp_path / "made.png"
    Image.new("RGB", (8, 8), (10, 10, 10)).save(made, pnginfo=info)
    choose_example(page, "invert.json")
    page.wait_for_function("window.studioCanvas.nodeById('use_photo') === null")
    page.evaluate(
        """(data) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "made.png", {type: "image/png"}));
            const target = document.querySelector("#studio-canvas canvas");
            const box = target.getBoundingClientRect();
            const at = {clientX: box.left + 200, clientY: box.top + 200, bubbles: true, cancelable: true};
            target.dispatchEvent(new DragEvent("dragover", {...at, dataTransfer: transfer}));
            target.dispatchEvent(new DragEvent("drop", {...at, dataTransfer: transfer}));
        }""",
        base64.b64encode(made.read_bytes()).decode(),
    )
    page.wait_for_function("window.studioCanvas.nodeById('use_photo') !== null")
    assert graph_part(canvas_workflow(page)) == json.loads(source)
    assert page.locator("#studio-seed textarea, #studio-seed input").first.input_value() == "4242"
    shot(page, "studio-dropped-png")
