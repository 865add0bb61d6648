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
    return StudioHandlers(
        registry, Executor(registry), lambda: RunSettings(output_dir=tmp_path / "out"), examples
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
