"""The browser studio: its handlers called as plain Python, and the server answering."""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import pytest

from graph.executor import Executor
from nodes.base import RunSettings
from nodes.registry import Registry, default_registry
from tests.fixtures.services import services_over
from ui.studio import Session, StudioHandlers, build_studio, launch, md_escape, to_uint8_frames

TINY = {
    "version": 1,
    "nodes": {
        "a": {"type": "Int", "inputs": {"value": 2}},
        "s": {"type": "ShowValue", "inputs": {"value": {"node": "a", "output": "value"}}},
    },
}


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    folder = tmp_path / "examples"
    folder.mkdir()
    (folder / "tiny.json").write_text(json.dumps(TINY, indent=2))
    return folder


@pytest.fixture
def handlers(tmp_path: Path, examples: Path, registry: Registry) -> StudioHandlers:
    """Handlers over the built-in nodes plus the test pack (Sleep, RandomImage, ...)."""
    inputs = (tmp_path / "input",)
    return StudioHandlers(
        registry,
        Executor(registry),
        lambda: RunSettings(output_dir=tmp_path / "out", input_dirs=inputs),
        examples,
    )


def test_build_studio_makes_blocks(tmp_path: Path, examples: Path) -> None:
    import gradio as gr

    registry = default_registry()
    demo = build_studio(registry, Executor(registry), lambda: RunSettings(output_dir=tmp_path), examples)
    assert isinstance(demo, gr.Blocks)
    assert demo.title == "Workflow Studio"


def test_load_example_returns_its_text(handlers: StudioHandlers, examples: Path) -> None:
    assert handlers.example_names() == ["tiny.json"]
    text, status = handlers.load_example("tiny.json")
    assert text == (examples / "tiny.json").read_text()
    assert "Valid" in status
    assert handlers.initial_text() == ("tiny.json", text)
    # a name outside the list is refused, the editor is kept
    _, status = handlers.load_example("../secret.json")
    assert "no example" in status


def test_validate_reports_issues_not_tracebacks(handlers: StudioHandlers) -> None:
    status = handlers.validate('{"version": 1, "nodes": {')
    assert "not valid JSON" in status
    assert "Traceback" not in status
    status = handlers.validate(json.dumps({"version": 1, "nodes": {"x": {"type": "Nope"}}}))
    assert status.startswith("**The workflow has")
    assert "- node 'x'" in status
    assert handlers.validate(json.dumps(TINY)).startswith("**Valid**")


def test_run_yields_progress_then_the_result(handlers: StudioHandlers) -> None:
    session = Session()
    updates = list(handlers.run(json.dumps(TINY), 7, session))
    status, gallery, log = updates[-1]
    assert status.startswith("**Finished**")
    assert "seed 7" in status
    assert "s (ShowValue): 2" in status
    assert gallery == []
    kinds = [entry["event"] for entry in log]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert session.token is None  # the run is over: nothing left to cancel
    # a second run comes from the cache
    status, _, _ = list(handlers.run(json.dumps(TINY), 7, Session()))[-1]
    assert "from cache" in status


def test_run_refuses_broken_input(handlers: StudioHandlers) -> None:
    (status, _, _), *rest = handlers.run("{", None, Session())
    assert not rest and "not valid JSON" in status
    (status, _, _), *rest = handlers.run(json.dumps(TINY), -3, Session())
    assert not rest and "seed must be a whole number" in status


def test_failure_shows_the_node_message(handlers: StudioHandlers) -> None:
    broken = {
        "version": 1,
        "nodes": {
            "d": {"type": "IntMath", "inputs": {"a": 1, "b": 0, "operation": "divide"}},
            "s": {"type": "ShowValue", "inputs": {"value": {"node": "d", "output": "value"}}},
        },
    }
    status, _, log = list(handlers.run(json.dumps(broken), None, Session()))[-1]
    assert status.startswith("**Failed**")
    assert "cannot divide by zero" in status
    assert "Traceback" not in status and all("details" not in e for e in log)


def test_progress_then_cancel(handlers: StudioHandlers) -> None:
    slow = {
        "version": 1,
        "nodes": {
            "slow": {"type": "Sleep", "inputs": {"value": 1, "steps": 2000, "seconds_per_step": 0.005}},
            "show": {"type": "ShowValue", "inputs": {"value": {"node": "slow", "output": "value"}}},
        },
    }
    session = Session()
    updates = handlers.run(json.dumps(slow), None, session)
    for status, _, _ in updates:
        if " step " in status:
            break
    assert "node 1/2: Sleep (id 'slow') step " in status
    assert "/2000" in status
    assert handlers.cancel(session) == "**Cancelling…**"
    status, _, _ = list(updates)[-1]
    assert status.startswith("**Cancelled**")
    assert "Stopped in node 'slow' (Sleep) at step" in status
    assert session.token is None


def test_images_reach_the_gallery(handlers: StudioHandlers, tmp_path: Path) -> None:
    import numpy as np

    flow = {
        "version": 1,
        "nodes": {
            "noise": {"type": "RandomImage", "inputs": {"size": 8}},
            "save": {
                "type": "SaveImage",
                "inputs": {"images": {"node": "noise", "output": "image"}, "filename_prefix": "t"},
            },
            "peek": {"type": "PreviewImage", "inputs": {"images": {"node": "noise", "output": "image"}}},
        },
    }
    status, gallery, _ = list(handlers.run(json.dumps(flow), 3, Session()))[-1]
    assert status.startswith("**Finished**"), status
    saved = [item for item in gallery if isinstance(item[0], str)]
    shown = [item for item in gallery if not isinstance(item[0], str)]
    assert len(saved) == 1 and Path(saved[0][0]).parent == tmp_path / "out"
    assert Path(saved[0][0]).name.endswith(".png")
    assert len(shown) == 1 and shown[0][1] == "peek"
    assert shown[0][0].dtype == np.uint8 and shown[0][0].shape == (8, 8, 3)


def test_cancel_only_touches_its_own_session(handlers: StudioHandlers) -> None:
    from nodes.base import CancelToken

    mine, other = Session(), Session()
    mine.token, other.token = CancelToken(), CancelToken()
    assert handlers.cancel(mine) == "**Cancelling…**"
    assert mine.token.cancelled and not other.token.cancelled
    assert handlers.cancel(Session()) != "**Cancelling…**"  # nothing running: status left alone


def test_upload_and_export(handlers: StudioHandlers, tmp_path: Path) -> None:
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("workflow", json.dumps(TINY))
    info.add_text("run_seed", "42")
    png = tmp_path / "made.png"
    Image.new("RGB", (4, 4)).save(png, pnginfo=info)
    text, seed, status = handlers.load_upload(str(png), "old", None)
    assert json.loads(text) == TINY and seed == "42" and "made.png" in status
    plain = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(plain)
    text, seed, status = handlers.load_upload(str(plain), "old", 5)
    assert (text, seed) == ("old", 5) and "holds no workflow" in status
    path = Path(handlers.export('{"version": 1}'))
    assert path.name == "workflow.json" and path.read_text() == '{"version": 1}'


def test_helpers() -> None:
    import numpy as np

    frames = to_uint8_frames(np.full((2, 3, 4, 3), 0.5, dtype=np.float32))
    assert len(frames) == 2 and frames[0].dtype == np.uint8 and frames[0].shape == (3, 4, 3)
    assert int(frames[0][0, 0, 0]) == 128
    assert md_escape("a_b *c*") == r"a\_b \*c\*"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_server_answers(tmp_path: Path, examples: Path) -> None:
    registry = default_registry()
    demo = build_studio(registry, Executor(registry), lambda: RunSettings(output_dir=tmp_path), examples)
    port = _free_port()
    launch(demo, "127.0.0.1", port, prevent_thread_lock=True)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert response.status == 200
            assert "Workflow Studio" in response.read().decode("utf-8", "replace")
    finally:
        demo.close()


def test_server_with_token_needs_login(tmp_path: Path, examples: Path) -> None:
    registry = default_registry()
    demo = build_studio(registry, Executor(registry), lambda: RunSettings(output_dir=tmp_path), examples)
    port = _free_port()
    launch(demo, "127.0.0.1", port, token="s3cret", prevent_thread_lock=True)
    base = f"http://127.0.0.1:{port}"
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/config", timeout=10)
        assert refused.value.code == 401

        def login(password: str) -> int:
            form = urllib.parse.urlencode({"username": "studio", "password": password}).encode()
            try:
                with urllib.request.urlopen(f"{base}/login", data=form, timeout=10) as response:
                    return response.status
            except urllib.error.HTTPError as exc:
                return exc.code

        assert login("wrong") == 400
        assert login("s3cret") == 200
    finally:
        demo.close()


# --- live previews, node states, several tabs -------------------------------------------------

PREVIEWED = {
    "version": 1,
    "nodes": {
        "paint": {"type": "SlowPreview", "inputs": {"steps": 6, "seconds_per_step": 0.15, "size": 4}},
        "peek": {"type": "PreviewImage", "inputs": {"images": {"node": "paint", "output": "image"}}},
    },
}


def _has_states(update: tuple) -> bool:
    """Whether a page update carries node states (not ``gr.skip()``, itself a dict)."""
    return isinstance(update[4], dict) and "states" in update[4]


def test_run_page_shows_previews_and_node_states(handlers: StudioHandlers) -> None:
    import numpy as np

    updates = list(handlers.run_page(json.dumps(PREVIEWED), 1, Session()))
    status, _, _, first_preview, first_states = updates[0]
    assert first_preview is None and first_states["states"] == {}  # a new run clears both
    previews = [u[3] for u in updates[:-1] if isinstance(u[3], np.ndarray)]
    assert previews, "no preview image before the run finished"
    assert previews[0].dtype == np.uint8 and previews[0].shape == (256, 256, 3)  # 4x4 enlarged
    assert len(np.unique(previews[0][:, :, 0])) == 4  # nearest neighbour: still 4 columns of values
    states = [u[4]["states"] for u in updates if _has_states(u)]
    assert {"paint": "running"} in states
    assert states[-1] == {"paint": "done", "peek": "done"}
    assert updates[-1][0].startswith("**Finished**")
    # the second run comes from the cache, and the canvas is told so (also of the node
    # upstream, which the run never visits: its result was in the cache as well)
    again = list(handlers.run_page(json.dumps(PREVIEWED), 1, Session()))
    last_states = [u[4]["states"] for u in again if _has_states(u)][-1]
    assert last_states == {"paint": "cached", "peek": "cached"}


def test_a_cancelled_node_is_no_longer_shown_running(handlers: StudioHandlers) -> None:
    slow = {
        "version": 1,
        "nodes": {
            "slow": {"type": "Sleep", "inputs": {"value": 1, "steps": 2000, "seconds_per_step": 0.005}},
            "show": {"type": "ShowValue", "inputs": {"value": {"node": "slow", "output": "value"}}},
        },
    }
    session = Session()
    updates = handlers.run_page(json.dumps(slow), None, session)
    for update in updates:
        if _has_states(update) and update[4]["states"].get("slow") == "running":
            break
    handlers.cancel(session)
    final = [u[4] for u in updates if _has_states(u)]
    assert final and final[-1]["states"] == {}


def test_two_tabs_both_enter_the_job_queue(handlers: StudioHandlers, tmp_path: Path) -> None:
    """The page lets several runs into the JobQueue: the second tab sees its place in line."""
    slow = {
        "version": 1,
        "nodes": {
            "slow": {"type": "Sleep", "inputs": {"value": 1, "steps": 4000, "seconds_per_step": 0.005}},
            "show": {"type": "ShowValue", "inputs": {"value": {"node": "slow", "output": "value"}}},
        },
    }
    first, second = Session(), Session()
    first_updates = handlers.run_page(json.dumps(slow), None, first)
    for status, *_ in first_updates:
        if " step " in status:
            break
    second_updates = handlers.run_page(json.dumps(TINY), None, second)
    status, *_ = next(second_updates)
    assert status == "**Waiting in the queue**: 1 job before this one…"
    assert second.job_id is not None and handlers.jobs.position(second.job_id) == 0
    handlers.cancel(first)
    assert list(first_updates)[-1][0].startswith("**Cancelled**")
    final = list(second_updates)[-1][0]
    assert final.startswith("**Finished**"), final
    # and the page's Run button lets more than one run in at a time (Gradio's queue would hold it)
    demo = build_studio(
        handlers.registry, handlers.executor, handlers.settings_factory, handlers.examples_dir
    )
    (run,) = [f for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "run_page"]
    assert run.concurrency_limit is None or run.concurrency_limit >= 2


# --- the input folder: uploads, masks, refreshed lists -------------------------------------------


def _png(path: Path, size: tuple[int, int] = (6, 4), color: tuple[int, int, int] = (200, 10, 10)) -> Path:
    from PIL import Image

    Image.new("RGB", size, color).save(path)
    return path


def test_upload_image_goes_into_the_input_folder(handlers: StudioHandlers, tmp_path: Path) -> None:
    source = _png(tmp_path / "photo.png")
    defs, status = handlers.upload_image(str(source))
    folder = tmp_path / "input"
    assert (folder / "photo.png").read_bytes() == source.read_bytes()
    assert "photo.png" in status and defs["set_file"] == "photo.png"
    (load,) = [d for d in defs["node_defs"] if d["type"] == "LoadImage"]
    path_spec = next(spec for spec in load["inputs"] if spec["name"] == "path")
    assert path_spec["choices"] == ["photo.png"] and path_spec["file_list"] is True
    # never overwritten: the same name again gets a number
    (tmp_path / "other").mkdir()
    other = _png(tmp_path / "other" / "photo.png", color=(1, 2, 3))
    defs, status = handlers.upload_image(str(other))
    assert defs["set_file"] == "photo_2.png" and (folder / "photo.png").read_bytes() == source.read_bytes()
    assert handlers.input_files() == ["photo.png", "photo_2.png"]
    # only images
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    defs, status = handlers.upload_image(str(text))
    assert "not an image" in status and not (folder / "notes.txt").exists()
    fake = tmp_path / "fake.png"
    fake.write_text("not really")
    _, status = handlers.upload_image(str(fake))
    assert "not an image" in status and not (folder / "fake.png").exists()
    assert handlers.upload_image(None)[1] == ""


def test_file_names_with_folder_parts_are_refused() -> None:
    from ui.inputs import InputRefused, check_name

    assert check_name("a photo (1).png") == "a photo (1).png"
    for bad in ("../x.png", "a/b.png", "a\\b.png", "/etc/x.png", ".hidden.png", "", "x.exe", "a\tb.png"):
        with pytest.raises(InputRefused):
            check_name(bad)


def _editor_value(size: tuple[int, int] = (8, 10)) -> dict:
    import numpy as np

    height, width = size
    background = np.zeros((height, width, 4), dtype=np.uint8)
    background[..., :3] = 90
    background[..., 3] = 255
    layer = np.zeros((height, width, 4), dtype=np.uint8)
    layer[2:5, 3:7] = (255, 255, 255, 255)
    return {"background": background, "layers": [layer], "composite": background}


def test_painted_mask_is_saved_and_loads_as_a_mask(handlers: StudioHandlers, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    defs, status = handlers.save_mask(_editor_value(), "hole")
    saved = tmp_path / "input" / "hole.png"
    assert saved.is_file() and "hole.png" in status and defs["set_file"] == "hole.png"
    pixels = np.asarray(Image.open(saved).convert("L"))
    assert pixels.shape == (8, 10)
    assert (pixels[2:5, 3:7] == 255).all() and pixels.sum() == 255 * 12
    # a second save never overwrites the first
    _, status = handlers.save_mask(_editor_value(), "hole.png")
    assert (tmp_path / "input" / "hole_2.png").is_file()
    # nothing painted, no image, a bad name: nothing saved, a plain reason
    empty = _editor_value()
    empty["layers"] = [np.zeros((8, 10, 4), dtype=np.uint8)]
    assert "nothing is painted" in handlers.save_mask(empty, "x.png")[1]
    assert "open an image" in handlers.save_mask(None, "x.png")[1]
    assert "folder parts" in handlers.save_mask(_editor_value(), "../x.png")[1]
    assert "not an image" in handlers.save_mask(_editor_value(), "x.jpg")[1]
    assert sorted(p.name for p in (tmp_path / "input").iterdir()) == ["hole.png", "hole_2.png"]

    # LoadImage + ImageToMask read it back: 1 where painted
    flow = {
        "version": 1,
        "nodes": {
            "load": {"type": "LoadImage", "inputs": {"path": "hole.png"}},
            "mask": {"type": "ImageToMask", "inputs": {"image": {"node": "load", "output": "image"}}},
            "show": {"type": "MaskToImage", "inputs": {"mask": {"node": "mask", "output": "mask"}}},
            "peek": {"type": "PreviewImage", "inputs": {"images": {"node": "show", "output": "image"}}},
        },
    }
    status, gallery, _ = list(handlers.run(json.dumps(flow), 1, Session()))[-1]
    assert status.startswith("**Finished**"), status
    (frame, _caption), *_ = gallery
    assert (frame[2:5, 3:7] == 255).all() and int(frame.sum()) == 255 * 12 * 3


def test_refresh_lists_new_model_files(tmp_path: Path, examples: Path) -> None:
    root = tmp_path / "models"
    (root / "checkpoints").mkdir(parents=True)
    registry = default_registry(services=services_over(root))  # as `app.py --models ROOT` makes it
    handlers = StudioHandlers(
        registry,
        Executor(registry),
        lambda: RunSettings(output_dir=tmp_path / "out", services=registry.services),
        examples,
    )

    def ckpt_choices() -> list[str]:
        defs, status = handlers.refresh_lists()
        assert "refreshed" in status
        (loader,) = [d for d in defs["node_defs"] if d["type"] == "CheckpointLoader"]
        return next(spec for spec in loader["inputs"] if spec["name"] == "ckpt_name")["choices"]

    assert "dropped-in.safetensors" not in ckpt_choices()
    (root / "checkpoints" / "dropped-in.safetensors").write_bytes(b"x")
    assert "dropped-in.safetensors" in ckpt_choices()


# --- image bombs: the page says so in plain words instead of failing ---------------------------------


def test_uploads_that_are_image_bombs_are_refused_in_plain_words(
    handlers: StudioHandlers, tmp_path: Path, monkeypatch
) -> None:
    import warnings

    from PIL import Image

    import ui.studio
    from tests.test_file_safety import bomb_png

    bomb = bomb_png(tmp_path / "bomb.png")  # claims 30000 x 30000 pixels in a few hundred bytes
    defs, status = handlers.upload_image(str(bomb))
    assert "Not saved" in status and "too large" in status and "900,000,000 pixels" in status
    _, status = handlers.save_mask({"background": str(bomb), "layers": []}, "m.png")
    assert "Mask not saved" in status and "too large" in status
    text, seed, status = handlers.load_upload(str(bomb), "old", 3)  # no workflow in it: a plain answer
    assert (text, seed) == ("old", 3) and "bomb.png" in status
    # "Open workflow" when reading the file meets Pillow's bomb error, or its warning made an error
    for error in (Image.DecompressionBombError, Image.DecompressionBombWarning):

        def bursting(path: Path, error: type = error) -> None:
            raise error("Image size (900000000 pixels) exceeds limit of 178956970 pixels, could be ...")

        monkeypatch.setattr(ui.studio, "read_source", bursting)
        text, seed, status = handlers.load_upload(str(bomb), "old", 3)
        assert (text, seed) == ("old", 3) and "too large" in status and "900,000,000 pixels" in status
    # Pillow's warning (between its limit and twice it), when warnings are errors
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    big = _png(tmp_path / "big.png", size=(12, 12))
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        assert "too large" in handlers.upload_image(str(big))[1]
    assert not (tmp_path / "input").exists() or list((tmp_path / "input").iterdir()) == []


def test_the_page_answers_only_to_this_machine_without_a_token(tmp_path: Path, examples: Path) -> None:
    """DNS rebinding: a name of another site that resolves to 127.0.0.1 gets nothing."""
    import http.client

    registry = default_registry()
    demo = build_studio(registry, Executor(registry), lambda: RunSettings(output_dir=tmp_path), examples)
    port = _free_port()
    launch(demo, "127.0.0.1", port, prevent_thread_lock=True)

    def status(path: str, host: str) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.putrequest("GET", path, skip_host=True)
            connection.putheader("Host", host)
            connection.endheaders()
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    try:
        for path in ("/", "/config", "/gradio_api/info"):
            code, body = status(path, f"rebound.example:{port}")
            assert code == 403 and "localhost" in json.loads(body)["error"], path
            assert status(path, f"localhost:{port}")[0] == 200, path
    finally:
        demo.close()
