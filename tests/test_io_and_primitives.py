"""LoadImage, SaveImage, PreviewImage and the primitive nodes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from graph.events import NodePreview
from graph.executor import Executor
from graph.validate import validate
from graph.workflow import PNG_SEED_KEY, read_source
from nodes import types as T
from nodes.base import CancelToken, Context, Node, NodeInputError, Output, RunSettings
from nodes.image_io import LoadImage, PreviewImage, SaveImage
from nodes.primitives import Boolean, Float, FloatMath, IntMath, ShowValue, String
from nodes.registry import Registry
from tests.helpers import link, node, run_node, valid, workflow


def ctx_for(tmp_path: Path, events: list | None = None, **settings) -> Context:
    sink = events.append if events is not None else (lambda e: None)
    return Context(
        node_id="n",
        node_type="T",
        run_id="r",
        seed=99,
        settings=RunSettings(output_dir=tmp_path / "out", input_dirs=(tmp_path,), **settings),
        cancel_token=CancelToken(),
        emit=sink,
    )


def test_load_rgba_gives_image_and_transparency_mask(tmp_path):
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    rgba[1, 2, 3] = 0  # one transparent pixel
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = LoadImage().run(ctx_for(tmp_path), path="a.png")
    assert out["image"].shape == (1, 4, 5, 3) and out["image"].dtype == np.float32
    assert np.allclose(out["image"][0, ..., 0], 200 / 255)
    expected_mask = np.zeros((1, 4, 5), dtype=np.float32)
    expected_mask[0, 1, 2] = 1.0
    assert np.array_equal(out["mask"], expected_mask)


def test_load_grayscale_16_bit_and_jpeg(tmp_path):
    gray16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000).astype(np.uint16)
    Image.fromarray(gray16).save(tmp_path / "g.png")
    out = LoadImage().run(ctx_for(tmp_path), path="g.png")["image"]
    assert np.allclose(out[0, ..., 1], gray16 / 65535.0, atol=1e-6)
    Image.new("RGB", (6, 3), (10, 200, 30)).save(tmp_path / "c.jpg", quality=95)
    out = LoadImage().run(ctx_for(tmp_path), path="c.jpg")["image"]
    assert out.shape == (1, 3, 6, 3) and abs(out[0, 0, 0, 1] - 200 / 255) < 0.03


def test_load_respects_exif_orientation(tmp_path):
    picture = Image.new("RGB", (6, 2), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    picture.save(tmp_path / "r.jpg", exif=exif)
    out = LoadImage().run(ctx_for(tmp_path), path="r.jpg")["image"]
    assert out.shape[1:3] == (6, 2)


def test_load_errors_name_the_input(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    for name, words in (("nope.png", "not found"), ("bad.png", "not an image"), ("", "no file given")):
        with pytest.raises(NodeInputError) as err:
            LoadImage().run(ctx_for(tmp_path), path=name)
        assert err.value.input_name == "path" and words in err.value.message


def test_server_runs_refuse_paths_outside_the_input_folder(tmp_path):
    outside = tmp_path / "secret.png"
    Image.new("RGB", (2, 2)).save(outside)
    inside = tmp_path / "inputs"
    inside.mkdir()
    ctx = ctx_for(inside, allow_absolute_paths=False)
    for name in (str(outside), "../secret.png"):
        with pytest.raises(NodeInputError, match="outside the input folder"):
            LoadImage().run(ctx, path=name)
    assert LoadImage().run(ctx_for(inside), path=str(outside))["image"].shape == (1, 2, 2, 3)


def test_changed_file_is_read_again_unchanged_file_is_cached(tmp_path, registry):
    path = tmp_path / "p.png"
    Image.new("RGB", (3, 3), (255, 0, 0)).save(path)
    wf = valid(
        workflow(
            load=node("LoadImage", path="p.png"), show=node("PreviewImage", images=link("load", "image"))
        ),
        registry,
    )
    executor = Executor(registry)
    settings = RunSettings(output_dir=tmp_path / "out", input_dirs=(tmp_path,))
    first = executor.run(wf, settings=settings)
    assert executor.run(wf, settings=settings).executed == []
    Image.new("RGB", (3, 3), (0, 0, 255)).save(path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # coarse clocks: make sure it moved
    again = executor.run(wf, settings=settings)
    assert again.executed == ["load", "show"]
    assert first.outputs["show"]["images"][0, 0, 0, 0] == 1.0
    assert again.outputs["show"]["images"][0, 0, 0, 2] == 1.0


def test_save_embeds_workflow_and_seed_and_never_overwrites(tmp_path):
    ctx = ctx_for(tmp_path)
    ctx.settings.workflow_json = '{"version": 1, "nodes": {}}'
    images = np.random.default_rng(0).random((2, 4, 4, 3), dtype=np.float32)
    SaveImage().run(ctx, images=images, filename_prefix="shots/cat")
    SaveImage().run(ctx, images=images[:1], filename_prefix="shots/cat")
    folder = tmp_path / "out" / "shots"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["cat_00001.png", "cat_00002.png", "cat_00003.png"]
    assert ctx.files == [str(folder / n) for n in names]
    with Image.open(folder / "cat_00002.png") as saved:
        assert np.array_equal(np.asarray(saved), (images[1] * 255 + 0.5).astype(np.uint8))
        assert saved.text[PNG_SEED_KEY] == "99"
    source = read_source(folder / "cat_00001.png")
    assert source.text == ctx.settings.workflow_json and source.run_seed == 99


@pytest.mark.parametrize("prefix", ["../escape", "/abs/path", "a/../../b", "", "bad:name", "x/./y"])
def test_save_refuses_prefixes_that_leave_the_output_folder(tmp_path, prefix):
    with pytest.raises(NodeInputError) as err:
        SaveImage().run(ctx_for(tmp_path), images=np.zeros((1, 2, 2, 3), np.float32), filename_prefix=prefix)
    assert err.value.input_name == "filename_prefix"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.png"))


def test_preview_emits_the_image(tmp_path):
    events: list = []
    images = np.full((1, 2, 2, 3), 0.5, np.float32)
    out = PreviewImage().run(ctx_for(tmp_path, events), images=images)
    assert out["images"] is images
    assert isinstance(events[0], NodePreview) and events[0].image is images
    assert events[0].to_dict()["image"] == {"shape": [1, 2, 2, 3]}


def test_primitives_pass_values_on():
    assert run_node(Float, value=2)["value"] == 2.0 and isinstance(run_node(Float, value=2)["value"], float)
    assert run_node(String, value="a cat")["value"] == "a cat"
    assert run_node(Boolean, value=True)["value"] is True
    assert run_node(ShowValue, value=np.zeros((1, 2, 3)))["text"] == "ndarray of shape (1, 2, 3)"


@pytest.mark.parametrize(
    ("op", "a", "b", "expected"),
    [
        ("add", 7, 3, 10),
        ("subtract", 7, 3, 4),
        ("multiply", 7, 3, 21),
        ("divide", 7, 2, 3),
        ("divide", -7, 2, -4),
        ("modulo", 7, 3, 1),
        ("min", 7, 3, 3),
        ("max", 7, 3, 7),
        ("power", 2, 10, 1024),
    ],
)
def test_int_math(op, a, b, expected):
    assert run_node(IntMath, a=a, b=b, operation=op)["value"] == expected


def test_math_errors_name_input_b():
    for cls, op, b in ((IntMath, "modulo", 0), (IntMath, "power", 99), (FloatMath, "divide", 0.0)):
        with pytest.raises(NodeInputError) as err:
            run_node(cls, a=1, b=b, operation=op)
        assert err.value.input_name == "b"
    with pytest.raises(NodeInputError):
        run_node(FloatMath, a=1e308, b=10.0, operation="power")
    assert run_node(FloatMath, a=1.5, b=2.0, operation="power")["value"] == 2.25


INT_MAX = 2**63 - 1
INT_MIN = -(2**63)


@pytest.mark.parametrize(
    ("op", "a", "b", "expected"),
    [
        ("power", 2, 62, 2**62),
        ("power", -2, 63, INT_MIN),
        ("power", -1, 64, 1),
        ("power", 0, 64, 0),
        ("power", 1, 64, 1),
        ("power", 3, 0, 1),
        ("add", INT_MAX - 1, 1, INT_MAX),
        ("subtract", INT_MIN + 1, 1, INT_MIN),
        ("multiply", 2**31, 2**31, 2**62),
        ("divide", INT_MIN, 1, INT_MIN),
    ],
)
def test_int_math_reaches_the_edges_of_64_bits(op, a, b, expected):
    assert run_node(IntMath, a=a, b=b, operation=op)["value"] == expected


@pytest.mark.parametrize(
    ("op", "a", "b"),
    [
        ("power", 2, 63),
        ("power", 3, 40),
        ("power", 2**62, 64),
        ("power", -(2**32), 3),
        ("add", INT_MAX, 1),
        ("subtract", INT_MIN, 1),
        ("multiply", 2**32, 2**32),
        ("multiply", INT_MIN, -1),
        ("divide", INT_MIN, -1),
    ],
)
def test_int_math_refuses_results_beyond_64_bits(op, a, b):
    with pytest.raises(NodeInputError) as err:
        run_node(IntMath, a=a, b=b, operation=op)
    assert err.value.input_name == "b" and "64-bit" in err.value.message


def test_int_math_refuses_inputs_beyond_64_bits_before_computing():
    start = time.perf_counter()
    for a, b, name in ((10**4000, 64, "a"), (2, 10**4000, "b"), (10**4000, 10**4000, "a")):
        for op in ("power", "multiply", "add", "modulo"):
            with pytest.raises(NodeInputError) as err:
                run_node(IntMath, a=a, b=b, operation=op)
            assert err.value.input_name == name and "64-bit" in err.value.message
            assert len(err.value.message) < 300
    assert time.perf_counter() - start < 1


def test_float_math_stays_finite_with_whole_number_inputs():
    big = int(1.7e308)
    for op, a, b in (("add", big, big), ("multiply", big, 2), ("subtract", -big, big), ("power", 10, 400)):
        with pytest.raises(NodeInputError) as err:
            run_node(FloatMath, a=a, b=b, operation=op)
        assert err.value.input_name == "b"
    assert run_node(FloatMath, a=2, b=3, operation="add")["value"] == 5.0


def test_chain_of_powers_is_refused_at_once(registry):
    """Int(10^4000) -> IntMath power 64 -> ... used to hold the GIL for seconds."""
    chain = workflow(
        big=node("Int", value=10**4000),
        p1=node("IntMath", a=link("big", "value"), b=64, operation="power"),
        p2=node("IntMath", a=link("p1", "value"), b=8, operation="power"),
        show=node("ShowValue", value=link("p2", "value")),
    )
    start = time.perf_counter()
    result = validate(chain, registry)
    assert [(i.node_id, i.input) for i in result.issues] == [("big", "value")]
    chain["nodes"]["big"]["inputs"]["value"] = 2**40
    run = Executor(registry).run(valid(chain, registry))
    assert run.status == "failed" and (run.error.node_id, run.error.input) == ("p1", "b")
    assert "64-bit" in run.error.message
    assert time.perf_counter() - start < 2


class Huge(Node):
    description = "Produces a whole number beyond 64 bits (a buggy node)."
    outputs = (Output("value", T.INT), Output("number", T.FLOAT))

    def run(self, ctx: Context) -> dict:
        return {"value": 2**70, "number": 10**400}


@pytest.mark.parametrize(("consumer", "output"), [("Int", "value"), ("Float", "number")])
def test_linked_values_beyond_their_type_fail_naming_node_and_input(consumer, output):
    registry = Registry()
    registry.add_pack("nodes.primitives")
    registry.add(Huge)
    target = "IntMath" if consumer == "Int" else "FloatMath"
    data = workflow(
        h=node("Huge"),
        m=node(target, a=link("h", output), b=1),
        show=node("ShowValue", value=link("m", "value")),
    )
    run = Executor(registry).run(valid(data, registry))
    assert run.status == "failed"
    assert (run.error.node_id, run.error.input) == ("m", "a")
    assert "64-bit" in run.error.message or "too large" in run.error.message
