"""Conditioning nodes against independent oracles: diffusers' clip_skip and SDXL size
conditioning, the transformers text model itself for text encoder files, and the
formulas of areas, average and concat written out here."""

from __future__ import annotations

import os
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402

from models.conditioning import Area, AreaOutside  # noqa: E402
from models.manager import ModelManager  # noqa: E402
from models.sampling import SampleJob, _embeds, combine, region_weight, sample  # noqa: E402
from models.values import Cond, Latent  # noqa: E402
from nodes.base import CancelToken, Context, NodeInputError, RunSettings  # noqa: E402
from nodes.conditioning import (  # noqa: E402
    CLIPLoader,
    CLIPSetLastLayer,
    CLIPTextEncodeSDXL,
    ConditioningAverage,
    ConditioningConcat,
    ConditioningSetArea,
    ConditioningSetAreaPercentage,
    ConditioningSetAreaStrength,
)
from nodes.diffusion import CheckpointLoader, CLIPTextEncode  # noqa: E402
from tests.fixtures.services import services_over  # noqa: E402
from tests.fixtures.tiny_models import tiny_clip_config, tiny_sd_unet  # noqa: E402
from tests.helpers import link  # noqa: E402
from tests.test_diffusion import (  # noqa: E402
    PROMPT,
    as_uint8,
    assert_same,
    image_of,
    pipeline,
    pipeline_txt2img,
    run_graph,
    txt2img,
)

pytestmark = pytest.mark.slow
SDXL = "tiny-sdxl"


def context(root: Path, manager: ModelManager) -> Context:
    services = services_over(root, manager=manager)
    settings = RunSettings(services=services, input_dirs=(root / "inputs",), output_dir=root / "out")
    return Context("n", "X", "test", 1, settings, CancelToken(), lambda event: None)


def clip_of(root: Path, manager: ModelManager, ckpt: str) -> Any:
    return CheckpointLoader().run(context(root, manager), ckpt, "auto")["clip"]


def sd_pipeline_with_clip_skip(folder: Path) -> Any:
    """StableDiffusionPipeline for ``folder``; diffusers 0.42 reaches the final layer norm through
    ``text_encoder.text_model``, which transformers 5's CLIPTextModel no longer has: point it there."""
    pipe = pipeline("StableDiffusionPipeline", folder, "euler")
    encoder = pipe.text_encoder
    encoder.text_model = types.SimpleNamespace(final_layer_norm=encoder.final_layer_norm)
    return pipe


# --------------------------------------------------------------------------- CLIPSetLastLayer


def test_clip_skip_matches_diffusers_clip_skip(models_root, manager):
    """CLIPSetLastLayer(-2) is diffusers' clip_skip=1: the same prompt embeddings and image
    (diffusers applies clip_skip to the positive prompt only, so the negative uses the plain CLIP)."""
    nodes = txt2img(negative="blurry")
    nodes["skip"] = {
        "type": "CLIPSetLastLayer",
        "inputs": {"clip": link("ck", "clip"), "stop_at_clip_layer": -2},
    }
    nodes["pos"]["inputs"]["clip"] = link("skip", "clip")
    ours = image_of(run_graph(nodes, models_root, manager))
    pipe = sd_pipeline_with_clip_skip(models_root / "checkpoints" / "tiny-sd")
    theirs = as_uint8(pipeline_txt2img(pipe, negative_prompt="blurry", clip_skip=1))
    assert_same(ours, theirs)
    plain = image_of(run_graph(txt2img(negative="blurry"), models_root, manager))
    assert not np.array_equal(ours, plain)  # the layer changed the picture

    ctx = context(models_root, manager)
    skipped = CLIPSetLastLayer().run(ctx, clip_of(models_root, manager, "tiny-sd"), -2)["clip"]
    embeds = CLIPTextEncode().run(ctx, skipped, PROMPT)["conditioning"][0].embeds
    expected = pipe.encode_prompt(PROMPT, "cpu", 1, False, clip_skip=1)[0]
    torch.testing.assert_close(embeds, expected, rtol=0, atol=1e-6)


def test_clip_skip_last_layer_is_the_default(models_root, manager):
    ctx = context(models_root, manager)
    clip = clip_of(models_root, manager, "tiny-sd")
    last = CLIPSetLastLayer().run(ctx, clip, -1)["clip"]
    default = CLIPTextEncode().run(ctx, clip, PROMPT)["conditioning"][0].embeds
    torch.testing.assert_close(CLIPTextEncode().run(ctx, last, PROMPT)["conditioning"][0].embeds, default)


def test_clip_skip_beyond_the_encoder_depth_names_the_input(models_root, manager):
    ctx = context(models_root, manager)
    clip = clip_of(models_root, manager, "tiny-sd")  # 5 layers
    CLIPSetLastLayer().run(ctx, clip, -5)
    with pytest.raises(NodeInputError) as caught:
        CLIPSetLastLayer().run(ctx, clip, -6)
    assert caught.value.input_name == "stop_at_clip_layer"
    assert "5 layers" in str(caught.value) and "-1 and -5" in str(caught.value)


# --------------------------------------------------------------------------- SDXL


def sdxl_prompt(node_id: str, clip: dict, size: tuple[int, ...], text_g: str, text_l: str) -> dict:
    width, height, crop_w, crop_h, target_width, target_height = size
    return {
        "type": "CLIPTextEncodeSDXL",
        "inputs": {
            "clip": clip,
            "width": width,
            "height": height,
            "crop_w": crop_w,
            "crop_h": crop_h,
            "target_width": target_width,
            "target_height": target_height,
            "text_g": text_g,
            "text_l": text_l,
        },
    }


def test_sdxl_text_encode_matches_the_pipeline_with_sizes_crops_and_clip_skip(models_root, manager):
    """text_l is the pipeline's prompt (CLIP-L), text_g its prompt_2 (CLIP-G); width/height the
    original size, crop_w/crop_h the crop's left/top, target the target size; CLIPSetLastLayer(-3)
    is SDXL's clip_skip=1 (the pipeline skips for the positive prompt only)."""
    positive = (256, 192, 16, 8, 64, 48)
    negative = (128, 128, 0, 24, 96, 32)
    nodes = txt2img(SDXL, seed=5, steps=4, cfg=6.0)
    nodes["skip"] = {
        "type": "CLIPSetLastLayer",
        "inputs": {"clip": link("ck", "clip"), "stop_at_clip_layer": -3},
    }
    nodes["pos"] = sdxl_prompt("pos", link("skip", "clip"), positive, "a blue square", PROMPT)
    nodes["neg"] = sdxl_prompt("neg", link("ck", "clip"), negative, "noise", "blurry")
    ours = image_of(run_graph(nodes, models_root, manager))
    pipe = pipeline("StableDiffusionXLPipeline", models_root / "checkpoints" / SDXL, "euler")
    theirs = pipe(
        prompt=PROMPT,
        prompt_2="a blue square",
        negative_prompt="blurry",
        negative_prompt_2="noise",
        clip_skip=1,
        original_size=(192, 256),
        crops_coords_top_left=(8, 16),
        target_size=(48, 64),
        negative_original_size=(128, 128),
        negative_crops_coords_top_left=(24, 0),
        negative_target_size=(32, 96),
        num_inference_steps=4,
        guidance_scale=6.0,
        height=64,
        width=64,
        generator=torch.Generator("cpu").manual_seed(5),
        output_type="np",
    ).images
    assert_same(ours, as_uint8(theirs))

    nodes["pos"]["inputs"].update(width=64, height=64, crop_w=0, crop_h=0, target_width=64, target_height=64)
    plain = image_of(run_graph(nodes, models_root, manager))
    assert not np.array_equal(ours, plain)  # the size conditioning reached the UNet


def test_sdxl_text_encode_pads_the_shorter_text_with_empty_chunks(models_root, manager):
    ctx = context(models_root, manager)
    clip = clip_of(models_root, manager, SDXL)
    long_text = ", ".join(["a red circle"] * 30)  # more than 75 tokens: two chunks
    cond = CLIPTextEncodeSDXL().run(ctx, clip, 64, 64, 0, 0, 64, 64, long_text, "a cat")["conditioning"][0]
    assert cond.embeds.shape == (1, 154, 96)
    short_l = CLIPTextEncodeSDXL().run(ctx, clip, 64, 64, 0, 0, 64, 64, long_text, "")["conditioning"][0]
    empty_l = CLIPTextEncodeSDXL().run(ctx, clip, 64, 64, 0, 0, 64, 64, "", "")["conditioning"][0]
    # CLIP-L's second chunk is the empty prompt's encoding; CLIP-G's is the text's own
    torch.testing.assert_close(short_l.embeds[:, 77:, :32], empty_l.embeds[:, :, :32])
    assert not torch.allclose(cond.embeds[:, 77:, 32:], empty_l.embeds[:, :, 32:])


def test_sdxl_text_encode_refuses_an_sd1_clip(models_root, manager):
    ctx = context(models_root, manager)
    with pytest.raises(NodeInputError) as caught:
        CLIPTextEncodeSDXL().run(
            ctx, clip_of(models_root, manager, "tiny-sd"), 64, 64, 0, 0, 64, 64, "a", "b"
        )
    assert caught.value.input_name == "clip" and "SDXL" in str(caught.value)


# --------------------------------------------------------------------------- areas


def cell_mask(rows: int, cols: int, scale: int, x: int, y: int, width: int, height: int) -> torch.Tensor:
    """1 on the latent cells whose pixels all lie inside the box (pixels), written cell by cell."""
    mask = torch.zeros(1, 1, rows, cols)
    for r in range(rows):
        for c in range(cols):
            inside_rows = y <= r * scale and (r + 1) * scale <= y + height
            inside_cols = x <= c * scale and (c + 1) * scale <= x + width
            mask[0, 0, r, c] = float(inside_rows and inside_cols)
    return mask


def test_areas_weight_predictions_by_box_and_strength():
    """Weighted mean by area x strength over a 16x16 latent of a 4x VAE (64 px pictures)."""
    torch.manual_seed(0)
    batch, rows, cols, scale = 2, 16, 16, 4
    everywhere = Cond(torch.zeros(1, 77, 8))
    pixels = Cond(torch.zeros(1, 77, 8), area=Area("pixels", 16, 8, 32, 24), strength=2.5)
    fraction = Cond(torch.zeros(1, 77, 8), area=Area("fraction", 0.5, 0.25, 0.5, 0.5), strength=0.5)
    conds = [everywhere, pixels, fraction]
    preds = torch.randn(3 * batch, 4, rows, cols)
    ours = combine(preds, conds, batch, scale=scale)

    weights = [
        torch.ones(1, 1, rows, cols),
        2.5 * cell_mask(rows, cols, scale, 16, 8, 32, 24),
        0.5 * cell_mask(rows, cols, scale, 32, 16, 32, 32),
    ]
    chunks = preds.split(batch)
    expected = sum(w * p for w, p in zip(weights, chunks, strict=True)) / sum(weights)
    torch.testing.assert_close(ours, expected)
    # the same pixel box on an 8x VAE covers other cells
    assert not torch.equal(region_weight(pixels, rows, cols, 4), region_weight(pixels, rows, cols, 8))


def test_area_strength_alone_keeps_a_single_prediction():
    preds = torch.randn(2, 4, 8, 8)
    cond = ConditioningSetAreaStrength().run(None, (Cond(torch.zeros(1, 77, 8)),), 0.3)["conditioning"]
    assert cond[0].strength == 0.3
    torch.testing.assert_close(combine(preds, cond, 2), preds)


def test_area_partly_outside_is_cut_and_wholly_outside_is_an_error():
    cond = Cond(torch.zeros(1, 77, 8), area=Area("pixels", 48, 0, 64, 64))
    weight = region_weight(cond, 16, 16, 4)
    assert torch.equal(weight, cell_mask(16, 16, 4, 48, 0, 16, 64))
    outside = Cond(torch.zeros(1, 77, 8), area=Area("pixels", 64, 0, 64, 64))
    with pytest.raises(AreaOutside, match=r"outside the 64x64 px picture.*move x/y"):
        region_weight(outside, 16, 16, 4)
    with pytest.raises(AreaOutside, match="ConditioningSetAreaPercentage"):
        region_weight(Cond(torch.zeros(1, 77, 8), area=Area("fraction", 1.0, 0, 0.5, 0.5)), 16, 16, 4)


def test_area_nodes_keep_the_box_as_given():
    base = (Cond(torch.zeros(1, 77, 8)), Cond(torch.ones(1, 77, 8)))
    out = ConditioningSetArea().run(None, base, 96, 64, 16, 8, 1.5)["conditioning"]
    assert [c.area for c in out] == [Area("pixels", 16, 8, 96, 64)] * 2 and out[1].strength == 1.5
    out = ConditioningSetAreaPercentage().run(None, base, 0.5, 0.25, 0.1, 0.2, 0.7)["conditioning"]
    assert out[0].area == Area("fraction", 0.1, 0.2, 0.5, 0.25) and out[0].strength == 0.7


def test_sampler_resolves_pixel_areas_with_the_vae_scale():
    """A pixel area sampled for a 4x VAE gives what the same box given as a region mask gives."""
    torch.manual_seed(3)
    unet = tiny_sd_unet(seed=1)
    prompt, other = Cond(torch.randn(1, 77, 32)), Cond(torch.randn(1, 77, 32))

    def run(positive: list[Cond], scale: int) -> torch.Tensor:
        job = SampleJob(
            unet=unet,
            scheduler_config=dict(pipeline_scheduler_config()),
            positive=positive,
            negative=[Cond(torch.zeros(1, 77, 32))],
            latent=Latent(torch.zeros(1, 4, 8, 8)),
            seed=1,
            steps=2,
            cfg=5.0,
            sampler="euler",
            vae_scale=scale,
        )
        return sample(job)

    area = other.with_(area=Area("pixels", 8, 0, 16, 24), strength=2.0)
    region = other.with_(region=cell_mask(8, 8, 4, 8, 0, 16, 24), strength=2.0)
    torch.testing.assert_close(run([prompt, area], 4), run([prompt, region], 4))
    assert not torch.allclose(run([prompt, area], 4), run([prompt, area], 8))


def pipeline_scheduler_config() -> dict:
    from tests.fixtures.tiny_models import SD_SCHEDULER_CONFIG

    return SD_SCHEDULER_CONFIG


# --------------------------------------------------------------------------- average and concat


def test_average_follows_comfyui_formula():
    torch.manual_seed(0)
    to = (Cond(torch.randn(1, 154, 8), pooled=torch.randn(1, 4)), Cond(torch.randn(1, 77, 8)))
    source = (Cond(torch.randn(1, 77, 8), pooled=torch.randn(1, 4)), Cond(torch.randn(1, 77, 8)))
    out = ConditioningAverage().run(None, to, source, 0.25)["conditioning"]
    padded = torch.cat([source[0].embeds, torch.zeros(1, 77, 8)], dim=1)  # from's tokens, zero-padded
    torch.testing.assert_close(out[0].embeds, 0.25 * to[0].embeds + 0.75 * padded)
    torch.testing.assert_close(out[0].pooled, 0.25 * to[0].pooled + 0.75 * source[0].pooled)
    torch.testing.assert_close(out[1].embeds, 0.25 * to[1].embeds + 0.75 * source[0].embeds)
    assert out[1].pooled is source[0].pooled  # to had none: from's is taken
    longer = ConditioningAverage().run(None, (to[1],), (to[0],), 0.5)["conditioning"][0]
    torch.testing.assert_close(longer.embeds, 0.5 * to[1].embeds + 0.5 * to[0].embeds[:, :77])


def test_concat_appends_the_first_from_to_each():
    torch.manual_seed(0)
    to = (Cond(torch.randn(1, 77, 8), strength=0.5), Cond(torch.randn(1, 154, 8)))
    source = (Cond(torch.randn(1, 77, 8)), Cond(torch.randn(1, 77, 8)))
    out = ConditioningConcat().run(None, to, source)["conditioning"]
    assert torch.equal(out[0].embeds, torch.cat([to[0].embeds, source[0].embeds], dim=1))
    assert torch.equal(out[1].embeds, torch.cat([to[1].embeds, source[0].embeds], dim=1))
    assert out[0].strength == 0.5


def test_mixing_encoders_of_different_widths_is_refused():
    with pytest.raises(NodeInputError) as caught:
        ConditioningConcat().run(None, (Cond(torch.zeros(1, 77, 8)),), (Cond(torch.zeros(1, 77, 16)),))
    assert caught.value.input_name == "conditioning_from" and "16 wide" in str(caught.value)
    with pytest.raises(NodeInputError, match="empty"):
        ConditioningAverage().run(None, (Cond(torch.zeros(1, 77, 8)),), (), 0.5)


def test_concat_runs_in_the_sampler_as_the_pipeline_with_those_embeddings(models_root, manager):
    """154 positive tokens against 77 negative ones: the sampler repeats the negative whole,
    which attention cannot tell from the pipeline's own (repeated) negative embeddings."""
    nodes = txt2img(negative="blurry")
    nodes["more"] = {
        "type": "CLIPTextEncode",
        "inputs": {"clip": link("ck", "clip"), "text": "a blue square"},
    }
    nodes["cat"] = {
        "type": "ConditioningConcat",
        "inputs": {
            "conditioning_to": link("pos", "conditioning"),
            "conditioning_from": link("more", "conditioning"),
        },
    }
    nodes["s"]["inputs"]["positive"] = link("cat", "conditioning")
    ours = image_of(run_graph(nodes, models_root, manager))
    pipe = pipeline("StableDiffusionPipeline", models_root / "checkpoints" / "tiny-sd", "euler")
    encode = lambda text: pipe.encode_prompt(text, "cpu", 1, False)[0]  # noqa: E731
    theirs = pipe(
        prompt_embeds=torch.cat([encode(PROMPT), encode("a blue square")], dim=1),
        negative_prompt_embeds=encode("blurry").repeat(1, 2, 1),
        num_inference_steps=4,
        guidance_scale=7.5,
        height=64,
        width=64,
        generator=torch.Generator("cpu").manual_seed(42),
        output_type="np",
    ).images
    assert_same(ours, as_uint8(theirs))


def test_token_counts_that_are_not_multiples_of_77_batch_without_changing_attention():
    torch.manual_seed(0)
    odd, plain = Cond(torch.randn(1, 100, 32)), Cond(torch.randn(1, 77, 32))
    embeds = _embeds([plain, odd], 1, "cpu", torch.float32)
    assert embeds.shape == (2, 7700, 32)
    primes = [Cond(torch.zeros(1, n, 4)) for n in (101, 103, 107)]
    with pytest.raises(ValueError, match="101, 103, 107 tokens cannot be sampled together"):
        _embeds(primes, 1, "cpu", torch.float32)  # a million tokens: refused, not attempted
    unet = tiny_sd_unet(seed=2)
    latents, t = torch.randn(1, 4, 8, 8), torch.tensor(500)
    with torch.no_grad():
        for row, cond in enumerate([plain, odd]):
            alone = unet(latents, t, encoder_hidden_states=cond.embeds).sample
            batched = unet(latents, t, encoder_hidden_states=embeds[row : row + 1]).sample
            torch.testing.assert_close(batched, alone, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- CLIPLoader


def tiny_clip_l(seed: int = 0) -> Any:
    """A random CLIP-L-shaped text model: 64 wide with one 64-number head (CLIP's head size,
    which the loader assumes), 3 layers, CLIP's vocabulary."""
    from transformers import CLIPTextModel

    config = tiny_clip_config(hidden_size=64, layers=3)
    config.num_attention_heads = 1
    config.intermediate_size = 96
    torch.manual_seed(seed)
    return CLIPTextModel(config).eval()


def save_encoder(model: Any, path: Path, prefix: str = "") -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {prefix + k: v.contiguous() for k, v in model.state_dict().items()}
    state["text_projection.weight"] = torch.zeros(8, 64)  # extra tensors (clip_l files have one) are left
    save_file(state, str(path))
    return path


@pytest.mark.parametrize("prefix", ["", "text_model.", "cond_stage_model.transformer.text_model."])
def test_clip_loader_encodes_as_the_transformers_model(models_root, manager, prefix):
    from models.tokenizer import clip_tokenizer

    model = tiny_clip_l()
    name = f"clip-l-{len(prefix)}.safetensors"
    save_encoder(model, models_root / "text_encoders" / name, prefix)
    ctx = context(models_root, manager)
    clip = CLIPLoader().run(ctx, name, "stable_diffusion")["clip"]
    ours = CLIPTextEncode().run(ctx, clip, PROMPT)["conditioning"][0].embeds
    ids = clip_tokenizer()(PROMPT, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    torch.testing.assert_close(ours, out.last_hidden_state, rtol=0, atol=1e-6)
    skipped = CLIPSetLastLayer().run(ctx, clip, -2)["clip"]
    ours = CLIPTextEncode().run(ctx, skipped, PROMPT)["conditioning"][0].embeds
    with torch.no_grad():
        expected = model.final_layer_norm(out.hidden_states[-2])
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)


def test_clip_loader_feeds_a_checkpoints_model_like_its_own_clip(models_root, manager):
    """tiny-sd's own text encoder as a file (its 8-number heads told by a <stem>.json config):
    CLIPLoader's CLIP draws what the pipeline draws."""
    from transformers import CLIPTextModel

    folder = models_root / "checkpoints" / "tiny-sd"
    encoder = CLIPTextModel.from_pretrained(str(folder / "text_encoder"), local_files_only=True)
    path = save_encoder(encoder, models_root / "text_encoders" / "tiny-sd-te.safetensors", "text_model.")
    encoder.config.to_json_file(str(path.with_suffix(".json")))
    nodes = txt2img(negative="blurry")
    nodes["te"] = {"type": "CLIPLoader", "inputs": {"clip_name": path.name, "type": "stable_diffusion"}}
    for name in ("pos", "neg"):
        nodes[name]["inputs"]["clip"] = link("te", "clip")
    ours = image_of(run_graph(nodes, models_root, manager))
    theirs = pipeline_txt2img(pipeline("StableDiffusionPipeline", folder, "euler"), negative_prompt="blurry")
    assert_same(ours, as_uint8(theirs))


def test_clip_loader_refuses_pickle_and_partial_files(models_root, manager):
    from safetensors.torch import save_file

    folder = models_root / "text_encoders"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(tiny_clip_l().state_dict(), folder / "clip-l.pt")
    state = {k: v for k, v in tiny_clip_l().state_dict().items() if not k.startswith("final_layer_norm")}
    save_file(state, str(folder / "partial.safetensors"))
    save_file({"something.weight": torch.zeros(2)}, str(folder / "other.safetensors"))
    ctx = context(models_root, manager)
    for name, words in (
        ("clip-l.pt", "pickle"),
        ("partial.safetensors", "lacks final_layer_norm"),
        ("other.safetensors", "no CLIP token embedding"),
        ("missing.safetensors", "not in models/text_encoders"),
    ):
        with pytest.raises(NodeInputError) as caught:
            CLIPLoader().run(ctx, name, "stable_diffusion")
        assert caught.value.input_name == "clip_name" and words in str(caught.value), str(caught.value)


# --------------------------------------------------------------------------- SDXL refiner


@pytest.fixture(scope="module")
def refiner(models_root) -> Path:
    """A tiny SDXL refiner as a diffusers folder: CLIP-G only, a UNet with 5 time ids."""
    from diffusers import StableDiffusionXLImg2ImgPipeline, UNet2DConditionModel

    from tests.fixtures.tiny_models import (
        SDXL_POOLED_DIM,
        SDXL_TIME_EMBED_DIM,
        SDXL_WIDTHS,
        tiny_sdxl_components,
    )

    components = tiny_sdxl_components(seed=4)
    torch.manual_seed(4)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=SDXL_TIME_EMBED_DIM,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=5 * SDXL_TIME_EMBED_DIM + SDXL_POOLED_DIM,
        cross_attention_dim=SDXL_WIDTHS[1],
        norm_num_groups=32,
    )
    pipe = StableDiffusionXLImg2ImgPipeline(
        vae=components["vae"],
        text_encoder=None,
        text_encoder_2=components["text_encoder_2"],
        tokenizer=None,
        tokenizer_2=components["tokenizer_2"],
        unet=unet.eval(),
        scheduler=components["scheduler"],
        requires_aesthetics_score=True,
    )
    folder = models_root / "checkpoints" / "tiny-refiner"
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


def test_refiner_prompts_match_the_img2img_pipeline_with_aesthetic_scores(models_root, manager, refiner):
    from PIL import Image

    def prompt(clip: dict, ascore: float, text: str) -> dict:
        inputs = {"clip": clip, "ascore": ascore, "width": 96, "height": 80, "text": text}
        return {"type": "CLIPTextEncodeSDXLRefiner", "inputs": inputs}

    nodes = txt2img(refiner.name, seed=9, steps=10, cfg=5.0)
    nodes["pos"] = prompt(link("ck", "clip"), 7.5, PROMPT)
    nodes["neg"] = prompt(link("ck", "clip"), 2.0, "blurry")
    nodes["img"] = {"type": "LoadImage", "inputs": {"path": "shapes.png"}}
    nodes["enc"] = {"type": "VAEEncode", "inputs": {"vae": link("ck", "vae"), "image": link("img", "image")}}
    nodes["s"]["inputs"].update(latent=link("enc", "latent"), denoise=0.6)
    del nodes["lat"]
    ours = image_of(run_graph(nodes, models_root, manager))
    pipe = pipeline("StableDiffusionXLImg2ImgPipeline", refiner, "euler")
    theirs = pipe(
        prompt=PROMPT,
        negative_prompt="blurry",
        image=Image.open(models_root / "inputs" / "shapes.png"),
        strength=0.6,
        aesthetic_score=7.5,
        negative_aesthetic_score=2.0,
        original_size=(80, 96),
        negative_original_size=(80, 96),
        num_inference_steps=10,
        guidance_scale=5.0,
        generator=torch.Generator("cpu").manual_seed(9),
        output_type="np",
    ).images
    assert_same(ours, as_uint8(theirs))


def test_the_layer_check_counts_the_clip_encoders_of_sd3_and_flux_not_t5():
    """An SD3/Flux CLIP with a 2-layer T5 beside a 5-layer CLIP still takes layers down to -5: clip
    skip never reaches T5, as in ComfyUI."""
    from types import SimpleNamespace

    from models.prompts import LayerError, check_layer

    def encoder(model_type: str, layers: int) -> SimpleNamespace:
        return SimpleNamespace(config=SimpleNamespace(model_type=model_type, num_hidden_layers=layers))

    clip_l, t5 = encoder("clip_text_model", 5), encoder("t5", 2)
    for family in ("sd3", "flux"):
        check_layer(family, -5, [clip_l, t5])
        with pytest.raises(LayerError, match="-5"):
            check_layer(family, -6, [clip_l, t5])
