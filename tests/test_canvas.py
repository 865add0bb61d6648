"""The node canvas without a browser: what the page hands to litegraph.js, and its wiring."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import pytest

from graph.executor import Executor
from nodes import types as T
from nodes.base import RunSettings
from nodes.registry import Registry, default_registry
from ui.canvas import (
    CANVAS_CSS,
    CANVAS_SCRIPT,
    FALLBACK_COLOR,
    ROOT,
    CanvasBridge,
    canvas_config,
    head_html,
    library_installed,
    socket_colors,
)
from ui.studio import build_studio

HEX = re.compile(r"^#[0-9a-fA-F]{6}$")
WIDGET_TYPES = {T.INT, T.FLOAT, T.STRING, T.BOOLEAN, T.ANY}


def test_every_socket_type_has_a_colour(registry: Registry) -> None:
    config = canvas_config(registry)
    colors = config["colors"]
    for description in config["node_defs"]:
        for spec in [*description["inputs"], *description["outputs"]]:
            assert HEX.match(colors[spec["type"]]), (description["type"], spec["name"])
    assert {k: colors[k] for k in T.COLORS} == T.COLORS
    # a type nodes/types.py does not list falls back to a neutral colour
    made_up = [{"type": "X", "inputs": [], "outputs": [{"name": "o", "type": "NEW_THING"}]}]
    assert socket_colors(made_up)["NEW_THING"] == FALLBACK_COLOR


def test_descriptions_are_what_the_canvas_reads(registry: Registry) -> None:
    """Every field studio_canvas.js uses is there, and widget inputs have a widget type."""
    config = canvas_config(registry)
    json.dumps(config)  # it travels to the browser as JSON
    types = [d["type"] for d in config["node_defs"]]
    assert len(types) == len(set(types)) == len(registry)
    for description in config["node_defs"]:
        assert {"type", "version", "category", "description", "inputs", "outputs"} <= set(description)
        for spec in description["inputs"]:
            assert spec["accepts"] in ("both", "link", "constant")
            if spec["accepts"] != "link":
                assert spec["type"] in WIDGET_TYPES or "choices" in spec, (description["type"], spec)
            if "choices" in spec:
                assert all(isinstance(choice, str) for choice in spec["choices"])
            for key in ("min", "max", "step"):
                assert spec.get(key) is None or isinstance(spec[key], int | float)
        names = [o["name"] for o in description["outputs"]]
        assert len(names) == len(set(names))


def test_the_page_holds_the_canvas(tmp_path: Path) -> None:
    import gradio as gr

    registry = default_registry()
    examples = ROOT / "workflows"
    demo = build_studio(registry, Executor(registry), lambda: RunSettings(output_dir=tmp_path), examples)
    assert isinstance(demo, gr.Blocks)
    canvases = [b for b in demo.blocks.values() if isinstance(b, gr.HTML) and b.elem_id == "studio-canvas"]
    assert len(canvases) == 1
    canvas = canvases[0]
    editor = next(b for b in demo.blocks.values() if isinstance(b, gr.Code))
    assert canvas.value.strip() == editor.value.strip()  # both start from the first example
    # the registry's descriptions, with LoadImage's path listing the input folder's images
    defs = json.loads(json.dumps(canvas.props["node_defs"]))
    (load,) = [d for d in defs if d["type"] == "LoadImage"]
    path_spec = next(spec for spec in load["inputs"] if spec["name"] == "path")
    assert path_spec.pop("file_list") is True and isinstance(path_spec.pop("choices"), list)
    assert defs == registry.describe()
    if library_installed():
        assert "litegraph.core.js" in canvas.head and "studio_canvas.js" in canvas.head
        assert "StudioCanvas.mount" in (canvas.js_on_load or "")
    else:
        assert "setup.sh" in canvas.html_template


def require_library() -> None:
    """Skip without the canvas library; in CI (``CI`` set) its absence is a failure."""
    if not library_installed():
        reason = "the canvas library is missing (bash setup.sh runs npm ci)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must check it", pytrace=False)
        pytest.skip(reason)


def test_head_loads_versioned_files() -> None:
    require_library()
    head = head_html()
    for path in (CANVAS_SCRIPT, CANVAS_CSS):
        assert f"gradio_api/file={path}?v=" in head
    # scripts keep their order: the library before the canvas code that uses it
    assert head.index("litegraph.core.js") < head.index("studio_canvas.js")


def test_bridge_reports_node_issues_only(registry: Registry) -> None:
    bridge = CanvasBridge(registry)
    broken = {
        "version": 1,
        "nodes": {
            "a": {"type": "Int", "inputs": {"value": "seven"}},
            "s": {"type": "ShowValue", "inputs": {"value": {"node": "a", "output": "nope"}}},
        },
    }
    issues = bridge.issues(json.dumps(broken))
    assert {issue["node_id"] for issue in issues} == {"a", "s"}
    assert all(issue["message"] and issue["text"] for issue in issues)
    assert bridge.issues("{") == []  # not JSON: nothing to point at on the canvas
    fine = {
        "version": 1,
        "nodes": {
            "a": {"type": "Int", "inputs": {"value": 3}},
            "s": {"type": "ShowValue", "inputs": {"value": {"node": "a", "output": "value"}}},
        },
    }
    assert bridge.issues(json.dumps(fine)) == []


NPM_REGISTRY = "https://registry.npmjs.org/"


def test_npm_lock_pins_the_library_from_the_registry() -> None:
    package = json.loads((ROOT / "package.json").read_text())
    lock = json.loads((ROOT / "package-lock.json").read_text())
    version = package["dependencies"]["litegraph.js"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)  # an exact pin
    entry = lock["packages"]["node_modules/litegraph.js"]
    assert entry["version"] == version
    # the pin that matters: npm ci refuses a tarball whose hash differs, whatever served it
    assert re.fullmatch(r"sha512-[A-Za-z0-9+/]{86}==", entry["integrity"])
    if "resolved" in entry:
        assert entry["resolved"] == f"{NPM_REGISTRY}litegraph.js/-/litegraph.js-{version}.tgz"
    else:
        # written with omit-lockfile-registry-resolved: npm fetches from its configured
        # registry, which the project must not point anywhere but the public one
        npmrc = ROOT / ".npmrc"
        settings = npmrc.read_text().splitlines() if npmrc.exists() else []
        registries = [
            line.partition("=")[2].strip() for line in settings if "registry" in line.partition("=")[0]
        ]
        assert all(r.rstrip("/") + "/" == NPM_REGISTRY for r in registries), registries
    assert "node_modules/" in (ROOT / ".gitignore").read_text().split()


def test_installed_library_is_the_locked_one() -> None:
    require_library()
    lock = json.loads((ROOT / "package-lock.json").read_text())["packages"]["node_modules/litegraph.js"]
    installed = json.loads((ROOT / "node_modules" / "litegraph.js" / "package.json").read_text())
    assert installed["name"] == "litegraph.js" and installed["version"] == lock["version"]


def test_file_inputs_list_the_input_images(registry: Registry, tmp_path: Path) -> None:
    from PIL import Image

    from ui.canvas import node_descriptions
    from ui.inputs import list_images

    (tmp_path / "sub").mkdir()
    (tmp_path / ".hidden").mkdir()
    for name in ("b.png", "a.jpg", "sub/c.webp", ".hidden/d.png"):
        Image.new("RGB", (2, 2)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("x")
    files = list_images([tmp_path, tmp_path / "missing"])
    assert files == ["a.jpg", "b.png", "sub/c.webp"]
    defs = node_descriptions(registry, files)
    (load,) = [d for d in defs if d["type"] == "LoadImage"]
    assert load["inputs"][0]["choices"] == files and load["inputs"][0]["file_list"] is True
    assert node_descriptions(registry) == registry.describe()  # without a list: as the registry says
