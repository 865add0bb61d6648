"""The test fixtures write real formats: CLIP's real tokenizer, diffusers folders, and original-layout
single files that diffusers' ``from_single_file`` loads back into exactly the same tensors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"

from safetensors.torch import load_file  # noqa: E402

from tests.fixtures.original_layout import (  # noqa: E402
    SD1_CLIP_PREFIX,
    SDXL_CLIP_PREFIX,
    SDXL_OPEN_CLIP_PREFIX,
    original_sd1_state_dict,
    write_original_sd1,
    write_original_sdxl,
)
from tests.fixtures.tiny_models import (  # noqa: E402
    WEIGHT_SUFFIXES,
    clip_tokenizer,
    save_config_folder,
    save_tiny_sd_folder,
    save_tiny_sdxl_folder,
    tiny_sd_components,
    tiny_sdxl_components,
)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clip-tokenizer")


def assert_same_weights(expected: torch.nn.Module, actual: torch.nn.Module, name: str) -> None:
    want, got = expected.state_dict(), actual.state_dict()
    assert set(want) == set(got), f"{name}: keys differ: {sorted(set(want) ^ set(got))[:10]}"
    differ = [key for key in want if not torch.equal(want[key], got[key])]
    assert not differ, f"{name}: {len(differ)} tensors differ, e.g. {differ[:5]}"


def test_clip_tokenizer_matches_clip(tokenizer_dir: Path) -> None:
    tokenizer = clip_tokenizer(tokenizer_dir)
    assert len(tokenizer) == 49408
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer("a photo of a dog").input_ids == [49406, 320, 1125, 539, 320, 1929, 49407]
    assert tokenizer("A  Photo of a CAT").input_ids == tokenizer("a photo of a cat").input_ids
    assert tokenizer("").input_ids == [49406, 49407]
    padded = tokenizer("a cat", padding="max_length", max_length=tokenizer.model_max_length).input_ids
    assert len(padded) == 77 and padded[3:] == [49407] * 74
    padded_2 = clip_tokenizer(tokenizer_dir, pad_token="!")("a cat", padding="max_length").input_ids
    assert padded_2[:4] == [49406, 320, 2368, 49407] and padded_2[4:] == [0] * 73
    long = tokenizer("cat " * 100, truncation=True, max_length=77).input_ids
    assert len(long) == 77 and long[0] == 49406 and long[-1] == 49407


def test_sd1_folder_and_single_file(tmp_path: Path, tokenizer_dir: Path) -> None:
    from diffusers import StableDiffusionPipeline
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    components = tiny_sd_components(seed=0, tokenizer_dir=tokenizer_dir)
    folder = save_tiny_sd_folder(tmp_path / "tiny-sd", components)
    pipe = StableDiffusionPipeline.from_pretrained(
        str(folder), local_files_only=True, safety_checker=None, feature_extractor=None
    )
    for name in ("unet", "vae", "text_encoder"):
        assert_same_weights(components[name], getattr(pipe, name), f"folder {name}")
    assert pipe.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]

    config = save_config_folder(folder, tmp_path / "tiny-sd.config")
    assert (config / "model_index.json").is_file() and (config / "unet" / "config.json").is_file()
    assert (config / "scheduler" / "scheduler_config.json").is_file()
    assert any((config / "tokenizer").iterdir())
    assert not [p for p in config.rglob("*") if p.name.endswith(WEIGHT_SUFFIXES)]

    path = write_original_sd1(components, tmp_path / "tiny-sd.safetensors")
    state = load_file(str(path))
    assert infer_diffusers_model_type(state) == "v1"
    assert f"{SD1_CLIP_PREFIX}text_model.embeddings.position_embedding.weight" in state
    prefixes = ("model.diffusion_model.", "first_stage_model.", SD1_CLIP_PREFIX)
    schedule = {"betas", "alphas_cumprod", "alphas_cumprod_prev"}
    assert {key for key in state if not key.startswith(prefixes)} == schedule

    loaded = StableDiffusionPipeline.from_single_file(
        str(path),
        config=str(config),
        local_files_only=True,
        tokenizer=components["tokenizer"],
        safety_checker=None,
    )
    for name in ("unet", "vae", "text_encoder"):
        assert_same_weights(components[name], getattr(loaded, name), f"single-file {name}")
    assert loaded.unet.config.in_channels == 4
    assert loaded.vae.config.scaling_factor == components["vae"].config.scaling_factor


def test_sdxl_folder_and_single_file(tmp_path: Path, tokenizer_dir: Path) -> None:
    from diffusers import StableDiffusionXLPipeline
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    components = tiny_sdxl_components(seed=0, tokenizer_dir=tokenizer_dir)
    folder = save_tiny_sdxl_folder(tmp_path / "tiny-sdxl", components)
    pipe = StableDiffusionXLPipeline.from_pretrained(str(folder), local_files_only=True)
    names = ("unet", "vae", "text_encoder", "text_encoder_2")
    for name in names:
        assert_same_weights(components[name], getattr(pipe, name), f"folder {name}")
    assert pipe.tokenizer_2.pad_token == "!"

    config = save_config_folder(folder, tmp_path / "tiny-sdxl.config")
    index = json.loads((config / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline"

    path = write_original_sdxl(folder, tmp_path / "tiny-sdxl.safetensors")  # from the folder this time
    state = load_file(str(path))
    assert infer_diffusers_model_type(state) == "xl_base"
    assert f"{SDXL_CLIP_PREFIX}text_model.final_layer_norm.weight" in state
    projection = state[f"{SDXL_OPEN_CLIP_PREFIX}text_projection"]
    assert torch.equal(projection, components["text_encoder_2"].text_projection.weight.T)
    fused = state[f"{SDXL_OPEN_CLIP_PREFIX}transformer.resblocks.0.attn.in_proj_weight"]
    assert fused.shape == (3 * 64, 64)

    loaded = StableDiffusionXLPipeline.from_single_file(
        str(path),
        config=str(config),
        local_files_only=True,
        tokenizer=components["tokenizer"],
        tokenizer_2=components["tokenizer_2"],
    )
    for name in names:
        assert_same_weights(components[name], getattr(loaded, name), f"single-file {name}")
    assert loaded.unet.config.addition_embed_type == "text_time"


@pytest.mark.parametrize(("in_channels", "kind"), [(9, "inpainting"), (8, "instruct-pix2pix")])
def test_other_unet_inputs_are_recognised(in_channels: int, kind: str, tokenizer_dir: Path) -> None:
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, infer_diffusers_model_type

    components: dict[str, Any] = tiny_sd_components(in_channels=in_channels, tokenizer_dir=tokenizer_dir)
    state = original_sd1_state_dict(components)
    assert infer_diffusers_model_type(state) == kind
    converted = convert_ldm_unet_checkpoint(state, dict(components["unet"].config))
    original = components["unet"].state_dict()
    assert set(converted) == set(original)
    assert all(torch.equal(original[key], converted[key]) for key in original)
