"""How the ComfyUI importer does on real workflows: the corpus in tests/data/comfy/corpus.

    .venv/bin/python bench/comfy_corpus.py [--corpus DIR] [--top N]

Every file of the corpus (API-format JSON, UI-format JSON, PNGs with ComfyUI's text chunks) is read
with the importer, converted, and the result validated against the built-in node types. Each file
is put in a model family by :func:`family` (the rule is written there) and given one outcome:

- ``full``: every node converted and the result validates, apart from model files that are not
  installed here (a workflow names its own checkpoints; "full" still means it would run once the
  files are in models/);
- ``full_invalid``: every node converted, but validation finds another problem;
- ``partial``: some nodes converted, the others each named with a reason;
- ``refused``: the importer refused the file with a :class:`ComfyError` (its message says why);
- ``crashed``: any other exception (a bug).

It prints one JSON line per figure (``{"figure": name, "value": ...}``) and writes nothing else.
tests/test_comfy_corpus.py asserts on the same survey.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CORPUS = REPO / "tests" / "data" / "comfy" / "corpus"

#: Families the studio runs (Stable Diffusion 1.x, 2.x and XL UNet checkpoints).
SUPPORTED = ("SD1", "SD2", "SDXL")

# --- the family rule -------------------------------------------------------------------
# A workflow's family is decided from its node types and the model file names it mentions,
# first match wins, in this order:
#   1. "api-node"  any node of ComfyUI's partner API nodes (a hosted model: OpenAI, Gemini, Kling,
#                  BFL's Flux Pro, ...): API_NODE below;
#   2. "3d", "audio", "video"  any node type of those kinds (VIDEO_3D_AUDIO below), or a video
#                  model named in a loader (svd, ltx, wan, hunyuan_video, mochi, cosmos video; a
#                  video model's VAE alone does not count: other models borrow Wan's);
#   3. "flux"      a Flux-only node (FluxGuidance, ModelSamplingFlux, ...) or a model file named flux;
#   4. "other-dit" by model name: another diffusion-transformer or non-SD-generation model (Stable
#                  Cascade, AuraFlow, HiDream, Lumina, Qwen-Image, Chroma, OmniGen, HunyuanDiT,
#                  Z-Image, Cosmos, Stable Zero123: OTHER_MODELS);
#   5. "sd3"       an SD3-only node (ModelSamplingSD3, TripleCLIPLoader, ControlNetApplySD3) or a
#                  model file named sd3;
#   5b."other-dit" by node type (OTHER_NODES, e.g. the Lotus depth model), or a CLIPLoader or
#                  DualCLIPLoader whose type is not one of the SD ones;
#   6. "custom-nodes"  a node type from a custom node pack (custom_pack(): the packs met in the
#                  corpus, and "|pack" / "(pack)" suffixes), in a workflow that is otherwise SD.
#                  A custom node the list does not know counts as its SD family: it then shows
#                  up among the blockers, and the list grows (core nodes are never listed here);
#   7. "SDXL", "SD2", "SD1"  by the checkpoint names (xl/sdxl, v2/sd21/768-v) and SDXL-only nodes
#                  (CLIPTextEncodeSDXL, CLIPTextEncodeSDXLRefiner); SD1 when nothing says otherwise.
#   Workflows without any model (image utilities, masks) are "no-model".

API_VENDORS = (
    "OpenAI",
    "Gemini",
    "Google",
    "Kling",
    "Luma",
    "Pika",
    "Pixverse",
    "PixVerse",
    "Recraft",
    "Stability",
    "Ideogram",
    "Veo",
    "Minimax",
    "MiniMax",
    "Runway",
    "Moonvalley",
    "Vidu",
    "ByteDance",
    "Tripo",
    "Rodin",
    "Bria",
    "Topaz",
    "Wavespeed",
    "Magnific",
    "Tencent",
    "Hitpaw",
)
API_NODE = re.compile(rf"^({'|'.join(API_VENDORS)})\w*$|^Flux\w*(Pro|Node)\w*$")

VIDEO_3D_AUDIO: dict[str, tuple[str, ...]] = {
    "3d": (
        "Hunyuan3D",
        "Latent3D",
        "EmptyLatentHunyuan3D",
        "VoxelToMesh",
        "SaveGLB",
        "Load3D",
        "Preview3D",
        "VAEDecodeHunyuan3D",
        "StableZero123_Conditioning",
        "SV3D_Conditioning",
        "TripoSG",
    ),
    "audio": (
        "EmptyLatentAudio",
        "EmptyAceStepLatentAudio",
        "VAEDecodeAudio",
        "VAEEncodeAudio",
        "SaveAudio",
        "LoadAudio",
        "PreviewAudio",
        "TextEncodeAceStepAudio",
        "ConditioningStableAudio",
    ),
    "video": (
        "SVD_img2vid_Conditioning",
        "VideoLinearCFGGuidance",
        "VideoTriangleCFGGuidance",
        "ImageOnlyCheckpointLoader",
        "EmptyHunyuanLatentVideo",
        "EmptyLTXVLatentVideo",
        "LTXV",
        "EmptyMochiLatentVideo",
        "EmptyCosmosLatentVideo",
        "CosmosImageToVideoLatent",
        "Wan",
        "HunyuanImageToVideo",
        "CreateVideo",
        "SaveVideo",
        "LoadVideo",
        "SaveWEBM",
        "GetVideoComponents",
        "SaveAnimatedWEBP",
        "SaveAnimatedPNG",
    ),
}
VIDEO_MODELS = re.compile(r"svd|ltx|(^|[^a-z])wan|hunyuan_?video|mochi|cosmos.*(video|7b|14b)", re.I)
FLUX_NODES = (
    "FluxGuidance",
    "ModelSamplingFlux",
    "CLIPTextEncodeFlux",
    "EmptyFlux2LatentImage",
    "Flux2Scheduler",
    "FluxKontextImageScale",
    "FluxKontextMultiReferenceLatentMethod",
)
SD3_NODES = ("ModelSamplingSD3", "TripleCLIPLoader", "ControlNetApplySD3", "SD3")
OTHER_MODELS = re.compile(
    r"cascade|aura_?flow|hidream|lumina|qwen|chroma|omnigen|hunyuan_?dit|z_image|cosmos|zero123|"
    r"pixart|kandinsky",
    re.I,
)
OTHER_NODES = (
    "StableCascade_",
    "ModelSamplingAuraFlow",
    "QuadrupleCLIPLoader",
    "TextEncodeQwen",
    "QwenImage",
    "CLIPTextEncodeHunyuanDiT",
    "CLIPTextEncodeLumina2",
    "StableZero123",
    "LotusConditioning",
)
CLIP_LOADERS = ("CLIPLoader", "DualCLIPLoader")
#: The CLIP loader "type" values of the SD family (anything else is another model).
SD_CLIP_TYPES = ("stable_diffusion", "sdxl", "sd1", "sd2")
#: Node types (or the start of them) of custom node packs met in the corpus, with their pack.
CUSTOM_NODES = {
    "MiDaS-DepthMapPreprocessor": "comfyui_controlnet_aux",
    "CannyEdgePreprocessor": "comfyui_controlnet_aux",
    "OpenposePreprocessor": "comfyui_controlnet_aux",
    "FaceKeypointsPreprocessor": "ComfyUI_InstantID",
    "SeargePromptText": "SeargeSDXL",
    "Image Resize": "image-resize-comfyui",
    "Image Bloom Filter": "WAS Node Suite",
    "PresetText": "ComfyUI-Custom-Scripts (pysssss)",
    "BNK_": "ComfyUI_TiledKSampler / ComfyUI_ADV_CLIP_emb (BlenderNeko)",
    "ImageRequestParameter": "hiddenswitch/ComfyUI API parameters",
    "ADE_": "ComfyUI-AnimateDiff-Evolved",
    "IPAdapter": "ComfyUI_IPAdapter_plus",
    "Attention couple": "cgem156-ComfyUI (attention couple)",
    "LoadBLoRA": "ComfyUI-B-LoRA",
    "ETN_": "comfyui-tool-nodes (Krita AI)",
    "BRIA_RMBG_": "ComfyUI-BRIA_AI-RMBG",
    "BrushNet": "ComfyUI-BrushNet",
    "HyperSDXL1StepUnetScheduler": "ComfyUI-HyperSDXL1StepUnetScheduler",
    "ApplyInstantID": "ComfyUI_InstantID",
    "InstantID": "ComfyUI_InstantID",
    "MZ_": "ComfyUI-Kolors-MZ",
    "LayeredDiffusion": "ComfyUI-layerdiffuse",
    "Efficient Loader": "efficiency-nodes-comfyui",
    "KSampler (Efficient)": "efficiency-nodes-comfyui",
    "ReActor": "comfyui-reactor-node",
    "ttN ": "ComfyUI_tinyterraNodes",
    "UltimateSDUpscale": "ComfyUI_UltimateSDUpscale",
    "CR ": "ComfyUI_Comfyroll_CustomNodes",
    "WAS_": "WAS Node Suite",
}
#: Pack names some packs append to their node types: "Name (segment anything)", "Name|pysssss".
CUSTOM_SUFFIX = re.compile(
    r"\|\w+$|\((segment anything|rgthree|pysssss|WAS|Efficient|Comfyroll|Impact)\)$", re.I
)


def custom_pack(node_type: str) -> str | None:
    """The custom node pack a node type comes from, if it is one the corpus has shown."""
    for start, pack in CUSTOM_NODES.items():
        if node_type.startswith(start):
            return pack
    return "a custom node pack" if CUSTOM_SUFFIX.search(node_type) else None


MODEL_INPUT = re.compile(r"(ckpt|unet|clip|vae|model|lora|control_net)_?name\d*$")


@dataclass
class Workflow:
    """What a corpus file holds, read straight from its JSON (not through the importer)."""

    form: str  # "api", "ui-0.4", "ui-1", ...
    types: list[str]  # node types, with those inside subgraph definitions and group nodes
    model_names: list[str]  # values of inputs/widgets that name model files
    clip_types: list[str]  # the "type" of CLIPLoader / DualCLIPLoader nodes
    subgraphs: bool = False
    group_nodes: bool = False


@dataclass
class Record:
    """One corpus file: where it came from, its family and what the importer made of it."""

    path: Path
    container: str  # "json" or "png"
    workflow: Workflow | None
    family: str
    outcome: str  # full, full_invalid, partial, refused, crashed
    error: str = ""
    not_converted: list[tuple[str, str, str]] = field(default_factory=list)  # (id, type, reason)
    other_issues: list[str] = field(default_factory=list)  # validation issues beyond missing models
    missing_models: int = 0

    @property
    def name(self) -> str:
        return (
            self.path.relative_to(CORPUS).as_posix() if self.path.is_relative_to(CORPUS) else str(self.path)
        )

    @property
    def form(self) -> str:
        inner = self.workflow.form if self.workflow else "unreadable"
        return f"png ({inner})" if self.container == "png" else inner


# --- reading the files -----------------------------------------------------------------


def corpus_files(root: Path = CORPUS) -> list[Path]:
    """The workflow files of the corpus (JSON and PNG), in a stable order."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in (".json", ".png") and p.is_file())


def png_chunks(path: Path) -> dict[str, str]:
    """The text chunks of a PNG (ComfyUI writes ``prompt`` and ``workflow``)."""
    from PIL import Image

    with Image.open(path) as picture:
        picture.load()
        return {k: v for k, v in picture.info.items() if isinstance(k, str) and isinstance(v, str)}


def raw_json(path: Path) -> Any:
    """The workflow JSON a file holds: the file itself, or a PNG's ``workflow`` (else ``prompt``) chunk."""
    if path.suffix.lower() == ".png":
        chunks = png_chunks(path)
        text = chunks.get("workflow") or chunks.get("prompt")
        if text is None:
            raise ValueError(f"{path.name}: no ComfyUI workflow in its text chunks")
        return json.loads(text)
    return json.loads(path.read_text(encoding="utf-8-sig"))


def describe(data: Any) -> Workflow:
    """The form, node types and model names of a ComfyUI workflow, from its raw JSON."""
    if isinstance(data, dict) and isinstance(data.get("nodes"), list):
        return _describe_ui(data)
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict):
        data = data["prompt"]
    nodes = [n for n in (data.values() if isinstance(data, dict) else []) if isinstance(n, dict)]
    types = [str(n.get("class_type")) for n in nodes]
    names, clip_types = [], []
    for node in nodes:
        inputs = node.get("inputs") if isinstance(node.get("inputs"), dict) else {}
        for key, value in inputs.items():
            if isinstance(value, str) and MODEL_INPUT.search(key):
                names.append(value)
        if node.get("class_type") in CLIP_LOADERS and isinstance(inputs.get("type"), str):
            clip_types.append(inputs["type"])
    return Workflow("api", types, names, clip_types)


def _ui_nodes(data: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from (n for n in data.get("nodes", []) if isinstance(n, dict))
    for sub in (data.get("definitions") or {}).get("subgraphs") or []:
        if isinstance(sub, dict):
            yield from (n for n in sub.get("nodes", []) if isinstance(n, dict))
    for group in ((data.get("extra") or {}).get("groupNodes") or {}).values():
        if isinstance(group, dict):
            yield from (n for n in group.get("nodes", []) if isinstance(n, dict))


def _describe_ui(data: dict[str, Any]) -> Workflow:
    version = data.get("version")
    form = f"ui-{version}" if version is not None else "ui"
    types, names, clip_types = [], [], []
    for node in _ui_nodes(data):
        node_type = str(node.get("type"))
        types.append(node_type)
        values = node.get("widgets_values")
        values = list(values.values()) if isinstance(values, dict) else values or []
        for value in values:
            if isinstance(value, str) and re.search(r"\.(safetensors|ckpt|pth|pt|bin|gguf)$", value, re.I):
                names.append(value)
        if node_type in CLIP_LOADERS and len(values) >= 2 and isinstance(values[-1], str):
            clip_types.append(values[-1] if node_type == "DualCLIPLoader" else values[1])
    subgraphs = bool((data.get("definitions") or {}).get("subgraphs"))
    group_nodes = bool((data.get("extra") or {}).get("groupNodes"))
    return Workflow(form, types, names, clip_types, subgraphs, group_nodes)


def family(workflow: Workflow) -> str:
    """The model family of a workflow by the rule written at the top of this module."""
    types = set(workflow.types)
    names = " ".join(workflow.model_names)
    if any(API_NODE.match(t) for t in types):
        return "api-node"
    for kind, markers in VIDEO_3D_AUDIO.items():
        if any(t.startswith(markers) for t in types):
            return kind
    if VIDEO_MODELS.search(" ".join(n for n in workflow.model_names if "vae" not in n.lower())):
        return "video"
    if any(t.startswith(FLUX_NODES) for t in types) or re.search(r"flux", names, re.I):
        return "flux"
    if OTHER_MODELS.search(names):  # before SD3: HiDream and others use SD3's sampling node
        return "other-dit"
    if any(t.startswith(SD3_NODES) for t in types) or re.search(r"sd3", names, re.I):
        return "sd3"
    if any(t.startswith(OTHER_NODES) for t in types):
        return "other-dit"
    if any(t.lower() not in SD_CLIP_TYPES for t in workflow.clip_types):
        return "other-dit"
    if any(custom_pack(t) for t in types):
        return "custom-nodes"
    if not names and not types & {"CheckpointLoaderSimple", "CheckpointLoader", "unCLIPCheckpointLoader"}:
        return "no-model"
    if types & {"CLIPTextEncodeSDXL", "CLIPTextEncodeSDXLRefiner"} or re.search(r"xl(?![a-z])", names, re.I):
        return "SDXL"
    if re.search(r"v2-|sd2|sd21|768-v|512-base|unclip", names, re.I):
        return "SD2"
    return "SD1"


# --- running the importer ---------------------------------------------------------------


def load(path: Path) -> Any:
    """The importer's Prompt for a file: JSON of either format, or a PNG's text chunks."""
    from comfy_import import read_file

    return read_file(path)


def is_missing_model(issue: Any, registry: Any) -> bool:
    """A validation issue that only says a named model file is not installed here.

    That is a ``bad_value`` on an input whose choices are read from the models folders (a function,
    not a fixed list): the workflow names its own checkpoints, LoRAs, ControlNets and VAEs.
    """
    if issue.code != "bad_value" or not issue.node_type or not issue.input:
        return False
    node = registry.get(issue.node_type)
    spec = next((i for i in getattr(node, "inputs", ()) if i.name == issue.input), None)
    return spec is not None and callable(spec.choices)


def survey_one(path: Path, registry: Any) -> Record:
    """Read, convert and validate one corpus file."""
    from comfy_import import ComfyError, convert
    from graph.validate import validate

    container = "png" if path.suffix.lower() == ".png" else "json"
    try:
        workflow: Workflow | None = describe(raw_json(path))
    except (ValueError, OSError):
        workflow = None
    kind = family(workflow) if workflow else "unreadable"
    record = Record(path, container, workflow, kind, "crashed")
    try:
        prompt = load(path)
        result = convert(prompt, path.name)
        issues = validate(result.workflow, registry).issues if result.converted else []
    except ComfyError as exc:
        record.outcome, record.error = "refused", str(exc)
        return record
    except Exception as exc:  # noqa: BLE001 - a crash is a figure here, not an end
        record.error = f"{type(exc).__name__}: {exc}"
        return record
    record.not_converted = [(n.comfy_id, n.comfy_type, n.reason) for n in result.not_converted]
    record.missing_models = sum(is_missing_model(i, registry) for i in issues)
    record.other_issues = [str(i) for i in issues if not is_missing_model(i, registry)]
    if not result.complete:
        record.outcome = "partial"
    else:
        record.outcome = "full_invalid" if record.other_issues else "full"
    return record


def survey(paths: Iterable[Path] | None = None) -> list[Record]:
    from nodes.registry import default_registry

    registry = default_registry()
    return [survey_one(p, registry) for p in (corpus_files() if paths is None else paths)]


def figures(records: list[Record], top: int = 25) -> list[tuple[str, Any]]:
    """The figures the bench prints, in order."""
    supported = [r for r in records if r.family in SUPPORTED]
    full_supported = [r for r in supported if r.outcome == "full"]
    blockers: Counter[str] = Counter()
    example: dict[str, str] = {}
    for record in records:
        for node_type in sorted({t for _, t, _ in record.not_converted}):
            blockers[node_type] += 1
            example.setdefault(node_type, record.name)
    supported_blockers: Counter[str] = Counter()
    for record in supported:
        supported_blockers.update({t for _, t, _ in record.not_converted})
    outcomes = Counter(r.outcome for r in records)
    return [
        ("files", len(records)),
        ("files_by_format", dict(sorted(Counter(r.form for r in records).items()))),
        ("files_with_subgraphs", sum(bool(r.workflow and r.workflow.subgraphs) for r in records)),
        ("files_with_group_nodes", sum(bool(r.workflow and r.workflow.group_nodes) for r in records)),
        ("files_by_family", dict(Counter(r.family for r in records).most_common())),
        ("fully_converted", outcomes["full"] + outcomes["full_invalid"]),
        ("converted_and_valid", outcomes["full"]),
        ("converted_but_invalid", outcomes["full_invalid"]),
        ("partial", outcomes["partial"]),
        ("refused", outcomes["refused"]),
        ("crashed", outcomes["crashed"]),
        (
            "supported_families",
            {
                "files": len(supported),
                "converted_and_valid": len(full_supported),
                "share": round(len(full_supported) / len(supported), 3) if supported else None,
            },
        ),
        (
            "outcome_by_family",
            {
                fam: dict(Counter(r.outcome for r in records if r.family == fam))
                for fam in sorted({r.family for r in records})
            },
        ),
        (
            "not_converted_types",
            [{"type": t, "files": n, "example": example[t]} for t, n in blockers.most_common(top)],
        ),
        ("not_converted_types_in_supported", dict(supported_blockers.most_common(top))),
        ("refusals", {r.name: r.error for r in records if r.outcome == "refused"}),
        ("crashes", {r.name: r.error for r in records if r.outcome == "crashed"}),
        ("invalid", {r.name: r.other_issues[:3] for r in records if r.outcome == "full_invalid"}),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="folder of ComfyUI workflows")
    parser.add_argument("--top", type=int, default=25, help="how many blocking node types to list")
    args = parser.parse_args(argv)
    if not args.corpus.is_dir():
        parser.error(f"{args.corpus} is not a folder")
    records = survey(corpus_files(args.corpus))
    for name, value in figures(records, args.top):
        print(json.dumps({"figure": name, "value": value}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
