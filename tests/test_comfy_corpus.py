"""The ComfyUI importer on a corpus of real workflows written by others.

tests/data/comfy/corpus holds API-format JSON, UI-format JSON (with subgraphs and group nodes)
and PNGs with ComfyUI's text chunks, from the sources SOURCES.md names. Every file must read and
convert, or be refused with a clear message; whatever is not converted is named with a reason;
most Stable Diffusion 1.x/2.x/XL workflows convert completely and validate; and a sample of them
runs with the bundled toy model. bench/comfy_corpus.py prints the same survey as figures.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.test_cli import app

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "data" / "comfy" / "corpus"
ASSETS = REPO / "workflows" / "assets"


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_comfy_corpus", REPO / "bench" / "comfy_corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


bench = _bench()
FILES = bench.corpus_files()
NAMES = [p.relative_to(CORPUS).as_posix() for p in FILES]


@pytest.fixture(scope="module")
def records() -> dict[str, Any]:
    """Every corpus file read, converted and validated once."""
    return {record.name: record for record in bench.survey(FILES)}


# --- the corpus itself ----------------------------------------------------------------------


def test_corpus_has_every_form_and_many_families(records):
    forms = [r.form for r in records.values()]
    assert len(records) >= 80
    assert sum(f == "api" for f in forms) >= 20
    assert sum(f.startswith("ui-") for f in forms) >= 20
    assert sum(f.startswith("png") for f in forms) >= 20
    workflows = [r.workflow for r in records.values() if r.workflow]
    assert sum(w.subgraphs for w in workflows) >= 5
    assert sum(w.group_nodes for w in workflows) >= 2
    families = {r.family for r in records.values()}
    assert {
        "SD1",
        "SD2",
        "SDXL",
        "sd3",
        "flux",
        "video",
        "audio",
        "3d",
        "api-node",
        "custom-nodes",
    } <= families


def test_sources_say_where_every_folder_comes_from_and_the_corpus_stays_small():
    sources = (CORPUS / "SOURCES.md").read_text()
    sections = re.split(r"^## ", sources, flags=re.M)[1:]
    described = {s.split("/", 1)[0]: s for s in sections}
    assert set(described) == {p.parent.relative_to(CORPUS).as_posix() for p in FILES}
    for folder, text in described.items():
        assert "Source:" in text and "Licence:" in text, folder
    assert sum(p.stat().st_size for p in FILES) < 8 * 2**20
    assert all(p.stat().st_size < 400_000 for p in FILES if p.suffix == ".png")


def test_png_files_carry_comfyuis_text_chunks():
    for path in FILES:
        if path.suffix == ".png":
            chunks = bench.png_chunks(path)
            assert {"prompt", "workflow"} <= set(chunks), path.name
            json.loads(chunks["prompt"]), json.loads(chunks["workflow"])


# --- each file: converted, or refused with a reason; what is missing is named --------------


@pytest.mark.parametrize("name", NAMES)
def test_file_converts_or_is_refused_clearly(name, records):
    record = records[name]
    assert record.outcome != "crashed", record.error
    if record.outcome == "refused":
        assert Path(name).name in record.error, "a refusal names the file"
        return
    for comfy_id, comfy_type, reason in record.not_converted:
        assert comfy_id and reason.strip(), (
            f"node {comfy_id} ({comfy_type}) is not converted without a reason"
        )
    assert (record.outcome == "partial") == bool(record.not_converted)


PNGS = [name for name in NAMES if name.endswith(".png")]


def never_run(conversion: Any) -> set[str]:
    """The ComfyUI ids a conversion left out because ComfyUI never runs them (it says so)."""
    found = (re.match(r"comfy id (\S+) .*never runs it", w) for w in conversion.warnings)
    return {m.group(1) for m in found if m}


def as_comfy_prompt(nodes: dict[str, Any]) -> dict[str, Any]:
    """Converted UI-format nodes as ComfyUI's API prompt holds them: nodes kept with a mode
    (muted, bypassed) left out, a link through bypassed nodes taken to what they hand on, a
    link from a muted node dropped (what ComfyUI does when it makes the prompt)."""
    from graph.modes import Passed, resolve
    from graph.workflow import Link, NodeEntry
    from nodes.registry import default_registry

    registry = default_registry()
    entries = {node_id: NodeEntry.model_validate(node) for node_id, node in nodes.items()}
    prompt: dict[str, Any] = {}
    for node_id, node in nodes.items():
        if node.get("mode"):
            continue
        inputs: dict[str, Any] = {}
        for name, value in node["inputs"].items():
            if isinstance(value, dict):
                found = resolve(Link.model_validate(value), entries, registry)
                if isinstance(found, Passed):
                    value = found.value
                elif isinstance(found, Link) and not nodes.get(found.node, {}).get("mode"):
                    value = found.model_dump()
                else:
                    continue
            inputs[name] = value
        prompt[node_id] = {**node, "inputs": inputs}
    return prompt


@pytest.mark.parametrize("name", PNGS)
def test_png_workflow_and_prompt_convert_alike(name):
    """A ComfyUI PNG holds the graph twice: the UI ``workflow`` and the API ``prompt`` that ComfyUI
    itself made from it when it ran. Read through the UI reader (widget order, Reroutes, primitives,
    group nodes) and through the API reader, they must give the same nodes with the same inputs."""
    from comfy_import import convert, read_prompt

    chunks = bench.png_chunks(CORPUS / name)
    from_ui = convert(read_prompt(json.loads(chunks["workflow"])), name)
    from_api = convert(read_prompt(json.loads(chunks["prompt"])), name)
    # The one known difference: the UI format shows a node's unlinked outputs, so the UI reader
    # leaves out a half-wired node that feeds nothing (ComfyUI never runs it), saying so; the API
    # prompt does not show which outputs are linked, so the API reader may keep such a node.
    # And the UI reader keeps muted and bypassed nodes with their mode, where the prompt has
    # them resolved already: compared as ComfyUI resolved them.
    dead_ends = never_run(from_ui) - never_run(from_api)
    ui_nodes, api_nodes = as_comfy_prompt(from_ui.workflow["nodes"]), from_api.workflow["nodes"]
    assert dead_ends <= set(api_nodes)
    assert set(ui_nodes) == set(api_nodes) - dead_ends
    for node_id, node in ui_nodes.items():
        assert (node["type"], node["inputs"]) == (api_nodes[node_id]["type"], api_nodes[node_id]["inputs"]), (
            node_id
        )
    missing = sorted((n.comfy_id, n.comfy_type) for n in from_ui.not_converted)
    assert missing == sorted(
        (n.comfy_id, n.comfy_type) for n in from_api.not_converted if n.comfy_id not in dead_ends
    )


def test_supported_families_mostly_convert_fully_and_validate(records):
    supported = [r for r in records.values() if r.family in bench.SUPPORTED]
    failed = {
        r.name: r.error[:120] or sorted({t for _, t, _ in r.not_converted}) or r.other_issues[:2]
        for r in supported
        if r.outcome != "full"
    }
    assert len(supported) >= 40
    share = 1 - len(failed) / len(supported)
    assert share >= 0.9, f"{share:.0%} of {len(supported)} SD workflows convert fully; the others: {failed}"


def test_a_complete_conversion_misses_only_model_files(records):
    """What "full" allows: model files the workflow names that are not installed here."""
    full = [r for r in records.values() if r.outcome == "full"]
    assert full and all(not r.other_issues for r in full)
    assert any(r.missing_models for r in full), "real workflows name checkpoints this machine lacks"


# --- the family rule ----------------------------------------------------------------------

#: Families decided by reading the files (their loaders and model names), not by the rule.
KNOWN_FAMILIES = {
    "workflow_templates_0.1.14/default.json": "SD1",
    "comfyui_tests/sd-1.5-lora-0.json": "SD1",
    "comfyui_examples/img2img__img2img_workflow.png": "SD1",
    "randomlab_remote_prompt/workflow1_api.json": "SD2",
    "comfyui_examples/unclip__unclip_example.png": "SD2",
    "workflow_templates/sdxl_simple_example.json": "SDXL",
    "comfyui_tests/default_graph_sdxl1_0.json": "SDXL",
    "cog_comfyui/sdxlturbo_example.json": "SDXL",
    "comfyui_examples/flux__flux_dev_example.png": "flux",
    "comfyui_tests/sd3-default-0.json": "sd3",
    "comfyui_examples/hidream__hidream_dev_example.png": "other-dit",
    "comfyui_examples/stable_cascade__stable_cascade__text_to_image.png": "other-dit",
    "comfyui_examples/video__workflow_image_to_video.json": "video",
    "comfyui_examples/wan__text_to_video_wan.json": "video",
    "workflow_templates/audio_stable_audio_example.json": "audio",
    "workflow_templates/3d_hunyuan3d_image_to_model.json": "3d",
    "workflow_templates/api_openai_image_1_inpaint.json": "api-node",
    "cog_comfyui/animatediff.json": "custom-nodes",
    "sepro_sdxl/dual_controlnet_basic.json": "custom-nodes",
    "workflow_templates/basic_mask_operations_and_compositing.json": "no-model",
}


@pytest.mark.parametrize("name", sorted(KNOWN_FAMILIES))
def test_family_of_known_files(name, records):
    assert records[name].family == KNOWN_FAMILIES[name]


@pytest.mark.parametrize(
    ("types", "names", "expected"),
    [
        (["CheckpointLoaderSimple", "KSampler"], ["v1-5-pruned-emaonly.safetensors"], "SD1"),
        (["CheckpointLoaderSimple", "KSampler"], ["v2-1_768-ema-pruned.ckpt"], "SD2"),
        (["CheckpointLoaderSimple", "KSampler"], ["sd_xl_base_1.0.safetensors"], "SDXL"),
        (["CheckpointLoaderSimple", "CLIPTextEncodeSDXL"], ["juggernaut.safetensors"], "SDXL"),
        (["CheckpointLoaderSimple", "KSampler"], ["juggernautXL_v9.safetensors"], "SDXL"),
        (["CheckpointLoaderSimple", "KSampler"], ["pixelArtDiffusion_v2.safetensors"], "SD1"),
        (["UNETLoader", "FluxGuidance"], ["model.safetensors"], "flux"),
        (["CheckpointLoaderSimple", "KSampler"], ["flux1-schnell-fp8.safetensors"], "flux"),
        (["CheckpointLoaderSimple", "ModelSamplingSD3"], ["sd3.5_large.safetensors"], "sd3"),
        (["UNETLoader", "ModelSamplingSD3"], ["hidream_i1_dev_bf16.safetensors"], "other-dit"),
        (["ImageOnlyCheckpointLoader", "SVD_img2vid_Conditioning"], ["svd.safetensors"], "video"),
        (
            ["CheckpointLoaderSimple", "VAELoader"],
            ["cosmos_2B_t2i.safetensors", "wan_2.1_vae.safetensors"],
            "other-dit",
        ),
        (["CheckpointLoaderSimple", "KlingTextToVideoNode"], [], "api-node"),
        (
            ["CheckpointLoaderSimple", "ADE_AnimateDiffLoaderWithContext"],
            ["v1-5.safetensors"],
            "custom-nodes",
        ),
        (["CheckpointLoaderSimple", "Text Multiline|pysssss"], ["v1-5.safetensors"], "custom-nodes"),
        (["CheckpointLoaderSimple", "KSampler"], ["cardosAnimated_v20.safetensors"], "SD1"),
        (["LoadImage", "ImageInvert", "SaveImage"], [], "no-model"),
    ],
)
def test_family_rule(types, names, expected):
    assert bench.family(bench.Workflow("api", types, names, [])) == expected


def test_a_clip_loader_of_another_model_type_is_not_sd():
    workflow = bench.Workflow(
        "ui-0.4", ["UNETLoader", "CLIPLoader", "KSampler"], ["x.safetensors"], ["lumina2"]
    )
    assert bench.family(workflow) == "other-dit"


# --- the bench ---------------------------------------------------------------------------


def test_bench_prints_one_json_line_per_figure(capsys):
    assert bench.main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    figures = dict(json.loads(line).values() for line in lines)
    assert len(figures) == len(lines)
    assert figures["files"] == len(FILES)
    assert sum(figures["files_by_format"].values()) == len(FILES)
    assert sum(figures["files_by_family"].values()) == len(FILES)
    outcomes = ("converted_and_valid", "converted_but_invalid", "partial", "refused", "crashed")
    assert sum(figures[name] for name in outcomes) == len(FILES)
    assert figures["fully_converted"] == figures["converted_and_valid"] + figures["converted_but_invalid"]
    blockers = figures["not_converted_types"]
    assert blockers == sorted(blockers, key=lambda b: -b["files"])
    assert all((CORPUS / b["example"]).is_file() for b in blockers)


# --- a sample runs with the bundled toy model ---------------------------------------------

#: Supported workflows of every form (API, UI with a group node, PNG) run with toy-sd at its
#: native 32 px (hires fix: 64 px), 2 steps: (file, the sizes of the pictures it saves).
RUNS = {
    "comfyui_frontend/group_node_v1.3.3.json": [(32, 32)],
    "salad_comfyui_dynamic/workflow_api.json": [(32, 32)],
    "comfyui_examples/img2img__img2img_workflow.png": [(32, 32)],
    "comfyui_examples/inpaint__inpaint_example.png": [(32, 32)],
    "comfyui_examples/2_pass_txt2img__hiresfix_latent_workflow.png": [(32, 32), (64, 64)],
}


def for_the_toy_model(workflow: dict[str, Any], image: str) -> dict[str, Any]:
    """The converted workflow with toy-sd, its native size, 2 steps and the toy scene as input."""
    for node in workflow["nodes"].values():
        inputs = node["inputs"]
        if node["type"] == "CheckpointLoader":
            inputs["ckpt_name"] = "toy-sd"
        elif node["type"] == "EmptyLatent":
            inputs.update(width=32, height=32, batch_size=1)
        elif node["type"] == "LatentUpscale":
            inputs.update(width=64, height=64)
        elif node["type"] == "Sampler":
            inputs["steps"] = 2
        elif node["type"] == "LoadImage":
            inputs["path"] = image
    return workflow


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RUNS))
def test_sample_runs_with_the_toy_model(name, records, tmp_path):
    from comfy_import import convert

    assert records[name].outcome == "full", records[name].not_converted
    result = convert(bench.load(CORPUS / name), Path(name).name)
    # the toy scene, transparent (= masked, as ComfyUI reads alpha) over its center cell
    with Image.open(ASSETS / "toy-scene.png") as scene:
        rgba = scene.convert("RGBA")
    alpha = np.full((32, 32), 255, np.uint8)
    alpha[11:22, 11:22] = 0
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(tmp_path / "scene.png")
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(for_the_toy_model(result.workflow, "scene.png")))
    out = tmp_path / "out"
    done = app("run", str(path), "--out", str(out), "--input-dir", str(tmp_path), "--seed", "1")
    assert done.returncode == 0, done.stderr
    files = sorted(
        (Path(line) for line in done.stdout.splitlines() if line.endswith(".png")), key=lambda p: p.name
    )
    sizes = []
    for file in files:
        with Image.open(file) as picture:
            pixels = np.asarray(picture.convert("RGB"), dtype=np.float32)
            sizes.append(picture.size)
        assert pixels.std() > 1, f"{file.name} is blank"
    assert sorted(sizes) == RUNS[name]


CAPTION = "a red circle at the top left and a blue square in the center"


def ksampler_prompts(data: dict[str, Any]) -> tuple[str, str]:
    """The ComfyUI ids of the nodes feeding the KSampler's positive and negative inputs, read from
    the ComfyUI file itself (API or UI format)."""
    if "nodes" in data:
        origin = {link[0]: str(link[1]) for link in data["links"]}
        (sampler,) = [n for n in data["nodes"] if n["type"] == "KSampler"]
        links = {i["name"]: i["link"] for i in sampler["inputs"]}
        return origin[links["positive"]], origin[links["negative"]]
    nodes = data.get("prompt", data)
    (sampler,) = [n for n in nodes.values() if n["class_type"] == "KSampler"]
    return str(sampler["inputs"]["positive"][0]), str(sampler["inputs"]["negative"][0])


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["workflow_templates_0.1.14/default.json", "salad_comfyui_dynamic/workflow_api.json"]
)
def test_the_positive_prompt_reaches_the_picture(name, tmp_path):
    """With a toy-world caption in ComfyUI's positive prompt, the analyzer reads it in the picture."""
    from comfy_import import convert
    from toyworld import analyze, describe

    positive, negative = ksampler_prompts(bench.raw_json(CORPUS / name))
    workflow = for_the_toy_model(convert(bench.load(CORPUS / name), name).workflow, "unused.png")
    workflow["nodes"][positive]["inputs"]["text"] = CAPTION
    workflow["nodes"][negative]["inputs"]["text"] = ""
    for node in workflow["nodes"].values():
        if node["type"] == "Sampler":
            node["inputs"].update(steps=20, cfg=5.0, sampler="dpmpp_2m", seed=42)
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(workflow))
    done = app("run", str(path), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    (file,) = [Path(line) for line in done.stdout.splitlines() if line.endswith(".png")]
    with Image.open(file) as picture:
        assert describe(analyze(np.asarray(picture.convert("RGB")))) == CAPTION
