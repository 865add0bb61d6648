"""LoRA, regional prompts, 9-channel inpainting, InstructPix2Pix, colorization, prompt weights."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from imaging.luma import luminance  # noqa: E402
from models.lora import LoraError, fuse, read_pairs  # noqa: E402
from models.prompts import Piece, encode, parse_weights  # noqa: E402
from models.sampling import combine  # noqa: E402
from models.values import Cond  # noqa: E402
from nodes.base import NodeInputError  # noqa: E402
from nodes.edit import Colorize  # noqa: E402
from tests.fixtures.models_root import SIZE  # noqa: E402
from tests.fixtures.tiny_models import tiny_sd_components  # noqa: E402
from tests.helpers import link, run_node  # noqa: E402
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
UNET_LAYER = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
TEXT_LAYER = "encoder.layers.0.self_attn.q_proj"


def kohya_lora(unet: Any, encoder: Any, rank: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    unet_w = dict(unet.named_parameters())[UNET_LAYER + ".weight"]
    text_w = dict(encoder.named_parameters())[TEXT_LAYER + ".weight"]
    unet_key = "lora_unet_" + UNET_LAYER.replace(".", "_")
    text_key = "lora_te_text_model_" + TEXT_LAYER.replace(".", "_")
    return {
        unet_key + ".lora_down.weight": torch.randn(rank, unet_w.shape[1], generator=generator) * 0.1,
        unet_key + ".lora_up.weight": torch.randn(unet_w.shape[0], rank, generator=generator) * 0.1,
        unet_key + ".alpha": torch.tensor(2.0),
        text_key + ".lora_down.weight": torch.randn(rank, text_w.shape[1], generator=generator) * 0.1,
        text_key + ".lora_up.weight": torch.randn(text_w.shape[0], rank, generator=generator) * 0.1,
        text_key + ".alpha": torch.tensor(4.0),
    }


def through_lora(nodes: dict, lora_name: str, strength: float = 1.0) -> dict:
    """txt2img's nodes with a LoraLoader between the checkpoint and the sampler and prompts."""
    nodes["lora"] = {
        "type": "LoraLoader",
        "inputs": {
            "model": link("ck", "model"),
            "clip": link("ck", "clip"),
            "lora_name": lora_name,
            "strength_model": strength,
            "strength_clip": strength,
        },
    }
    for name in ("pos", "neg"):
        nodes[name]["inputs"]["clip"] = link("lora", "clip")
    nodes["s"]["inputs"]["model"] = link("lora", "model")
    return nodes


def test_kohya_lora_fuses_by_the_lora_formula():
    parts = tiny_sd_components()
    unet, encoder = parts["unet"], parts["text_encoder"]
    state = kohya_lora(unet, encoder)
    before_u = dict(unet.named_parameters())[UNET_LAYER + ".weight"].detach().clone()
    before_t = dict(encoder.named_parameters())[TEXT_LAYER + ".weight"].detach().clone()
    fused = fuse(
        {"unet": unet, "text_encoder": encoder}, read_pairs(state), {"unet": 0.5, "text_encoder": 1.5}
    )
    assert fused == 2
    key_u, key_t = (
        "lora_unet_" + UNET_LAYER.replace(".", "_"),
        "lora_te_text_model_" + TEXT_LAYER.replace(".", "_"),
    )
    expect_u = (
        before_u + 0.5 * (2.0 / 4) * state[key_u + ".lora_up.weight"] @ state[key_u + ".lora_down.weight"]
    )
    expect_t = (
        before_t + 1.5 * (4.0 / 4) * state[key_t + ".lora_up.weight"] @ state[key_t + ".lora_down.weight"]
    )
    assert torch.allclose(dict(unet.named_parameters())[UNET_LAYER + ".weight"], expect_u, atol=1e-6)
    assert torch.allclose(dict(encoder.named_parameters())[TEXT_LAYER + ".weight"], expect_t, atol=1e-6)


def test_peft_lora_matches_peft_merge():
    import copy

    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    parts = tiny_sd_components()
    reference = copy.deepcopy(parts["unet"])
    # diffusers-format files carry no alpha: the scale is 1 (alpha equal to the rank)
    config = LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_v"], init_lora_weights=False)
    reference = inject_adapter_in_model(config, reference)
    state = {f"unet.{k}": v for k, v in get_peft_model_state_dict(reference).items()}
    for module in reference.modules():
        if hasattr(module, "merge") and hasattr(module, "lora_A"):
            module.merge()
    ours = parts["unet"]
    fuse({"unet": ours}, read_pairs(state), {"unet": 1.0})
    merged = {k.replace(".base_layer", ""): v for k, v in reference.named_parameters() if "lora_" not in k}
    for name, param in ours.named_parameters():
        assert torch.allclose(param, merged[name], atol=1e-6), name


def test_lora_for_another_model_is_refused():
    parts = tiny_sd_components()
    state = {
        "lora_unet_no_such_block_to_q.lora_down.weight": torch.zeros(2, 4),
        "lora_unet_no_such_block_to_q.lora_up.weight": torch.zeros(4, 2),
    }
    with pytest.raises(LoraError, match="another"):
        fuse({"unet": parts["unet"]}, read_pairs(state), {"unet": 1.0})


def test_lora_loader_node(models_root, manager):
    parts = tiny_sd_components()
    loras = models_root / "loras"
    loras.mkdir(exist_ok=True)
    save_file(kohya_lora(parts["unet"], parts["text_encoder"], seed=3), str(loras / "style.safetensors"))
    base = image_of(run_graph(txt2img(), models_root, manager))

    def with_lora(strength: float) -> dict:
        return through_lora(txt2img(), "style.safetensors", strength)

    assert np.array_equal(image_of(run_graph(with_lora(0.0), models_root, manager)), base)
    changed = image_of(run_graph(with_lora(8.0), models_root, manager))
    assert np.abs(changed.astype(int) - base.astype(int)).max() > 0
    again = image_of(run_graph(txt2img(), models_root, manager))
    assert np.array_equal(again, base)  # the shared checkpoint was not modified
    # the oracle: the pipeline with both layers changed by hand, W += strength * alpha / rank * up @ down
    state = kohya_lora(parts["unet"], parts["text_encoder"], seed=3)
    pipe = pipeline("StableDiffusionPipeline", models_root / "checkpoints" / "tiny-sd", "euler")
    with torch.no_grad():
        for model, layer, prefix in (
            (pipe.unet, UNET_LAYER, "lora_unet_"),
            (pipe.text_encoder, TEXT_LAYER, "lora_te_text_model_"),
        ):
            key = prefix + layer.replace(".", "_")
            down, up, alpha = (state[f"{key}.{n}"] for n in ("lora_down.weight", "lora_up.weight", "alpha"))
            dict(model.named_parameters())[layer + ".weight"] += (
                8.0 * float(alpha) / down.shape[0] * (up @ down)
            )
    theirs = pipeline_txt2img(pipe, seed=42)
    assert_same(changed, as_uint8(theirs))


def test_regions_weight_predictions_by_area():
    preds = torch.stack([torch.full((1, 1, 4, 4), 1.0), torch.full((1, 1, 4, 4), 3.0)]).reshape(2, 1, 4, 4)
    left = torch.zeros(1, 1, 4, 4)
    left[..., :2] = 1.0
    conds = [Cond(torch.zeros(1, 77, 8), region=left), Cond(torch.zeros(1, 77, 8), strength=1.0)]
    mixed = combine(preds, conds, batch=1)
    assert torch.allclose(mixed[..., :2], torch.full((1, 1, 4, 2), 2.0))  # both apply: the mean
    assert torch.allclose(mixed[..., 2:], torch.full((1, 1, 4, 2), 3.0))  # only the global one
    only = [Cond(torch.zeros(1, 77, 8), region=left), Cond(torch.zeros(1, 77, 8), region=1 - left)]
    split = combine(preds, only, batch=1)
    assert torch.equal(split[..., :2], preds[0:1, ..., :2]) and torch.equal(
        split[..., 2:], preds[1:2, ..., 2:]
    )


def test_regional_prompt_graph(models_root, manager):
    nodes = txt2img()
    nodes["puppy"] = {"type": "CLIPTextEncode", "inputs": {"clip": link("ck", "clip"), "text": "a puppy"}}
    nodes["box"] = {
        "type": "ConditioningRegion",
        "inputs": {
            "conditioning": link("puppy", "conditioning"),
            "x": 0.0,
            "y": 0.5,
            "width": 0.5,
            "height": 0.5,
        },
    }
    nodes["both"] = {
        "type": "ConditioningCombine",
        "inputs": {
            "conditioning_a": link("pos", "conditioning"),
            "conditioning_b": link("box", "conditioning"),
        },
    }
    nodes["s"]["inputs"]["positive"] = link("both", "conditioning")
    regional = image_of(run_graph(nodes, models_root, manager))
    plain = image_of(run_graph(txt2img(), models_root, manager))
    assert regional.shape == plain.shape and not np.array_equal(regional, plain)
    # a box over the whole picture is the same as the prompt everywhere (the two predictions' mean)
    everywhere = dict(nodes, both=dict(nodes["both"], inputs=dict(nodes["both"]["inputs"])))
    everywhere["both"]["inputs"]["conditioning_b"] = link("puppy", "conditioning")
    global_mix = image_of(run_graph(everywhere, models_root, manager))
    nodes["box"]["inputs"].update(x=0.0, y=0.0, width=1.0, height=1.0)
    assert np.array_equal(image_of(run_graph(nodes, models_root, manager)), global_mix)
    assert not np.array_equal(global_mix, regional)  # so where the box is matters
    # a box at strength 0 weighs nothing: the plain picture
    nodes["box"]["inputs"].update(x=0.0, y=0.5, width=0.5, height=0.5, strength=0.0)
    assert np.abs(image_of(run_graph(nodes, models_root, manager)).astype(int) - plain.astype(int)).max() <= 1
    nodes["box"]["inputs"].update(x=0.6, width=0.5, strength=1.0)
    result = run_graph(nodes, models_root, manager)
    assert result.status == "failed" and result.error.input == "width"


def test_nine_channel_inpainting_matches_inpaint_pipeline(models_root, manager):
    nodes = txt2img("tiny-inpaint", seed=11, steps=6)
    nodes["img"] = {"type": "LoadImage", "inputs": {"path": "shapes.png"}}
    nodes["m"] = {"type": "LoadImage", "inputs": {"path": "mask.png"}}
    nodes["mm"] = {"type": "ImageToMask", "inputs": {"image": link("m", "image"), "channel": "red"}}
    nodes["enc"] = {
        "type": "InpaintEncode",
        "inputs": {"vae": link("ck", "vae"), "image": link("img", "image"), "mask": link("mm", "mask")},
    }
    nodes["s"]["inputs"]["latent"] = link("enc", "latent")
    del nodes["lat"]
    ours = image_of(run_graph(nodes, models_root, manager))
    pipe = pipeline("StableDiffusionInpaintPipeline", models_root / "checkpoints" / "tiny-inpaint", "euler")
    theirs = pipe(
        PROMPT,
        image=Image.open(models_root / "inputs" / "shapes.png"),
        mask_image=Image.open(models_root / "inputs" / "mask.png"),
        num_inference_steps=6,
        guidance_scale=7.5,
        height=SIZE,
        width=SIZE,
        generator=torch.Generator("cpu").manual_seed(11),
        output_type="np",
    ).images
    assert_same(ours, as_uint8(theirs))


def test_instruct_pix2pix_matches_its_pipeline(models_root, manager):
    nodes = txt2img("tiny-ip2p", seed=5, steps=5)
    nodes["img"] = {"type": "LoadImage", "inputs": {"path": "shapes.png"}}
    nodes["s"] = {
        "type": "InstructPix2Pix",
        "inputs": {
            "model": link("ck", "model"),
            "positive": link("pos", "conditioning"),
            "negative": link("neg", "conditioning"),
            "vae": link("ck", "vae"),
            "image": link("img", "image"),
            "seed": 5,
            "steps": 5,
            "cfg": 7.5,
            "image_cfg": 1.5,
            "sampler": "euler_ancestral",
        },
    }
    del nodes["lat"]
    ours = image_of(run_graph(nodes, models_root, manager))
    pipe = pipeline(
        "StableDiffusionInstructPix2PixPipeline", models_root / "checkpoints" / "tiny-ip2p", "euler_ancestral"
    )
    theirs = pipe(
        PROMPT,
        image=Image.open(models_root / "inputs" / "shapes.png"),
        num_inference_steps=5,
        guidance_scale=7.5,
        image_guidance_scale=1.5,
        generator=torch.Generator("cpu").manual_seed(5),
        output_type="np",
    ).images
    assert_same(ours, as_uint8(theirs))
    wrong = dict(nodes)
    wrong["ck"] = {"type": "CheckpointLoader", "inputs": {"ckpt_name": "tiny-sd"}}
    result = run_graph(wrong, models_root, manager)
    assert result.status == "failed" and result.error.input == "model"


def test_colorize_keeps_the_luminance_of_the_original(models_root, manager):
    nodes = txt2img(seed=9, steps=6)
    nodes["img"] = {"type": "LoadImage", "inputs": {"path": "shapes.png"}}
    nodes["gray"] = {"type": "ImageGrayscale", "inputs": {"image": link("img", "image")}}
    nodes["enc"] = {"type": "VAEEncode", "inputs": {"vae": link("ck", "vae"), "image": link("gray", "image")}}
    nodes["s"]["inputs"].update(latent=link("enc", "latent"), denoise=0.7)
    del nodes["lat"]
    nodes["color"] = {
        "type": "Colorize",
        "inputs": {"grayscale": link("gray", "image"), "colors": link("d", "image")},
    }
    nodes["show"]["inputs"]["images"] = link("color", "image")
    result = run_graph(nodes, models_root, manager)
    assert result.status == "done", result.error
    out = result.outputs["show"]["images"]
    gray = np.asarray(Image.open(models_root / "inputs" / "shapes.png").convert("RGB"), np.float32) / 255.0
    expected_luma = luminance(gray[None])  # the grayscale node keeps BT.601 luminance
    assert np.abs(luminance(out) - expected_luma).max() < 1e-4
    assert out.std(axis=-1).mean() > 0.001  # it has colour
    # ... the sampler's colour: BT.601 chroma in the same direction, shrunk only where it would clip
    colors = run_graph(nodes, models_root, manager, targets=["d"]).outputs["d"]["image"]
    to_cbcr = np.asarray([[-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
    ours, theirs = out @ to_cbcr.T, colors @ to_cbcr.T
    cross = ours[..., 0] * theirs[..., 1] - ours[..., 1] * theirs[..., 0]
    assert np.abs(cross).max() < 1e-4 and ((ours * theirs).sum(-1) >= -1e-6).all()
    ratio = np.linalg.norm(ours, axis=-1) / np.maximum(np.linalg.norm(theirs, axis=-1), 1e-6)
    assert ratio.max() <= 1 + 1e-3
    assert (np.abs(ratio - 1) < 1e-3).mean() > 0.5  # most pixels keep their full colour


def test_colorize_never_clips_away_luminance():
    rng = np.random.default_rng(0)
    gray = np.repeat(rng.random((2, 6, 6, 1), dtype=np.float32), 3, axis=-1)
    colors = rng.random((2, 6, 6, 3), dtype=np.float32)
    out = run_node(Colorize, grayscale=gray, colors=colors, saturation=2.0)["image"]
    assert np.abs(luminance(out) - luminance(gray)).max() < 1e-5
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_prompt_weights_are_parsed():
    assert parse_weights("a (red:1.5) circle") == [Piece("a ", 1.0), Piece("red", 1.5), Piece(" circle", 1.0)]
    assert parse_weights("((big))") == [Piece("big", pytest.approx(1.21))]
    assert parse_weights("[small] \\(literal\\)") == [
        Piece("small", pytest.approx(1 / 1.1)),
        Piece(" (literal)", 1.0),
    ]
    assert parse_weights("(a (b:2):0.5)") == [Piece("a ", 0.5), Piece("b", 1.0)]
    assert parse_weights("unclosed (word") == [Piece("unclosed ", 1.0), Piece("word", pytest.approx(1.1))]


def test_plain_prompts_encode_as_the_pipeline_does_and_weights_change_them(models_root):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        str(models_root / "checkpoints" / "tiny-sd"), local_files_only=True, safety_checker=None
    )
    theirs, _ = pipe.encode_prompt(PROMPT, "cpu", 1, False)
    ours, _ = encode(pipe.tokenizer, pipe.text_encoder, PROMPT)
    assert torch.equal(ours, theirs)
    weighted, _ = encode(pipe.tokenizer, pipe.text_encoder, "a (red:1.4) circle at the top left")
    assert weighted.shape == ours.shape and not torch.equal(weighted, ours)
    long_prompt = " ".join(["red circle"] * 60)
    long, _ = encode(pipe.tokenizer, pipe.text_encoder, long_prompt)
    assert long.shape[1] == 77 * 2  # two chunks of 75 tokens plus start and end


def test_weights_file_of_another_kind_is_explained(tmp_path: Path):
    from models.safety import PickleRefused, check_weights_file

    with pytest.raises(PickleRefused, match="--allow-pickle"):
        check_weights_file(tmp_path / "model.ckpt", allow_pickle=False)
    check_weights_file(tmp_path / "model.ckpt", allow_pickle=True)


def test_embeddings_by_name_match_diffusers_textual_inversion(models_root, manager):
    from diffusers import StableDiffusionPipeline

    from models.embeddings import expand, with_embeddings

    folder = models_root / "embeddings"
    folder.mkdir(exist_ok=True)
    vectors = torch.randn(2, 32, generator=torch.Generator().manual_seed(4))
    save_file({"emb_params": vectors}, str(folder / "mystyle.safetensors"))
    pipe = StableDiffusionPipeline.from_pretrained(
        str(models_root / "checkpoints" / "tiny-sd"), local_files_only=True, safety_checker=None
    )
    tokenizers, encoders, expansions = with_embeddings(
        [pipe.tokenizer], [pipe.text_encoder], {"mystyle": folder / "mystyle.safetensors"}, allow_pickle=False
    )
    ours, _ = encode(tokenizers[0], encoders[0], expand("a circle in mystyle", expansions))
    pipe.load_textual_inversion(str(folder / "mystyle.safetensors"), token="mystyle")
    theirs, _ = pipe.encode_prompt("a circle in mystyle", "cpu", 1, False)
    assert torch.equal(ours, theirs)

    def graph(text: str) -> np.ndarray:
        nodes = txt2img()
        nodes["pos"]["inputs"]["text"] = text
        return image_of(run_graph(nodes, models_root, manager))

    assert not np.array_equal(graph("a circle in embedding:mystyle"), graph("a circle in"))
    assert np.array_equal(graph("a circle in embedding:mystyle"), graph("a circle in mystyle"))


def test_a_loras_bundled_embedding_is_used_through_its_clip_as_the_same_file_would_be(models_root, manager):
    """A LoRA may bundle embeddings (A1111's ``bundle_emb.NAME.*``: pivotal tuning's trigger words):
    prompts encoded through the LoRA's CLIP know NAME, exactly as with the LoRA without the bundle
    and the same vectors in models/embeddings; the bundle comes before a file of the same name, and
    a CLIP without the LoRA reads the word as plain text."""
    parts = tiny_sd_components()
    plain = kohya_lora(parts["unet"], parts["text_encoder"], seed=5)
    vectors = torch.randn(2, 32, generator=torch.Generator().manual_seed(6))
    loras, embeddings = models_root / "loras", models_root / "embeddings"
    loras.mkdir(exist_ok=True)
    embeddings.mkdir(exist_ok=True)
    # A1111's form of a bundled embedding: string_to_param with the key "*"
    save_file(plain | {"bundle_emb.mytrig.string_to_param.*": vectors}, str(loras / "bundled.safetensors"))
    save_file(plain, str(loras / "unbundled.safetensors"))

    def graph(lora: str | None, text: str = "a circle in mytrig") -> np.ndarray:
        nodes = txt2img()
        nodes["pos"]["inputs"]["text"] = text
        return image_of(run_graph(through_lora(nodes, lora) if lora else nodes, models_root, manager))

    bundled = graph("bundled.safetensors")
    as_plain_text = graph("unbundled.safetensors")
    assert not np.array_equal(bundled, as_plain_text)
    assert np.array_equal(graph("bundled.safetensors", "a circle in embedding:mytrig"), bundled)
    # a file of that name in models/embeddings: the bundle still wins where the LoRA is applied
    save_file({"emb_params": -vectors}, str(embeddings / "mytrig.safetensors"))
    try:
        assert np.array_equal(graph("bundled.safetensors"), bundled)
        assert not np.array_equal(graph("unbundled.safetensors"), bundled)
        save_file({"emb_params": vectors}, str(embeddings / "mytrig.safetensors"))
        assert np.array_equal(
            graph("unbundled.safetensors"), bundled
        )  # the oracle: the same vectors as a file
    finally:
        (embeddings / "mytrig.safetensors").unlink()
    assert np.array_equal(graph(None), graph(None, "a circle in mytrig"))  # no LoRA: no word of that name


def test_bundled_embeddings_read_each_form_and_say_which_is_wrong(tmp_path: Path):
    from models.embeddings import Bundled, EmbeddingError, bundled_names, load_vectors

    rows = torch.randn(3, 8)
    path = tmp_path / "lora.safetensors"
    save_file(
        {
            "lora_unet_x.lora_down.weight": torch.zeros(2, 4),
            "bundle_emb.one.emb_params": rows,
            "bundle_emb.two.string_to_param.*": rows * 2,
            "bundle_emb.xl.clip_l": rows[:, :4].clone(),
            "bundle_emb.xl.clip_g": rows.clone(),
            "bundle_emb.odd.a": rows.clone(),
            "bundle_emb.odd.b": rows.clone(),
        },
        str(path),
    )
    assert sorted(bundled_names(path)) == ["odd", "one", "two", "xl"]
    assert torch.equal(load_vectors(Bundled(path, "one"), 1, allow_pickle=False)[0], rows)
    assert torch.equal(load_vectors(Bundled(path, "two"), 1, allow_pickle=False)[0], rows * 2)
    clip_l, clip_g = load_vectors(Bundled(path, "xl"), 2, allow_pickle=False)
    assert torch.equal(clip_l, rows[:, :4]) and torch.equal(clip_g, rows)
    with pytest.raises(EmbeddingError, match="lora.safetensors's bundled embedding 'odd': cannot tell"):
        load_vectors(Bundled(path, "odd"), 1, allow_pickle=False)
    with pytest.raises(EmbeddingError, match="not an SDXL embedding"):
        load_vectors(Bundled(path, "one"), 2, allow_pickle=False)
    (tmp_path / "broken.safetensors").write_bytes(b"not a file")
    assert bundled_names(tmp_path / "broken.safetensors") == []
    assert bundled_names(tmp_path / "lora.pt") == []


def p2p_nodes(mode: str, edited: str, **extra: Any) -> dict:
    nodes = txt2img(sampler="ddim", seed=21, steps=8)
    nodes["p2p"] = {
        "type": "PromptToPrompt",
        "inputs": {
            "model": link("ck", "model"),
            "clip": link("ck", "clip"),
            "latent": link("lat", "latent"),
            "source_prompt": PROMPT,
            "edited_prompt": edited,
            "mode": mode,
            "seed": 21,
            "steps": 8,
            "cfg": 7.5,
            "sampler": "ddim",
            **extra,
        },
    }
    for name in ("source", "edited"):
        nodes[f"d_{name}"] = {
            "type": "VAEDecode",
            "inputs": {"vae": link("ck", "vae"), "latent": link("p2p", name)},
        }
        nodes[f"show_{name}"] = {"type": "PreviewImage", "inputs": {"images": link(f"d_{name}", "image")}}
    for name in ("s", "d", "show", "pos", "neg"):
        nodes.pop(name)
    return nodes


def test_prompt_to_prompt_keeps_the_layout(models_root, manager):
    plain = image_of(run_graph(txt2img(sampler="ddim", seed=21, steps=8), models_root, manager)).astype(int)
    edit = "a blue circle at the top left"
    result = run_graph(p2p_nodes("replace", edit), models_root, manager)
    source, edited = image_of(result, "show_source").astype(int), image_of(result, "show_edited").astype(int)
    assert np.abs(source - plain).max() <= 3  # the source is the plain image of the same seed
    fresh = image_of(
        run_graph(
            dict(
                txt2img(sampler="ddim", seed=21, steps=8),
                pos={"type": "CLIPTextEncode", "inputs": {"clip": link("ck", "clip"), "text": edit}},
            ),
            models_root,
            manager,
        )
    ).astype(int)
    assert not np.array_equal(edited, source)  # the edit changed something
    assert (
        np.abs(edited - source).mean() < np.abs(fresh - source).mean()
    )  # ... but kept more than a fresh image


def test_prompt_to_prompt_modes_and_errors(models_root, manager):
    same = run_graph(p2p_nodes("replace", PROMPT, cross_replace=1.0, self_replace=1.0), models_root, manager)
    assert np.array_equal(image_of(same, "show_source"), image_of(same, "show_edited"))
    refine = run_graph(p2p_nodes("refine", PROMPT + " on a green field"), models_root, manager)
    assert not np.array_equal(image_of(refine, "show_source"), image_of(refine, "show_edited"))
    # refining with no words added aligns every token with itself: the source picture again
    unchanged = run_graph(p2p_nodes("refine", PROMPT), models_root, manager)
    assert np.array_equal(image_of(unchanged, "show_source"), image_of(unchanged, "show_edited"))
    assert np.array_equal(image_of(unchanged, "show_source"), image_of(refine, "show_source"))
    unit = run_graph(
        p2p_nodes("reweight", PROMPT, reweight="red:1.0", cross_replace=0.0, self_replace=0.0),
        models_root,
        manager,
    )
    assert np.array_equal(image_of(unit, "show_source"), image_of(unit, "show_edited"))
    louder = run_graph(p2p_nodes("reweight", PROMPT, reweight="red:3.0"), models_root, manager)
    assert not np.array_equal(image_of(louder, "show_source"), image_of(louder, "show_edited"))
    longer = run_graph(p2p_nodes("replace", PROMPT + " on grass"), models_root, manager)
    assert (
        longer.status == "failed"
        and longer.error.input == "edited_prompt"
        and "refine" in longer.error.message
    )
    missing = run_graph(p2p_nodes("reweight", PROMPT, reweight="purple:2"), models_root, manager)
    assert missing.status == "failed" and "purple" in missing.error.message


def test_preprocessors_against_opencv():
    import cv2

    from nodes.control import CannyEdges, SoftEdges, TileBlur

    picture = (
        np.asarray(
            Image.open(Path(__file__).parent.parent / "workflows" / "assets" / "shapes.png").convert("RGB"),
            np.float32,
        )[None]
        / 255.0
    )
    edges = run_node(CannyEdges, image=picture, low_threshold=50, high_threshold=150)["image"]
    gray = (np.clip(picture[0] @ np.asarray([0.299, 0.587, 0.114], np.float32), 0, 1) * 255 + 0.5).astype(
        np.uint8
    )
    expected = cv2.Canny(gray, 50, 150).astype(np.float32) / 255.0
    assert np.array_equal(edges[0, ..., 0], expected) and np.array_equal(edges[..., 0], edges[..., 2])
    assert edges.max() == 1.0 and edges.mean() < 0.3  # thin white lines on black
    soft = run_node(SoftEdges, image=picture, blur=1.0)["image"]
    assert soft.shape == picture.shape and 0.0 <= soft.min() and soft.max() == pytest.approx(1.0)
    flat = run_node(SoftEdges, image=np.full((1, 8, 8, 3), 0.5, np.float32), blur=1.0)["image"]
    assert not flat.any()  # no edges in a flat picture
    tile = run_node(TileBlur, image=picture, factor=4)["image"]
    small = cv2.resize(picture[0], (16, 12), interpolation=cv2.INTER_AREA)
    assert np.allclose(tile[0], np.clip(cv2.resize(small, (64, 48), interpolation=cv2.INTER_CUBIC), 0, 1))
    with pytest.raises(NodeInputError) as err:
        run_node(CannyEdges, image=picture, low_threshold=200, high_threshold=100)
    assert err.value.input_name == "high_threshold"


def test_vae_loader_overrides_the_checkpoint_vae(models_root, manager):
    from tests.fixtures.tiny_models import tiny_vae

    tiny_vae(seed=5).save_pretrained(models_root / "vae" / "other-vae")
    nodes = txt2img()
    nodes["vae"] = {"type": "VAELoader", "inputs": {"vae_name": "other-vae"}}
    nodes["d"]["inputs"]["vae"] = link("vae", "vae")
    other = image_of(run_graph(nodes, models_root, manager))
    own = image_of(run_graph(txt2img(), models_root, manager))
    assert other.shape == own.shape and not np.array_equal(other, own)
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(models_root / "vae" / "other-vae"), local_files_only=True)
    pipe = pipeline("StableDiffusionPipeline", models_root / "checkpoints" / "tiny-sd", "euler", vae=vae)
    theirs = pipeline_txt2img(pipe, seed=42)
    assert_same(other, as_uint8(theirs))  # the pipeline decoding with that VAE
    shutil.copytree(models_root / "checkpoints" / "tiny-sd" / "vae", models_root / "vae" / "same-vae")
    nodes["vae"]["inputs"]["vae_name"] = "same-vae"
    assert np.array_equal(image_of(run_graph(nodes, models_root, manager)), own)  # the same VAE, loaded alone


def test_sdxl_single_file_loads_the_same_model(models_root, manager):
    from tests.fixtures.original_layout import write_original_sdxl
    from tests.fixtures.tiny_models import save_config_folder

    folder = models_root / "checkpoints" / "tiny-sdxl"
    write_original_sdxl(folder, models_root / "checkpoints" / "tiny-xl-single.safetensors")
    save_config_folder(folder, models_root / "checkpoints" / "tiny-xl-single.config")
    from_folder = image_of(run_graph(txt2img("tiny-sdxl", negative="blurry"), models_root, manager))
    single = image_of(
        run_graph(txt2img("tiny-xl-single.safetensors", negative="blurry"), models_root, manager)
    )
    assert np.array_equal(from_folder, single)


def test_chained_controlnets_add_up(models_root, manager):
    def with_controls(strengths: list[float]) -> np.ndarray:
        nodes = txt2img(seed=3, steps=4)
        nodes["cn"] = {"type": "ControlNetLoader", "inputs": {"control_net_name": "tiny-cn"}}
        nodes["hint"] = {"type": "LoadImage", "inputs": {"path": "shapes.png"}}
        source = link("pos", "conditioning")
        for index, strength in enumerate(strengths):
            nodes[f"c{index}"] = {
                "type": "ControlNetApply",
                "inputs": {
                    "conditioning": source,
                    "control_net": link("cn", "control_net"),
                    "image": link("hint", "image"),
                    "strength": strength,
                },
            }
            source = link(f"c{index}", "conditioning")
        nodes["s"]["inputs"]["positive"] = source
        return image_of(run_graph(nodes, models_root, manager)).astype(int)

    twice = with_controls([0.4, 0.4])
    once = with_controls([0.8])
    assert np.abs(twice - once).max() <= 1  # residuals sum: two at 0.4 act as one at 0.8
    assert np.abs(with_controls([0.8]) - with_controls([])).max() > 1
