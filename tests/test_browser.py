"""The studio in a real browser: the journeys a person makes on the page, at two window sizes.

One studio server per module (``ui.serve.serve``: the built page, the HTTP API, jobs in the
server's threads, the built-in nodes and the test pack) and one browser; each test gets a
fresh browser context, so a fresh localStorage: the page starts on the txt2img example.
Playwright drives Debian's chromium (never a downloaded browser). Skipped when playwright,
/usr/bin/chromium or the built page (``npm run build``) is missing, except in CI (the ``CI``
environment variable set, as .ci/run does), where that is a failure. Screenshots of each
journey go to test-artifacts/studio-<journey>-<size>.png.

The page is found by its test ids (``data-testid``): ``node-<id>``, ``widget-<id>-<input>``,
``run-button``, ``queue-item``, ``history-item`` ... and its store, ``window.studioStore``.
The studio's jobs run on one torch thread here (see the ``studio`` fixture).
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser_support import (
    CHROMIUM,
    EXAMPLES,
    TXT2IMG_NODES,
    Studio,
    StudioPage,
    inside,
    launch_browser,
    start_studio,
    wait_until,
)

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

TIMEOUT_MS = 20_000
VIEWPORTS = {"1280x800": (1280, 800), "1600x1000": (1600, 1000)}


def missing(reason: str) -> None:
    """Skip on a developer's machine; fail in CI (``CI`` set), where a silent skip would hide it."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the browser tests", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


try:
    from playwright import sync_api
    from playwright.sync_api import expect
except ImportError:
    missing("playwright is not installed (bash setup.sh --dev)")

if not CHROMIUM.is_file():
    missing(f"{CHROMIUM} is missing (bash setup.sh --dev installs it)")

from ui.page import bundle_built  # noqa: E402

if not bundle_built():
    missing("the studio page is not built (bash setup.sh runs npm ci and npm run build)")


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    """The studio, its jobs on one torch thread: on a 2-core machine the page's rendering takes
    a core while a job runs, and torch's threads (one per core) then wait on each other, which
    makes a 0.5 s toy run take 15 s (bench/studio.py --threads shows it)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    served = start_studio(tmp_path_factory.mktemp("studio"))
    try:
        yield served
    finally:
        served.close()
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = launch_browser(playwright)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(params=list(VIEWPORTS), ids=list(VIEWPORTS))
def size(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def studio_page(browser: Any, studio: Studio, size: str) -> Iterator[StudioPage]:
    """A fresh context (empty localStorage) at the test's window size; no uncaught errors allowed."""
    studio.wait_idle()
    width, height = VIEWPORTS[size]
    context = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    sp = StudioPage(page, studio, size)
    try:
        yield sp
    finally:
        context.close()
    assert not sp.errors, sp.errors


_seeds = iter(range(1000, 10**6, 7919))


def fresh_seed() -> int:
    """A seed no other journey used, so that runs are not answered from the server's cache."""
    return next(_seeds)


def write_workflow(folder: Path, name: str, nodes: dict[str, Any]) -> Path:
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"version": 1, "nodes": nodes}))
    return path


def link(node: str, output: str) -> dict[str, str]:
    return {"node": node, "output": output}


def image_loaded(sp: StudioPage, testid: str, timeout: float = 60_000) -> str:
    """Wait for the <img> with that test id to show a loaded picture; its src."""
    sp.page.wait_for_function(
        "(id) => { const img = document.querySelector(`[data-testid='${id}']`);"
        " return img && img.complete && img.naturalWidth > 0 && img.getAttribute('src'); }",
        arg=testid,
        timeout=timeout,
    )
    return str(sp.testid(testid).get_attribute("src"))


def history_item(sp: StudioPage, job_id: str) -> Any:
    return sp.page.locator(f'[data-testid="history-item"][data-job-id="{job_id}"]')


def set_widget(sp: StudioPage, node_id: str, name: str, value: Any) -> None:
    """Type a value into a node's widget (a text field, number field or textarea) and leave it."""
    field = sp.widget(node_id, name)
    field.fill(str(value))
    field.press("Tab")


# --- 1. first open -----------------------------------------------------------------------------


def test_first_open_draws_the_example_with_queue_and_run_in_view(studio_page: StudioPage, size: str) -> None:
    sp = studio_page
    sp.open_txt2img()
    width, height = sp.page.viewport_size["width"], sp.page.viewport_size["height"]
    for node_id in TXT2IMG_NODES:
        expect(sp.node(node_id)).to_be_in_viewport()
    expect(sp.widget("pos", "text")).to_have_value(re.compile("a red circle"))
    for testid in ("run-button", "queue-panel", "batch-count", "run-progress"):
        box = sp.testid(testid).bounding_box()
        assert inside(box, width, height), f"{testid} at {box}: not in the {size} window"
    assert sp.page.evaluate("document.scrollingElement.scrollHeight") <= height + 1, "the page scrolls"
    sp.page.wait_for_timeout(500)  # late errors (a failed fetch of the node list) show by now
    sp.shot("first-open")
    assert not sp.console_errors, sp.console_errors


# --- 2. run --------------------------------------------------------------------------------------


def test_run_shows_the_image_on_the_node_and_in_history(studio_page: StudioPage) -> None:
    sp = studio_page
    sp.open_txt2img()
    set_widget(sp, "s", "seed", fresh_seed())
    sp.watch_progress()
    (job,) = sp.run()
    assert job["status"] == "done", job
    src = image_loaded(sp, "node-save-image")
    assert "/api/files/" in src, src
    item = history_item(sp, job["id"])
    expect(item).to_be_visible(timeout=10_000)
    sp.page.wait_for_function(
        "(id) => { const img = document.querySelector(`[data-testid=history-item][data-job-id='${id}'] img`);"
        " return img && img.complete && img.naturalWidth > 0; }",
        arg=job["id"],
    )
    wait_until(lambda: sp.progress_max() >= 100, 5, "the run's progress bar to reach 100%")
    sp.shot("run")


# --- 3. edit the prompt and run again ----------------------------------------------------------


def test_edited_prompt_is_what_runs_and_what_history_shows(studio_page: StudioPage, studio: Studio) -> None:
    sp = studio_page
    sp.open_txt2img()
    prompt = "a green square at the bottom right"
    prompt_box = sp.widget("pos", "text")
    assert prompt_box.evaluate("el => el.tagName") == "TEXTAREA"
    prompt_box.fill(prompt)
    set_widget(sp, "s", "seed", fresh_seed())
    (job,) = sp.run()
    assert job["status"] == "done", job
    assert studio.job(job["id"])["workflow"]["nodes"]["pos"]["inputs"]["text"] == prompt
    expect(history_item(sp, job["id"])).to_contain_text(prompt, timeout=10_000)
    sp.shot("edited-prompt")


# --- 4. build a graph from scratch by search ---------------------------------------------------

#: What a ComfyUI user types, the node it must find first, where it goes (column, row of a grid).
BUILD = (
    ("Load Checkpoint", "CheckpointLoader", (0, 0)),
    ("prompt", "CLIPTextEncode", (1, 0)),
    ("prompt", "CLIPTextEncode", (1, 1)),
    ("empty latent", "EmptyLatent", (2, 1)),
    ("KSampler", "Sampler", (2, 0)),
    ("vae decode", "VAEDecode", (3, 0)),
    ("save image", "SaveImage", (4, 0)),
)


def add_by_search(sp: StudioPage, query: str, node_type: str, at: tuple[float, float], shown: str) -> str:
    """Double-click the empty canvas at ``at``, search, take the first result (which must show
    ``shown``, the node's display name); the new node's id."""
    before = sp.node_ids()
    sp.page.mouse.dblclick(*at)
    expect(sp.testid("search-dialog")).to_be_visible()
    sp.testid("search-input").fill(query)
    first = sp.testid("search-result").first
    expect(first).to_be_visible()
    first_text = first.inner_text()
    assert shown in first_text, f"{query!r}: the first result is {first_text!r}, not {shown!r}"
    sp.testid("search-input").press("Enter")
    expect(sp.testid("search-dialog")).to_be_hidden()
    added = wait_until(lambda: sp.node_ids() - before, 5, f"a node from searching {query!r}")
    (node_id,) = added
    found = sp.workflow()["nodes"][node_id]["type"]
    assert found == node_type, f"{query!r}: the first result was {first_text!r} ({found}), not {node_type}"
    expect(sp.node(node_id)).to_be_visible()
    return str(node_id)


def test_build_txt2img_from_scratch_with_search_and_links(studio_page: StudioPage, studio: Studio) -> None:
    sp = studio_page
    sp.open_txt2img()
    sp.testid("tab-new").click()
    wait_until(lambda: not sp.node_ids(), 5, "the new tab to be empty")
    canvas = sp.testid("canvas").bounding_box()
    assert canvas is not None
    for _ in range(3):  # room for seven nodes in the window
        sp.page.locator(".react-flow__controls-zoomout").click()
    column = (canvas["width"] - 60) / 5
    names = {node["type"]: node["display_name"] for node in studio.get("/api/nodes")}
    ids = []
    for query, node_type, (col, row) in BUILD:
        at = (canvas["x"] + 40 + col * column, canvas["y"] + 40 + row * canvas["height"] * 0.45)
        ids.append(add_by_search(sp, query, node_type, at, names[node_type]))
    ck, pos, neg, lat, sampler, decode, save = ids
    # a toy-sized picture from the toy model, whatever the defaults are
    choose(sp, ck, "ckpt_name", "toy-sd")
    set_widget(sp, lat, "width", 32)
    set_widget(sp, lat, "height", 32)
    set_widget(sp, sampler, "steps", 4)
    sp.widget(pos, "text").fill("a red circle at the top left")
    for source, target in (
        ((ck, "model"), (sampler, "model")),
        ((ck, "clip"), (pos, "clip")),
        ((ck, "clip"), (neg, "clip")),
        ((pos, "conditioning"), (sampler, "positive")),
        ((neg, "conditioning"), (sampler, "negative")),
        ((lat, "latent"), (sampler, "latent")),
        ((sampler, "latent"), (decode, "latent")),
        ((ck, "vae"), (decode, "vae")),
        ((decode, "image"), (save, "images")),
    ):
        sp.connect(source, target)
    inputs = {node_id: node["inputs"] for node_id, node in sp.workflow()["nodes"].items()}
    assert inputs[sampler]["model"] == link(ck, "model"), inputs[sampler]
    assert inputs[sampler]["latent"] == link(lat, "latent"), inputs[sampler]
    assert inputs[save]["images"] == link(decode, "image"), inputs[save]
    sp.shot("built-by-search")
    (job,) = sp.run()
    assert job["status"] == "done", job
    image_loaded(sp, f"node-{save}-image")
    sp.shot("built-by-search-ran")


def choose(sp: StudioPage, node_id: str, name: str, value: str) -> None:
    """Pick a value in a node's combo: a <select>, or a searchable field (type, Enter)."""
    field = sp.widget(node_id, name)
    if field.evaluate("el => el.tagName") == "SELECT":
        field.select_option(value)
        return
    field.click()
    sp.page.keyboard.type(value)
    sp.page.keyboard.press("Enter")
    wait_until(lambda: sp.workflow()["nodes"][node_id]["inputs"].get(name) == value, 5, f"{name} = {value}")


# --- 5. inpaint with the mask editor -------------------------------------------------------------


def inpaint_from_its_own_mask(folder: Path) -> Path:
    """workflows/inpaint.json with the repainted region taken from the picture's own mask (the
    LoadImage ``mask`` output: where the mask editor painted) instead of the separate mask file."""
    workflow = json.loads((EXAMPLES / "inpaint.json").read_text())
    nodes = workflow["nodes"]
    nodes["masked"]["inputs"]["mask"] = link("img", "mask")
    nodes["paste"]["inputs"]["mask"] = link("img", "mask")
    for unused in ("maskimg", "mask"):
        del nodes[unused]
    path = folder / "inpaint.json"
    path.write_text(json.dumps(workflow))
    return path


def test_inpaint_with_a_painted_mask(studio_page: StudioPage, studio: Studio, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    sp = studio_page
    sp.open_txt2img()
    original = EXAMPLES / "assets" / "toy-scene.png"
    original_bytes = original.read_bytes()
    inputs_before = {p.name for p in studio.input_dir.rglob("*")}
    sp.open_file(inpaint_from_its_own_mask(tmp_path))
    sp.node("img").wait_for()
    set_widget(sp, "s", "seed", fresh_seed())
    sp.testid("node-img-mask").click()
    editor = sp.testid("mask-editor")
    expect(editor).to_be_visible()
    sp.page.wait_for_timeout(300)  # the picture loads into the editor
    stage = sp.testid("mask-canvas")
    box = stage.bounding_box()
    assert box is not None and box["width"] > 50, f"the mask canvas is {box}"
    # a stroke across the middle third (the toy scene's centre cell), then one more below it
    for dy in (0.45, 0.55):
        y = box["y"] + box["height"] * dy
        sp.drag((box["x"] + box["width"] * 0.36, y), (box["x"] + box["width"] * 0.64, y), steps=10)
    sp.shot("mask-editor")
    sp.testid("mask-save").click()
    expect(editor).to_be_hidden()
    added = wait_until(
        lambda: {p.name for p in studio.input_dir.rglob("*")} - inputs_before, 5, "the mask file"
    )
    (saved_name,) = added
    saved = next(studio.input_dir.rglob(saved_name))
    assert original.read_bytes() == original_bytes, "the original picture was changed"
    saved_path = saved.relative_to(studio.input_dir).as_posix()
    assert sp.workflow()["nodes"]["img"]["inputs"]["path"] == saved_path
    field = sp.widget("img", "path")
    shown = field.input_value() if field.evaluate("el => 'value' in el") else field.inner_text()
    assert saved_path in shown or saved_name in shown, f"the LoadImage widget shows {shown!r}"
    expect(sp.testid("toast").filter(has_text=saved_name).first).to_be_visible()

    (job,) = sp.run()
    assert job["status"] == "done", job
    image_loaded(sp, "node-save-image")
    sp.shot("inpaint-ran")
    painted = np.asarray(Image.open(saved).convert("RGBA"))[..., 3] == 0
    assert painted.any() and not painted.all(), f"{painted.sum()} painted pixels"
    output = np.asarray(Image.open(studio.output_dir / job["outputs"][0]).convert("RGB"), dtype=float)
    source = np.asarray(Image.open(io.BytesIO(original_bytes)).convert("RGB"), dtype=float)
    change = np.abs(output - source).mean(axis=-1)
    assert change[painted].mean() > change[~painted].mean() + 5, (
        change[painted].mean(),
        change[~painted].mean(),
    )


# --- 6. queue three, cancel the middle one ----------------------------------------------------------


def test_queue_three_runs_and_cancel_the_middle_one(
    studio_page: StudioPage, studio: Studio, tmp_path: Path
) -> None:
    sp = studio_page
    sp.open_txt2img()
    size = fresh_seed() % 200 + 8  # a workflow no earlier run cached
    slow = {
        "slow": {"type": "SlowPreview", "inputs": {"steps": 30, "seconds_per_step": 0.1, "size": size}},
        "show": {"type": "PreviewImage", "inputs": {"images": link("slow", "image")}},
    }
    sp.open_file(write_workflow(tmp_path, "slow", slow))
    sp.node("slow").wait_for()
    batch = sp.testid("batch-count")
    batch.fill("3")
    submitted = len(sp.submitted)
    sp.testid("run-button").click()
    first, middle, last = sp.wait_submitted(3, after=submitted)
    items = sp.testid("queue-panel").get_by_test_id("queue-item")
    expect(items).to_have_count(3, timeout=5_000)
    queue = studio.get("/api/queue")
    assert [j["id"] for j in queue["running"]] == [first], queue
    assert [j["id"] for j in queue["queued"]] == [middle, last], queue
    sp.shot("queue-three")
    sp.page.locator(f'[data-testid="queue-item"][data-job-id="{middle}"]').get_by_test_id(
        "queue-cancel"
    ).click()
    statuses = [studio.wait_job(job_id)["status"] for job_id in (first, middle, last)]
    assert statuses == ["done", "cancelled", "done"], statuses
    history = {entry["id"]: entry["status"] for entry in studio.get("/api/history?limit=50")["jobs"]}
    assert [history[j] for j in (first, middle, last)] == ["done", "cancelled", "done"]
    expect(items).to_have_count(0, timeout=5_000)
    for job_id in (first, middle, last):
        expect(history_item(sp, job_id)).to_be_visible(timeout=10_000)


# --- 7. reload ------------------------------------------------------------------------------------


def quick_jobs(studio: Studio, count: int) -> list[str]:
    """Jobs sent to the API from elsewhere (a script), each saving a small picture; once done."""
    ids = []
    for _ in range(count):
        noise = {
            "n": {"type": "NoiseFromSeed", "inputs": {"seed": fresh_seed(), "size": 8}},
            "save": {"type": "SaveImage", "inputs": {"images": link("n", "image"), "filename_prefix": "q"}},
        }
        status, job = studio.call("POST", "/api/jobs", {"workflow": {"version": 1, "nodes": noise}})
        assert status == 201, job
        ids.append(job["id"])
    for job_id in ids:
        assert studio.wait_job(job_id)["status"] == "done"
    return ids


def thumbnail_loaded(sp: StudioPage, job_id: str) -> None:
    item = history_item(sp, job_id)
    item.scroll_into_view_if_needed()
    sp.page.wait_for_function(
        "(id) => { const img = document.querySelector(`[data-testid=history-item][data-job-id='${id}'] img`);"
        " return img && img.complete && img.naturalWidth > 0; }",
        arg=job_id,
    )


def test_reload_brings_back_tabs_edits_and_history(studio_page: StudioPage, studio: Studio) -> None:
    sp = studio_page
    sp.open_txt2img()
    set_widget(sp, "s", "seed", fresh_seed())
    (job,) = sp.run()
    newest = quick_jobs(studio, 12)[-1]  # more history than the panel shows at once
    set_widget(sp, "s", "steps", 7)
    sp.testid("tab-new").click()
    sp.page.wait_for_function("window.studioStore.getState().tabs.length === 2")
    sp.page.wait_for_timeout(800)  # autosave is debounced by 300 ms
    sp.page.reload()
    sp.wait_ready()
    assert any(d.startswith("beforeunload") for d in sp.dialogs), f"no question before leaving: {sp.dialogs}"
    expect(sp.testid("tab-0")).to_be_visible()
    expect(sp.testid("tab-1")).to_be_visible()
    assert sp.tab_count() == 2
    sp.testid("tab-0").click()
    expect(sp.widget("s", "steps")).to_have_value("7")
    expect(history_item(sp, newest)).to_be_visible(timeout=10_000)
    thumbnail_loaded(sp, newest)
    sp.shot("reloaded")
    # the gallery scrolls; its cards keep square thumbnails and their text
    first = history_item(sp, newest)
    picture, words = first.locator("img").bounding_box(), first.inner_text()
    assert picture is not None and picture["height"] >= 0.9 * picture["width"] > 50, f"thumbnail {picture}"
    text_box = first.get_by_text(words.splitlines()[0]).first.bounding_box() if words.strip() else None
    card = first.bounding_box()
    assert text_box and card and text_box["y"] + text_box["height"] <= card["y"] + card["height"] + 1, (
        f"the card's text {words!r} at {text_box} is cut off by the card {card}"
    )
    thumbnail_loaded(sp, job["id"])


# --- 8. share a PNG and drop it back ----------------------------------------------------------------


def test_dropped_png_opens_its_workflow_with_its_seed(studio_page: StudioPage, studio: Studio) -> None:
    sp = studio_page
    sp.open_txt2img()
    seed = fresh_seed()
    set_widget(sp, "s", "seed", seed)
    (job,) = sp.run()
    assert job["status"] == "done", job
    png = studio.output_dir / job["outputs"][0]
    entry = next(e for e in studio.get("/api/history?limit=50")["jobs"] if e["id"] == job["id"])
    assert entry["seeds"]["s"] == seed, entry
    tabs = sp.tab_count()
    sp.drop_file("[data-testid=canvas]", png.name, png.read_bytes(), "image/png")
    sp.page.wait_for_function(f"window.studioStore.getState().tabs.length === {tabs + 1}")
    expect(sp.node("s")).to_be_visible()
    workflow = sp.workflow()
    assert workflow["nodes"]["s"]["inputs"]["seed"] == entry["seeds"]["s"]
    assert set(workflow["nodes"]) == set(TXT2IMG_NODES)
    expect(sp.widget("s", "seed")).to_have_value(str(seed))
    sp.shot("dropped-png")


# --- 9. an invalid graph --------------------------------------------------------------------------


def test_invalid_graph_shows_the_issue_on_the_node_and_queues_nothing(
    studio_page: StudioPage, studio: Studio
) -> None:
    sp = studio_page
    sp.open_txt2img()
    edge = sp.edge_into("s", "model")
    sp.page.mouse.click(*sp.edge_point(edge))
    sp.page.keyboard.press("Delete")
    wait_until(lambda: "model" not in sp.workflow()["nodes"]["s"]["inputs"], 5, "the link to be deleted")
    history_before = studio.history_ids()
    submitted = len(sp.submitted)
    sp.testid("run-button").click()
    error = sp.testid("node-s-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("model")
    expect(sp.testid("toast").filter(has_text="model").first).to_be_visible()
    sp.shot("invalid-graph")
    assert len(sp.submitted) == submitted
    assert studio.history_ids() == history_before
    queue = studio.get("/api/queue")
    assert not queue["running"] and not queue["queued"], queue


# --- 10. an error while running --------------------------------------------------------------------


def test_runtime_error_shows_on_the_failing_node(studio_page: StudioPage, tmp_path: Path) -> None:
    sp = studio_page
    sp.open_txt2img()
    message = "the test node gave up on purpose"
    failing = {
        "f": {"type": "Fail", "inputs": {"value": 1, "message": message}},
        "show": {"type": "ShowValue", "inputs": {"value": link("f", "value")}},
    }
    sp.open_file(write_workflow(tmp_path, "failing", failing))
    sp.node("f").wait_for()
    (job,) = sp.run()
    assert job["status"] == "failed", job
    error = sp.testid("node-f-error")
    expect(error).to_contain_text(message)
    assert "Traceback" not in error.inner_text()
    expect(sp.node("f")).to_have_class(re.compile(r"\bstate-failed\b"))
    sp.shot("runtime-error")


# --- 11. canvas habits -------------------------------------------------------------------------------


def test_bypass_mute_reroute_tabs_and_library(studio_page: StudioPage, studio: Studio, size: str) -> None:
    sp = studio_page
    sp.open_txt2img()
    # bypass and mute the selected node
    sp.testid("node-lat-title").click()
    sp.page.keyboard.press("Control+b")
    expect(sp.node("lat")).to_have_class(re.compile(r"\bmode-bypass\b"))
    assert sp.workflow()["nodes"]["lat"].get("mode") == "bypass"
    sp.page.keyboard.press("Control+m")
    expect(sp.node("lat")).to_have_class(re.compile(r"\bmode-mute\b"))
    assert sp.workflow()["nodes"]["lat"].get("mode") == "mute"
    sp.page.keyboard.press("Control+m")
    expect(sp.node("lat")).not_to_have_class(re.compile(r"\bmode-(mute|bypass)\b"))
    assert "mode" not in sp.workflow()["nodes"]["lat"]
    # a reroute dot on a link
    edge = sp.edge_into("d", "vae")
    sp.page.mouse.dblclick(*sp.edge_point(edge))
    wait_until(lambda: sp.workflow()["metadata"].get("studio", {}).get("reroutes"), 5, "a reroute")
    workflow = sp.workflow()
    assert workflow["nodes"]["d"]["inputs"]["vae"] == link("ck", "vae"), "the input keeps its direct link"
    assert len(workflow["metadata"]["studio"]["reroutes"]) == 1
    sp.shot("bypass-mute-reroute")
    # two tabs, switching between them
    sp.testid("tab-new").click()
    expect(sp.node("ck")).to_have_count(0)
    sp.testid("tab-0").click()
    expect(sp.node("ck")).to_be_visible()
    # the library: save, rename, delete
    name, renamed = f"journey {size}", f"journey {size} renamed"
    sp.prompt_answers.append(name)
    sp.testid("toolbar-save").click()
    saved = studio.library_dir / f"{name}.json"
    wait_until(saved.is_file, 5, f"{saved}")
    assert json.loads(saved.read_text())["metadata"]["studio"]["reroutes"]
    sp.testid("toolbar-library").click()
    dialog = sp.testid("library-dialog")
    expect(dialog).to_be_visible()
    item = dialog.get_by_test_id("library-item").filter(has_text=name).first
    sp.prompt_answers.append(renamed)
    item.get_by_test_id("library-rename").click()
    moved = studio.library_dir / f"{renamed}.json"
    wait_until(moved.is_file, 5, f"{moved}")
    assert not saved.exists()
    item = dialog.get_by_test_id("library-item").filter(has_text=renamed)
    expect(item).to_have_count(1)
    item.get_by_test_id("library-delete").click()
    wait_until(lambda: not moved.exists(), 5, f"{moved} deleted")
    expect(dialog.get_by_test_id("library-item").filter(has_text=name)).to_have_count(0)
    sp.shot("library")


# --- 12. seed control -----------------------------------------------------------------------------------


def test_seed_control_increment_gives_the_next_run_the_next_seed(
    studio_page: StudioPage, studio: Studio
) -> None:
    sp = studio_page
    sp.open_txt2img()
    seed = fresh_seed()
    set_widget(sp, "s", "seed", seed)
    sp.testid("seed-control-s-seed").select_option("increment")
    jobs = sp.run() + sp.run()
    seeds = [studio.job(job["id"])["workflow"]["nodes"]["s"]["inputs"]["seed"] for job in jobs]
    assert seeds == [seed, seed + 1]
    assert [studio.job(job["id"])["seeds"]["s"] for job in jobs] == [seed, seed + 1]
    expect(sp.widget("s", "seed")).to_have_value(str(seed + 2))
    sp.shot("seed-control")
