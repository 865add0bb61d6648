"""SD 2.x checkpoints and ControlNets as ORIGINAL-layout single files, loaded by the studio's own
loaders (:func:`models.loading.load_checkpoint`, :func:`models.loading.load_controlnet`) into
exactly the tensors of the diffusers models they were written from."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"

from safetensors.torch import load_file  # noqa: E402

from tests.fixtures.original_layout import (  # noqa: E402
    CONTROLNET_PREFIX,
    SD2_OPEN_CLIP_PREFIX,
    VAE_PREFIX,
    tiny_controlnet,
    write_original_controlnet,
    write_original_sd2,
)
from tests.fixtures.tiny_models import (  # noqa: E402
    SD2_WIDTH,
    save_config_folder,
    save_tiny_sd_folder,
    tiny_sd2_components,
)

V2_KEY = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"


class ConfigChosen(Exception):
    """Raised by a stand-in ``from_single_file`` to report the config folder it was given."""


def assert_same_weights(expected: torch.nn.Module, actual: torch.nn.Module, name: str) -> None:
    want, got = expected.state_dict(), actual.state_dict()
    assert set(want) == set(got), f"{name}: keys differ: {sorted(set(want) ^ set(got))[:10]}"
    differ = [key for key in want if not torch.equal(want[key], got[key])]
    assert not differ, f"{name}: {len(differ)} tensors differ, e.g. {differ[:5]}"


def capture_config(monkeypatch: pytest.MonkeyPatch, cls: Any) -> None:
    """Make ``cls.from_single_file`` raise :class:`ConfigChosen` with the ``config`` it was given."""

    def stand_in(*args: Any, **kwargs: Any) -> Any:
        raise ConfigChosen(kwargs.get("config"))

    monkeypatch.setattr(cls, "from_single_file", stand_in)


# --------------------------------------------------------------------------- SD 2.x


@pytest.fixture(scope="module")
def sd2(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny SD2: its components, a diffusers folder, and an original-layout file with a sidecar
    config-only folder (``<stem>.config``)."""
    root = tmp_path_factory.mktemp("sd2")
    components = tiny_sd2_components(seed=0, tokenizer_dir=root / "tokenizer")
    folder = save_tiny_sd_folder(root / "tiny-sd2", components)
    path = write_original_sd2(components, root / "single" / "tiny-sd2.safetensors")
    save_config_folder(folder, root / "single" / "tiny-sd2.config")
    return {"components": components, "folder": folder, "path": path}


def test_sd2_file_has_the_original_layout(sd2: dict[str, Any]) -> None:
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    from models.loading import detect_family

    state = load_file(str(sd2["path"]))
    assert infer_diffusers_model_type(state) == "v2"
    assert state[V2_KEY].shape[-1] == SD2_WIDTH
    assert detect_family(state) == ("sd2", "sd2", 4)
    prefixes = ("model.diffusion_model.", VAE_PREFIX, SD2_OPEN_CLIP_PREFIX)
    assert {key for key in state if not key.startswith(prefixes)} == {
        "betas",
        "alphas_cumprod",
        "alphas_cumprod_prev",
    }
    encoder = sd2["components"]["text_encoder"]
    layers = encoder.config.num_hidden_layers
    block = f"{SD2_OPEN_CLIP_PREFIX}transformer.resblocks.0."
    fused = state[block + "attn.in_proj_weight"]
    assert fused.shape == (3 * SD2_WIDTH, SD2_WIDTH)
    assert state[block + "attn.in_proj_bias"].shape == (3 * SD2_WIDTH,)
    q = encoder.state_dict()
    prefix = "text_model." if "text_model.embeddings.token_embedding.weight" in q else ""
    for i, part in enumerate("qkv"):
        expected = q[f"{prefix}encoder.layers.0.self_attn.{part}_proj.weight"]
        assert torch.equal(fused[i * SD2_WIDTH : (i + 1) * SD2_WIDTH], expected)
    for name in ("attn.out_proj.weight", "ln_1.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_proj.bias"):
        assert block + name in state
    assert f"{SD2_OPEN_CLIP_PREFIX}transformer.resblocks.{layers - 1}.mlp.c_proj.weight" in state
    assert f"{SD2_OPEN_CLIP_PREFIX}transformer.resblocks.{layers}.ln_1.weight" not in state
    for name in ("token_embedding.weight", "positional_embedding", "ln_final.weight", "text_projection"):
        assert SD2_OPEN_CLIP_PREFIX + name in state
    assert not any(key.startswith("cond_stage_model.transformer.") for key in state)


def test_sd2_single_file_loads_like_its_folder(sd2: dict[str, Any]) -> None:
    from models.loading import load_checkpoint

    single = load_checkpoint(sd2["path"])
    folder = load_checkpoint(sd2["folder"])
    assert single.family == folder.family == "sd2"
    assert single.source == str(sd2["path"])
    assert len(single.text_encoders) == len(folder.text_encoders) == 1
    for name, got, want in (
        ("unet", single.unet, folder.unet),
        ("vae", single.vae, folder.vae),
        ("text_encoder", single.text_encoders[0], folder.text_encoders[0]),
    ):
        assert_same_weights(want, got, f"single file vs folder: {name}")
        assert_same_weights(sd2["components"][name], got, f"single file vs original: {name}")
    assert single.unet.config.cross_attention_dim == SD2_WIDTH
    assert single.unet.config.use_linear_projection is True
    assert single.text_encoders[0].config.hidden_act == "gelu"
    assert single.scheduler_config["prediction_type"] == "v_prediction"

    tokenizer = single.tokenizers[0]
    assert tokenizer.pad_token == "!" and tokenizer.pad_token_id == 0
    ids = tokenizer("a cat", padding="max_length", max_length=77).input_ids
    assert ids[:4] == [49406, 320, 2368, 49407] and ids[4:] == [0] * 73

    with torch.no_grad():  # the loaded parts run together: text states feed the UNet's cross-attention
        tokens = torch.tensor([ids])
        states = single.text_encoders[0](tokens).last_hidden_state
        latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        out = single.unet(latents, 10, encoder_hidden_states=states).sample
    assert out.shape == latents.shape and torch.isfinite(out).all()


def test_sd2_without_sidecar_uses_the_shipped_config(
    sd2: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from diffusers import StableDiffusionPipeline

    from models.loading import CONFIGS, load_checkpoint

    alone = tmp_path / "alone.safetensors"
    shutil.copyfile(sd2["path"], alone)
    capture_config(monkeypatch, StableDiffusionPipeline)
    with pytest.raises(ConfigChosen) as chosen:
        load_checkpoint(alone)
    assert Path(str(chosen.value)) == CONFIGS / "sd2"
    with pytest.raises(ConfigChosen) as chosen:
        load_checkpoint(sd2["path"])
    assert Path(str(chosen.value)) == sd2["path"].with_name("tiny-sd2.config")


# --------------------------------------------------------------------------- ControlNet


@pytest.fixture(scope="module")
def controlnet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("controlnet")
    model = tiny_controlnet(seed=1)
    path = write_original_controlnet(model, root / "control_tiny.safetensors")
    model.save_config(root / "control_tiny.config")
    return {"model": model, "path": path}


def test_controlnet_file_has_the_original_layout(controlnet: dict[str, Any]) -> None:
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    state = load_file(str(controlnet["path"]))
    assert infer_diffusers_model_type(state) == "controlnet"
    assert all(key.startswith(CONTROLNET_PREFIX) for key in state)
    names = {key.removeprefix(CONTROLNET_PREFIX) for key in state}
    zero_convs = len(controlnet["model"].controlnet_down_blocks)
    assert {f"zero_convs.{i}.0.weight" for i in range(zero_convs)} <= names
    assert {"time_embed.0.weight", "time_embed.2.bias", "input_blocks.0.0.weight"} <= names
    assert {
        "middle_block_out.0.weight",
        "middle_block.1.proj_in.weight",
        "middle_block.2.in_layers.2.weight",
    } <= names
    hints = sorted({int(name.split(".")[1]) for name in names if name.startswith("input_hint_block.")})
    assert hints == [0, 2, 4, 6, 8, 10, 12, 14]
    assert not any(
        name.startswith(("controlnet_", "down_blocks", "mid_block", "output_blocks")) for name in names
    )


def test_controlnet_single_file_loads(controlnet: dict[str, Any]) -> None:
    from models.loading import load_controlnet

    loaded = load_controlnet(controlnet["path"])
    assert_same_weights(controlnet["model"], loaded, "single-file ControlNet")
    assert tuple(loaded.config.conditioning_embedding_out_channels) == (16, 16, 32, 32)
    assert not any(torch.equal(p, torch.zeros_like(p)) for p in loaded.controlnet_down_blocks.parameters())


def test_controlnet_without_sidecar_uses_the_shipped_config(
    controlnet: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from diffusers import ControlNetModel

    from models.loading import CONFIGS, load_controlnet

    alone = tmp_path / "alone.safetensors"
    shutil.copyfile(controlnet["path"], alone)
    capture_config(monkeypatch, ControlNetModel)
    with pytest.raises(ConfigChosen) as chosen:
        load_controlnet(alone)
    assert Path(str(chosen.value)) == CONFIGS / "controlnet-sd15"
