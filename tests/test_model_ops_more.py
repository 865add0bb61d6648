"""ComfyUI's other model nodes: merge arithmetic (Add, Subtract, Blocks, SD1, SDXL, CLIP merges),
LoraLoaderModelOnly, DiffControlNetLoader and UNETLoader, with tiny models in real formats.

Oracles: ComfyUI's formulas computed here on state dicts read from disk with diffusers and
transformers (``(a - b) * m + c``, a ratio per block from a table of diffusers names written in
this file, the LoRA delta ``strength * alpha / rank * up @ down``); a diffusers pipeline whose UNet
holds weights computed here; a full ControlNet file beside its difference file; a UNet module
saved in two layouts and read back.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from graph.executor import Executor
from graph.validate import validate
from models.manager import ModelManager
from nodes.base import CancelToken, Context, NodeInputError, RunSettings
from nodes.registry import default_registry
from tests.fixtures.models_root import SIZE
from tests.fixtures.services import services_over
from tests.helpers import as_uint8, link

pytestmark = pytest.mark.slow
PROMPT = "a red circle at the top left"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Three SD1 checkpoints with different weights, an inpainting one (9 input channels) and an
    SDXL one, as diffusers folders in the studio's models root."""
    from tests.fixtures.tiny_models import save_config_folder, save_tiny_sd_folder, save_tiny_sdxl_folder

    base = tmp_path_factory.mktemp("model-ops-more")
    checkpoints = base / "models" / "checkpoints"
    for seed, name in enumerate(("more-a", "more-b", "more-c")):
        save_tiny_sd_folder(checkpoints / name, seed=seed)
    save_tiny_sd_folder(checkpoints / "more-inpaint", seed=3, in_channels=9)
    save_tiny_sdxl_folder(checkpoints / "more-xl", seed=0)
    save_tiny_sdxl_folder(checkpoints / "more-xl2", seed=1)
    save_config_folder(checkpoints / "more-a", base / "sd1.config")
    (base / "out").mkdir()
    return base


@pytest.fixture(scope="module")
def manager() -> ModelManager:
    return ModelManager(device="cpu")


def context(root: Path, manager: ModelManager) -> Context:
    return Context(
        node_id="n",
        node_type="X",
        run_id="test",
        seed=1,
        settings=RunSettings(
            services=services_over(root / "models", manager=manager), output_dir=root / "out"
        ),
        cancel_token=CancelToken(),
        emit=lambda e: None,
    )


def call(root: Path, manager: ModelManager, type_: str, **inputs: Any) -> dict[str, Any]:
    """Run one node directly, its unset inputs at their defaults."""
    cls = default_registry().get(type_)
    values = {spec.name: spec.default for spec in cls.inputs if spec.has_default}
    values.update(inputs)
    return cls().run(context(root, manager), **values)


def load(root: Path, manager: ModelManager, name: str) -> dict[str, Any]:
    return call(root, manager, "CheckpointLoader", ckpt_name=name)


def weights_of(root: Path, manager: ModelManager, ref: Any) -> dict[str, torch.Tensor]:
    from nodes.support import checkpoint_for

    return checkpoint_for(ref, context(root, manager)).unet.state_dict()


def disk_unet(root: Path, name: str) -> dict[str, torch.Tensor]:
    from diffusers import UNet2DConditionModel

    folder = root / "models" / "checkpoints" / name / "unet"
    return UNet2DConditionModel.from_pretrained(str(folder), local_files_only=True).state_dict()


def disk_encoders(root: Path, name: str) -> list[dict[str, torch.Tensor]]:
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    folder = root / "models" / "checkpoints" / name
    out = [CLIPTextModel.from_pretrained(str(folder / "text_encoder"), local_files_only=True).state_dict()]
    if (folder / "text_encoder_2").is_dir():
        second = CLIPTextModelWithProjection.from_pretrained(
            str(folder / "text_encoder_2"), local_files_only=True
        )
        out.append(second.state_dict())
    return out


def assert_weights(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert set(got) == set(want)
    for key in want:
        assert torch.allclose(got[key], want[key], atol=1e-5), key


# --------------------------------------------------------------------------- Add and Subtract


def test_subtract_then_add_is_a_times_m_minus_b_times_m_plus_c(root: Path, manager: ModelManager) -> None:
    """ComfyUI: Subtract patches model2 at -m onto model1 scaled by m; Add at 1 onto 1."""
    a, b, c = (load(root, manager, n)["model"] for n in ("more-a", "more-b", "more-c"))
    difference = call(root, manager, "ModelMergeSubtract", model1=a, model2=b, multiplier=0.7)["model"]
    result = call(root, manager, "ModelMergeAdd", model1=difference, model2=c)["model"]
    da, db, dc = disk_unet(root, "more-a"), disk_unet(root, "more-b"), disk_unet(root, "more-c")
    assert_weights(weights_of(root, manager, difference), {k: (da[k] - db[k]) * 0.7 for k in da})
    assert_weights(weights_of(root, manager, result), {k: (da[k] - db[k]) * 0.7 + dc[k] for k in da})
    assert_weights(weights_of(root, manager, a), da)  # the loaded original is untouched


def test_the_inpainting_recipe_keeps_model1s_input_convolution(root: Path, manager: ModelManager) -> None:
    """inpaint + (custom - base), as ComfyUI's model_merging_inpaint example: the 9-channel conv_in
    cannot take the 4-channel one, so it stays model1's (times the multiplier, here 1)."""
    inpaint, base, custom = (load(root, manager, n)["model"] for n in ("more-inpaint", "more-a", "more-b"))
    difference = call(root, manager, "ModelMergeSubtract", model1=inpaint, model2=base, multiplier=1.0)
    result = call(root, manager, "ModelMergeAdd", model1=difference["model"], model2=custom)["model"]
    di, da, db = disk_unet(root, "more-inpaint"), disk_unet(root, "more-a"), disk_unet(root, "more-b")
    want = {k: di[k] if k == "conv_in.weight" else di[k] - da[k] + db[k] for k in di}
    assert want["conv_in.weight"].shape[1] == 9
    assert_weights(weights_of(root, manager, result), want)


def test_add_refuses_models_of_another_family_naming_model2(root: Path, manager: ModelManager) -> None:
    a, xl = load(root, manager, "more-a")["model"], load(root, manager, "more-xl")["model"]
    with pytest.raises(NodeInputError) as raised:
        call(root, manager, "ModelMergeAdd", model1=a, model2=xl)
    assert raised.value.input_name == "model2"
    assert "cross_attention_dim" in str(raised.value)


def test_a_merged_model_draws_like_a_pipeline_holding_the_formula(root: Path, manager: ModelManager) -> None:
    from diffusers import StableDiffusionPipeline

    from models.sampling import make_scheduler

    folder = root / "models" / "checkpoints"
    pipe = StableDiffusionPipeline.from_pretrained(
        str(folder / "more-a"), local_files_only=True, safety_checker=None
    )
    da, db, dc = disk_unet(root, "more-a"), disk_unet(root, "more-b"), disk_unet(root, "more-c")
    pipe.unet.load_state_dict({k: (da[k] - db[k]) * 0.5 + dc[k] for k in da})
    pipe.scheduler = make_scheduler("euler", pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(
        PROMPT,
        num_inference_steps=4,
        guidance_scale=7.5,
        height=SIZE,
        width=SIZE,
        generator=torch.Generator("cpu").manual_seed(42),
        output_type="np",
    ).images
    nodes = {
        "a": {"type": "CheckpointLoader", "inputs": {"ckpt_name": "more-a"}},
        "b": {"type": "CheckpointLoader", "inputs": {"ckpt_name": "more-b"}},
        "c": {"type": "CheckpointLoader", "inputs": {"ckpt_name": "more-c"}},
        "sub": {
            "type": "ModelMergeSubtract",
            "inputs": {"model1": link("a", "model"), "model2": link("b", "model"), "multiplier": 0.5},
        },
        "add": {
            "type": "ModelMergeAdd",
            "inputs": {"model1": link("sub", "model"), "model2": link("c", "model")},
        },
        **draw(("add", "model"), "a"),
    }
    ours = picture(run(nodes, root, manager))
    assert ours.shape == expected.shape
    assert int(np.abs(as_uint8(ours).astype(int) - as_uint8(expected).astype(int)).max()) <= 1


def run(nodes: dict, root: Path, manager: ModelManager) -> Any:
    services = services_over(root / "models", manager=manager)
    registry = default_registry(services=services)
    checked = validate({"version": 1, "nodes": nodes}, registry)
    assert checked.ok, [str(i) for i in checked.issues]
    settings = RunSettings(services=services, output_dir=root / "out")
    return Executor(registry).run(checked.workflow, settings=settings)


def draw(model: tuple[str, str], texts: str) -> dict:
    """Nodes drawing PROMPT with ``model`` (node, output), the text encoder and VAE of ``texts``."""
    return {
        "pos": {"type": "CLIPTextEncode", "inputs": {"clip": link(texts, "clip"), "text": PROMPT}},
        "neg": {"type": "CLIPTextEncode", "inputs": {"clip": link(texts, "clip"), "text": ""}},
        "lat": {"type": "EmptyLatent", "inputs": {"width": SIZE, "height": SIZE, "vae": link(texts, "vae")}},
        "s": {
            "type": "Sampler",
            "inputs": {
                "model": link(*model),
                "positive": link("pos", "conditioning"),
                "negative": link("neg", "conditioning"),
                "latent": link("lat", "latent"),
                "seed": 42,
                "steps": 4,
                "cfg": 7.5,
                "sampler": "euler",
            },
        },
        "d": {"type": "VAEDecode", "inputs": {"vae": link(texts, "vae"), "latent": link("s", "latent")}},
        "show": {"type": "PreviewImage", "inputs": {"images": link("d", "image")}},
    }


def picture(result: Any) -> np.ndarray:
    assert result.status == "done", result.error
    return result.outputs["show"]["images"]


# --------------------------------------------------------------------------- block merges

#: The tiny UNets (2 levels of 2 layers) by diffusers name -> ComfyUI's block, written out by hand
#: from LDM's numbering: input block 0 is conv_in; level 0's layers are 1, 2 and its downsampler 3;
#: level 1's layers 4, 5; output blocks 0-2 are up level 0 (upsampler after layer 2), 3-5 level 1.
TINY_BLOCKS = (
    ("conv_in.", "input_blocks.0."),
    ("time_embedding.", "time_embed."),
    ("add_embedding.", "label_emb."),
    ("down_blocks.0.resnets.0.", "input_blocks.1."),
    ("down_blocks.0.resnets.1.", "input_blocks.2."),
    ("down_blocks.0.downsamplers.0.", "input_blocks.3."),
    ("down_blocks.1.resnets.0.", "input_blocks.4."),
    ("down_blocks.1.attentions.0.", "input_blocks.4."),
    ("down_blocks.1.resnets.1.", "input_blocks.5."),
    ("down_blocks.1.attentions.1.", "input_blocks.5."),
    ("mid_block.resnets.0.", "middle_block.0."),
    ("mid_block.attentions.0.", "middle_block.1."),
    ("mid_block.resnets.1.", "middle_block.2."),
    ("up_blocks.0.resnets.0.", "output_blocks.0."),
    ("up_blocks.0.attentions.0.", "output_blocks.0."),
    ("up_blocks.0.resnets.1.", "output_blocks.1."),
    ("up_blocks.0.attentions.1.", "output_blocks.1."),
    ("up_blocks.0.resnets.2.", "output_blocks.2."),
    ("up_blocks.0.attentions.2.", "output_blocks.2."),
    ("up_blocks.0.upsamplers.0.", "output_blocks.2."),
    ("up_blocks.1.resnets.0.", "output_blocks.3."),
    ("up_blocks.1.resnets.1.", "output_blocks.4."),
    ("up_blocks.1.resnets.2.", "output_blocks.5."),
    ("conv_norm_out.", "out."),
    ("conv_out.", "out."),
)


def block_of(key: str) -> str:
    matches = [ldm for prefix, ldm in TINY_BLOCKS if key.startswith(prefix)]
    assert len(matches) == 1, key
    return matches[0]


def blend(first: dict, second: dict, share_of: Any) -> dict[str, torch.Tensor]:
    return {k: first[k] * share_of(k) + second[k] * (1 - share_of(k)) for k in first}


def test_model_merge_blocks_takes_each_weight_from_its_part(root: Path, manager: ModelManager) -> None:
    a, b = load(root, manager, "more-a")["model"], load(root, manager, "more-b")["model"]
    merged = call(root, manager, "ModelMergeBlocks", model1=a, model2=b, input=0.2, middle=0.5, out=0.9)
    ratios = {"input": 0.2, "middle": 0.5, "output": 0.9, "out.": 0.9, "time_embed.": 0.2}

    def share(key: str) -> float:
        return next(r for part, r in ratios.items() if block_of(key).startswith(part))

    da, db = disk_unet(root, "more-a"), disk_unet(root, "more-b")
    assert_weights(weights_of(root, manager, merged["model"]), blend(da, db, share))


def test_model_merge_sd1_has_one_ratio_per_block(root: Path, manager: ModelManager) -> None:
    """Every input gets its own ratio; input_blocks.1 must not catch input_blocks.10/11 (whose
    ratios differ), as ComfyUI's prefixes end with a dot."""
    from nodes.model_ops import ModelMergeSD1

    names = [spec.name for spec in ModelMergeSD1.inputs[2:]]
    assert len(names) == 2 + 12 + 3 + 12 + 1
    ratios = {name: round(0.01 + index / 40, 3) for index, name in enumerate(names)}
    a, b = load(root, manager, "more-a")["model"], load(root, manager, "more-b")["model"]
    merged = call(root, manager, "ModelMergeSD1", model1=a, model2=b, **ratios)

    def share(key: str) -> float:
        block = block_of(key)  # "input_blocks.4." -> input "input_blocks_4"
        return ratios[block.rstrip(".").replace(".", "_")]

    da, db = disk_unet(root, "more-a"), disk_unet(root, "more-b")
    assert_weights(weights_of(root, manager, merged["model"]), blend(da, db, share))


def test_model_merge_sdxl_covers_the_size_embedding_and_blocks(root: Path, manager: ModelManager) -> None:
    from nodes.model_ops import ModelMergeSDXL

    names = [spec.name for spec in ModelMergeSDXL.inputs[2:]]
    assert names[:4] == ["time_embed", "label_emb", "input_blocks_0", "input_blocks_1"]
    assert names[-1] == "out" and len(names) == 2 + 9 + 3 + 9 + 1
    ratios = {name: round(1 - index / 30, 3) for index, name in enumerate(names)}
    a, b = load(root, manager, "more-xl")["model"], load(root, manager, "more-xl2")["model"]
    merged = call(root, manager, "ModelMergeSDXL", model1=a, model2=b, **ratios)

    def share(key: str) -> float:
        return ratios[block_of(key).rstrip(".").replace(".", "_")]

    da, db = disk_unet(root, "more-xl"), disk_unet(root, "more-xl2")
    got = weights_of(root, manager, merged["model"])
    assert_weights(got, blend(da, db, share))
    assert not torch.allclose(got["add_embedding.linear_1.weight"], da["add_embedding.linear_1.weight"])


# --------------------------------------------------------------------------- CLIP merges


def encoders_of(root: Path, manager: ModelManager, clip: Any) -> list[dict[str, torch.Tensor]]:
    from nodes.support import checkpoint_for

    return [e.state_dict() for e in checkpoint_for(clip, context(root, manager)).text_encoders]


def formula(first: dict, second: dict, own: float, other: float) -> dict[str, torch.Tensor]:
    """ComfyUI's CLIP merge: every weight but position ids and the logit scale."""
    kept = (".position_ids", ".logit_scale")
    return {k: first[k] if k.endswith(kept) else first[k] * own + second[k] * other for k in first}


@pytest.mark.parametrize(
    ("node", "inputs", "own", "other"),
    [
        ("CLIPMergeSimple", {"ratio": 0.3}, 0.3, 0.7),
        ("CLIPMergeAdd", {}, 1.0, 1.0),
        ("CLIPMergeSubtract", {"multiplier": 0.6}, 0.6, -0.6),
    ],
)
def test_clip_merges_follow_comfyuis_formulas(
    root: Path, manager: ModelManager, node: str, inputs: dict, own: float, other: float
) -> None:
    for first, second in (("more-a", "more-b"), ("more-xl", "more-xl2")):
        clip1, clip2 = load(root, manager, first)["clip"], load(root, manager, second)["clip"]
        merged = call(root, manager, node, clip1=clip1, clip2=clip2, **inputs)["clip"]
        got = encoders_of(root, manager, merged)
        want = [
            formula(x, y, own, other)
            for x, y in zip(disk_encoders(root, first), disk_encoders(root, second), strict=True)
        ]
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert_weights(g, w)
        assert_weights(encoders_of(root, manager, clip1)[0], disk_encoders(root, first)[0])


def test_a_merged_clip_encodes_like_a_text_model_holding_the_formula(
    root: Path, manager: ModelManager
) -> None:
    from transformers import CLIPTextModel

    from tests.fixtures.tiny_models import DEFAULT_TOKENIZER_CACHE, clip_tokenizer

    clip1, clip2 = load(root, manager, "more-a")["clip"], load(root, manager, "more-b")["clip"]
    merged = call(root, manager, "CLIPMergeSimple", clip1=clip1, clip2=clip2, ratio=0.25)["clip"]
    (cond,) = call(root, manager, "CLIPTextEncode", clip=merged, text=PROMPT)["conditioning"]
    model = CLIPTextModel.from_pretrained(
        str(root / "models" / "checkpoints" / "more-a" / "text_encoder"), local_files_only=True
    )
    (x,), (y,) = disk_encoders(root, "more-a"), disk_encoders(root, "more-b")
    model.load_state_dict(formula(x, y, 0.25, 0.75))
    tokenizer = clip_tokenizer(DEFAULT_TOKENIZER_CACHE)
    ids = tokenizer(
        PROMPT, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        expected = model(ids).last_hidden_state
    assert torch.allclose(cond.embeds, expected, atol=1e-5)
    (plain,) = call(root, manager, "CLIPTextEncode", clip=clip1, text=PROMPT)["conditioning"]
    assert not torch.allclose(plain.embeds, expected, atol=1e-3)


def test_a_merged_clip_with_an_embedding_in_the_prompt_is_not_served_its_first_clips_encoders(
    root: Path, manager: ModelManager
) -> None:
    """Text encoders with an embedding added are kept in the manager: the key must name the
    merge, or a merged CLIP would be handed clip1's encoders from an earlier prompt."""
    from safetensors.torch import save_file

    folder = root / "models" / "embeddings"
    folder.mkdir(exist_ok=True)
    save_file(
        {"emb_params": torch.randn(2, 32, generator=torch.Generator().manual_seed(4))},
        str(folder / "mergestyle.safetensors"),
    )
    text = "a circle in embedding:mergestyle"
    clip1, clip2 = load(root, manager, "more-a")["clip"], load(root, manager, "more-b")["clip"]
    (plain,) = call(root, manager, "CLIPTextEncode", clip=clip1, text=text)["conditioning"]
    merged = call(root, manager, "CLIPMergeSimple", clip1=clip1, clip2=clip2, ratio=0.25)["clip"]
    (mixed,) = call(root, manager, "CLIPTextEncode", clip=merged, text=text)["conditioning"]
    assert not torch.allclose(plain.embeds, mixed.embeds, atol=1e-3)
    (without,) = call(root, manager, "CLIPTextEncode", clip=merged, text="a circle in")["conditioning"]
    assert not torch.allclose(without.embeds, mixed.embeds, atol=1e-3)  # the embedding is used


def test_clip_merge_refuses_another_family_naming_clip2(root: Path, manager: ModelManager) -> None:
    clip1, clip2 = load(root, manager, "more-a")["clip"], load(root, manager, "more-xl")["clip"]
    with pytest.raises(NodeInputError) as raised:
        call(root, manager, "CLIPMergeAdd", clip1=clip1, clip2=clip2)
    assert raised.value.input_name == "clip2" and "text encoder" in str(raised.value)


# --------------------------------------------------------------------------- LoraLoaderModelOnly


def test_lora_loader_model_only_changes_the_unet_and_not_the_text_encoder(
    root: Path, manager: ModelManager
) -> None:
    from safetensors.torch import save_file

    da = disk_unet(root, "more-a")
    (te,) = disk_encoders(root, "more-a")
    layer = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    te_layer = "text_model.encoder.layers.0.self_attn.q_proj"
    generator = torch.Generator().manual_seed(5)
    weight, te_weight = da[layer + ".weight"], te[te_layer.removeprefix("text_model.") + ".weight"]
    down, up = (
        torch.randn(4, weight.shape[1], generator=generator),
        torch.randn(weight.shape[0], 4, generator=generator),
    )
    te_down = torch.randn(4, te_weight.shape[1], generator=generator)
    te_up = torch.randn(te_weight.shape[0], 4, generator=generator)
    unet_key, te_key = "lora_unet_" + layer.replace(".", "_"), "lora_te_" + te_layer.replace(".", "_")
    lora = {
        f"{unet_key}.lora_down.weight": down,
        f"{unet_key}.lora_up.weight": up,
        f"{unet_key}.alpha": torch.tensor(2.0),
        f"{te_key}.lora_down.weight": te_down,
        f"{te_key}.lora_up.weight": te_up,
        f"{te_key}.alpha": torch.tensor(2.0),
    }
    folder = root / "models" / "loras"
    folder.mkdir(exist_ok=True)
    save_file(lora, str(folder / "more-style.safetensors"))

    loaded = load(root, manager, "more-a")
    out = call(
        root,
        manager,
        "LoraLoaderModelOnly",
        model=loaded["model"],
        lora_name="more-style.safetensors",
        strength_model=0.8,
    )
    assert set(out) == {"model"}
    want = dict(da)
    want[layer + ".weight"] = weight + 0.8 * 2.0 / 4 * (up @ down)
    assert_weights(weights_of(root, manager, out["model"]), want)
    from nodes.support import checkpoint_for

    fused = checkpoint_for(out["model"], context(root, manager))
    assert_weights(fused.text_encoders[0].state_dict(), te)  # the LoRA's text part is left out
    with pytest.raises(NodeInputError) as raised:
        call(root, manager, "LoraLoaderModelOnly", model=loaded["model"], lora_name="nope.safetensors")
    assert raised.value.input_name == "lora_name"


# --------------------------------------------------------------------------- DiffControlNetLoader


@pytest.fixture(scope="module")
def controlnets(root: Path) -> dict[str, Any]:
    """A ControlNet made from more-a's UNet (then changed), saved whole and as a diff file, each with
    its config as a sidecar folder (the tiny shapes are not SD1.5's)."""
    from diffusers import ControlNetModel, UNet2DConditionModel
    from safetensors.torch import save_file

    from tests.fixtures.original_layout import (
        CONTROLNET_PREFIX,
        original_controlnet_state_dict,
        unet_to_original,
    )

    unet = UNet2DConditionModel.from_pretrained(
        str(root / "models" / "checkpoints" / "more-a" / "unet"), local_files_only=True
    )
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 16, 32, 32))
    torch.manual_seed(11)
    with torch.no_grad():
        for param in controlnet.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    folder = root / "models" / "controlnet"
    folder.mkdir(parents=True, exist_ok=True)
    full = original_controlnet_state_dict(controlnet)
    base = unet_to_original(unet.state_dict(), unet.config)
    diff = {
        k: v - base[k[len(CONTROLNET_PREFIX) :]] if k[len(CONTROLNET_PREFIX) :] in base else v
        for k, v in full.items()
    }
    assert sum(k[len(CONTROLNET_PREFIX) :] in base for k in full) > 20
    diff["difference"] = torch.tensor([])
    save_file({k: v.contiguous() for k, v in full.items()}, str(folder / "cn-full.safetensors"))
    save_file({k: v.contiguous() for k, v in diff.items()}, str(folder / "cn-diff.safetensors"))
    for stem in ("cn-full", "cn-diff"):
        controlnet.save_config(str(folder / f"{stem}.config"))
    return {"module": controlnet}


def controlnet_weights(ref: Any) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in ref.get().state_dict().items()}


def test_a_diff_controlnet_loads_to_the_full_one(
    root: Path, manager: ModelManager, controlnets: dict
) -> None:
    model = load(root, manager, "more-a")["model"]
    diff = call(root, manager, "DiffControlNetLoader", model=model, control_net_name="cn-diff.safetensors")
    full = call(root, manager, "ControlNetLoader", control_net_name="cn-full.safetensors")
    want = {k: v.float() for k, v in controlnets["module"].state_dict().items()}
    assert_weights(controlnet_weights(full["control_net"]), want)  # the reference file itself is right
    assert_weights(controlnet_weights(diff["control_net"]), want)


def test_a_full_controlnet_through_the_diff_loader_is_left_as_it_is(
    root: Path, manager: ModelManager, controlnets: dict
) -> None:
    model = load(root, manager, "more-b")["model"]  # not its base: must not matter for a full file
    out = call(root, manager, "DiffControlNetLoader", model=model, control_net_name="cn-full.safetensors")
    want = {k: v.float() for k, v in controlnets["module"].state_dict().items()}
    assert_weights(controlnet_weights(out["control_net"]), want)


def test_a_diff_controlnet_on_a_model_of_another_shape_is_refused(
    root: Path, manager: ModelManager, controlnets: dict
) -> None:
    model = load(root, manager, "more-xl")["model"]
    with pytest.raises(NodeInputError) as raised:
        call(root, manager, "DiffControlNetLoader", model=model, control_net_name="cn-diff.safetensors")
    assert raised.value.input_name == "control_net_name"
    assert "another model family" in str(raised.value)


# --------------------------------------------------------------------------- UNETLoader


@pytest.fixture(scope="module")
def unet_files(root: Path) -> dict[str, Any]:
    """more-c's UNet saved as ComfyUI's unet folder holds them: original names without a prefix,
    original names with the checkpoint prefix, and diffusers names; each with the tiny config."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    from tests.fixtures.original_layout import unet_to_original

    unet = UNet2DConditionModel.from_pretrained(
        str(root / "models" / "checkpoints" / "more-c" / "unet"), local_files_only=True
    )
    original = unet_to_original(unet.state_dict(), unet.config)
    folder = root / "models" / "diffusion_models"
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "unet-ldm": original,
        "unet-prefixed": {"model.diffusion_model." + k: v for k, v in original.items()},
        "unet-diffusers": unet.state_dict(),
    }
    for stem, state in files.items():
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / f"{stem}.safetensors"))
        shutil.copytree(root / "sd1.config", folder / f"{stem}.config")
    return {"module": unet}


@pytest.mark.parametrize("stem", ["unet-ldm", "unet-prefixed", "unet-diffusers"])
def test_unet_loader_reads_each_layout_to_the_same_weights(
    root: Path, manager: ModelManager, unet_files: dict, stem: str
) -> None:
    from nodes.support import checkpoint_for

    model = call(root, manager, "UNETLoader", unet_name=f"{stem}.safetensors")["model"]
    checkpoint = checkpoint_for(model, context(root, manager))
    assert checkpoint.family == "sd1"
    assert_weights(checkpoint.unet.state_dict(), unet_files["module"].state_dict())
    assert checkpoint.scheduler_config["_class_name"] == "PNDMScheduler"


def test_a_unet_file_draws_what_its_checkpoint_draws(
    root: Path, manager: ModelManager, unet_files: dict
) -> None:
    nodes = {"ck": {"type": "CheckpointLoader", "inputs": {"ckpt_name": "more-c"}}}
    alone = picture(run({**nodes, **draw(("ck", "model"), "ck")}, root, manager))
    nodes["u"] = {"type": "UNETLoader", "inputs": {"unet_name": "unet-ldm.safetensors"}}
    from_file = picture(run({**nodes, **draw(("u", "model"), "ck")}, root, manager))
    assert np.array_equal(as_uint8(from_file), as_uint8(alone))


def test_a_lora_on_a_unet_file_fuses_its_unet_layers_and_leaves_out_the_text_ones(
    root: Path, manager: ModelManager, unet_files: dict
) -> None:
    """A UNet-only model has no text encoders: a LoRA's text-encoder layers are left out (as
    ComfyUI does) instead of crashing, and its UNet layers follow the LoRA formula."""
    from safetensors.torch import save_file

    from nodes.support import checkpoint_for

    layer = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    weight = unet_files["module"].state_dict()[layer + ".weight"]
    generator = torch.Generator().manual_seed(9)
    down = torch.randn(2, weight.shape[1], generator=generator)
    up = torch.randn(weight.shape[0], 2, generator=generator)
    key = "lora_unet_" + layer.replace(".", "_")
    te_key = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    lora = {
        f"{key}.lora_down.weight": down,
        f"{key}.lora_up.weight": up,
        f"{te_key}.lora_down.weight": torch.randn(2, 32, generator=generator),
        f"{te_key}.lora_up.weight": torch.randn(32, 2, generator=generator),
    }
    folder = root / "models" / "loras"
    folder.mkdir(exist_ok=True)
    save_file(lora, str(folder / "unet-file-style.safetensors"))
    model = call(root, manager, "UNETLoader", unet_name="unet-ldm.safetensors")["model"]
    out = call(
        root,
        manager,
        "LoraLoaderModelOnly",
        model=model,
        lora_name="unet-file-style.safetensors",
        strength_model=0.5,
    )
    fused = checkpoint_for(out["model"], context(root, manager))
    want = dict(unet_files["module"].state_dict())
    want[layer + ".weight"] = weight + 0.5 * (up @ down)
    assert_weights(fused.unet.state_dict(), want)
    assert fused.text_encoders == []


def test_unet_family_is_read_from_the_shapes() -> None:
    from models.unet_files import read_layout

    def ldm(width: int, sized: bool = False, in_channels: int = 4) -> dict[str, torch.Tensor]:
        state = {
            "input_blocks.0.0.weight": torch.empty(320, in_channels, 3, 3),
            "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": torch.empty(320, width),
        }
        if sized:
            state["label_emb.0.0.weight"] = torch.empty(1280, 2816)
        return state

    assert read_layout(ldm(768)).family == "sd1"
    assert read_layout(ldm(768, in_channels=9)).in_channels == 9
    assert read_layout(ldm(1024)).family == "sd2"
    assert read_layout(ldm(2048, sized=True)).family == "sdxl"
    assert read_layout(ldm(1280, sized=True)).family is None  # the SDXL refiner: not yet
    diffusers = {
        "conv_in.weight": torch.empty(320, 4, 3, 3),
        "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": torch.empty(640, 2048),
        "add_embedding.linear_1.weight": torch.empty(1280, 2816),
    }
    found = read_layout(diffusers)
    assert (found.layout, found.family) == ("diffusers", "sdxl")


def test_unet_loader_names_the_input_for_a_missing_or_foreign_file(root: Path, manager: ModelManager) -> None:
    from safetensors.torch import save_file

    with pytest.raises(NodeInputError) as raised:
        call(root, manager, "UNETLoader", unet_name="missing.safetensors")
    assert raised.value.input_name == "unet_name"
    folder = root / "models" / "unet"
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"double_blocks.0.img_attn.qkv.weight": torch.zeros(2, 2)}, str(folder / "dit.safetensors"))
    with pytest.raises(NodeInputError) as raised:
        call(root, manager, "UNETLoader", unet_name="dit.safetensors")
    assert raised.value.input_name == "unet_name" and "not a whole SD3 or Flux model" in str(raised.value)
    save_file({"some.other.weight": torch.zeros(2, 2)}, str(folder / "other.safetensors"))
    with pytest.raises(NodeInputError) as raised:
        call(root, manager, "UNETLoader", unet_name="other.safetensors")
    assert raised.value.input_name == "unet_name" and "holds no UNet" in str(raised.value)


# --------------------------------------------------------------------------- RepeatLatentBatch


def test_repeat_latent_batch_repeats_the_batch_and_what_goes_with_it() -> None:
    from models.values import Latent
    from nodes.latent import RepeatLatentBatch
    from tests.helpers import run_node

    generator = torch.Generator().manual_seed(3)
    samples = torch.randn(2, 4, 8, 8, generator=generator)
    std = torch.rand(2, 4, 8, 8, generator=generator)
    mask = torch.rand(1, 1, 8, 8, generator=generator)  # one mask for the whole batch
    (out,) = run_node(RepeatLatentBatch, latent=Latent(samples, std=std, noise_mask=mask), amount=3).values()
    assert out.samples.shape == (6, 4, 8, 8)
    for copy in range(3):  # ComfyUI's tensor.repeat: the whole batch again, not each item in turn
        assert torch.equal(out.samples[2 * copy : 2 * copy + 2], samples)
        assert torch.equal(out.std[2 * copy : 2 * copy + 2], std)
    assert torch.equal(out.noise_mask, mask)
    (same,) = run_node(RepeatLatentBatch, latent=Latent(samples), amount=1).values()
    assert torch.equal(same.samples, samples) and same.std is None


# --------------------------------------------------------------------------- importing ComfyUI files

CORPUS = Path(__file__).parent / "data" / "comfy" / "corpus" / "comfyui_examples"


def converted(name: str) -> Any:
    from comfy_import import convert, read_file

    return convert(read_file(CORPUS / name), name)


def test_comfyui_merge_examples_convert_with_their_ratios() -> None:
    three = converted("model_merging__model_merging_3_checkpoints.png")
    assert three.complete
    blocks = three.workflow["nodes"]["10"]
    assert blocks["type"] == "ModelMergeBlocks"
    assert (blocks["inputs"]["input"], blocks["inputs"]["middle"]) == (1, pytest.approx(0.71))
    assert blocks["inputs"]["model2"] == link("11", "model")

    cosxl = converted("model_merging__model_merging_cosxl.png").workflow["nodes"]
    sdxl = cosxl["13"]["inputs"]
    assert cosxl["13"]["type"] == "ModelMergeSDXL"
    assert (sdxl["time_embed"], sdxl["middle_block_2"], sdxl["output_blocks_0"], sdxl["out"]) == (
        1,
        1,
        0.5,
        1,
    )
    assert cosxl["15"] == {
        **cosxl["15"],
        "type": "ModelMergeSubtract",
        "inputs": {"multiplier": 1, "model1": link("4", "model"), "model2": link("16", "model")},
    }
    assert cosxl["19"]["type"] == "CLIPMergeAdd" and cosxl["19"]["inputs"]["clip1"] == link("18", "clip")

    inpaint = converted("model_merging__model_merging_inpaint.png")
    repeat = inpaint.workflow["nodes"]["21"]
    assert repeat["type"] == "RepeatLatentBatch" and repeat["inputs"]["amount"] == 4
    assert "latent" in repeat["inputs"]


def test_loaders_of_comfyui_files_convert() -> None:
    depth = converted("controlnet__depth_controlnet.png")
    assert depth.complete
    loader = depth.workflow["nodes"]["33"]
    assert loader == {
        **loader,
        "type": "DiffControlNetLoader",
        "inputs": {
            "control_net_name": "diff_control_sd15_depth_fp16.safetensors",
            "model": link("34", "model"),
        },
    }
    from comfy_import import convert, read_prompt

    api = {
        "1": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": "x.safetensors", "weight_dtype": "fp8_e4m3fn"},
        },
        "2": {
            "class_type": "LoraLoaderModelOnly",
            "inputs": {"model": ["1", 0], "lora_name": "l.safetensors", "strength_model": 0.5},
        },
    }
    result = convert(read_prompt(api))
    nodes = result.workflow["nodes"]
    assert nodes["1"]["inputs"] == {"unet_name": "x.safetensors", "weight_dtype": "fp8_e4m3fn"}
    assert not any("fp8_e4m3fn" in warning for warning in result.warnings)
    assert nodes["2"]["inputs"] == {
        "model": link("1", "model"),
        "lora_name": "l.safetensors",
        "strength_model": 0.5,
    }
