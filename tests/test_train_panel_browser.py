"""The Train panel in Debian's chromium: pictures with captions are uploaded into a dataset, a
short LoRA training on toy-sd is queued as a job, its progress, loss and loss plot show while it
runs, and at the end the new file is named and a click puts a Load LoRA node with it on the
canvas (LoraLoader offering it at once). See tests/test_browser.py for when these tests skip."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.browser_support import CHROMIUM, Studio, StudioPage, launch_browser, start_studio

pytestmark = pytest.mark.slow

sync_api = pytest.importorskip("playwright.sync_api")
if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} is missing (bash setup.sh --dev installs it)", allow_module_level=True)

from ui.page import bundle_built  # noqa: E402

if not bundle_built():
    pytest.skip("the studio page is not built (npm run build)", allow_module_level=True)

COLORS = {"red": (220, 40, 40), "blue": (40, 70, 220), "green": (40, 170, 60), "yellow": (230, 210, 40)}
SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    root = tmp_path_factory.mktemp("train-panel")
    (root / "models" / "loras").mkdir(parents=True)
    served = start_studio(root, packs=(), models=root / "models", models_first=True)
    try:
        yield served
    finally:
        served.close()


def files() -> list[dict[str, object]]:
    """Four pictures of a small cross in turn of colours, and the captions of three of them."""
    chosen: list[dict[str, object]] = []
    for i, (name, color) in enumerate(COLORS.items()):
        picture = Image.new("RGB", (32, 32), (245, 245, 245))
        x, y = 4 + 3 * i, 6 + 2 * i
        for box in ((x + 4, y, x + 9, y + 13), (x, y + 4, x + 13, y + 9)):
            picture.paste(color, box)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        chosen.append({"name": f"p{i}.png", "mimeType": "image/png", "buffer": buffer.getvalue()})
        if i < 3:
            chosen.append(
                {"name": f"p{i}.txt", "mimeType": "text/plain", "buffer": f"a {name} <plus>".encode()}
            )
    return chosen


def test_a_lora_is_trained_from_the_panel_and_put_on_the_canvas(studio: Studio) -> None:
    with sync_api.sync_playwright() as playwright:
        browser = launch_browser(playwright)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            page = StudioPage(context.new_page(), studio, "1400x900")
            page.open_txt2img()
            page.testid("toolbar-train").click()
            panel = page.testid("train-panel")
            panel.wait_for()

            page.testid("train-files").set_input_files(files())
            captions = page.testid("train-caption")
            captions.nth(3).wait_for()
            assert [captions.nth(i).input_value() for i in range(4)] == [
                "a red <plus>",
                "a blue <plus>",
                "a green <plus>",
                "",  # no .txt: typed in the panel
            ]
            captions.nth(3).fill("a yellow <plus>")
            # a picture dropped on the list joins it; × takes it out again
            extra = next(f for f in files() if f["name"] == "p0.png")
            page.drop_file("[data-testid=train-drop]", "extra.png", bytes(extra["buffer"]), "image/png")
            captions.nth(4).wait_for()
            page.page.get_by_role("button", name="Remove extra.png").click()
            expect = "document.querySelectorAll('[data-testid=train-caption]').length === 4"
            page.page.wait_for_function(expect)
            assert not page.errors, page.errors
            page.testid("train-name").fill("plus")
            page.testid("train-token").fill("<plus>")
            page.testid("train-steps").fill("8")
            panel.locator("summary", has_text="Advanced").click()
            page.testid("train-batch").fill("2")
            page.shot("train-panel-form")
            page.testid("train-start").click()

            # while it runs (or once it has run): steps with the loss, a live plot, then the file
            page.testid("train-plot").wait_for(timeout=120_000)
            result = page.testid("train-result")
            result.wait_for(timeout=180_000)
            assert "models/loras/plus.safetensors" in result.inner_text()
            status = page.testid("train-status").inner_text()
            assert "step 8/8" in status and "loss 0." in status, status
            assert page.testid("train-progress").get_attribute("aria-valuenow") == "100"
            assert page.testid("train-plot").evaluate("i => i.complete && i.naturalWidth") > 100
            page.shot("train-panel-done")

            # the dataset is in the input folder, each picture with its caption
            dataset = studio.input_dir / "datasets" / "plus"
            assert sorted(p.name for p in dataset.iterdir()) == [
                f"p{i}.{suffix}" for i in range(4) for suffix in ("png", "txt")
            ]
            assert (dataset / "p3.txt").read_text() == "a yellow <plus>"
            # LoraLoader offers the new file at once, and a click puts one on the canvas with it
            choices = page.page.evaluate(
                "window.studioStore.getState().defs.types.LoraLoader.inputs"
                ".find((s) => s.name === 'lora_name').choices"
            )
            assert "plus.safetensors" in choices
            page.testid("train-use").click()
            loaders = [n for n in page.workflow()["nodes"].values() if n["type"] == "LoraLoader"]
            assert len(loaders) == 1 and loaders[0]["inputs"]["lora_name"] == "plus.safetensors"
            shot = page.shot("train-panel-used")
            assert shot.is_file()
            assert not page.errors, page.errors
        finally:
            browser.close()
