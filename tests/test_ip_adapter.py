"""IP-Adapter image prompts: IPAdapterModelLoader, IPAdapter and IPAdapterAdvanced.

Oracle: diffusers' StableDiffusionPipeline / StableDiffusionXLPipeline with the same tiny model,
``load_ip_adapter`` of the same adapter file (written in the published key layout by
tests/fixtures/tiny_ip_adapter.py), the same tiny CLIP vision tower, picture, scale and seed; our
workflow (CheckpointLoader, CLIPVisionLoader, IPAdapterModelLoader, IPAdapter, Sampler, VAEDecode)
must draw the same image to uint8 rounding. The pictures are the tower's size (32 px), so the
pipeline's CLIPImageProcessor and our ComfyUI-style preprocessing see the same pixels.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from graph.validate import validate
from models.manager import ModelManager
from nodes import types as T
from nodes.base import Context, Input, Node, Output
from nodes.registry import default_registry
from tests.fixtures.services import services_over
from tests.fixtures.tiny_clip_vision import EMBED_DIM, TOWER, save_comfy_clip_vision, tiny_vision_tower
from tests.fixtures.tiny_ip_adapter import faceid_adapter, plus_adapter, save_adapter, standard_adapter
from tests.helpers import as_uint8, assert_same, link, run_graph

REPO = Path(__file__).resolve().parent.parent
SIZE = 64  # the tiny models' pictures (8 x 8 latents)
PROMPT = "a red circle at the top left"
STEPS = 4
PICTURES = ("square.png", "noise.png")


class StackImages(Node):
    """Test-only: two IMAGEs as one batch (the studio has no batch node yet)."""

    type = "TestStackImages"
    category = "test"
    description = "Stack two pictures into a batch."
    inputs = (Input("a", T.IMAGE), Input("b", T.IMAGE))
    outputs = (Output("image", T.IMAGE),)

    def run(self, ctx: Context, a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
        return {"image": np.concatenate([a, b])}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Models: a tiny SD 1.x and SDXL (diffusers folders), the tiny tower as a ComfyUI clip_vision
    file, adapters for each (standard, plus, a second standard, SDXL standard), a FaceID file and a
    file of other weights; inputs: two pictures of the tower's size."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    from tests.fixtures.tiny_models import save_tiny_sd_folder, save_tiny_sdxl_folder

    base = tmp_path_factory.mktemp("ip-adapter")
    models = base / "models"
    sd = save_tiny_sd_folder(models / "checkpoints" / "tiny-sd")
    sdxl = save_tiny_sdxl_folder(models / "checkpoints" / "tiny-sdxl")
    save_comfy_clip_vision(tiny_vision_tower(), models / "clip_vision" / "tiny-vision.safetensors")
    unet = UNet2DConditionModel.from_pretrained(str(sd / "unet"))
    unet_xl = UNet2DConditionModel.from_pretrained(str(sdxl / "unet"))
    hidden = TOWER["hidden_size"]
    folder = models / "ipadapter"
    save_adapter(standard_adapter(unet, EMBED_DIM, seed=1), folder / "ip-adapter_sd15.safetensors")
    save_adapter(standard_adapter(unet, EMBED_DIM, seed=2), folder / "ip-adapter_sd15_light.safetensors")
    save_adapter(plus_adapter(unet, hidden, seed=3), folder / "ip-adapter-plus_sd15.safetensors")
    save_adapter(standard_adapter(unet_xl, EMBED_DIM, seed=4), folder / "ip-adapter_sdxl.safetensors")
    save_adapter(faceid_adapter(unet, seed=5), folder / "ip-adapter-faceid_sd15.safetensors")
    save_file({"weight": torch.zeros(2, 2)}, str(folder / "not-an-adapter.safetensors"))
    inputs = base / "inputs"
    inputs.mkdir()
    side = TOWER["image_size"]
    shapes = Image.open(REPO / "workflows" / "assets" / "shapes.png").convert("RGB")
    shapes.resize((side, side), Image.BICUBIC).save(inputs / PICTURES[0])
    rng = np.random.default_rng(7)
    Image.fromarray((rng.random((side, side, 3)) * 255).astype(np.uint8)).save(inputs / PICTURES[1])
    return base


@pytest.fixture(scope="module")
def manager() -> ModelManager:
    return ModelManager(device="cpu")


def drawn(nodes: dict, root: Path, manager: ModelManager) -> np.ndarray:
    result = run_graph(nodes, root / "models", manager, work=root, extra_nodes=(StackImages,))
    assert result.status == "done", result.error
    return as_uint8(result.outputs["show"]["images"])


def differ(a: np.ndarray, b: np.ndarray) -> bool:
    return int(np.abs(a.astype(int) - b.astype(int)).max()) > 1


def graph(ckpt: str, adapters: list[dict[str, Any]], *, batch: bool = False) -> dict[str, Any]:
    """A text-to-image workflow with one IPAdapter node per entry of ``adapters`` (``file``, ``weight``,
    ``start_at``, ``end_at``, ``picture`` index, or ``node`` IPAdapterAdvanced with its inputs);
    ``batch``: the first adapter gets both pictures as one batch."""
    nodes: dict[str, Any] = {
        "ck": {"type": "CheckpointLoader", "inputs": {"ckpt_name": ckpt}},
        "vis": {"type": "CLIPVisionLoader", "inputs": {"clip_name": "tiny-vision.safetensors"}},
        "img0": {"type": "LoadImage", "inputs": {"path": PICTURES[0]}},
        "img1": {"type": "LoadImage", "inputs": {"path": PICTURES[1]}},
        "both": {
            "type": "TestStackImages",
            "inputs": {"a": link("img0", "image"), "b": link("img1", "image")},
        },
        "pos": {"type": "CLIPTextEncode", "inputs": {"clip": link("ck", "clip"), "text": PROMPT}},
        "neg": {"type": "CLIPTextEncode", "inputs": {"clip": link("ck", "clip"), "text": "blurry"}},
        "lat": {"type": "EmptyLatent", "inputs": {"width": SIZE, "height": SIZE, "vae": link("ck", "vae")}},
    }
    model = link("ck", "model")
    for index, adapter in enumerate(adapters):
        loader, apply = f"ipl{index}", f"ipa{index}"
        nodes[loader] = {
            "type": "IPAdapterModelLoader",
            "inputs": {"ipadapter_file": adapter["file"], "clip_vision": link("vis", "clip_vision")},
        }
        picture = (
            link("both", "image")
            if batch and index == 0
            else link(f"img{adapter.get('picture', 0)}", "image")
        )
        inputs = {"model": model, "ipadapter": link(loader, "ipadapter"), "image": picture}
        inputs.update({k: adapter[k] for k in ("weight", "start_at", "end_at") if k in adapter})
        inputs.update(adapter.get("advanced", {}))
        nodes[apply] = {
            "type": "IPAdapterAdvanced" if "advanced" in adapter else "IPAdapter",
            "inputs": inputs,
        }
        model = link(apply, "model")
    nodes["s"] = {
        "type": "Sampler",
        "inputs": {
            "model": model,
            "positive": link("pos", "conditioning"),
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


def oracle(root: Path, cls_name: str, ckpt: str, files: list[str], scales: list[float]) -> Any:
    """The diffusers pipeline with the tiny tower and the adapters loaded by ``load_ip_adapter``."""
    import diffusers
    from transformers import CLIPImageProcessor

    from models.sampling import make_scheduler

    side = TOWER["image_size"]
    pipe = getattr(diffusers, cls_name).from_pretrained(
        str(root / "models" / "checkpoints" / ckpt),
        image_encoder=tiny_vision_tower(),
        feature_extractor=CLIPImageProcessor(size=side, crop_size=side),
        local_files_only=True,
    )
    pipe.scheduler = make_scheduler("euler", pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_ip_adapter(
        str(root / "models"), subfolder="ipadapter", weight_name=files, local_files_only=True
    )
    pipe.set_ip_adapter_scale(scales)
    return pipe


def oracle_draw(pipe: Any, images: list[Any], **extra: Any) -> np.ndarray:
    out = pipe(
        prompt=PROMPT,
        negative_prompt="blurry",
        ip_adapter_image=images,
        num_inference_steps=STEPS,
        guidance_scale=7.5,
        height=SIZE,
        width=SIZE,
        generator=torch.Generator().manual_seed(42),
        output_type="np",
        **extra,
    )
    return as_uint8(out.images)


def picture(root: Path, index: int) -> Image.Image:
    return Image.open(root / "inputs" / PICTURES[index]).convert("RGB")


# --------------------------------------------------------------------------- against diffusers


def test_sampler_nodes_hand_the_image_prompts_to_the_sampler(root: Path, manager: ModelManager) -> None:
    """Every sampler node builds its job with nodes.support.sampling_job, which must put the MODEL's
    image prompts in ``job.extra`` (where GuidedModel finds them)."""
    from models.sampling import IMAGE_PROMPTS
    from models.values import Latent
    from nodes.diffusion import CheckpointLoader
    from nodes.support import sampling_job
    from tests.helpers import make_ctx

    ctx = make_ctx()
    ctx.settings.services = services_over(root / "models", manager=manager)
    model = CheckpointLoader().run(ctx, "tiny-sd", "auto")["model"].with_(image_prompts=("prompt",))
    job = sampling_job(
        ctx, model, (), (), Latent(torch.zeros(1, 4, 8, 8)), seed=0, steps=1, cfg=1.0, sampler="euler"
    )
    assert job.extra.get(IMAGE_PROMPTS) == ("prompt",), (
        "nodes/support.sampling_job must pass model.image_prompts as SampleJob.extra[IMAGE_PROMPTS]"
    )


@pytest.mark.parametrize("file", ["ip-adapter_sd15.safetensors", "ip-adapter-plus_sd15.safetensors"])
def test_sd15_adapter_matches_the_pipeline(root: Path, manager: ModelManager, file: str) -> None:
    """Standard (image embeds, zero negative) and plus (Resampler over hidden states, the blank
    picture's as negative) adapters draw what the IP-Adapter pipeline draws; and not the plain image."""
    ours = drawn(graph("tiny-sd", [{"file": file, "weight": 0.8}]), root, manager)
    pipe = oracle(root, "StableDiffusionPipeline", "tiny-sd", [file], [0.8])
    assert_same(ours, oracle_draw(pipe, [picture(root, 0)]))
    assert differ(ours, drawn(graph("tiny-sd", []), root, manager))


@pytest.mark.slow
def test_sdxl_adapter_matches_the_pipeline(root: Path, manager: ModelManager) -> None:
    ours = drawn(graph("tiny-sdxl", [{"file": "ip-adapter_sdxl.safetensors"}]), root, manager)
    pipe = oracle(root, "StableDiffusionXLPipeline", "tiny-sdxl", ["ip-adapter_sdxl.safetensors"], [1.0])
    assert_same(ours, oracle_draw(pipe, [picture(root, 0)]))


def test_two_adapters_chained_match_the_pipeline_with_two(root: Path, manager: ModelManager) -> None:
    """Two IPAdapter nodes in a chain, each with its own adapter, picture and weight."""
    files = ["ip-adapter_sd15.safetensors", "ip-adapter-plus_sd15.safetensors"]
    adapters = [{"file": files[0], "weight": 0.7}, {"file": files[1], "weight": 0.5, "picture": 1}]
    ours = drawn(graph("tiny-sd", adapters), root, manager)
    pipe = oracle(root, "StableDiffusionPipeline", "tiny-sd", files, [0.7, 0.5])
    assert_same(ours, oracle_draw(pipe, [picture(root, 0), picture(root, 1)]))


@pytest.mark.slow
def test_one_adapter_twice_and_a_batch_of_pictures(root: Path, manager: ModelManager) -> None:
    """One adapter chained twice with two pictures equals the pipeline loading it twice; a batch of
    two pictures in one node (concat) equals the pipeline given both pictures for one adapter."""
    file = "ip-adapter_sd15.safetensors"
    twice = drawn(graph("tiny-sd", [{"file": file}, {"file": file, "picture": 1}]), root, manager)
    pipe = oracle(root, "StableDiffusionPipeline", "tiny-sd", [file, file], [1.0, 1.0])
    assert_same(twice, oracle_draw(pipe, [picture(root, 0), picture(root, 1)]))

    batched = drawn(graph("tiny-sd", [{"file": file}], batch=True), root, manager)
    pipe = oracle(root, "StableDiffusionPipeline", "tiny-sd", [file], [1.0])
    assert_same(batched, oracle_draw(pipe, [[picture(root, 0), picture(root, 1)]]))


@pytest.mark.slow
def test_window_and_weight(root: Path, manager: ModelManager) -> None:
    """start_at/end_at switch the adapter on for part of the steps only (the image changes, and is
    neither the full-run one nor the plain one); weight 0 draws the plain image."""
    file = "ip-adapter_sd15.safetensors"
    plain = drawn(graph("tiny-sd", []), root, manager)
    full = drawn(graph("tiny-sd", [{"file": file}]), root, manager)
    late = drawn(graph("tiny-sd", [{"file": file, "start_at": 0.5}]), root, manager)
    assert differ(late, full) and differ(late, plain)
    assert_same(drawn(graph("tiny-sd", [{"file": file, "weight": 0.0}]), root, manager), plain)
    # the window is the ControlNet pipelines' rule: with end_at 0.5, the first half of the steps
    pipe = oracle(root, "StableDiffusionPipeline", "tiny-sd", [file], [1.0])

    def halfway(pipeline: Any, step: int, timestep: Any, kwargs: dict) -> dict:
        if step + 1 == STEPS // 2:
            pipeline.set_ip_adapter_scale(0.0)
        return kwargs

    early = drawn(graph("tiny-sd", [{"file": file, "end_at": 0.5}]), root, manager)
    assert_same(early, oracle_draw(pipe, [picture(root, 0)], callback_on_step_end=halfway))


def test_cached_unet_is_left_as_it_was(root: Path, manager: ModelManager) -> None:
    """The adapter runs on a view of the cached UNet: afterwards the cached UNet has its own
    processors and no image projection, and a plain run draws what it drew before."""
    before = drawn(graph("tiny-sd", []), root, manager)
    key = next(k for k in manager.keys() if k[0] == "checkpoint" and k[1].endswith("tiny-sd"))
    unet = manager.get(key, lambda: None).unet
    classes = {name: type(p) for name, p in unet.attn_processors.items()}
    drawn(graph("tiny-sd", [{"file": "ip-adapter-plus_sd15.safetensors"}]), root, manager)
    assert unet.encoder_hid_proj is None and unet.config.encoder_hid_dim_type is None
    assert {name: type(p) for name, p in unet.attn_processors.items()} == classes
    assert_same(drawn(graph("tiny-sd", []), root, manager), before)


@pytest.mark.slow
def test_advanced_node_options(root: Path, manager: ModelManager) -> None:
    """IPAdapterAdvanced with its defaults draws what IPAdapter draws; combine_embeds average of a
    batch equals the pipeline given the mean embedding; K+V scaling changes the picture."""
    file = "ip-adapter_sd15.safetensors"
    defaults = {"weight_type": "linear", "combine_embeds": "concat", "embeds_scaling": "V only"}
    simple = drawn(graph("tiny-sd", [{"file": file, "weight": 0.6}]), root, manager)
    advanced = drawn(graph("tiny-sd", [{"file": file, "weight": 0.6, "advanced": defaults}]), root, manager)
    assert_same(advanced, simple)
    kv = drawn(
        graph("tiny-sd", [{"file": file, "weight": 0.6, "advanced": {"embeds_scaling": "K+V"}}]),
        root,
        manager,
    )
    assert differ(kv, simple)

    averaged = drawn(
        graph("tiny-sd", [{"file": file, "advanced": {"combine_embeds": "average"}}], batch=True),
        root,
        manager,
    )
    pipe = oracle(root, "StableDiffusionPipeline", "tiny-sd", [file], [1.0])
    pixels = pipe.feature_extractor([picture(root, 0), picture(root, 1)], return_tensors="pt").pixel_values
    with torch.no_grad():
        mean = pipe.image_encoder(pixels).image_embeds.mean(0, keepdim=True)
    embeds = torch.cat([torch.zeros_like(mean), mean])[:, None]  # (negative, positive) x 1 picture
    out = pipe(
        prompt=PROMPT,
        negative_prompt="blurry",
        ip_adapter_image_embeds=[embeds],
        num_inference_steps=STEPS,
        guidance_scale=7.5,
        height=SIZE,
        width=SIZE,
        generator=torch.Generator().manual_seed(42),
        output_type="np",
    )
    assert_same(averaged, as_uint8(out.images))


# --------------------------------------------------------------------------- errors


def failure(nodes: dict, root: Path, manager: ModelManager) -> str:
    result = run_graph(nodes, root / "models", manager, work=root, extra_nodes=(StackImages,))
    assert result.status == "failed"
    return str(result.error)


@pytest.mark.parametrize(
    ("file", "words"),
    [
        ("ip-adapter-faceid_sd15.safetensors", ["FaceID", "insightface", "to_q_lora"]),
        ("not-an-adapter.safetensors", ["not an IP-Adapter", "1 tensors such as weight"]),
    ],
)
def test_files_that_are_not_usable_adapters_are_refused(
    root: Path, manager: ModelManager, file: str, words: list[str]
) -> None:
    message = failure(graph("tiny-sd", [{"file": file}]), root, manager)
    assert "ipadapter_file" in message
    for word in words:
        assert word in message


def test_an_sdxl_adapter_on_an_sd15_model_says_so(root: Path, manager: ModelManager) -> None:
    message = failure(graph("tiny-sd", [{"file": "ip-adapter_sdxl.safetensors"}]), root, manager)
    assert "ipadapter" in message and "SD 1.x" in message
    assert "width 96" in message and "width 32" in message  # the tiny SDXL's and SD's text widths


def test_adapter_family_is_named_from_its_width() -> None:
    from models.ip_adapter import IPAdapterWeights

    meta = {"device": "meta"}
    weights = IPAdapterWeights(
        "ip-adapter_sdxl.safetensors",
        {"proj.weight": torch.empty(4 * 2048, 1280, **meta)},
        {"1.to_k_ip.weight": torch.empty(640, 2048, **meta)},
        "standard",
    )
    assert weights.made_for == "SDXL (cross-attention width 2048)"


def test_a_window_that_ends_before_it_starts_is_refused(root: Path, manager: ModelManager) -> None:
    adapters = [{"file": "ip-adapter_sd15.safetensors", "start_at": 0.6, "end_at": 0.4}]
    assert "end_at" in failure(graph("tiny-sd", adapters), root, manager)


# --------------------------------------------------------------------------- with our Triton kernel

TRITON_CHECK = r"""
import os, sys, torch
sys.path.insert(0, os.getcwd())
from diffusers import UNet2DConditionModel
from kernels.processor import install_attention
import kernels.attention as kernel
from models.ip_adapter import ImagePrompt, adapt_unet, adapter_from_state
from tests.fixtures.tiny_ip_adapter import plus_adapter, standard_adapter

torch.manual_seed(0)
unet = UNet2DConditionModel(
    block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=32, attention_head_dim=4, norm_num_groups=32,
).eval()  # 4 heads of 16 in the 64-wide blocks: a head dimension the kernel takes
adapters = [adapter_from_state(standard_adapter(unet, 32, seed=1), "std"),
            adapter_from_state(plus_adapter(unet, 48, seed=2), "plus")]
prompts = [
    ImagePrompt(lambda: adapters[0], torch.randn(1, 32), torch.zeros(1, 32), weight=0.8),
    ImagePrompt(lambda: adapters[1], torch.randn(2, 5, 48), torch.randn(2, 5, 48), weight=0.6, scaling="K+V"),
]
sample, text = torch.randn(2, 4, 8, 8), torch.randn(2, 7, 32)
calls = []
original = kernel.attention
def counted(*args, **kwargs):
    calls.append(args[0].shape)
    return original(*args, **kwargs)
kernel.attention = counted

def run(backend):
    assert install_attention(unet, backend) == backend
    adapted = adapt_unet(unet, prompts, [False, True], "cpu", torch.float32)
    with torch.no_grad():
        return adapted.unet(sample, 10, encoder_hidden_states=text,
                            added_cond_kwargs={"image_embeds": adapted.image_embeds}).sample

sdpa = run("sdpa")
assert not calls
triton = run("triton")
cross = sum(1 for n in unet.attn_processors if n.endswith("attn2.processor"))
assert len(calls) >= cross * 3, (len(calls), cross)  # text + two adapters in every cross layer
cos = torch.nn.functional.cosine_similarity(sdpa.flatten(), triton.flatten(), dim=0).item()
rel = ((sdpa - triton).abs().sum() / sdpa.abs().sum()).item()
assert cos >= 0.9999 and rel <= 1e-3, (cos, rel)
print("ok", len(calls), cos, rel)
"""


@pytest.mark.slow
def test_adapter_with_the_triton_kernel_equals_sdpa() -> None:
    """With our Triton processor installed (under the interpreter, in a fresh process: the kernel
    reads TRITON_INTERPRET when it is defined), the adapter's cross-attention layers compute the
    text and image attention with the kernel, and the UNet's output equals the SDPA path's."""
    pytest.importorskip("triton")
    result = subprocess.run(
        [sys.executable, "-c", TRITON_CHECK],
        cwd=REPO,
        env={**os.environ, "TRITON_INTERPRET": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.startswith("ok")


# --------------------------------------------------------------------------- importing ComfyUI files


def comfy_prompt() -> dict[str, Any]:
    """A ComfyUI_IPAdapter_plus workflow (API format): a picture through IPAdapterAdvanced and IPAdapter."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd"}},
        "2": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "tiny-vision.safetensors"}},
        "3": {
            "class_type": "IPAdapterModelLoader",
            "inputs": {"ipadapter_file": "ip-adapter_sd15.safetensors"},
        },
        "4": {"class_type": "LoadImage", "inputs": {"image": PICTURES[0], "upload": "image"}},
        "5": {
            "class_type": "IPAdapterAdvanced",
            "inputs": {
                "model": ["1", 0],
                "ipadapter": ["3", 0],
                "image": ["4", 0],
                "clip_vision": ["2", 0],
                "weight": 0.8,
                "weight_type": "style transfer",
                "combine_embeds": "average",
                "start_at": 0.1,
                "end_at": 0.9,
                "embeds_scaling": "K+V",
            },
        },
        "6": {
            "class_type": "IPAdapter",
            "inputs": {
                "model": ["5", 0],
                "ipadapter": ["3", 0],
                "image": ["4", 0],
                "weight": 0.5,
                "start_at": 0.0,
                "end_at": 1.0,
                "weight_type": "standard",
            },
        },
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["1", 1]}},
        "8": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "9": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "10": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["6", 0],
                "positive": ["7", 0],
                "negative": ["8", 0],
                "latent_image": ["9", 0],
                "seed": 1,
                "steps": 2,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
            },
        },
        "11": {"class_type": "VAEDecode", "inputs": {"samples": ["10", 0], "vae": ["1", 2]}},
        "12": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ip", "images": ["11", 0]}},
    }


def test_comfyui_ipadapter_workflow_converts(root: Path) -> None:
    """The adapter nodes convert with their inputs kept; an unsupported weight curve is named in a
    warning and replaced by linear; the result validates against the models here."""
    from comfy_import import convert, read_prompt

    result = convert(read_prompt(comfy_prompt()))
    assert result.complete, [(n.comfy_type, n.reason) for n in result.not_converted]
    nodes = result.workflow["nodes"]
    advanced = next(n for n in nodes.values() if n["type"] == "IPAdapterAdvanced")["inputs"]
    assert advanced["weight_type"] == "linear" and advanced["embeds_scaling"] == "K+V"
    assert advanced["combine_embeds"] == "average" and advanced["clip_vision"]["output"] == "clip_vision"
    assert any("style transfer" in w and "linear" in w for w in result.warnings)
    simple = next(n for n in nodes.values() if n["type"] == "IPAdapter")["inputs"]
    assert simple["weight"] == 0.5 and simple["ipadapter"]["output"] == "ipadapter"
    registry = default_registry(services=services_over(root / "models"))
    checked = validate(result.workflow, registry)
    assert checked.ok, [str(i) for i in checked.issues]


def test_ui_widget_order_of_the_adapter_nodes() -> None:
    from comfy_import.formats import widget_inputs

    assert widget_inputs("IPAdapterAdvanced", [0.8, "linear", "concat", 0.1, 0.9, "V only"]) == {
        "weight": 0.8,
        "weight_type": "linear",
        "combine_embeds": "concat",
        "start_at": 0.1,
        "end_at": 0.9,
        "embeds_scaling": "V only",
    }
    assert widget_inputs("IPAdapter", [0.7, 0.0, 1.0, "standard"])["weight"] == 0.7
    assert widget_inputs("IPAdapterModelLoader", ["ip-adapter_sd15.safetensors"]) == {
        "ipadapter_file": "ip-adapter_sd15.safetensors"
    }


# --------------------------------------------------------------------------- the example


@pytest.mark.slow
def test_example_workflow_runs_with_tiny_stand_ins(root: Path, manager: ModelManager) -> None:
    """workflows/bring-your-own/ip-adapter-sd15.json validates but for the model files it names, and
    runs end to end when they are swapped for the tiny ones."""
    import json

    example = json.loads((REPO / "workflows" / "bring-your-own" / "ip-adapter-sd15.json").read_text())
    checked = validate(example, default_registry())
    named = {"ckpt_name", "clip_name", "ipadapter_file"}
    assert all(i.input in named for i in checked.issues), [str(i) for i in checked.issues]
    nodes = example["nodes"]
    nodes["ck"]["inputs"]["ckpt_name"] = "tiny-sd"
    nodes["vis"]["inputs"]["clip_name"] = "tiny-vision.safetensors"
    nodes["img"]["inputs"]["path"] = PICTURES[0]
    nodes["lat"]["inputs"].update(width=SIZE, height=SIZE)
    nodes["s"]["inputs"].update(steps=2, preview=False)
    result = run_graph(nodes, root / "models", manager, work=root, extra_nodes=(StackImages,))
    assert result.status == "done", result.error
