"""CLIP vision and image conditioning: CLIPVisionLoader, CLIPVisionEncode, unCLIPConditioning,
unCLIPCheckpointLoader, ConditioningZeroOut.

Oracles: transformers' own CLIPImageProcessor and CLIPVisionModelWithProjection on the same picture;
the tower's weights written in each layout by the fixtures (tests/fixtures/tiny_clip_vision.py);
ComfyUI's configurations of its three towers, copied here from its clip_vision_config_*.json;
ComfyUI's unclip_adm written out again here; diffusers' StableUnCLIPImg2ImgPipeline with the same
tiny model, image and noise level; and diffusers' SDXL pipeline given the pooled embedding that
ComfyUI's SDXL revision formula makes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from graph.validate import validate
from models.manager import ModelManager
from nodes.base import NodeInputError
from nodes.registry import default_registry
from tests.fixtures.services import services_over
from tests.fixtures.tiny_clip_vision import (
    EMBED_DIM,
    TOWER,
    save_comfy_clip_vision,
    save_open_clip_vision,
    save_tiny_unclip_folder,
    tiny_vision_tower,
    write_tiny_unclip_file,
)
from tests.helpers import as_uint8, assert_same, link, make_ctx, run_graph

SIZE = 64  # pixels of the tiny SD models' pictures (latents of 8 x 8)
PROMPT = "a red circle at the top left"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A models root with the tiny tower as ComfyUI files (transformers keys, with a prefix, OpenCLIP
    layout), a transformers folder, a pickle file, a file of other weights, an unCLIP folder and a
    tiny SDXL; and an inputs folder with two pictures."""
    from diffusers import StableUnCLIPImg2ImgPipeline
    from safetensors.torch import save_file

    from tests.fixtures.tiny_models import save_tiny_sdxl_folder

    base = tmp_path_factory.mktemp("clip-vision")
    models = base / "models"
    tower = tiny_vision_tower()
    vision = models / "clip_vision"
    save_comfy_clip_vision(tower, vision / "tiny-vision.safetensors")
    save_comfy_clip_vision(tower, vision / "prefixed.safetensors", prefix="clip_vision.")
    save_open_clip_vision(tower, vision / "open-clip.safetensors", prefix="embedder.model.visual.")
    tower.save_pretrained(str(vision / "tiny-folder"))
    (vision / "evil.ckpt").write_bytes(b"not really a pickle")
    save_file({"weight": torch.zeros(2, 2)}, str(vision / "not-vision.safetensors"))
    unclip = save_tiny_unclip_folder(models / "checkpoints" / "tiny-unclip")
    write_tiny_unclip_file(
        StableUnCLIPImg2ImgPipeline.from_pretrained(str(unclip), local_files_only=True),
        models / "checkpoints" / "tiny-unclip-single.safetensors",
    )
    save_tiny_sdxl_folder(models / "checkpoints" / "tiny-sdxl")
    inputs = base / "inputs"
    inputs.mkdir()
    rng = np.random.default_rng(3)
    square = Image.open(Path(__file__).resolve().parents[1] / "workflows" / "assets" / "shapes.png")
    square.convert("RGB").resize((TOWER["image_size"],) * 2, Image.BICUBIC).save(inputs / "square.png")
    noise = (rng.random((40, 56, 3)) * 255).astype(np.uint8)
    Image.fromarray(noise).save(inputs / "wide.png")
    return base


@pytest.fixture(scope="module")
def manager() -> ModelManager:
    return ModelManager(device="cpu")


def ctx_with(root: Path, manager: ModelManager) -> Any:
    """A node's context whose services search ``root``'s models folder with ``manager``."""
    ctx = make_ctx()
    ctx.settings.services = services_over(root / "models", manager=manager)
    return ctx


def picture(root: Path, name: str) -> np.ndarray:
    return np.asarray(Image.open(root / "inputs" / name).convert("RGB"), dtype=np.float32)[None] / 255.0


def processor_embeds(name: str, root: Path, **processor: Any) -> torch.Tensor:
    """transformers' own preprocessing and tower on the picture: the oracle for CLIPVisionEncode."""
    from transformers import CLIPImageProcessor

    size = TOWER["image_size"]
    settings = {"size": {"shortest_edge": size}, "crop_size": size, **processor}
    pixels = CLIPImageProcessor(**settings)(
        images=Image.open(root / "inputs" / name).convert("RGB"), return_tensors="pt"
    ).pixel_values
    with torch.no_grad():
        return tiny_vision_tower()(pixel_values=pixels).image_embeds


# --------------------------------------------------------------------------- loading


#: ComfyUI's clip_vision_config_vitl.json, _h.json and _g.json: width, layers, MLP, projection, activation.
COMFY_TOWERS = {
    "ViT-L/14": (1024, 24, 4096, 768, "quick_gelu"),
    "ViT-H/14": (1280, 32, 5120, 1024, "gelu"),
    "ViT-bigG/14": (1664, 48, 8192, 1280, "gelu"),
}


@pytest.mark.parametrize("name", sorted(COMFY_TOWERS))
def test_config_of_comfyui_towers_from_shapes(name: str) -> None:
    from models.clip_vision import infer_vision_config

    width, layers, mlp, projection, activation = COMFY_TOWERS[name]
    meta = {"device": "meta"}
    state = {
        "vision_model.embeddings.patch_embedding.weight": torch.empty(width, 3, 14, 14, **meta),
        "vision_model.embeddings.position_embedding.weight": torch.empty(257, width, **meta),
        "visual_projection.weight": torch.empty(projection, width, **meta),
    }
    for index in range(layers):
        state[f"vision_model.encoder.layers.{index}.mlp.fc1.weight"] = torch.empty(mlp, width, **meta)
    config = infer_vision_config(state)
    assert config == {
        "hidden_size": width,
        "intermediate_size": mlp,
        "num_hidden_layers": layers,
        "num_attention_heads": 16,
        "num_channels": 3,
        "image_size": 224,
        "patch_size": 14,
        "projection_dim": projection,
        "hidden_act": activation,
        "layer_norm_eps": 1e-5,
    }


@pytest.mark.parametrize(
    "name", ["tiny-vision.safetensors", "prefixed.safetensors", "open-clip.safetensors", "tiny-folder"]
)
def test_loader_reads_every_layout(root: Path, manager: ModelManager, name: str) -> None:
    from nodes.clip_vision import CLIPVisionEncode, CLIPVisionLoader

    ctx = ctx_with(root, manager)
    vision = CLIPVisionLoader().run(ctx, clip_name=name)["clip_vision"]
    encoded = CLIPVisionEncode().run(
        ctx, clip_vision=vision, image=picture(root, "square.png"), crop="center"
    )
    out = encoded["clip_vision_output"]
    theirs = processor_embeds("square.png", root)
    assert out.image_embeds.shape == (1, EMBED_DIM)
    torch.testing.assert_close(out.image_embeds, theirs, atol=1e-5, rtol=1e-5)


def test_encode_keeps_the_tower_states(root: Path, manager: ModelManager) -> None:
    from transformers import CLIPImageProcessor

    from nodes.clip_vision import CLIPVisionEncode, CLIPVisionLoader

    ctx = ctx_with(root, manager)
    vision = CLIPVisionLoader().run(ctx, clip_name="tiny-vision.safetensors")["clip_vision"]
    out = CLIPVisionEncode().run(ctx, clip_vision=vision, image=picture(root, "square.png"), crop="center")
    size = TOWER["image_size"]
    pixels = CLIPImageProcessor(size={"shortest_edge": size}, crop_size=size)(
        images=Image.open(root / "inputs" / "square.png"), return_tensors="pt"
    ).pixel_values
    with torch.no_grad():
        theirs = tiny_vision_tower()(pixel_values=pixels, output_hidden_states=True)
    encoding = out["clip_vision_output"]
    torch.testing.assert_close(encoding.last_hidden_state, theirs.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        encoding.penultimate_hidden_states, theirs.hidden_states[-2], atol=1e-5, rtol=1e-5
    )


def test_encode_crops_the_centre_or_stretches(root: Path, manager: ModelManager) -> None:
    """A wide picture: centre crop against CLIPImageProcessor's (PIL's bicubic resampling differs a
    little from torch's antialiased one), and stretching against the processor told to stretch."""
    from nodes.clip_vision import CLIPVisionEncode, CLIPVisionLoader

    ctx = ctx_with(root, manager)
    vision = CLIPVisionLoader().run(ctx, clip_name="tiny-vision.safetensors")["clip_vision"]
    image = picture(root, "wide.png")
    centre = CLIPVisionEncode().run(ctx, clip_vision=vision, image=image, crop="center")["clip_vision_output"]
    stretch = CLIPVisionEncode().run(ctx, clip_vision=vision, image=image, crop="none")["clip_vision_output"]
    size = TOWER["image_size"]
    theirs_centre = processor_embeds("wide.png", root)
    theirs_stretch = processor_embeds(
        "wide.png", root, size={"height": size, "width": size}, do_center_crop=False
    )

    def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(torch.nn.functional.cosine_similarity(a, b).min())

    assert cosine(centre.image_embeds, theirs_centre) > 0.99
    assert cosine(stretch.image_embeds, theirs_stretch) > 0.99
    assert cosine(centre.image_embeds, theirs_stretch) < cosine(centre.image_embeds, theirs_centre)


def test_preprocess_is_comfyui_formula() -> None:
    """Shortest side to the size, bicubic with antialiasing, centre crop, 8-bit rounding, CLIP's
    mean and std (ComfyUI's clip_preprocess), written out here."""
    import torch.nn.functional as F

    from models.clip_vision import preprocess

    rng = np.random.default_rng(0)
    image = rng.random((1, 30, 45, 3)).astype(np.float32)
    ours = preprocess(image, 20, crop=True)
    x = torch.from_numpy(image).permute(0, 3, 1, 2)
    x = F.interpolate(x, size=(20, 30), mode="bicubic", antialias=True)[:, :, :, 5:25]
    x = torch.clip(x * 255, 0, 255).round() / 255
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    torch.testing.assert_close(ours, (x - mean) / std)


def test_loader_errors_name_the_input(root: Path, manager: ModelManager) -> None:
    from nodes.clip_vision import CLIPVisionLoader

    ctx = ctx_with(root, manager)
    with pytest.raises(NodeInputError) as missing:
        CLIPVisionLoader().run(ctx, clip_name="nowhere.safetensors")
    assert missing.value.input_name == "clip_name" and "models/clip_vision" in str(missing.value)
    with pytest.raises(NodeInputError) as pickle:
        CLIPVisionLoader().run(ctx, clip_name="evil.ckpt")
    assert pickle.value.input_name == "clip_name" and "--allow-pickle" in str(pickle.value)
    with pytest.raises(NodeInputError) as other:
        CLIPVisionLoader().run(ctx, clip_name="not-vision.safetensors")
    assert "no CLIP vision tower" in str(other.value)


def test_loader_lists_clip_vision_files(root: Path) -> None:
    from nodes.clip_vision import CLIPVisionLoader

    names = CLIPVisionLoader.input("clip_name").current_choices(services_over(root / "models")) or []
    assert {"tiny-vision.safetensors", "open-clip.safetensors", "tiny-folder"} <= set(names)


# --------------------------------------------------------------------------- conditioning values


def conds(with_pooled: bool = False) -> tuple[Any, ...]:
    from models.values import Cond

    generator = torch.Generator().manual_seed(0)
    pooled = torch.randn(1, EMBED_DIM, generator=generator) if with_pooled else None
    return (Cond(embeds=torch.randn(1, 77, 32, generator=generator) + 1, pooled=pooled),)


def encoding(seed: int = 0, images: int = 1) -> Any:
    from models.clip_vision import VisionEncoding

    generator = torch.Generator().manual_seed(seed)
    embeds = torch.randn(images, EMBED_DIM, generator=generator)
    return VisionEncoding(embeds, torch.zeros(images, 5, 48), torch.zeros(images, 5, 48))


def test_unclip_conditioning_adds_entries_in_order() -> None:
    from models.clip_vision import unclip_entries
    from nodes.clip_vision import UnclipConditioning

    ctx = make_ctx()
    first, second = encoding(0), encoding(1)
    once = UnclipConditioning().run(ctx, conds(), first, 0.5, 0.25)["conditioning"]
    twice = UnclipConditioning().run(ctx, once, second, -1.5, 0.0)["conditioning"]
    entries = unclip_entries(twice[0])
    assert [(e.strength, e.noise_augmentation) for e in entries] == [(0.5, 0.25), (-1.5, 0.0)]
    assert entries[0].image_embeds is first.image_embeds and entries[1].image_embeds is second.image_embeds
    assert unclip_entries(once[0]) == entries[:1]  # the input conditioning is left as it was
    same = UnclipConditioning().run(ctx, once, second, 0.0, 0.5)["conditioning"]
    assert same is once  # strength 0: unchanged, as ComfyUI


def test_conditioning_zero_out_keeps_the_rest() -> None:
    from models.clip_vision import unclip_entries
    from nodes.clip_vision import UnclipConditioning
    from nodes.conditioning import ConditioningZeroOut

    ctx = make_ctx()
    given = UnclipConditioning().run(ctx, conds(with_pooled=True), encoding(), 1.0, 0.0)["conditioning"]
    zeroed = ConditioningZeroOut().run(ctx, given)["conditioning"]
    assert not zeroed[0].embeds.any() and zeroed[0].embeds.shape == given[0].embeds.shape
    assert zeroed[0].pooled is not None and not zeroed[0].pooled.any()
    assert unclip_entries(zeroed[0]) == unclip_entries(given[0])
    plain = ConditioningZeroOut().run(ctx, conds())["conditioning"]
    assert plain[0].pooled is None and not plain[0].embeds.any()


def comfy_unclip_adm(
    entries: list[tuple[torch.Tensor, float, float]], seed: int, merge: float, mean: Any = 0.0, std: Any = 1.0
) -> torch.Tensor:
    """ComfyUI's unclip_adm, written out again: squared-cosine schedule of 1000 levels, noise drawn
    with torch.manual_seed(seed - 10) for each embedding, sinusoidal level embedding (cos, sin)."""
    steps = torch.arange(1001, dtype=torch.float64) / 1000
    alpha_bar = torch.cos((steps + 0.008) / 1.008 * torch.pi / 2) ** 2
    betas = torch.clamp(1 - alpha_bar[1:] / alpha_bar[:-1], max=0.999)
    cumprod = torch.cumprod(1 - betas.float(), dim=0)

    def embed_level(level: int, dim: int) -> torch.Tensor:
        half = dim // 2
        freqs = torch.exp(-np.log(10000) * torch.arange(half, dtype=torch.float32) / half)
        args = level * freqs
        return torch.cat([torch.cos(args), torch.sin(args)])[None]

    def augment(x: torch.Tensor, level: int) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=torch.manual_seed(seed - 10))
        scaled = (x - mean) / std
        z = cumprod[level].sqrt() * scaled + (1 - cumprod[level]).sqrt() * noise
        return z * std + mean

    outs = []
    for embeds, weight, noise_augment in entries:
        for row in embeds:
            level = round(999 * noise_augment)
            outs.append(torch.cat([augment(row[None], level), embed_level(level, row.shape[0])], 1) * weight)
    if len(outs) == 1:
        return outs[0]
    total = torch.stack(outs).sum(0)
    dim = total.shape[1] // 2
    level = round(999 * merge)
    return torch.cat([augment(total[:, :dim], level), embed_level(level, dim)], 1)


@pytest.mark.parametrize("images", [1, 3])
def test_unclip_vector_is_comfyui_formula(images: int) -> None:
    from models.clip_vision import EmbeddingNoise, UnclipEntry, unclip_vector

    first, second = encoding(0, images).image_embeds, encoding(1).image_embeds
    generator = torch.Generator().manual_seed(5)
    mean, std = (
        torch.randn(1, EMBED_DIM, generator=generator),
        0.5 + torch.rand(1, EMBED_DIM, generator=generator),
    )
    noise = EmbeddingNoise(mean=mean, std=std)
    entries = [UnclipEntry(first, 0.7, 0.3)]
    ours = unclip_vector(entries, noise, seed=1234, merge_augmentation=0.05)
    theirs = comfy_unclip_adm([(first, 0.7, 0.3)], 1234, 0.05, mean, std)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    entries.append(UnclipEntry(second, -0.4, 0.9))
    ours = unclip_vector(entries, noise, seed=77, merge_augmentation=0.05)
    theirs = comfy_unclip_adm([(first, 0.7, 0.3), (second, -0.4, 0.9)], 77, 0.05, mean, std)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    assert ours.shape == (1, 2 * EMBED_DIM)


# --------------------------------------------------------------------------- unCLIP checkpoints


def test_unclip_checkpoint_loader_outputs(root: Path, manager: ModelManager) -> None:
    from models.clip_vision import embedding_noise_of
    from nodes.clip_vision import UnclipCheckpointLoader
    from nodes.support import checkpoint_for

    ctx = ctx_with(root, manager)
    out = UnclipCheckpointLoader().run(ctx, ckpt_name="tiny-unclip")
    assert set(out) == {"model", "clip", "vae", "clip_vision"}
    unet = checkpoint_for(out["model"], ctx).unet
    normalizer = root / "models" / "checkpoints" / "tiny-unclip" / "image_normalizer"
    from safetensors.torch import load_file

    stats = load_file(str(normalizer / "diffusion_pytorch_model.safetensors"))
    noise = embedding_noise_of(unet)
    assert noise.mean is not None and noise.std is not None
    torch.testing.assert_close(noise.mean, stats["mean"])
    torch.testing.assert_close(noise.std, stats["std"])
    tower = out["clip_vision"].get()
    assert int(tower.config.projection_dim) == EMBED_DIM


def test_unclip_checkpoint_loader_refuses_other_models(root: Path, manager: ModelManager) -> None:
    from nodes.clip_vision import UnclipCheckpointLoader

    ctx = ctx_with(root, manager)
    with pytest.raises(NodeInputError) as plain:
        UnclipCheckpointLoader().run(ctx, ckpt_name="tiny-sdxl")
    assert plain.value.input_name == "ckpt_name" and "not an unCLIP checkpoint" in str(plain.value)
    from safetensors.torch import save_file

    single = root / "models" / "checkpoints" / "not-unclip.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, str(single))
    try:
        with pytest.raises(NodeInputError) as file:
            UnclipCheckpointLoader().run(ctx, ckpt_name="not-unclip.safetensors")
    finally:
        single.unlink()
    assert "not an unCLIP checkpoint" in str(file.value)


@pytest.mark.slow
def test_unclip_single_file_draws_what_its_folder_draws(root: Path, manager: ModelManager) -> None:
    """The same tiny unCLIP model as one original-layout file (image encoder in OpenCLIP's layout,
    the augmentation statistics as noise_augmentor.*) and as a diffusers folder: the same picture, to
    uint8 rounding (with one CPU thread the two loads' float sums can round apart by a level)."""

    def draw(ckpt: str) -> np.ndarray:
        loader = {"type": "unCLIPCheckpointLoader", "inputs": {"ckpt_name": ckpt}}
        graph = image_graph(loader, ("ck", "clip_vision"), ("pos", "conditioning"), sampler="ddim", noise=0.3)
        return shown(run_graph(graph, root / "models", manager, work=root))

    assert_same(draw("tiny-unclip-single.safetensors"), draw("tiny-unclip"))  # float rounding may differ


# --------------------------------------------------------------------------- sampling


def shown(result: Any) -> np.ndarray:
    assert result.status == "done", result.error
    return as_uint8(result.outputs["show"]["images"])


def image_graph(ckpt: dict, clip_vision: tuple[str, str], positive: tuple[str, str], **sampler: Any) -> dict:
    """Load square.png, encode it, condition ``positive`` on it, sample, decode, show."""
    settings = {"seed": 42, "steps": 4, "cfg": 7.5, "sampler": "euler", "strength": 1.0, "noise": 0.0}
    settings.update(sampler)
    return {
        "ck": ckpt,
        "img": {"type": "LoadImage", "inputs": {"path": "square.png"}},
        "enc": {
            "type": "CLIPVisionEncode",
            "inputs": {"clip_vision": link(*clip_vision), "image": link("img", "image")},
        },
        "pos": {"type": "CLIPTextEncode", "inputs": {"clip": link("ck", "clip"), "text": PROMPT}},
        "neg": {"type": "CLIPTextEncode", "inputs": {"clip": link("ck", "clip"), "text": "blurry"}},
        "un": {
            "type": "unCLIPConditioning",
            "inputs": {
                "conditioning": link(*positive),
                "clip_vision_output": link("enc", "clip_vision_output"),
                "strength": settings["strength"],
                "noise_augmentation": settings["noise"],
            },
        },
        "lat": {"type": "EmptyLatent", "inputs": {"width": SIZE, "height": SIZE, "vae": link("ck", "vae")}},
        "s": {
            "type": "Sampler",
            "inputs": {
                "model": link("ck", "model"),
                "positive": link("un", "conditioning"),
                "negative": link("neg", "conditioning"),
                "latent": link("lat", "latent"),
                **{k: settings[k] for k in ("seed", "steps", "cfg", "sampler")},
            },
        },
        "d": {"type": "VAEDecode", "inputs": {"vae": link("ck", "vae"), "latent": link("s", "latent")}},
        "show": {"type": "PreviewImage", "inputs": {"images": link("d", "image")}},
    }


def oracle_pipeline(cls_name: str, folder: Path, sampler: str) -> Any:
    import diffusers

    from models.sampling import make_scheduler

    pipe = getattr(diffusers, cls_name).from_pretrained(str(folder), local_files_only=True)
    pipe.scheduler = make_scheduler(sampler, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.slow
@pytest.mark.parametrize("level", [0, 250])
def test_unclip_matches_stable_unclip_pipeline(root: Path, manager: ModelManager, level: int) -> None:
    """unCLIPCheckpointLoader + CLIPVisionEncode + unCLIPConditioning draw what diffusers'
    StableUnCLIPImg2ImgPipeline draws from the same picture at the same noise level (ComfyUI's
    noise_augmentation is the level / 999; its embedding noise comes from the seed - 10)."""
    loader = {"type": "unCLIPCheckpointLoader", "inputs": {"ckpt_name": "tiny-unclip"}}
    graph = image_graph(
        loader, ("ck", "clip_vision"), ("pos", "conditioning"), sampler="ddim", noise=level / 999
    )
    ours = shown(run_graph(graph, root / "models", manager, work=root))
    pipe = oracle_pipeline(
        "StableUnCLIPImg2ImgPipeline", root / "models" / "checkpoints" / "tiny-unclip", "ddim"
    )
    theirs = pipe(
        image=Image.open(root / "inputs" / "square.png").convert("RGB"),
        prompt=PROMPT,
        negative_prompt="blurry",
        noise_level=level,
        num_inference_steps=4,
        guidance_scale=7.5,
        height=SIZE,
        width=SIZE,
        generator=torch.Generator().manual_seed(42 - 10),
        latents=torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(42)),
        output_type="np",
    ).images
    assert_same(ours, as_uint8(theirs))


@pytest.mark.slow
def test_sdxl_revision_matches_the_pooled_formula(root: Path, manager: ModelManager) -> None:
    """SDXL revision (ComfyUI's example: the prompt zeroed out, a picture's embedding in its place):
    the same picture as diffusers' SDXL pipeline given zero text states and, as the pooled
    embedding, the augmented image embedding times the strength (ComfyUI's unclip_adm)."""
    loader = {"type": "CheckpointLoader", "inputs": {"ckpt_name": "tiny-sdxl"}}
    graph = image_graph(loader, ("vis", "clip_vision"), ("zero", "conditioning"), strength=0.75, noise=0.2)
    graph["vis"] = {"type": "CLIPVisionLoader", "inputs": {"clip_name": "tiny-vision.safetensors"}}
    graph["zero"] = {"type": "ConditioningZeroOut", "inputs": {"conditioning": link("pos", "conditioning")}}
    ours = shown(run_graph(graph, root / "models", manager, work=root))

    pipe = oracle_pipeline(
        "StableDiffusionXLPipeline", root / "models" / "checkpoints" / "tiny-sdxl", "euler"
    )
    text, negative, _, negative_pooled = pipe.encode_prompt(
        PROMPT,
        device="cpu",
        num_images_per_prompt=1,
        do_classifier_free_guidance=True,
        negative_prompt="blurry",
    )
    embeds = processor_embeds("square.png", root)
    pooled = comfy_unclip_adm([(embeds, 0.75, 0.2)], seed=42, merge=0.0)[:, :EMBED_DIM]

    def draw(pooled: torch.Tensor) -> np.ndarray:
        return pipe(
            prompt_embeds=torch.zeros_like(text),
            pooled_prompt_embeds=pooled,
            negative_prompt_embeds=negative,
            negative_pooled_prompt_embeds=negative_pooled,
            num_inference_steps=4,
            guidance_scale=7.5,
            height=SIZE,
            width=SIZE,
            generator=torch.Generator().manual_seed(42),
            output_type="np",
        ).images

    theirs = draw(pooled)
    assert_same(ours, as_uint8(theirs))
    without = as_uint8(draw(torch.zeros_like(pooled)))  # the test can tell a picture from none
    assert int(np.abs(without.astype(int) - ours.astype(int)).max()) > 1


# --------------------------------------------------------------------------- importing ComfyUI files

CORPUS = Path(__file__).resolve().parent / "data" / "comfy" / "corpus"
IMAGE_CONDITIONING_FILES = [
    "comfyui_examples/unclip__unclip_example.png",
    "comfyui_examples/unclip__unclip_example_multiple.png",
    "comfyui_examples/unclip__unclip_2pass.png",
    "comfyui_examples/sdxl__sdxl_revision_zero_positive.png",
    "comfyui_examples/sdxl__sdxl_revision_text_prompts.png",
    "cog_comfyui/sdxl_revision_zero_positive.json",
    "workflow_templates/sdxl_revision_text_prompts.json",
    "comfyui_tests/default_graph_sdxl1_0.json",
]


@pytest.mark.parametrize("name", IMAGE_CONDITIONING_FILES)
def test_comfyui_image_conditioning_workflows_convert(name: str) -> None:
    """ComfyUI's unCLIP and revision examples convert whole and validate but for the model files,
    with ComfyUI's inputs kept (strength, noise_augmentation, crop: center where older files have none)."""
    from comfy_import import convert, read_file

    path = CORPUS / name
    if not path.is_file():
        pytest.skip(f"{name} is not in the corpus")
    result = convert(read_file(path), path.name)
    assert result.complete, [(n.comfy_type, n.reason) for n in result.not_converted]
    registry = default_registry()
    issues = [i for i in validate(result.workflow, registry).issues if not _names_a_model(i, registry)]
    assert not issues, [str(i) for i in issues]
    nodes = result.workflow["nodes"]
    for node in nodes.values():
        if node["type"] == "CLIPVisionEncode":
            assert node["inputs"].get("crop", "center") == "center"
        if node["type"] == "unCLIPConditioning":
            assert {"strength", "noise_augmentation", "conditioning", "clip_vision_output"} <= set(
                node["inputs"]
            )


def _names_a_model(issue: Any, registry: Any) -> bool:
    """An issue that only says a model file the workflow names is not installed here."""
    node = registry.get(issue.node_type) if issue.node_type else None
    spec = next((i for i in getattr(node, "inputs", ()) if i.name == issue.input), None)
    return issue.code == "bad_value" and spec is not None and callable(spec.choices)
