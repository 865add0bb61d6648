"""The importer's formats and semantics: UI format 1, subgraphs, group nodes, PNGs, bypass,
primitives, the VAE of EmptyLatent, KSamplerAdvanced windows, and ComfyUI files given
straight to ``run``, ``validate`` and the studio's Open."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from comfy_import import RULES, ComfyError, Conversion, read_bytes, rules
from comfy_import.rules import KSAMPLER_AS_CUSTOM
from graph.modes import resolve
from graph.validate import validate
from graph.workflow import Link, NodeEntry
from nodes.registry import default_registry
from tests.test_import_comfy import converted, link, load
from tests.test_import_comfy import graph_of as workflow_graph

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data" / "comfy"


def app(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, str(REPO / "app.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def graph_of(result: Conversion) -> dict[str, Any]:
    return workflow_graph(result.workflow)


def ui_v1(data: dict[str, Any]) -> dict[str, Any]:
    """The UI format as ComfyUI's frontend writes version 1: links as objects."""
    out = copy.deepcopy(data)
    out["version"] = 1
    out["links"] = [
        {"id": i, "origin_id": o, "origin_slot": os_, "target_id": t, "target_slot": ts, "type": ty}
        for i, o, os_, t, ts, ty in data["links"]
    ]
    return out


def png_with(texts: dict[str, str], path: Path) -> Path:
    info = PngInfo()
    for key, value in texts.items():
        info.add_text(key, value)
    Image.new("RGB", (8, 8), "white").save(path, pnginfo=info)
    return path


def api_txt2img(ckpt: str = "toy-sd", size: int = 64, steps: int = 2) -> dict[str, Any]:
    """ComfyUI's default graph in the API format, small enough to run here."""
    data = load("default_api.json")
    data["4"]["inputs"]["ckpt_name"] = ckpt
    data["5"]["inputs"].update(width=size, height=size)
    data["3"]["inputs"].update(steps=steps, seed=3)
    data["6"]["inputs"]["text"] = "a red circle"
    data["9"]["inputs"]["filename_prefix"] = "comfy"
    return data


# --- UI format 1 -------------------------------------------------------------------------


def test_ui_format_1_with_link_objects_gives_the_same_graph_as_0_4():
    old = converted(load("default_ui.json"))
    new = converted(ui_v1(load("default_ui.json")))
    assert new.complete and not new.warnings
    assert graph_of(new) == graph_of(old)
    assert new.label == "UI format 1" and old.label == "UI format 0.4"
    assert graph_of(new)["8"]["inputs"] == {"latent": link("3", "latent"), "vae": link("4", "vae")}


# --- subgraphs and group nodes --------------------------------------------------------------


def test_subgraph_template_is_expanded_with_traceable_ids():
    result = converted(load("subgraph_ui.json"))
    assert result.complete and not result.dropped_links, result.warnings
    graph = graph_of(result)
    assert set(graph) == {"4", "9", "10:3", "10:5", "10:6", "10:7:1", "10:8"}  # 10:7 is a nested subgraph
    sampler = graph["10:3"]["inputs"]
    assert sampler["model"] == link("4", "model")  # through the subgraph's input node
    assert sampler["positive"] == link("10:6", "conditioning")
    assert sampler["negative"] == link("10:7:1", "conditioning")  # out of the nested one
    assert (sampler["steps"], sampler["seed"], sampler["sampler"]) == (2, 42, "euler")
    # the instance's promoted widget drives the inner prompt, not the inner node's stale value
    assert graph["10:6"]["inputs"] == {
        "text": "a red circle on a white background",
        "clip": link("4", "clip"),
    }
    assert graph["10:7:1"]["inputs"] == {"text": "blurry, text", "clip": link("4", "clip")}
    assert graph["9"]["inputs"]["images"] == link("10:8", "image")  # through the subgraph's output node
    assert graph["10:5"]["inputs"]["vae"] == link("4", "vae")
    assert result.workflow["notes"][0]["text"].startswith("Put **toy-sd**")
    assert not validate(result.workflow, default_registry()).issues


def test_subgraph_without_its_definition_is_named_as_such():
    data = load("subgraph_ui.json")
    data["definitions"]["subgraphs"] = [
        s for s in data["definitions"]["subgraphs"] if s["name"] != "Negative"
    ]
    result = converted(data)
    (missing,) = result.not_converted
    assert missing.comfy_id == "10:7"
    assert "a subgraph whose definition is not in the file" in missing.reason


def test_group_node_is_expanded_with_its_inner_link_and_widget_values():
    result = converted(load("group_node_ui.json"))
    assert result.complete and not result.warnings
    graph = graph_of(result)
    assert graph["12:0"] == {
        "type": "CLIPSetLastLayer",
        "inputs": {"stop_at_clip_layer": -2, "clip": link("4", "clip")},
    }
    assert graph["12:1"] == {
        "type": "CLIPTextEncode",
        "inputs": {"text": "a castle on a hill", "clip": link("12:0", "clip")},
    }
    assert graph["3"]["inputs"]["positive"] == link("12:1", "conditioning")
    assert "12" not in graph


def test_group_node_with_the_older_slash_type_name():
    data = load("group_node_ui.json")
    for node in data["nodes"]:
        if node["id"] == 12:
            node["type"] = "workflow/Prompt with clip skip"
    assert graph_of(converted(data))["12:1"]["inputs"]["clip"] == link("12:0", "clip")


# --- PNGs --------------------------------------------------------------------------------


def test_png_prefers_the_ui_workflow_and_falls_back_to_the_prompt(tmp_path):
    ui = load("default_ui.json")
    for node in ui["nodes"]:
        if node["id"] == 3:
            node["title"] = "from the UI workflow"
    api = load("default_api.json")
    both = png_with({"prompt": json.dumps(api), "workflow": json.dumps(ui)}, tmp_path / "both.png")
    prompt = read_bytes(both.read_bytes(), "both.png")
    assert prompt.nodes["3"]["title"] == "from the UI workflow"
    assert prompt.label == "UI format 0.4 in a PNG's 'workflow' text"

    damaged = png_with({"prompt": json.dumps(api), "workflow": "{not json"}, tmp_path / "damaged.png")
    prompt = read_bytes(damaged.read_bytes(), "damaged.png")
    assert prompt.nodes["3"]["title"] == "KSampler"
    assert prompt.label == "API format in a PNG's 'prompt' text"
    assert "'prompt' text is used instead" in prompt.warnings[0]

    only_api = png_with({"prompt": json.dumps(api)}, tmp_path / "api.png")
    assert read_bytes(only_api.read_bytes(), "api.png").format == "api"
    plain = png_with({}, tmp_path / "plain.png")
    with pytest.raises(ComfyError, match="holds no ComfyUI workflow"):
        read_bytes(plain.read_bytes(), "plain.png")


def test_import_comfy_accepts_a_png(tmp_path):
    source = png_with({"prompt": json.dumps(load("default_api.json"))}, tmp_path / "ComfyUI_00001_.png")
    done = app("import-comfy", str(source))
    assert done.returncode == 0, done.stdout + done.stderr
    written = json.loads((tmp_path / "ComfyUI_00001_.studio.json").read_text())
    assert written["nodes"]["3"]["type"] == "Sampler"
    assert "(API format in a PNG's 'prompt' text)" in done.stdout.splitlines()[0]


# --- keeping what can be kept ------------------------------------------------------------------


def test_odd_top_level_keys_and_malformed_nodes_are_left_out_with_a_warning():
    data = load("default_api.json")
    data["extra_pnginfo"] = "not a node"
    data["99"] = {"inputs": {}}
    result = converted(data)
    assert result.complete and set(result.workflow["nodes"]) == {"3", "4", "5", "6", "7", "8", "9"}
    assert any("node extra_pnginfo: expected an object" in w for w in result.warnings)
    assert any("node 99: no 'class_type'" in w for w in result.warnings)

    data["8"]["inputs"]["samples"] = ["99", 0]  # a link to the node left out: dropped, not refused
    result = converted(data)
    assert "latent" not in result.workflow["nodes"]["8"]["inputs"]
    assert any("links to node 99, which was left out" in w for w in result.warnings)


def test_bypassed_and_muted_nodes_keep_their_modes():
    """A bypassed LoraLoader is kept, bypassed: run, the sampler gets the checkpoint's model
    and the prompts its clip, as ComfyUI runs it. A muted PreviewImage is kept, muted."""
    data = load("default_ui.json")
    nodes = {n["id"]: n for n in data["nodes"]}
    data["nodes"].append(
        {
            "id": 20,
            "type": "LoraLoader",
            "mode": 4,
            "inputs": [
                {"name": "model", "type": "MODEL", "link": 30},
                {"name": "clip", "type": "CLIP", "link": 31},
            ],
            "outputs": [
                {"name": "MODEL", "type": "MODEL", "links": [32]},
                {"name": "CLIP", "type": "CLIP", "links": [33]},
            ],
            "widgets_values": ["style.safetensors", 1, 1],
        }
    )
    data["nodes"].append(
        {
            "id": 21,
            "type": "PreviewImage",
            "mode": 2,
            "inputs": [{"name": "images", "type": "IMAGE", "link": 34}],
        }
    )
    data["links"] += [
        [30, 4, 0, 20, 0, "MODEL"],
        [31, 4, 1, 20, 1, "CLIP"],
        [32, 20, 0, 3, 0, "MODEL"],
        [33, 20, 1, 6, 0, "CLIP"],
        [34, 8, 0, 21, 0, "IMAGE"],
    ]
    nodes[3]["inputs"][0]["link"] = 32
    nodes[6]["inputs"][0]["link"] = 33
    result = converted(data)
    graph = graph_of(result)
    assert result.complete and not result.dropped_links and not result.warnings
    assert graph["3"]["inputs"]["model"] == link("20", "model")
    assert graph["6"]["inputs"]["clip"] == link("20", "clip")
    assert result.workflow["nodes"]["20"]["mode"] == "bypass"
    assert result.workflow["nodes"]["21"]["mode"] == "mute"
    assert {c.comfy_id: c.mode for c in result.converted}["20"] == "bypass"
    checked = validate(result.workflow, default_registry())
    assert [(i.node_id, i.input) for i in checked.issues] == [("4", "ckpt_name")]  # not installed here
    entries = {k: NodeEntry.model_validate(v) for k, v in result.workflow["nodes"].items()}
    sampler_model = Link.model_validate(graph["3"]["inputs"]["model"])
    assert resolve(sampler_model, entries, default_registry()) == Link(node="4", output="model")


def test_reroute_chain_and_new_primitive_nodes_are_resolved():
    data = ui_v1(load("default_ui.json"))
    nodes = {n["id"]: n for n in data["nodes"]}
    data["nodes"] += [
        {
            "id": 30,
            "type": "Reroute",
            "inputs": [{"name": "", "type": "*", "link": 40}],
            "outputs": [{"type": "VAE"}],
        },
        {
            "id": 31,
            "type": "Reroute",
            "inputs": [{"name": "", "type": "*", "link": 41}],
            "outputs": [{"type": "VAE"}],
        },
        {"id": 32, "type": "PrimitiveInt", "widgets_values": [3, "fixed"], "outputs": [{"type": "INT"}]},
        {
            "id": 33,
            "type": "PrimitiveString",
            "widgets_values": ["a blue square"],
            "outputs": [{"type": "STRING"}],
        },
    ]
    data["links"] += [
        {"id": 40, "origin_id": 4, "origin_slot": 2, "target_id": 30, "target_slot": 0, "type": "VAE"},
        {"id": 41, "origin_id": 30, "origin_slot": 0, "target_id": 31, "target_slot": 0, "type": "VAE"},
        {"id": 42, "origin_id": 31, "origin_slot": 0, "target_id": 8, "target_slot": 1, "type": "VAE"},
        {"id": 43, "origin_id": 32, "origin_slot": 0, "target_id": 3, "target_slot": 4, "type": "INT"},
        {"id": 44, "origin_id": 33, "origin_slot": 0, "target_id": 6, "target_slot": 1, "type": "STRING"},
    ]
    nodes[8]["inputs"][1]["link"] = 42
    nodes[3]["inputs"].append({"name": "steps", "type": "INT", "widget": {"name": "steps"}, "link": 43})
    nodes[6]["inputs"].append({"name": "text", "type": "STRING", "widget": {"name": "text"}, "link": 44})
    result = converted(data)
    graph = graph_of(result)
    assert result.complete and not result.warnings
    assert graph["8"]["inputs"]["vae"] == link("4", "vae")
    assert graph["3"]["inputs"]["steps"] == 3
    assert graph["6"]["inputs"]["text"] == "a blue square"
    assert not {"30", "31", "32", "33"} & set(graph)


# --- what is not converted, and why -------------------------------------------------------------


def test_reasons_name_the_model_family_or_the_custom_node_pack():
    data = load("default_ui.json")
    data["nodes"] += [
        {"id": 40, "type": "ModelSamplingAuraFlow", "widgets_values": [1.73]},
        {"id": 41, "type": "FaceDetailer", "properties": {"cnr_id": "comfyui-impact-pack", "ver": "8.8.1"}},
        {"id": 42, "type": "Image Comparer (rgthree)", "properties": {"aux_id": "rgthree/rgthree-comfy"}},
    ]
    reasons = {n.comfy_id: n.reason for n in converted(data).not_converted}
    assert "does not run this model family or node type yet" in reasons["40"]
    assert "custom node pack 'comfyui-impact-pack'" in reasons["41"]
    assert "custom node pack 'rgthree/rgthree-comfy'" in reasons["42"]


# --- samplers ---------------------------------------------------------------------------------


def test_base_and_refiner_become_two_samplers_with_their_windows():
    def advanced(**inputs: Any) -> dict[str, Any]:
        shared = {"noise_seed": 5, "steps": 25, "cfg": 7, "sampler_name": "euler", "scheduler": "normal"}
        return {"class_type": "KSamplerAdvanced", "inputs": {**shared, **inputs}}

    data = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "base.safetensors"}},
        "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "refiner.safetensors"}},
        "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1}},
        "10": advanced(
            add_noise="enable",
            start_at_step=0,
            end_at_step=20,
            return_with_leftover_noise="enable",
            model=["1", 0],
            latent_image=["3", 0],
        ),
        "11": advanced(
            add_noise="disable",
            start_at_step=20,
            end_at_step=10000,
            return_with_leftover_noise="disable",
            model=["2", 0],
            latent_image=["10", 0],
        ),
        "12": {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["2", 2]}},
    }
    result = converted(data)
    graph = graph_of(result)
    assert result.complete and not result.warnings
    base, refiner = graph["10"], graph["11"]
    assert base["type"] == refiner["type"] == "SamplerAdvanced"
    window = ("add_noise", "start_at_step", "end_at_step", "return_with_leftover_noise")
    assert tuple(base["inputs"][k] for k in window) == (True, 0, 20, True)
    assert tuple(refiner["inputs"][k] for k in window) == (False, 20, 10000, False)
    assert refiner["inputs"]["latent"] == link("10", "latent")
    # the latent is sized for the VAE that decodes the refiner's result
    assert graph["3"]["inputs"]["vae"] == link("2", "vae")


KSAMPLER = {"seed": 9, "steps": 12, "cfg": 6.0, "denoise": 0.8, "model": ["1", 0], "latent_image": ["2", 0]}


def _ksampler(sampler_name: str, scheduler: str) -> Conversion:
    return converted(
        {
            "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "toy-sd"}},
            "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "3": {
                "class_type": "KSampler",
                "inputs": {**KSAMPLER, "sampler_name": sampler_name, "scheduler": scheduler},
            },
            "4": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["1", 2]}},
        }
    )


def test_ksampler_without_an_exact_sampler_becomes_the_custom_sampling_chain(monkeypatch):
    monkeypatch.setattr(
        rules.sampling, "custom_sampling_names", lambda: (("euler", "dpmpp_2m_sde"), ("normal", "karras"))
    )
    result = _ksampler("dpmpp_2m_sde", "karras")
    graph = graph_of(result)
    assert not result.warnings
    assert graph["3_sampler"] == {"type": "SamplerSelect", "inputs": {"sampler_name": "dpmpp_2m_sde"}}
    assert graph["3_sigmas"] == {
        "type": "BasicScheduler",
        "inputs": {"scheduler": "karras", "steps": 12, "denoise": 0.8, "model": link("1", "model")},
    }
    assert graph["3"] == {
        "type": "SamplerCustom",
        "inputs": {
            "add_noise": True,
            "noise_seed": 9,
            "cfg": 6.0,
            "model": link("1", "model"),
            "latent": link("2", "latent"),
            "sampler": link("3_sampler", "sampler"),
            "sigmas": link("3_sigmas", "sigmas"),
        },
    }
    assert graph["4"]["inputs"]["latent"] == link("3", "output")
    # an exact pair stays one Sampler; a pair the chain does not know either falls back with a warning
    assert graph_of(_ksampler("euler", "normal"))["3"]["type"] == "Sampler"
    fallback = _ksampler("heun", "beta")
    assert graph_of(fallback)["3"]["type"] == "Sampler" and fallback.warnings


def test_the_custom_sampling_names_cover_comfyui_favourites():
    """models.schedules (helper A) must know the pairs real workflows use most."""
    k_samplers, schedulers = rules.custom_sampling_names()
    assert {"euler", "euler_ancestral", "dpmpp_2m", "heun", "dpm_2", "lms"} <= set(k_samplers)
    assert {"normal", "karras", "exponential", "sgm_uniform", "simple"} <= set(schedulers)


# --- the table against the registered nodes ----------------------------------------------------


def test_every_rule_targets_a_registered_node_type_with_those_inputs_and_outputs():
    """Stricter than test_import_comfy's check: every target must be registered (the new node
    packs of issue 10 included)."""
    registry = default_registry()
    missing = []
    for comfy_type, rule in [*RULES.items(), ("KSampler (custom chain)", KSAMPLER_AS_CUSTOM)]:
        for part in rule.parts:
            cls = registry.get(part.type)
            if cls is None:
                missing.append(f"{comfy_type} -> {part.type}")
                continue
            for name in [*part.inputs.values(), *part.fixed, *part.links]:
                assert cls.input(name) is not None, (comfy_type, part.type, name)
            for output in rule.outputs:
                if output is not None and output[0] == part.suffix:
                    assert cls.output(output[1]) is not None, (comfy_type, part.type, output)
            for suffix, output_name in part.links.values():
                (source,) = [p for p in rule.parts if p.suffix == suffix]
                assert registry.get(source.type).output(output_name) is not None, (comfy_type, suffix)
        known = {n for p in rule.parts for n in p.inputs} | rule.consumed
        assert set(rule.widgets) <= known, comfy_type
    assert not missing, "not registered: " + ", ".join(missing)


# --- run, validate and the studio on a ComfyUI file -----------------------------------------------


def test_run_imports_a_comfy_file_on_the_fly_and_sizes_the_latent_for_a_4x_vae(tmp_path):
    """toy-sd's VAE shrinks by 4: the imported EmptyLatent gets the VAE, so 64x64 asked is
    64x64 made (without it the studio would assume 8x and make 32x32)."""
    source = tmp_path / "txt2img_api.json"
    source.write_text(json.dumps(api_txt2img()))
    done = app("run", str(source), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert "this is a ComfyUI workflow (API format): imported 7 of 7 nodes" in done.stderr
    (saved,) = (tmp_path / "out").glob("comfy*.png")
    with Image.open(saved) as picture:
        assert picture.size == (64, 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "txt2img_api.json"]  # nothing written beside


def test_a_hires_fix_upscale_gets_the_vae_so_its_pixel_size_is_right_with_a_4x_vae(tmp_path):
    """LatentUpscale's width/height are pixels: with toy-sd's 4x VAE a 64 -> 128 upscale must
    make a 128x128 picture, so the importer wires the VAE into it as into EmptyLatent."""
    data = api_txt2img(size=64)
    data["10"] = {
        "class_type": "LatentUpscale",
        "inputs": {
            "samples": ["3", 0],
            "upscale_method": "bislerp",
            "width": 128,
            "height": 128,
            "crop": "disabled",
        },
    }
    data["11"] = {
        "class_type": "KSampler",
        "inputs": {**data["3"]["inputs"], "latent_image": ["10", 0], "denoise": 0.5},
    }
    data["8"]["inputs"]["samples"] = ["11", 0]
    result = converted(data)
    assert result.complete, result.not_converted
    assert graph_of(result)["10"]["inputs"]["vae"] == link("4", "vae")
    source = tmp_path / "hires_api.json"
    source.write_text(json.dumps(data))
    done = app("run", str(source), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    (saved,) = (tmp_path / "out").glob("comfy*.png")
    with Image.open(saved) as picture:
        assert picture.size == (128, 128)


def test_run_refuses_a_partial_conversion_and_validate_reports_it(tmp_path):
    done = app("run", str(DATA / "custom_api.json"), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert "imported 8 of 10 nodes" in done.stderr
    assert "not converted: comfy id 10 ImageSharpen" in done.stderr
    assert "import-comfy" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()

    checked = app("validate", str(DATA / "custom_api.json"), "--json")
    assert checked.returncode == 2
    report = json.loads(checked.stdout)
    assert report["comfyui"] == {"format": "API format", "converted": 8, "total": 10, "complete": False}
    codes = [i["code"] for i in report["issues"]]
    assert codes.count("comfyui_not_converted") == 2


def test_validate_takes_a_comfy_png(tmp_path):
    source = png_with(
        {"prompt": json.dumps(api_txt2img()), "workflow": json.dumps(load("subgraph_ui.json"))},
        tmp_path / "ComfyUI_00002_.png",
    )
    done = app("validate", str(source))
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        "this is a ComfyUI workflow (UI format 0.4 in a PNG's 'workflow' text): imported 7 of 7"
        in done.stderr
    )
    assert done.stdout.strip().endswith("valid")


def test_importing_the_importer_stays_light():
    code = (
        "import sys, comfy_import, cli.comfy, comfy_import.files;"
        "heavy = {'torch', 'diffusers', 'gradio'} & set(sys.modules); assert not heavy, heavy"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_studio_open_imports_a_comfy_png(tmp_path):
    """The page's Open and drop (POST /api/import) read a ComfyUI PNG and say what came across."""
    from server.importing import import_file

    source = png_with({"workflow": json.dumps(load("group_node_ui.json"))}, tmp_path / "drop.png")
    imported = import_file(source.read_bytes(), "drop.png")
    assert imported.workflow["nodes"]["12:1"]["type"] == "CLIPTextEncode"
    assert imported.complete and imported.unconverted == []
    assert "this is a ComfyUI workflow (UI format 0.4 in a PNG" in imported.message
    assert "imported 8 of 8 nodes" in imported.message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drop.png"]

    partial = import_file((DATA / "custom_api.json").read_bytes(), "custom_api.json")
    assert not partial.complete and "imported 8 of 10 nodes" in partial.message
    assert "ImageSharpen" in {item["type"] for item in partial.unconverted}


def test_huge_whole_numbers_in_widget_settings_are_read():
    """ComfyUI's 2023 frontend wrote 2**64 as 18446744073709552000 in converted widgets'
    settings; the file is read (studio files would refuse such a number)."""
    text = (DATA / "default_ui.json").read_text()
    data = json.loads(text)
    for node in data["nodes"]:
        if node["id"] == 3:
            node["inputs"].append(
                {
                    "name": "seed",
                    "type": "INT",
                    "link": None,
                    "widget": {"name": "seed", "config": ["INT", {"max": 1}]},
                }
            )
    raw = json.dumps(data).replace('{"max": 1}', '{"max": 18446744073709552000}').encode()
    assert read_bytes(raw, "big.json").nodes["3"]["inputs"]["seed"] == 156680208700286
    with pytest.raises(ComfyError, match="not valid JSON"):
        read_bytes(b'{"3": {"class_type": "KSampler", "inputs": {"cfg": NaN}}}', "nan.json")


def test_mask_and_image_helpers_convert():
    graph = graph_of(
        converted(
            {
                "1": {"class_type": "SolidMask", "inputs": {"value": 0.5, "width": 64, "height": 32}},
                "2": {"class_type": "InvertMask", "inputs": {"mask": ["1", 0]}},
                "3": {"class_type": "MaskToImage", "inputs": {"mask": ["2", 0]}},
                "4": {"class_type": "ImageToMask", "inputs": {"image": ["3", 0], "channel": "red"}},
                "5": {
                    "class_type": "EmptyImage",
                    "inputs": {"width": 64, "height": 32, "batch_size": 1, "color": 0xFF8000},
                },
                "6": {
                    "class_type": "ImageBlend",
                    "inputs": {
                        "image1": ["5", 0],
                        "image2": ["3", 0],
                        "blend_factor": 0.5,
                        "blend_mode": "multiply",
                    },
                },
                "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
            }
        )
    )
    assert graph["2"] == {"type": "MaskInvert", "inputs": {"mask": link("1", "mask")}}
    assert graph["4"]["inputs"] == {"image": link("3", "image"), "channel": "red"}
    assert graph["5"]["inputs"]["color"] == "#ff8000"
    assert graph["6"]["inputs"] == {
        "image_a": link("5", "image"),
        "image_b": link("3", "image"),
        "factor": 0.5,
        "mode": "multiply",
    }


def test_a_loader_saved_without_widget_values_takes_its_model_from_the_files_model_list():
    """Current ComfyUI templates list each model in ``properties.models``; a LoraLoader saved
    without ``widgets_values`` gets its file from there (and defaults for the rest)."""
    data = copy.deepcopy(load("default_ui.json"))
    loader = next(n for n in data["nodes"] if n["type"] == "CheckpointLoaderSimple")
    del loader["widgets_values"]
    loader["properties"] = {
        "models": [
            {"name": "v1-5-pruned-emaonly.safetensors", "directory": "checkpoints"},
            {"name": "not-a-checkpoint.safetensors", "directory": "loras"},
        ]
    }
    result = converted(data)
    ours = graph_of(result)[str(loader["id"])]
    assert ours["inputs"]["ckpt_name"] == "v1-5-pruned-emaonly.safetensors"
    assert any("widget values were not saved" in w for w in result.warnings)

    loader["properties"]["models"].append({"name": "other.safetensors", "directory": "checkpoints"})
    ambiguous = graph_of(converted(data))[str(loader["id"])]
    assert "ckpt_name" not in ambiguous["inputs"]  # two candidates: not guessed
