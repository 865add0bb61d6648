"""The studio plays what the video nodes save: an MP4 in a <video> that advances on the node and in
the large view, an animated WebP in an <img>. A tiny Stable Video Diffusion model (random weights,
8 frames of 64x64) makes the frames; Debian's chromium shows them (see tests/test_browser.py for
when these tests skip)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser_support import CHROMIUM, Studio, StudioPage, launch_browser, start_studio, wait_until

pytestmark = pytest.mark.slow

sync_api = pytest.importorskip("playwright.sync_api")
if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} is missing (bash setup.sh --dev installs it)", allow_module_level=True)

from ui.page import bundle_built  # noqa: E402

if not bundle_built():
    pytest.skip("the studio page is not built (npm run build)", allow_module_level=True)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    from PIL import Image

    from tests.fixtures.tiny_svd import save_svd_folder, tiny_svd_pipeline

    root = tmp_path_factory.mktemp("video-studio")
    models = root / "models"
    save_svd_folder(tiny_svd_pipeline(), models / "checkpoints" / "tiny-svd")
    served = start_studio(root, packs=(), models=models)
    picture = Image.open(REPO / "workflows" / "assets" / "shapes.png").convert("RGB").resize((64, 64))
    picture.save(served.input_dir / "start.png")
    try:
        yield served
    finally:
        served.close()


def video_file(root: Path) -> Path:
    from tests.test_video import video_workflow

    nodes = video_workflow("tiny-svd", seed=3)
    nodes["cond"]["inputs"].update(width=64, height=64, video_frames=8)
    nodes.pop("show", None)
    frames = {"node": "decode", "output": "image"}
    nodes["webp"] = {
        "type": "SaveAnimatedWEBP",
        "inputs": {"images": frames, "filename_prefix": "video/svd", "fps": 4.0},
    }
    nodes["mp4"] = {
        "type": "SaveVideo",
        "inputs": {"images": frames, "filename_prefix": "video/svd", "fps": 4.0},
    }
    for index, node in enumerate(nodes.values()):
        node["position"] = [40 + 300 * (index % 4), 40 + 330 * (index // 4)]
    path = root / "svd-tiny.json"
    path.write_text(json.dumps({"version": 1, "nodes": nodes}))
    return path


def advances(video: sync_api.Locator) -> bool:
    """The video plays: its time moves on within two seconds."""
    start = video.evaluate("v => v.currentTime")
    return bool(wait_until(lambda: video.evaluate("v => v.currentTime") != start, 3.0, "the video to play"))


def test_the_studio_plays_saved_videos_and_animations(studio: Studio, tmp_path: Path) -> None:
    with sync_api.sync_playwright() as playwright:
        browser = launch_browser(playwright)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            page = StudioPage(context.new_page(), studio, "1400x900")
            page.open()
            page.open_file(video_file(tmp_path))
            jobs = page.run(timeout=300)
            assert jobs[0]["status"] == "done", jobs[0]
            video = page.testid("node-mp4-video")
            video.wait_for(timeout=30_000)
            assert advances(video)
            info = video.evaluate("v => ({w: v.videoWidth, h: v.videoHeight, loop: v.loop, muted: v.muted})")
            assert info == {"w": 64, "h": 64, "loop": True, "muted": True}
            animation = page.testid("node-webp-image")
            assert animation.evaluate("i => i.complete && i.naturalWidth") == 64
            assert ".webp" in animation.get_attribute("src")
            page.shot("video-nodes")
            page.testid("history-item").first.click()
            page.testid("viewer").wait_for()
            media = page.testid("viewer-media")
            for _ in range(4):  # step through the job's files until the MP4 shows
                if media.evaluate("m => m.tagName") == "VIDEO":
                    break
                page.page.keyboard.press("ArrowRight")
                time.sleep(0.3)
            assert media.evaluate("m => m.tagName") == "VIDEO"
            assert advances(media)
            page.shot("video-viewer")
            assert not page.errors, page.errors
        finally:
            browser.close()
