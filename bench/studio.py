"""How long the studio page takes from Run to pictures, against the same run headless.

Starts the studio in this process (``ui.serve.serve``, jobs in the server's threads) and
Debian's chromium through Playwright, opens the page (the txt2img example, toy model),
sets the sampler's seed control to "increment" (so no run is answered from the cache),
runs once to warm up, then clicks Run ``--runs`` times and measures in the page
(``performance.now()`` from the click) the time to the first live preview on the sampler
node (an <img> in it gets a new src and loads) and to the image on the SaveImage node
(``node-save-image`` loads a new picture). In the same process the same workflow runs
headless ``--runs`` times (``graph.executor.Executor`` over the same registry and model
manager, warm, a new seed each time). Prints one JSON line per figure, medians in seconds:
also the job's own run time on the server while the page watches it, then the ratio of the
page's image-on-node time to the headless run: what the server, the event stream, the PNG
encoding and the page add. On a few cores, a page that renders busily during the run (its
progress transitions, previews) also slows the run itself: torch's threads, one per core,
wait for each other when a core is taken; ``--threads`` sets torch's thread count to see it.

    .venv/bin/python bench/studio.py [--runs 5] [--threads N]

Needs the built page (npm run build), playwright and /usr/bin/chromium; under two
minutes on the 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.browser_support import EXAMPLES, Studio, launch_browser, start_studio  # noqa: E402

#: Installed before each click: records, from the click on Run, when an <img> in the sampler
#: node first shows a new picture (a live preview) and when the SaveImage node's does.
WATCH_JS = """
([sampler, save]) => {
  const srcOf = (img) => (img ? img.currentSrc || img.src : null);
  const samplerImgs = () => [...document.querySelectorAll(`[data-testid='node-${sampler}'] img`)];
  const saveImg = () => document.querySelector(`[data-testid='node-${save}-image']`);
  const loaded = (img) => img && img.complete && img.naturalWidth > 0;
  const old = {preview: new Set(samplerImgs().map(srcOf)), image: srcOf(saveImg())};
  const state = window.__bench = {start: null, preview: null, image: null};
  document.querySelector('[data-testid=run-button]').addEventListener(
    'click', () => { state.start = performance.now(); }, {capture: true, once: true});
  const look = () => {
    if (state.start !== null) {
      const now = performance.now();
      if (state.preview === null && samplerImgs().some((img) => loaded(img) && !old.preview.has(srcOf(img))))
        state.preview = now - state.start;
      const img = saveImg();
      if (state.image === null && loaded(img) && srcOf(img) !== old.image) state.image = now - state.start;
    }
    if (state.image === null) requestAnimationFrame(look);
  };
  requestAnimationFrame(look);
}
"""


def emit(**figure: Any) -> None:
    print(json.dumps(figure), flush=True)


def median_figure(name: str, seconds: list[float], **extra: Any) -> float:
    median = statistics.median(seconds)
    emit(
        bench="studio",
        figure=name,
        workflow="txt2img",
        median_s=round(median, 4),
        runs=[round(s, 4) for s in seconds],
        **extra,
    )
    return median


def page_runs(studio: Studio, runs: int) -> tuple[list[float], list[float], list[float]]:
    """Seconds from the click on Run to the first sampler preview and to the saved image, and
    the job's own run time on the server (started to finished), per run."""
    from playwright.sync_api import sync_playwright

    previews: list[float] = []
    images: list[float] = []
    jobs: list[float] = []
    with sync_playwright() as playwright:
        browser = launch_browser(playwright)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(60_000)
            page.on("dialog", lambda dialog: dialog.accept())
            page.goto(studio.url)
            page.get_by_test_id("node-save").wait_for(state="attached")
            page.get_by_test_id("seed-control-s-seed").select_option("increment")
            for attempt in range(runs + 1):  # the first one warms up
                studio.wait_idle()
                page.evaluate(WATCH_JS, ["s", "save"])
                page.get_by_test_id("run-button").click()
                page.wait_for_function("window.__bench.image !== null")
                found = page.evaluate("window.__bench")
                studio.wait_idle()
                (job,) = studio.get("/api/history?limit=1")["jobs"]
                if attempt:
                    jobs.append(job["finished"] - job["started"])
                    images.append(found["image"] / 1000)
                    if found["preview"] is not None:
                        previews.append(found["preview"] / 1000)
        finally:
            browser.close()
    return previews, images, jobs


def headless_runs(studio: Studio, runs: int) -> list[float]:
    """Seconds for the same workflow run by the executor alone (warm), a new seed each time."""
    from graph.executor import Executor
    from graph.validate import validate
    from nodes.base import RunSettings

    data = json.loads((EXAMPLES / "txt2img.json").read_text())
    executor = Executor(studio.registry)
    times = []
    with tempfile.TemporaryDirectory() as folder:
        settings = RunSettings(
            output_dir=Path(folder), input_dirs=(EXAMPLES,), services=studio.registry.services
        )
        for attempt in range(runs + 1):  # the first one warms up
            data["nodes"]["s"]["inputs"]["seed"] = 7000 + attempt
            checked = validate(data, studio.registry)
            assert checked.ok and checked.workflow is not None, checked.issues
            start = time.perf_counter()
            result = executor.run(checked.workflow, settings=settings, seed=7000 + attempt)
            elapsed = time.perf_counter() - start
            assert result.status == "done", result.error
            if attempt:
                times.append(elapsed)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch's CPU threads (default: torch's own, one per core)"
    )
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    setup = {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-studio-") as folder:
        studio = start_studio(Path(folder), packs=())
        try:
            previews, images, jobs = page_runs(studio, args.runs)
            headless = headless_runs(studio, args.runs)
        finally:
            studio.close()
    if previews:
        median_figure("run_to_first_preview_s", previews, previews_seen=len(previews), **setup)
    else:
        emit(bench="studio", figure="run_to_first_preview_s", median_s=None, note="no live preview seen")
    on_node = median_figure("run_to_image_on_node_s", images, **setup)
    median_figure("job_run_while_page_watches_s", jobs, **setup)
    alone = median_figure("headless_run_s", headless, **setup)
    emit(bench="studio", figure="ratio_image_on_node_to_headless", ratio=round(on_node / alone, 2), **setup)


if __name__ == "__main__":
    main()
