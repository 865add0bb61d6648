"""GLIGEN text-box grounding: GLIGENLoader + GLIGENTextBoxApply + KSampler against diffusers'
StableDiffusionGLIGENPipeline with the same tiny gated UNet, adapter files in the original (ComfyUI)
and the diffusers layout, the cached UNet left as it was, clear refusals, and ComfyUI's workflows.

The tiny SD's UNet has no fusers; the adapter (a random position net and fusers with non-zero gates)
lives in files of its own, and the oracle is the gated UNet made of both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models.manager import ModelManager
from tests.helpers import as_uint8, link, run_graph

REPO = Path(__file__).resolve().parent.parent
SIZE = 64  # the tiny models' pictures (8 x 8 latents)
STEPS = 4
PROMPT = "a red circle and a blue square"
#: (phrase, x, y, width, height) in pixels of the 64 px picture
BOXES = (("a red circle", 8, 16, 24, 32), ("a blue square", 32, 0, 32, 32))


def gated_unet(base: Any, seed: int = 3) -> Any:
    """``base`` with GLIGEN fusers and a position net of random weights (gates open)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    gated = UNet2DConditionModel.from_config({**base.config, "attention_type": "gated"})
    missing, unexpected = gated.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all("fuser" in k or "position_net" in k for k in missing)
    with torch.no_grad():
        for name, param in gated.named_parameters():
            if name.endswith(("alpha_attn", "alpha_dense")):
                param.fill_(0.8)
            elif "null_" in name:
                param.normal_()
    return gated.eval()


def adapter_state(gated: Any) -> dict[str, torch.Tensor]:
    return {k: v.contiguous() for k, v in gated.state_dict().items() if "fuser" in k or "position_net" in k}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Models: a tiny SD 1.x (no fusers) and SDXL; GLIGEN files for the SD in the original layout, the
    diffusers layout (a whole gated UNet's weights) and as a gated UNet folder; a second adapter; a
    text-image GLIGEN, one for another width and a file of other weights."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    from models.gligen import to_original
    from tests.fixtures.tiny_models import save_tiny_sd_folder, save_tiny_sdxl_folder

    base = tmp_path_factory.mktemp("gligen")
    models = base / "models"
    sd = save_tiny_sd_folder(models / "checkpoints" / "tiny-sd")
    save_tiny_sdxl_folder(models / "checkpoints" / "tiny-sdxl")
    unet = UNet2DConditionModel.from_pretrained(str(sd / "unet"))
    gated = gated_unet(unet)
    folder = models / "gligen"
    folder.mkdir(parents=True)
    state = adapter_state(gated)
    save_file(to_original(state, gated.config), str(folder / "gligen-original.safetensors"))
    whole = {k: v.contiguous() for k, v in gated.state_dict().items()}
    save_file(whole, str(folder / "gligen-diffusers.safetensors"))
    gated.save_pretrained(str(folder / "gligen-unet"), safe_serialization=True)
    other = to_original(adapter_state(gated_unet(unet, seed=4)), gated.config)
    save_file(other, str(folder / "other.safetensors"))
    text_image = dict(state)
    for key in [k for k in state if k.startswith("position_net.linears.")]:
        text_image[key.replace("linears.", "linears_text.")] = text_image.pop(key)
    save_file(text_image, str(folder / "gligen-text-image.safetensors"))
    wide = {k: torch.zeros(len(v), 48) if k.endswith("fuser.linear.weight") else v for k, v in state.items()}
    wide["position_net.linears.4.weight"] = torch.zeros(48, 512)
    wide["position_net.linears.4.bias"] = torch.zeros(48)
    save_file(wide, str(folder / "gligen-wide.safetensors"))
    save_file({"weight": torch.zeros(2, 2)}, str(folder / "not-gligen.safetensors"))
    torch.save(gated, base / "gated.pt")
    return base


@pytest.fixture(scope="module")
def manager() -> ModelManager:
    return ModelManager(device="cpu")


def drawn(nodes: dict, root: Path, manager: ModelManager) -> np.ndarray:
    result = run_graph(nodes, root / "models", manager, work=root)
    assert result.status == "done", result.error
    return as_uint8(result.outputs["show"]["images"])


def failure(nodes: dict, root: Path, manager: ModelManager) -> str:
    result = run_graph(nodes, root / "models", manager, work=root)
    assert result.status == "failed"
    return str(result.error)


def differ(a: np.ndarray, b: np.ndarray) -> bool:
    return int(np.abs(a.astype(int) - b.astype(int)).max()) > 1


def graph(
    file: str | None,
    boxes: tuple = BOXES,
    beta: float = 0.3,
    ckpt: str = "tiny-sd",
    second: str | None = None,
) -> dict[str, Any]:
    """Text to image with a GLIGENTextBoxApply per box (``second``: another adapter for the last box)."""
    nodes: dict[str, Any] = {
        "ck": {"type": "CheckpointLoader", "inputs": {"ckpt_name": ckpt}},
        "pos": {"type": "CLIPTextEncode", "inputs": {"clip": link("ck", "clip"), "text": PROMPT}},
        "neg": {"type": "CLIPTextEncode", "inputs": {"clip": link("ck", "clip"), "text": "blurry"}},
        "lat": {"type": "EmptyLatent", "inputs": {"width": SIZE, "height": SIZE, "vae": link("ck", "vae")}},
    }
    positive = link("pos", "conditioning")
    if file is not None:
        nodes["gl"] = {"type": "GLIGENLoader", "inputs": {"gligen_name": file}}
        if second:
            nodes["gl2"] = {"type": "GLIGENLoader", "inputs": {"gligen_name": second}}
        for index, (phrase, x, y, width, height) in enumerate(boxes):
            loader = "gl2" if second and index == len(boxes) - 1 else "gl"
            nodes[f"box{index}"] = {
                "type": "GLIGENTextBoxApply",
                "inputs": {
                    "conditioning_to": positive,
                    "clip": link("ck", "clip"),
                    "gligen_textbox_model": link(loader, "gligen"),
                    "text": phrase,
                    "width": width,
                    "height": height,
                    "x": x,
                    "y": y,
                    "beta": beta,
                },
            }
            positive = link(f"box{index}", "conditioning")
    nodes["s"] = {
        "type": "Sampler",
        "inputs": {
            "model": link("ck", "model"),
            "positive": positive,
            "negative": link("neg", "conditioning"),
            "latent": link("lat", "latent"),
            "seed": 42,
            "steps": STEPS,
            "cfg": 7.5,
            "sampler": "euler",
        },
    }
    nodes["d"] = {"type": "VAEDecode", "inputs": {"vae": link("ck", "vae"), "latent": link("s", "latent")}}
    nodes["show"] = {"type": "PreviewImage", "inputs": {"images": link("d", "image")}}
    return nodes


def oracle(root: Path, boxes: tuple, beta: float) -> np.ndarray:
    """StableDiffusionGLIGENPipeline with the tiny SD's parts and the gated UNet."""
    from diffusers import StableDiffusionGLIGENPipeline, StableDiffusionPipeline

    from models.sampling import make_scheduler

    parts = StableDiffusionPipeline.from_pretrained(
        str(root / "models" / "checkpoints" / "tiny-sd"), local_files_only=True
    ).components
    pipe = StableDiffusionGLIGENPipeline(
        vae=parts["vae"],
        text_encoder=parts["text_encoder"],
        tokenizer=parts["tokenizer"],
        unet=torch.load(root / "gated.pt", weights_only=False),
        scheduler=make_scheduler("euler", parts["scheduler"].config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        prompt=PROMPT,
        negative_prompt="blurry",
        gligen_phrases=[b[0] for b in boxes],
        gligen_boxes=[[x / SIZE, y / SIZE, (x + w) / SIZE, (y + h) / SIZE] for _, x, y, w, h in boxes],
        gligen_scheduled_sampling_beta=beta,
        num_inference_steps=STEPS,
        guidance_scale=7.5,
        height=SIZE,
        width=SIZE,
        generator=torch.Generator().manual_seed(42),
        output_type="np",
    )
    return as_uint8(out.images)


# --------------------------------------------------------------------------- against diffusers


@pytest.mark.parametrize(
    ("file", "boxes", "beta"),
    [
        ("gligen-original.safetensors", BOXES[:1], 0.3),
        ("gligen-original.safetensors", BOXES, 0.5),
        ("gligen-diffusers.safetensors", BOXES, 1.0),
        ("gligen-unet", BOXES[1:], 0.3),
    ],
)
def test_boxes_match_the_gligen_pipeline(
    root: Path, manager: ModelManager, file: str, boxes: tuple, beta: float
) -> None:
    ours = drawn(graph(file, boxes, beta), root, manager)
    theirs = oracle(root, boxes, beta)
    assert ours.shape == theirs.shape
    assert int(np.abs(ours.astype(int) - theirs.astype(int)).max()) <= 1  # uint8 rounding


def test_the_boxes_change_the_picture_and_the_cached_unet_is_left_as_it_was(
    root: Path, manager: ModelManager
) -> None:
    plain = drawn(graph(None), root, manager)
    key = next(k for k in manager.keys() if k[0] == "checkpoint" and str(k[1]).endswith("tiny-sd"))
    unet = manager.get(key, lambda: None).unet
    names = [name for name, _ in unet.named_modules()]
    grounded = drawn(graph("gligen-original.safetensors", beta=1.0), root, manager)
    assert differ(grounded, plain)
    assert [name for name, _ in unet.named_modules()] == names
    assert not hasattr(unet, "position_net") and not any("fuser" in n for n in names)
    assert not differ(drawn(graph(None), root, manager), plain)
    no_steps = drawn(graph("gligen-original.safetensors", beta=0.0), root, manager)
    assert not differ(no_steps, plain)  # beta 0: the fusers never run


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("file", "words"),
    [
        ("not-gligen.safetensors", ["gligen_name", "not a text-box GLIGEN", "1 tensors such as weight"]),
        ("gligen-text-image.safetensors", ["gligen_name", "text-image GLIGEN", "linears_text"]),
    ],
)
def test_files_that_are_not_text_box_gligen_are_refused(
    root: Path, manager: ModelManager, file: str, words: list[str]
) -> None:
    message = failure(graph(file), root, manager)
    for word in words:
        assert word in message


def test_an_adapter_for_another_model_says_what_it_was_made_for(root: Path, manager: ModelManager) -> None:
    message = failure(graph("gligen-wide.safetensors"), root, manager)
    assert "cross-attention width 48" in message and "width is 32" in message


def test_gligen_on_an_sdxl_model_is_refused(root: Path, manager: ModelManager) -> None:
    message = failure(graph("gligen-original.safetensors", ckpt="tiny-sdxl"), root, manager)
    assert "clip" in message and "sdxl" in message and "SD 1.x and 2.x" in message


def test_a_box_outside_the_picture_is_refused(root: Path, manager: ModelManager) -> None:
    message = failure(graph("gligen-original.safetensors", (("a red circle", 48, 8, 32, 16),)), root, manager)
    assert "outside the 64x64 px picture" in message and "'a red circle'" in message


def test_boxes_of_two_adapters_on_one_prompt_are_refused(root: Path, manager: ModelManager) -> None:
    message = failure(graph("gligen-original.safetensors", second="other.safetensors"), root, manager)
    assert "gligen_textbox_model" in message and "one GLIGEN adapter" in message


def test_an_empty_phrase_is_refused(root: Path, manager: ModelManager) -> None:
    message = failure(graph("gligen-original.safetensors", (("  ", 0, 0, 8, 8),)), root, manager)
    assert "text" in message and "is empty" in message


def test_at_most_thirty_boxes() -> None:
    from models.gligen import MAX_BOXES, Box, GligenError, Grounding

    box = Box("a red circle", torch.zeros(4), 0, 0, 8, 8)
    grounding = Grounding(lambda: None, "key", "adapter", boxes=(box,) * MAX_BOXES)  # type: ignore[arg-type, return-value]
    with pytest.raises(GligenError, match="at most 30 boxes"):
        grounding.with_box(box, 0.3)


# --------------------------------------------------------------------------- ComfyUI


def comfy_prompt() -> dict[str, Any]:
    """ComfyUI's GLIGEN example (API format): two GLIGENTextBoxApply on the prompt."""
    return {
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 42,
                "steps": 2,
                "cfg": 8.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
                "model": ["4", 0],
                "positive": ["27", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "gligen", "images": ["8", 0]}},
        "10": {"class_type": "GLIGENLoader", "inputs": {"gligen_name": "gligen-original.safetensors"}},
        "21": {
            "class_type": "GLIGENTextBoxApply",
            "inputs": {
                "text": "a red circle",
                "width": 24,
                "height": 32,
                "x": 8,
                "y": 16,
                "conditioning_to": ["24", 0],
                "clip": ["4", 1],
                "gligen_textbox_model": ["10", 0],
            },
        },
        "24": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["4", 1]}},
        "27": {
            "class_type": "GLIGENTextBoxApply",
            "inputs": {
                "text": "a blue square",
                "width": 32,
                "height": 32,
                "x": 32,
                "y": 0,
                "conditioning_to": ["21", 0],
                "clip": ["4", 1],
                "gligen_textbox_model": ["10", 0],
            },
        },
    }


def test_comfyui_gligen_workflow_converts_and_runs(root: Path, manager: ModelManager) -> None:
    """The loader and the box nodes convert with their inputs kept (boxes on throughout, as ComfyUI
    runs them: beta 1.0); the result validates and runs here."""
    from comfy_import import convert, read_prompt

    result = convert(read_prompt(comfy_prompt()))
    assert result.complete, [(n.comfy_type, n.reason) for n in result.not_converted]
    nodes = result.workflow["nodes"]
    boxes = [n["inputs"] for n in nodes.values() if n["type"] == "GLIGENTextBoxApply"]
    assert sorted(b["text"] for b in boxes) == ["a blue square", "a red circle"]
    assert all(b["beta"] == 1.0 and b["gligen_textbox_model"]["output"] == "gligen" for b in boxes)
    loader = next(n for n in nodes.values() if n["type"] == "GLIGENLoader")["inputs"]
    assert loader["gligen_name"] == "gligen-original.safetensors"
    run = run_graph(result.workflow["nodes"], root / "models", manager, work=root)
    assert run.status == "done", run.error


def test_comfyui_gligen_example_picture_converts_whole() -> None:
    """ComfyUI's own GLIGEN example (a PNG with its prompt) converts with nothing left out."""
    from comfy_import import convert, read_file

    path = REPO / "tests" / "data" / "comfy" / "corpus" / "comfyui_examples"
    path = path / "gligen__gligen_textbox_example.png"
    if not path.is_file():
        pytest.skip("the example is not in the corpus")
    result = convert(read_file(path), path.name)
    assert result.complete, [(n.comfy_type, n.reason) for n in result.not_converted]
    types = [n["type"] for n in result.workflow["nodes"].values()]
    assert types.count("GLIGENTextBoxApply") == 2 and "GLIGENLoader" in types
