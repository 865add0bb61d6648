"""``app.py import-comfy``: ComfyUI workflows (API and UI format) into studio workflows."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cli.comfy import (
    RULES,
    SEED_MAX,
    ComfyError,
    Conversion,
    clean_prefix,
    convert,
    map_sampler,
    read_prompt,
)
from graph.validate import validate
from nodes.registry import default_registry
from nodes.saving import _PREFIX

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data" / "comfy"


def app(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, str(REPO / "app.py"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def load(name: str) -> Any:
    return json.loads((DATA / name).read_text())


def converted(data: Any) -> Conversion:
    return convert(read_prompt(data), "test.json")


def link(node: str, output: str) -> dict[str, str]:
    return {"node": node, "output": output}


def graph_of(workflow: dict[str, Any]) -> dict[str, Any]:
    """Types and inputs only (no layout)."""
    return {node_id: {"type": n["type"], "inputs": n["inputs"]} for node_id, n in workflow["nodes"].items()}


def copy_in(tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copy(DATA / name, target)
    return target


DEFAULT_GRAPH = {
    "3": {
        "type": "Sampler",
        "inputs": {
            "seed": 156680208700286,
            "steps": 20,
            "cfg": 8,
            "denoise": 1,
            "model": link("4", "model"),
            "positive": link("6", "conditioning"),
            "negative": link("7", "conditioning"),
            "latent": link("5", "latent"),
            "sampler": "euler",
        },
    },
    "4": {"type": "CheckpointLoader", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
    "5": {
        "type": "EmptyLatent",
        "inputs": {"width": 512, "height": 512, "batch_size": 1, "vae": link("4", "vae")},
    },
    "6": {
        "type": "CLIPTextEncode",
        "inputs": {
            "text": "beautiful scenery nature glass bottle landscape, , purple galaxy bottle,",
            "clip": link("4", "clip"),
        },
    },
    "7": {"type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": link("4", "clip")}},
    "8": {"type": "VAEDecode", "inputs": {"latent": link("3", "latent"), "vae": link("4", "vae")}},
    "9": {"type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": link("8", "image")}},
}


# --- the default txt2img graph ------------------------------------------------------


def test_default_graph_converts_exactly():
    result = converted(load("default_api.json"))
    assert result.complete and not result.dropped_links and not result.warnings
    assert graph_of(result.workflow) == DEFAULT_GRAPH
    nodes = result.workflow["nodes"]
    assert nodes["3"]["title"] == "KSampler"
    assert nodes["4"]["title"] == "Load Checkpoint"
    assert result.workflow["version"] == 1
    assert result.workflow["metadata"]["imported_from"] == {"format": "comfyui-api", "file": "test.json"}


def test_default_graph_is_laid_out_by_dependency_depth():
    nodes = converted(load("default_api.json")).workflow["nodes"]
    columns = {node_id: node["position"][0] for node_id, node in nodes.items()}
    # the EmptyLatent takes the checkpoint's VAE, so it stands in the second column
    assert columns == {"4": 0, "5": 300, "6": 300, "7": 300, "3": 600, "8": 900, "9": 1200}
    positions = [tuple(node["position"]) for node in nodes.values()]
    assert len(set(positions)) == len(positions)


def test_default_graph_is_valid_but_for_the_missing_checkpoint():
    result = converted(load("default_api.json"))
    issues = validate(result.workflow, default_registry()).issues
    assert [(i.node_id, i.input) for i in issues] == [("4", "ckpt_name")]


def test_cli_writes_next_to_the_file_and_reports(tmp_path):
    source = copy_in(tmp_path, "default_api.json")
    done = app("import-comfy", str(source))
    assert done.returncode == 0, done.stderr
    out = tmp_path / "default_api.studio.json"
    assert graph_of(json.loads(out.read_text())) == DEFAULT_GRAPH
    lines = done.stdout.splitlines()
    assert "  comfy id 3 KSampler -> Sampler" in lines
    assert "  comfy id 4 CheckpointLoaderSimple -> CheckpointLoader" in lines
    assert "  comfy id 9 SaveImage -> SaveImage" in lines
    assert "converted 7 of 7" in lines[0]
    assert "v1-5-pruned-emaonly.safetensors" in done.stdout  # validation names the missing file
    assert f"wrote {out}" in lines
    assert "Traceback" not in done.stderr


def test_cli_never_overwrites(tmp_path):
    source = copy_in(tmp_path, "default_api.json")
    out = tmp_path / "mine.json"
    out.write_text("keep me")
    done = app("import-comfy", str(source), "--out", str(out))
    assert done.returncode == 2
    assert "already exists" in done.stderr and "Traceback" not in done.stderr
    assert out.read_text() == "keep me"

    assert app("import-comfy", str(source)).returncode == 0
    default = tmp_path / "default_api.studio.json"
    first = default.read_text()
    again = app("import-comfy", str(source))
    assert again.returncode == 2 and "already exists" in again.stderr
    assert default.read_text() == first


def test_cli_json_report(tmp_path):
    done = app("import-comfy", str(DATA / "custom_api.json"), "--out", str(tmp_path / "u.json"), "--json")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["exit_code"] == 1 and report["complete"] is False
    assert report["format"] == "API format"
    assert report["out"] == str(tmp_path / "u.json")
    assert [c["comfy_id"] for c in report["converted"]] == ["3", "4", "5", "6", "7", "8", "9", "12"]
    assert [(n["comfy_id"], n["comfy_type"]) for n in report["not_converted"]] == [
        ("10", "ImageSharpen"),
        ("11", "Image Comparer (rgthree)"),
    ]
    assert all(
        n["reason"].startswith(f"no equivalent for {n['comfy_type']!r}") for n in report["not_converted"]
    )
    assert all("rebuild that step" in n["reason"] for n in report["not_converted"])
    (dropped,) = report["dropped_links"]
    assert (dropped["source_id"], dropped["output"], dropped["target_id"], dropped["input"]) == (
        "10",
        0,
        "9",
        "images",
    )
    assert {(i["node_id"], i["input"]) for i in report["issues"]} == {("4", "ckpt_name"), ("9", "images")}


# --- the UI format ------------------------------------------------------------------------


def test_ui_format_gives_the_same_graph_with_comfy_positions():
    result = converted(load("default_ui.json"))
    assert result.complete and not result.warnings
    assert graph_of(result.workflow) == DEFAULT_GRAPH
    assert result.workflow["nodes"]["3"]["position"] == [863.0, 186.0]
    assert result.workflow["metadata"]["imported_from"]["format"] == "comfyui-ui"


def test_ui_format_resolves_primitives_reroutes_notes_and_keeps_muted_nodes():
    data = load("default_ui.json")
    nodes = {n["id"]: n for n in data["nodes"]}
    # a PrimitiveNode drives the seed, a Reroute carries the VAE, a Note, a group
    nodes[3]["inputs"].append({"name": "seed", "type": "INT", "link": 20, "widget": {"name": "seed"}})
    data["nodes"].append(
        {"id": 20, "type": "PrimitiveNode", "pos": [0, 0], "mode": 0, "widgets_values": [1234, "fixed"]}
    )
    data["nodes"].append(
        {"id": 21, "type": "Reroute", "pos": [1000, 400], "mode": 0, "inputs": [{"name": "", "link": 21}]}
    )
    nodes[8]["inputs"][1]["link"] = 22
    data["nodes"].append({"id": 22, "type": "Note", "pos": [5, 6], "mode": 0, "widgets_values": ["hello"]})
    data["links"] += [[20, 20, 0, 3, 4, "INT"], [21, 4, 2, 21, 0, "*"], [22, 21, 0, 8, 1, "VAE"]]
    data["groups"] = [{"title": "Prompts", "bounding": [400, 100, 450, 500], "color": "#3f789e"}]
    # a muted PreviewImage fed by the decoder, and a muted node feeding the SaveImage
    data["nodes"].append(
        {"id": 23, "type": "ImageInvert", "mode": 2, "inputs": [{"name": "image", "link": 23}]}
    )
    data["links"].append([23, 8, 0, 23, 0, "IMAGE"])
    nodes[9]["inputs"][0]["link"] = 24
    data["links"].append([24, 23, 0, 9, 0, "IMAGE"])

    result = converted(data)
    graph = graph_of(result.workflow)
    assert graph["3"]["inputs"]["seed"] == 1234
    assert graph["8"]["inputs"]["vae"] == link("4", "vae")
    assert "20" not in graph and "21" not in graph and "22" not in graph
    # the muted node is kept, muted, and still feeds the SaveImage (which then does not run)
    assert result.workflow["nodes"]["23"]["mode"] == "mute"
    assert graph["9"]["inputs"]["images"] == link("23", "image")
    assert result.complete and not result.warnings and not result.dropped_links
    assert [c.mode for c in result.converted if c.comfy_id == "23"] == ["mute"]
    assert result.workflow["notes"] == [{"text": "hello", "position": [5.0, 6.0]}]
    assert result.workflow["groups"] == [
        {"title": "Prompts", "bounds": [400, 100, 450, 500], "color": "#3f789e"}
    ]
    issues = validate(result.workflow, default_registry()).issues
    assert [(i.code, i.node_id, i.input) for i in issues] == [
        ("bad_value", "4", "ckpt_name"),
        ("no_outputs", None, None),  # the only output node needs the muted one
    ]


def test_ui_format_widget_converted_to_a_link_takes_the_link():
    data = load("default_ui.json")
    nodes = {n["id"]: n for n in data["nodes"]}
    nodes[5]["inputs"] = [{"name": "width", "type": "INT", "link": 30, "widget": {"name": "width"}}]
    data["nodes"].append({"id": 30, "type": "CM_IntToNumber", "mode": 0})
    data["links"].append([30, 30, 0, 5, 0, "INT"])
    result = converted(data)
    assert "width" not in result.workflow["nodes"]["5"]["inputs"]
    assert result.workflow["nodes"]["5"]["inputs"]["height"] == 512
    assert [n.comfy_id for n in result.not_converted] == ["30"]
    assert [(d.source_id, d.input) for d in result.dropped_links] == [("30", "width")]


# --- img2img, LoRA + ControlNet, unsupported nodes -------------------------------------------


def test_img2img_converts_exactly():
    result = converted(load("img2img_api.json"))
    assert result.complete
    graph = graph_of(result.workflow)
    assert graph == {
        "3": {
            "type": "Sampler",
            "inputs": {
                "seed": 280823642470253,
                "steps": 25,
                "cfg": 7,
                "denoise": 0.6,
                "model": link("14", "model"),
                "positive": link("6", "conditioning"),
                "negative": link("7", "conditioning"),
                "latent": link("12", "latent"),
                "sampler": "dpmpp_2m_karras",
            },
        },
        "6": {
            "type": "CLIPTextEncode",
            "inputs": {
                "text": "photograph of victorian woman with wings, sky clouds, meadow grass",
                "clip": link("14", "clip"),
            },
        },
        "7": {"type": "CLIPTextEncode", "inputs": {"text": "watermark, text", "clip": link("14", "clip")}},
        "8": {"type": "VAEDecode", "inputs": {"latent": link("3", "latent"), "vae": link("14", "vae")}},
        "9": {
            "type": "SaveImage",
            "inputs": {"filename_prefix": "img2img/_result", "images": link("8", "image")},
        },
        "10": {"type": "LoadImage", "inputs": {"path": "example.png"}},
        "11": {
            "type": "ImageResize",
            "inputs": {
                "method": "nearest",
                "width": 768,
                "height": 512,
                "mode": "fill",
                "image": link("10", "image"),
            },
        },
        "12": {"type": "VAEEncode", "inputs": {"image": link("11", "image"), "vae": link("14", "vae")}},
        "14": {"type": "CheckpointLoader", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
    }
    (warning,) = result.warnings
    assert warning.startswith("comfy id 9 SaveImage: filename_prefix")
    issues = validate(result.workflow, default_registry()).issues
    assert [(i.node_id, i.input) for i in issues] == [("14", "ckpt_name")]


def test_lora_and_controlnet_advanced_convert_exactly():
    result = converted(load("lora_controlnet_api.json"))
    assert result.complete
    graph = graph_of(result.workflow)
    assert graph["10"] == {
        "type": "LoraLoader",
        "inputs": {
            "lora_name": "armour_style.safetensors",
            "strength_model": 0.8,
            "strength_clip": 0.7,
            "model": link("4", "model"),
            "clip": link("4", "clip"),
        },
    }
    assert graph["6"]["inputs"]["clip"] == link("10", "clip")
    assert graph["11"] == {
        "type": "ControlNetLoader",
        "inputs": {"control_net_name": "control_v11p_sd15_openpose.pth"},
    }
    assert graph["12"] == {"type": "LoadImage", "inputs": {"path": "pose.png"}}
    shared = {"strength": 0.9, "start": 0, "end": 0.8, "control_net": link("11", "control_net")}
    shared["image"] = link("12", "image")
    assert graph["13_pos"] == {
        "type": "ControlNetApply",
        "inputs": {**shared, "conditioning": link("6", "conditioning")},
    }
    assert graph["13_neg"] == {
        "type": "ControlNetApply",
        "inputs": {**shared, "conditioning": link("7", "conditioning")},
    }
    assert "13" not in graph
    sampler = graph["3"]["inputs"]
    assert sampler["model"] == link("10", "model")
    assert sampler["positive"] == link("13_pos", "conditioning")
    assert sampler["negative"] == link("13_neg", "conditioning")
    # dpmpp_2m_sde with karras has no studio Sampler equivalent: it becomes the custom-sampling
    # chain that runs exactly that sampler on exactly that schedule, with no approximation
    assert graph["3"]["type"] == "SamplerCustom"
    assert sampler["sampler"] == link("3_sampler", "sampler")
    assert sampler["sigmas"] == link("3_sigmas", "sigmas")
    assert graph["3_sampler"]["inputs"] == {"sampler_name": "dpmpp_2m_sde"}
    assert graph["3_sigmas"]["inputs"]["scheduler"] == "karras"
    assert graph["3_sigmas"]["inputs"]["model"] == link("10", "model")
    assert graph["14"] == {
        "type": "VAELoader",
        "inputs": {"vae_name": "vae-ft-mse-840000-ema-pruned.safetensors"},
    }
    assert graph["8"]["inputs"]["vae"] == link("14", "vae")
    nodes = result.workflow["nodes"]
    assert nodes["13_pos"]["title"] == "Apply ControlNet (positive)"
    assert nodes["13_neg"]["title"] == "Apply ControlNet (negative)"
    assert result.warnings == []
    (item,) = [c for c in result.converted if c.comfy_id == "13"]
    assert item.nodes == [("13_pos", "ControlNetApply"), ("13_neg", "ControlNetApply")]


def test_unsupported_nodes_are_named_and_their_links_dropped(tmp_path):
    out = tmp_path / "up.json"
    done = app("import-comfy", str(DATA / "custom_api.json"), "--out", str(out))
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert any(
        line.startswith("  comfy id 10 ImageSharpen: no equivalent for 'ImageSharpen'") for line in lines
    )
    assert any(line.startswith("  comfy id 11 Image Comparer (rgthree): no equivalent") for line in lines)
    assert (
        "  comfy 10 ImageSharpen output 0 -> comfy 9 SaveImage input 'images' (its source was not converted)"
        in lines
    )
    written = json.loads(out.read_text())
    assert set(written["nodes"]) == {"3", "4", "5", "6", "7", "8", "9", "12"}
    assert written["nodes"]["9"]["inputs"] == {"filename_prefix": "sharpened"}
    assert written["nodes"]["12"]["inputs"] == {"images": link("8", "image")}
    assert "ImageSharpen" in written["notes"][-1]["text"]
    assert "node '9' (SaveImage), input 'images'" in done.stdout  # validation says what is missing


def test_nothing_convertible_writes_nothing(tmp_path):
    source = tmp_path / "odd.json"
    source.write_text(json.dumps({"1": {"class_type": "ImageSharpen", "inputs": {"sigma": 1.0}}}))
    done = app("import-comfy", str(source))
    assert done.returncode == 1
    assert "no equivalent for 'ImageSharpen'" in done.stdout
    assert "no file written" in done.stdout
    assert not (tmp_path / "odd.studio.json").exists()


# --- malformed input --------------------------------------------------------------------------


def _node(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs}


MALFORMED: dict[str, tuple[str | bytes, str]] = {
    "not_json": ('{"3": {"class_type": ', "not valid JSON"),
    "a_list": ("[1, 2, 3]", "not a list"),
    "empty": ("{}", "no nodes"),
    "not_a_node": ('{"3": 5}', "node 3"),
    "no_class_type": ('{"3": {"inputs": {}}}', "no 'class_type'"),
    "missing_node": (
        json.dumps({"8": _node("VAEDecode", samples=["3", 0], vae=["4", 2])}),
        "links to node 3, which does not exist",
    ),
    "index_out_of_range": (
        json.dumps(
            {
                "4": _node("CheckpointLoaderSimple", ckpt_name="a.safetensors"),
                "8": _node("VAEDecode", vae=["4", 3]),
            }
        ),
        "links to output 3 of node 4 (CheckpointLoaderSimple), which has 3 outputs",
    ),
    "negative_index": (
        json.dumps({"4": _node("Foo"), "8": _node("VAEDecode", vae=["4", -1])}),
        "negative",
    ),
    "bad_link": (json.dumps({"4": _node("Foo", x=[1, 2, 3])}), "[node_id, output_index]"),
    "studio_file": (json.dumps({"version": 1, "nodes": {}}), "already a studio workflow"),
    "not_utf8": (b"\xff\xfe\x00{", "neither UTF-8 text nor a PNG"),
    "nan": ('{"3": {"class_type": "KSampler", "inputs": {"cfg": NaN}}}', "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_files_exit_2_without_traceback(tmp_path, case):
    content, message = MALFORMED[case]
    source = tmp_path / "bad.json"
    if isinstance(content, bytes):
        source.write_bytes(content)
    else:
        source.write_text(content)
    done = app("import-comfy", str(source))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr
    assert done.stderr.startswith("error: ")
    assert "Traceback" not in done.stderr + done.stdout
    assert not (tmp_path / "bad.studio.json").exists()


def test_missing_file_and_unwritable_out_exit_2(tmp_path):
    done = app("import-comfy", str(tmp_path / "nope.json"))
    assert done.returncode == 2 and "cannot read" in done.stderr and "Traceback" not in done.stderr
    done = app("import-comfy", str(DATA / "default_api.json"), "--out", str(tmp_path / "no" / "dir.json"))
    assert done.returncode == 2 and "cannot write" in done.stderr and "Traceback" not in done.stderr
    done = app("import-comfy", str(tmp_path / "nope.json"), "--json")
    assert done.returncode == 2 and json.loads(done.stdout)["exit_code"] == 2


@pytest.mark.parametrize(
    "data",
    [
        {"nodes": [{"type": "X"}], "links": []},
        {"nodes": [], "links": []},
        {"nodes": [5, {"id": 1}], "links": []},
    ],
)
def test_ui_files_without_a_readable_node_are_refused(data):
    with pytest.raises(ComfyError, match="no nodes"):
        read_prompt(data)


@pytest.mark.parametrize(
    ("data", "warning"),
    [
        (
            {"nodes": [{"id": 1, "type": "VAEDecode", "inputs": [{"name": "vae", "link": 7}]}], "links": []},
            "link 7, which is not in 'links'",
        ),
        (
            {
                "nodes": [{"id": 1, "type": "VAEDecode", "inputs": [{"name": "vae", "link": 7}]}],
                "links": [[7, 99, 0, 1, 0, "VAE"]],
            },
            "node 99, which does not exist",
        ),
        ({"nodes": [{"id": 1, "type": "VAEDecode", "inputs": 5}], "links": []}, "'inputs' is a number"),
        ({"nodes": [{"id": 1, "type": "VAEDecode"}], "links": 5}, "'links' is a number"),
        (
            {
                "nodes": [
                    {"id": 1, "type": "Reroute", "inputs": [{"name": "", "link": 2}]},
                    {"id": 2, "type": "Reroute", "inputs": [{"name": "", "link": 1}]},
                    {"id": 3, "type": "PreviewImage", "inputs": [{"name": "images", "link": 1}]},
                ],
                "links": [[1, 1, 0, 2, 0, "*"], [2, 2, 0, 1, 0, "*"]],
            },
            "in a loop",
        ),
    ],
)
def test_damaged_ui_entries_are_left_out_with_a_warning(data, warning):
    """One bad entry costs that entry, not the file: the rest converts and the report says why."""
    result = converted(data)
    assert result.converted and result.complete
    assert any(warning in text for text in result.warnings), result.warnings
    for node in result.workflow["nodes"].values():
        assert all(not isinstance(v, dict) for v in node["inputs"].values())  # the bad link is gone


# --- the mapping table ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sampler", "scheduler", "ours", "warned"),
    [
        ("euler", "normal", "euler", False),
        ("euler_ancestral", "normal", "euler_ancestral", False),
        ("ddim", "ddim_uniform", "ddim", True),
        ("ddpm", "normal", "ddpm", False),
        ("dpmpp_2m", "karras", "dpmpp_2m_karras", False),
        ("dpmpp_2m", "normal", "dpmpp_2m", False),
        ("dpmpp_2m", "exponential", "dpmpp_2m", True),
        ("uni_pc", "normal", "unipc", False),
        ("uni_pc_bh2", "simple", "unipc", False),
        ("lcm", "sgm_uniform", "lcm", False),
        ("dpmpp_2m_sde", "karras", "dpmpp_2m_karras", True),
        ("dpmpp_3m_sde_gpu", "normal", "dpmpp_2m", True),
        ("dpmpp_2s_ancestral", "normal", "dpmpp_2m", True),
        ("dpm_2_ancestral", "normal", "euler_ancestral", True),
        ("heun", "normal", "euler", True),
        ("dpm_2", "normal", "euler", True),
        ("euler", "karras", "euler", True),
    ],
)
def test_sampler_names(sampler, scheduler, ours, warned):
    warnings: list[str] = []
    assert map_sampler(sampler, scheduler, warnings.append) == ours
    assert bool(warnings) == warned
    assert ours in default_registry().get("Sampler").input("sampler").current_choices()


def _one(class_type: str, **inputs: Any) -> Conversion:
    return converted({"1": _node(class_type, **inputs)})


def test_ksampler_advanced_keeps_its_window():
    base = {
        "add_noise": "enable",
        "noise_seed": 7,
        "steps": 20,
        "cfg": 5.5,
        "sampler_name": "euler",
        "scheduler": "normal",
        "start_at_step": 0,
        "end_at_step": 10000,
        "return_with_leftover_noise": "disable",
    }
    result = _one("KSamplerAdvanced", **base)
    assert result.workflow["nodes"]["1"]["type"] == "SamplerAdvanced"
    assert result.workflow["nodes"]["1"]["inputs"] == {
        "add_noise": True,
        "seed": 7,
        "steps": 20,
        "cfg": 5.5,
        "sampler": "euler",
        "start_at_step": 0,
        "end_at_step": 10000,
        "return_with_leftover_noise": False,
    }
    assert result.warnings == []
    later = _one("KSamplerAdvanced", **{**base, "start_at_step": 5, "add_noise": "disable"})
    assert later.workflow["nodes"]["1"]["inputs"]["start_at_step"] == 5
    assert later.workflow["nodes"]["1"]["inputs"]["add_noise"] is False
    early = _one("KSamplerAdvanced", **{**base, "end_at_step": 12, "return_with_leftover_noise": "enable"})
    assert early.workflow["nodes"]["1"]["inputs"]["end_at_step"] == 12
    assert early.workflow["nodes"]["1"]["inputs"]["return_with_leftover_noise"] is True
    assert later.warnings == early.warnings == []


def test_huge_seed_is_reduced_with_a_warning():
    result = _one("KSampler", seed=2**64 - 1, steps=20, cfg=8, sampler_name="euler", scheduler="normal")
    assert result.workflow["nodes"]["1"]["inputs"]["seed"] == (2**64 - 1) % (SEED_MAX + 1)
    assert "above the studio's largest" in result.warnings[0]


def test_small_nodes():
    assert _one("ImageInvert").workflow["nodes"]["1"] == {
        "type": "ImageInvert",
        "inputs": {},
        "position": [0, 0],
    }
    graph = graph_of(
        converted(
            {
                "1": _node("LoadImage", image="a.png", upload="image"),
                "2": _node(
                    "ImagePadForOutpaint", image=["1", 0], left=64, top=0, right=64, bottom=0, feathering=40
                ),
                "3": _node("SetLatentNoiseMask", samples=["5", 0], mask=["2", 1]),
                "4": _node("ConditioningCombine", conditioning_1=["6", 0], conditioning_2=["6", 0]),
                "5": _node("EmptyLatentImage", width=512, height=512, batch_size=1),
                "6": _node(
                    "ControlNetApply", conditioning=["4", 0], control_net=["7", 0], image=["1", 0], strength=1
                ),
                "7": _node("ControlNetLoader", control_net_name="canny.safetensors"),
                "8": _node("PreviewImage", images=["2", 0]),
                "9": _node(
                    "ImageScale", image=["1", 0], upscale_method="area", width=0, height=64, crop="disabled"
                ),
            }
        ).workflow
    )
    assert graph["2"] == {
        "type": "ImagePad",
        "inputs": {
            "fill": "edge",
            "image": link("1", "image"),
            "left": 64,
            "top": 0,
            "right": 64,
            "bottom": 0,
        },
    }
    assert graph["3"]["inputs"] == {"latent": link("5", "latent"), "mask": link("2", "mask")}
    assert graph["4"]["inputs"] == {
        "conditioning_a": link("6", "conditioning"),
        "conditioning_b": link("6", "conditioning"),
    }
    assert graph["6"]["inputs"]["control_net"] == link("7", "control_net")
    assert graph["8"]["inputs"] == {"images": link("2", "image")}
    assert graph["9"]["inputs"]["method"] == "bilinear" and graph["9"]["inputs"]["mode"] == "stretch"
    result = converted({"2": _node("ImagePadForOutpaint", feathering=40), "9": _node("ImageScale", width=0)})
    text = "\n".join(result.warnings)
    assert "feathering 40 is dropped" in text
    assert "width 0 (keep the aspect ratio)" in text


def test_unknown_inputs_of_known_nodes_are_warned_about():
    result = _one("VAEDecode", samples=None, tiled=True)
    assert result.warnings == ["comfy id 1 VAEDecode: input 'tiled' (true) has no equivalent; dropped"]


def test_a_loop_is_converted_and_left_to_validation():
    data = {
        "1": _node("ImageInvert", image=["2", 0]),
        "2": _node("ImageInvert", image=["1", 0]),
        "3": _node("PreviewImage", images=["2", 0]),
    }
    result = converted(data)
    assert result.complete
    issues = validate(result.workflow, default_registry()).issues
    assert [i.code for i in issues] == ["cycle"]


@pytest.mark.parametrize(
    "prefix",
    ["ComfyUI", "%date:yyyy-MM-dd%/ComfyUI", "a/../b", "../../etc/passwd", "what?*<>|", "///", "", "dir\\x"],
)
def test_cleaned_prefixes_are_accepted_by_save_image(prefix):
    cleaned = clean_prefix(prefix, lambda text: None)
    assert _PREFIX.match(cleaned)
    assert all(part not in (".", "..") for part in cleaned.split("/"))
    if prefix in ("ComfyUI", "%date:yyyy-MM-dd%/ComfyUI"):
        assert cleaned == "ComfyUI"


def test_the_table_agrees_with_the_registered_nodes():
    registry = default_registry()
    for comfy_type, rule in RULES.items():
        suffixes = {part.suffix for part in rule.parts}
        for output in rule.outputs:
            assert output is None or output[0] in suffixes, comfy_type
        for part in rule.parts:
            cls = registry.get(part.type)
            if cls is None:
                continue  # a pack that is not installed: validation will say so
            for name in [*part.inputs.values(), *part.fixed]:
                assert cls.input(name) is not None, (comfy_type, part.type, name)
            for output in rule.outputs:
                if output is not None and output[0] == part.suffix:
                    assert cls.output(output[1]) is not None, (comfy_type, part.type, output)
        assert set(rule.values) <= {n for p in rule.parts for n in p.inputs}, comfy_type


def test_ui_widgets_name_only_comfy_inputs():
    for comfy_type, rule in RULES.items():
        known = {n for p in rule.parts for n in p.inputs} | rule.consumed
        assert set(rule.widgets) <= known, comfy_type


def test_conversion_does_not_change_its_input():
    data = load("lora_controlnet_api.json")
    before = copy.deepcopy(data)
    converted(data)
    assert data == before


def test_ui_bypassed_node_without_a_matching_input_is_kept_and_validation_names_the_gap():
    """A bypassed VAEDecode has no IMAGE input to pass on: it is kept, bypassed, and
    validating the result says SaveImage's images would come through that gap."""
    data = load("default_ui.json")
    nodes = {n["id"]: n for n in data["nodes"]}
    nodes[8]["mode"] = 4
    result = converted(data)
    assert result.complete and not result.dropped_links and not result.warnings
    assert result.workflow["nodes"]["8"]["mode"] == "bypass"
    assert result.workflow["nodes"]["9"]["inputs"]["images"] == link("8", "image")
    gaps = [i for i in validate(result.workflow, default_registry()).issues if i.code == "bypass_gap"]
    assert [(i.node_id, i.input) for i in gaps] == [("9", "images")]
    assert "node '8' (VAEDecode)" in gaps[0].message and "'8'" in (gaps[0].hint or "")


# --- fuzzing: any damaged file is converted or refused with ComfyError, never a crash -------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.sampled_from(["3", "4", "KSampler", "euler", "karras", "center", "%x%/../a", 5, -1, 2**64, 1e300])
    | st.sampled_from([[1], ["3", 0], ["4", 7], {"a": 1}, [1, 2, 3, 4, 5, 6], 4, 2]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
SAMPLES = [load(name) for name in sorted(p.name for p in DATA.glob("*.json"))]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _paths(item, (*prefix, index))
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_damaged_files_never_crash(data):
    document = copy.deepcopy(data.draw(st.sampled_from(SAMPLES)))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        path = data.draw(st.sampled_from(_paths(document)))
        if not path:
            document = copy.deepcopy(data.draw(JSON_VALUES))
            continue
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        if data.draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(data.draw(JSON_VALUES))
    try:
        result = converted(document)
    except ComfyError as exc:
        assert str(exc)
        return
    text = json.dumps(result.workflow)
    validate(text, REGISTRY)
    for item in result.converted:
        assert all(node_id in result.workflow["nodes"] for node_id, _ in item.nodes)


REGISTRY = default_registry()


def test_links_into_inputs_without_equivalent_are_dropped_links():
    data = {
        "1": _node("SamplerSelector"),
        "2": _node("KSampler", sampler_name=["1", 0], scheduler="normal", seed=1, tiled=["1", 1]),
    }
    result = converted(data)
    assert result.workflow["nodes"]["2"]["inputs"] == {"seed": 1, "sampler": "euler"}
    assert [(d.source_id, d.input, d.reason) for d in result.dropped_links] == [
        ("1", "sampler_name", "set it by hand"),
        ("1", "tiled", "that input has no equivalent"),
    ]
    assert any("not a sampler name" in w for w in result.warnings)


def test_split_ids_never_collide_with_comfy_ids():
    data = load("lora_controlnet_api.json")
    data["13_pos"] = _node("ImageInvert", image=["12", 0])
    graph = graph_of(converted(data).workflow)
    assert graph["13_pos"]["type"] == "ImageInvert"
    assert graph["13_pos_"]["type"] == "ControlNetApply"
    assert graph["3"]["inputs"]["positive"] == link("13_pos_", "conditioning")


def test_converted_workflow_runs(tmp_path):
    out = tmp_path / "invert.json"
    done = app("import-comfy", str(DATA / "invert_api.json"), "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "validation of the result: valid" in done.stdout
    assert app("validate", str(out)).returncode == 0
    assets = REPO / "workflows" / "assets"
    ran = app("run", str(out), "--out", str(tmp_path / "output"), "--input-dir", str(assets))
    assert ran.returncode == 0, ran.stderr
    (saved,) = (tmp_path / "output" / "ComfyUI").glob("inverted*.png")
    with Image.open(saved) as picture:
        assert picture.size == (64, 48)
