"""SD3 / SD3.5 and Flux files as users keep them (issue 11, points 1-3, the loading side).

Tiny random models are written in the ORIGINAL single-file layouts (tests/fixtures/dit_layouts.py:
the inverse of diffusers' converters, written independently of the loader): all-in-one checkpoints,
transformer-only files, separate CLIP-L / CLIP-G / T5-XXL files, fp8 files. Oracle: the model the
loader builds from a file computes what the diffusers / transformers model the file was written
from computes (same inputs, allclose at float32 tolerance); an fp8 file computes what that model
computes with its weights rounded to fp8. Also: each family and variant is recognised from the
keys, unknown files are refused with a message naming what was found, T5's tokenizer is built
offline, and the DualCLIPLoader / TripleCLIPLoader / UNETLoader nodes and ComfyUI's import rules.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from models.loading import CheckpointError, load_checkpoint, load_vae
from models.text_encoders import load_encoder_files
from models.unet_files import load_unet_file
from tests.fixtures import dit_layouts as L

F8 = torch.float8_e4m3fn


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4) -> bool:
    """Equal up to float32 summation order, relative to the output's scale."""
    return bool((a - b).abs().max() <= rtol * (1.0 + b.abs().max()))


def sd3_out(model: Any, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    config = model.config
    x = torch.randn(1, config.in_channels, 8, 8, generator=g)
    text = torch.randn(1, 5, config.joint_attention_dim, generator=g)
    pooled = torch.randn(1, config.pooled_projection_dim, generator=g)
    with torch.no_grad():
        return model(
            hidden_states=x,
            encoder_hidden_states=text,
            pooled_projections=pooled,
            timestep=torch.tensor([500.0]),
        ).sample


def flux_out(model: Any, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    config = model.config
    x = torch.randn(1, 16, config.in_channels, generator=g)
    text = torch.randn(1, 5, config.joint_attention_dim, generator=g)
    pooled = torch.randn(1, config.pooled_projection_dim, generator=g)
    ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(4.0), torch.arange(4.0), indexing="ij"), -1)
    guidance = torch.tensor([3.5]) if config.guidance_embeds else None
    with torch.no_grad():
        return model(
            hidden_states=x,
            encoder_hidden_states=text,
            pooled_projections=pooled,
            timestep=torch.tensor([0.7]),
            img_ids=ids.reshape(-1, 3),
            txt_ids=torch.zeros(5, 3),
            guidance=guidance,
        ).sample


def encoder_out(model: Any) -> tuple[torch.Tensor, ...]:
    ids = torch.tensor([[49406, 320, 1125, 539, 320, 2368, 49407, 49407]])
    if model.__class__.__name__ == "T5EncoderModel":
        ids = torch.tensor([[21820, 296, 1, 0, 0]])
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    tensors = [out.last_hidden_state, out.hidden_states[-2]]
    for name in ("text_embeds", "pooler_output"):
        if getattr(out, name, None) is not None:
            tensors.append(getattr(out, name))
    return tuple(tensors)


# --------------------------------------------------------------------------- tokenizer


def test_t5_tokenizer_from_the_package_tokenizes_as_t5() -> None:
    from models.tokenizer import packaged_t5_folder, t5_tokenizer

    assert packaged_t5_folder() is not None
    tokenizer = t5_tokenizer()
    assert tokenizer("hello world").input_ids == [21820, 296, 1]  # t5-v1_1's ids
    assert tokenizer("A photo of a cat").input_ids == [71, 1202, 13, 3, 9, 1712, 1]
    assert len(tokenizer) == 32100  # 32000 pieces and the 100 sentinels


def test_t5_tokenizer_prefers_a_diffusers_folders_files(tmp_path: Path) -> None:
    from models.tokenizer import packaged_t5_folder, t5_tokenizer, t5_tokenizer_folder

    folder = tmp_path / "my-sd3"
    shutil.copytree(packaged_t5_folder(), folder / "tokenizer_3")
    assert t5_tokenizer_folder(folder) == folder / "tokenizer_3"
    assert t5_tokenizer(folder)("hello world").input_ids == [21820, 296, 1]
    (tmp_path / "no-t5" / "tokenizer_2").mkdir(parents=True)  # an SDXL-like folder: no T5 files
    assert t5_tokenizer_folder(tmp_path / "no-t5") == packaged_t5_folder()


def test_t5_tokenizer_missing_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import models.tokenizer as tokenizer

    monkeypatch.setattr(tokenizer, "packaged_t5_folder", lambda: None)
    with pytest.raises(tokenizer.TokenizerUnavailable) as caught:
        tokenizer.t5_tokenizer()
    message = str(caught.value)
    assert "diffsynth" in message and "pip install --no-deps diffsynth==1.1.7" in message
    assert "bash setup.sh" in message and "diffusers folder" in message
    with pytest.raises(tokenizer.TokenizerUnavailable, match="my-flux has no T5 tokenizer files"):
        tokenizer.t5_tokenizer(tmp_path / "my-flux")


# --------------------------------------------------------------------------- shipped configs


@pytest.mark.parametrize(
    ("folder", "scale", "shift", "scheduler"),
    [
        ("sd3-medium", 1.5305, 0.0609, {"shift": 3.0}),
        ("sd35-medium", 1.5305, 0.0609, {"shift": 3.0}),
        ("sd35-large", 1.5305, 0.0609, {"shift": 3.0}),
        ("flux-dev", 0.3611, 0.1159, {"use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15}),
        ("flux-schnell", 0.3611, 0.1159, {"shift": 1.0, "use_dynamic_shifting": False}),
    ],
)
def test_shipped_config_folders_build(
    folder: str, scale: float, shift: float, scheduler: dict[str, Any]
) -> None:
    import json

    from diffusers import AutoencoderKL, FluxTransformer2DModel, SD3Transformer2DModel
    from transformers import CLIPTextConfig, T5Config

    from models.loading import CONFIGS

    base = CONFIGS / folder
    assert (base / "README.md").is_file()
    cls = FluxTransformer2DModel if folder.startswith("flux") else SD3Transformer2DModel
    with torch.device("meta"):
        cls.from_config(json.loads((base / "transformer" / "config.json").read_text()))
        vae = AutoencoderKL.from_config(json.loads((base / "vae" / "config.json").read_text()))
    assert (vae.config.latent_channels, vae.config.scaling_factor, vae.config.shift_factor) == (
        16,
        scale,
        shift,
    )
    sched = json.loads((base / "scheduler" / "scheduler_config.json").read_text())
    assert sched["_class_name"] == "FlowMatchEulerDiscreteScheduler"
    assert {k: sched[k] for k in scheduler} == scheduler
    clip = CLIPTextConfig.from_json_file(str(base / "text_encoder" / "config.json"))
    assert clip.hidden_size == 768
    t5 = T5Config.from_json_file(
        str(base / ("text_encoder_2" if folder.startswith("flux") else "text_encoder_3") / "config.json")
    )
    assert (t5.d_model, t5.d_ff, t5.num_heads, t5.num_layers) == (4096, 10240, 64, 24)


# --------------------------------------------------------------------------- conversion


def test_flux_converter_matches_diffusers_at_flux_width() -> None:
    """At Flux's own width (3072, where diffusers' converter applies), ours gives the same tensors:
    the tiny model's keys with every tensor 24 times as long on its first axis (3072 = 24 x 128)."""
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    from models.dit_files import flux_to_diffusers

    tiny = L.transformer_only_state("flux", L.tiny_flux_transformer(0))
    g = torch.Generator().manual_seed(0)
    wide = {k: torch.randn(v.shape[0] * 24, 1, generator=g) for k, v in tiny.items()}
    ours = flux_to_diffusers(wide)
    theirs = convert_flux_transformer_checkpoint_to_diffusers(dict(wide))
    assert sorted(ours) == sorted(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


# --------------------------------------------------------------------------- transformer-only files


@pytest.mark.parametrize(
    ("kwargs", "variant"),
    [
        ({}, "sd3-medium"),
        ({"qk_norm": "rms_norm", "dual_attention_layers": (0,), "heads": 2}, "sd35-medium"),
        ({"qk_norm": "rms_norm", "num_layers": 3}, "sd35-large"),
    ],
)
def test_sd3_transformer_file_loads_as_written(tmp_path: Path, kwargs: dict[str, Any], variant: str) -> None:
    model = L.tiny_sd3_transformer(1, **kwargs)
    path = L.write(L.transformer_only_state("sd3", model), tmp_path / "sd3.safetensors")
    checkpoint = load_unet_file(path)
    assert (checkpoint.family, checkpoint.extra["variant"], checkpoint.extra["encoders"]) == (
        "sd3",
        variant,
        (),
    )
    assert checkpoint.text_encoders == [] and checkpoint.vae_scale == 8
    assert checkpoint.scheduler_config["shift"] == 3.0
    assert close(sd3_out(checkpoint.unet), sd3_out(model))


@pytest.mark.parametrize(("guidance", "variant"), [(True, "flux-dev"), (False, "flux-schnell")])
def test_flux_transformer_file_loads_as_written(tmp_path: Path, guidance: bool, variant: str) -> None:
    model = L.tiny_flux_transformer(2, guidance=guidance)
    path = L.write(L.transformer_only_state("flux", model), tmp_path / "flux1.safetensors")
    checkpoint = load_unet_file(path)
    assert (checkpoint.family, checkpoint.extra["variant"]) == ("flux", variant)
    assert checkpoint.scheduler_config["use_dynamic_shifting"] is guidance
    assert close(flux_out(checkpoint.unet), flux_out(model))


def test_sidecar_config_gives_what_weights_cannot_say(tmp_path: Path) -> None:
    """SD3 without qk-norm does not show its head size, nor Flux its rotary axes: a transformer
    config in ``<stem>.config`` next to the file gives them (here: H2-style 8- and 16-wide heads)."""
    import json

    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    torch.manual_seed(0)
    sd3 = SD3Transformer2DModel(
        sample_size=8, patch_size=1, in_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=4,
        caption_projection_dim=32, joint_attention_dim=32, pooled_projection_dim=48, out_channels=4,
        pos_embed_max_size=16,
    ).eval()  # fmt: skip
    path = L.write(L.transformer_only_state("sd3", sd3), tmp_path / "odd-sd3.safetensors")
    with pytest.raises(CheckpointError, match="odd-sd3.config"):
        load_unet_file(path)
    (tmp_path / "odd-sd3.config").mkdir()
    (tmp_path / "odd-sd3.config" / "config.json").write_text(json.dumps(dict(sd3.config)))
    assert close(sd3_out(load_unet_file(path).unet), sd3_out(sd3))

    flux = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=(4, 4, 8),
    ).eval()  # fmt: skip
    path = L.write(L.transformer_only_state("flux", flux), tmp_path / "odd-flux.safetensors")
    with pytest.raises(CheckpointError, match="rotary axes"):
        load_unet_file(path)
    (tmp_path / "odd-flux.config" / "transformer").mkdir(parents=True)
    (tmp_path / "odd-flux.config" / "transformer" / "config.json").write_text(json.dumps(dict(flux.config)))
    shutil.copytree(Path("models/configs/flux-schnell/scheduler"), tmp_path / "odd-flux.config" / "scheduler")
    shutil.copytree(Path("models/configs/flux-schnell/vae"), tmp_path / "odd-flux.config" / "vae")
    assert close(flux_out(load_unet_file(path).unet), flux_out(flux))


# --------------------------------------------------------------------------- fp8


def test_fp8_flux_file_stays_fp8_and_computes_its_rounded_weights(tmp_path: Path) -> None:
    model = L.tiny_flux_transformer(3)
    path = L.write(L.transformer_only_state("flux", model), tmp_path / "flux1-dev-fp8.safetensors", F8)
    loaded = load_unet_file(path).unet
    params = dict(loaded.named_parameters())
    assert params["transformer_blocks.0.attn.to_q.weight"].dtype == F8
    assert params["single_transformer_blocks.0.proj_mlp.weight"].dtype == F8
    assert (
        params["transformer_blocks.0.attn.norm_q.weight"].dtype == torch.float32
    )  # norms compute as they are
    # the oracle: the fp32 model with the weights the file rounded (matrices) and the loader stores
    # in fp8 (every weight of a layer kept in fp8, biases too) rounded to fp8
    reference = L.tiny_flux_transformer(3)
    with torch.no_grad():
        for name, param in reference.named_parameters():
            if param.dim() >= 2 or params[name].dtype == F8:
                param.copy_(param.to(F8).float())
    assert close(flux_out(loaded), flux_out(reference), rtol=1e-3)
    assert not close(flux_out(loaded), flux_out(model), rtol=1e-3)  # fp8 rounding shows


@pytest.mark.parametrize(("choice", "dtype"), [("fp8_e4m3fn", F8), ("fp8_e5m2", torch.float8_e5m2)])
def test_weight_dtype_stores_any_file_in_fp8(tmp_path: Path, choice: str, dtype: torch.dtype) -> None:
    model = L.tiny_sd3_transformer(4)
    path = L.write(L.transformer_only_state("sd3", model), tmp_path / "sd3.safetensors")
    loaded = load_unet_file(path, weight_dtype=choice)
    assert loaded.unet.transformer_blocks[0].attn.to_q.weight.dtype == dtype
    assert loaded.extra["storage_dtype"] == str(dtype)
    params = dict(loaded.unet.named_parameters())
    reference = L.tiny_sd3_transformer(4)  # its weights rounded where the loader keeps them in fp8
    with torch.no_grad():
        for name, param in reference.named_parameters():
            if params[name].dtype == dtype:
                param.copy_(param.to(dtype).float())
    assert close(sd3_out(loaded.unet), sd3_out(reference), rtol=1e-3)
    with pytest.raises(CheckpointError, match="weight_dtype must be one of"):
        load_unet_file(path, weight_dtype="int4")


# --------------------------------------------------------------------------- all-in-one checkpoints


@pytest.fixture(scope="module")
def sd3_parts() -> dict[str, Any]:
    return {
        "transformer": L.tiny_sd3_transformer(5, qk_norm="rms_norm"),
        "vae": L.tiny_vae16(5),
        "clip_l": L.tiny_clip("clip_l", 5),
        "clip_g": L.tiny_clip("clip_g", 6),
        "t5": L.tiny_t5(7),
    }


@pytest.mark.parametrize("with_t5", [True, False])
def test_sd3_all_in_one_checkpoint(tmp_path: Path, sd3_parts: dict[str, Any], with_t5: bool) -> None:
    roles = ("clip_l", "clip_g", "t5") if with_t5 else ("clip_l", "clip_g")
    encoders = {r: sd3_parts[r] for r in roles}
    state = L.all_in_one_state("sd3", sd3_parts["transformer"], sd3_parts["vae"], encoders)
    checkpoint = load_checkpoint(L.write(state, tmp_path / "sd3.5_large.safetensors"))
    assert (checkpoint.family, checkpoint.extra["encoders"]) == ("sd3", roles)
    assert close(sd3_out(checkpoint.unet), sd3_out(sd3_parts["transformer"]))
    for loaded, role in zip(checkpoint.text_encoders, roles, strict=True):
        assert all(
            close(a, b) for a, b in zip(encoder_out(loaded), encoder_out(sd3_parts[role]), strict=True)
        )
    assert [t.__class__.__name__ for t in checkpoint.tokenizers][:2] == ["CLIPTokenizer"] * 2
    assert checkpoint.tokenizers[1].pad_token == "!"
    latents = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert close(checkpoint.vae.decode(latents).sample, sd3_parts["vae"].decode(latents).sample)
    assert (checkpoint.vae.config.scaling_factor, checkpoint.vae.config.shift_factor) == (1.5305, 0.0609)


def test_flux_all_in_one_checkpoint(tmp_path: Path) -> None:
    transformer, vae = L.tiny_flux_transformer(8), L.tiny_vae16(8)
    clip_l, t5 = L.tiny_clip("clip_l", 8, projection=False), L.tiny_t5(8)
    state = L.all_in_one_state("flux", transformer, vae, {"clip_l": clip_l, "t5": t5})
    checkpoint = load_checkpoint(L.write(state, tmp_path / "flux1-dev-fp8.safetensors", F8))
    assert (checkpoint.family, checkpoint.extra["encoders"]) == ("flux", ("clip_l", "t5"))
    assert checkpoint.unet.transformer_blocks[0].attn.to_q.weight.dtype == F8
    assert checkpoint.text_encoders[0].__class__.__name__ == "CLIPTextModel"  # Flux pools without projection
    assert checkpoint.tokenizers[1]("hello world").input_ids == [21820, 296, 1]
    assert (checkpoint.vae.config.scaling_factor, checkpoint.vae.config.shift_factor) == (0.3611, 0.1159)


def test_transformer_only_file_as_a_checkpoint_says_where_it_goes(tmp_path: Path) -> None:
    path = L.write(
        L.transformer_only_state("flux", L.tiny_flux_transformer(0)), tmp_path / "flux1-dev.safetensors"
    )
    with pytest.raises(CheckpointError, match="models/unet .*UNETLoader.*DualCLIPLoader"):
        load_checkpoint(path)


# --------------------------------------------------------------------------- detection


def test_each_family_is_recognised_from_its_keys() -> None:
    from models.dit_files import detect

    def kind(state: dict[str, Any]) -> tuple[str, str]:
        found = detect(state)
        return found.family, found.variant

    assert kind(L.transformer_only_state("sd3", L.tiny_sd3_transformer(0))) == ("sd3", "sd3-medium")
    flux = L.transformer_only_state("flux", L.tiny_flux_transformer(0, guidance=False))
    assert kind({"model.diffusion_model." + k: v for k, v in flux.items()}) == ("flux", "flux-schnell")
    # published shapes go through diffusers' own detector
    real_sd3 = {
        "joint_blocks.0.context_block.adaLN_modulation.1.bias": torch.zeros(9216),
        "pos_embed": torch.zeros(1, 147456, 1),
    }
    assert detect(real_sd3).found == "sd35_medium"
    fill = {
        "double_blocks.0.img_attn.norm.key_norm.scale": torch.zeros(1),
        "guidance_in.in_layer.bias": torch.zeros(1),
        "img_in.weight": torch.zeros(2, 384),
    }
    with pytest.raises(CheckpointError, match="FLUX.1 Fill"):
        detect(fill)


def test_unknown_files_are_refused_naming_what_was_found(tmp_path: Path) -> None:
    path = L.write(
        {"mystery.layer.weight": torch.zeros(2, 2), "other.bias": torch.zeros(2)},
        tmp_path / "odd.safetensors",
    )
    with pytest.raises(
        CheckpointError, match="odd.safetensors holds no UNet or diffusion transformer.*mystery.layer.weight"
    ):
        load_unet_file(path)
    with pytest.raises(CheckpointError, match="keys begin mystery.layer.weight"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="odd.safetensors is neither a CLIP nor a T5.*mystery"):
        load_encoder_files([path], "flux")


# --------------------------------------------------------------------------- VAE files


@pytest.mark.parametrize(
    ("name", "factors"), [("ae.safetensors", (0.3611, 0.1159)), ("sd3_vae.safetensors", (1.5305, 0.0609))]
)
def test_16_channel_vae_file(tmp_path: Path, name: str, factors: tuple[float, float]) -> None:
    from tests.fixtures.original_layout import vae_to_original

    vae = L.tiny_vae16(9)
    path = L.write(vae_to_original(vae.state_dict(), vae.config), tmp_path / name)
    loaded = load_vae(path)
    assert (loaded.config.latent_channels, loaded.config.scaling_factor, loaded.config.shift_factor) == (
        16,
        *factors,
    )
    latents = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert close(loaded.decode(latents).sample, vae.decode(latents).sample)
    diffusers_names = L.write(vae.state_dict(), tmp_path / "diffusion_pytorch_model.safetensors")
    with torch.no_grad():
        assert close(load_vae(diffusers_names).decode(latents).sample, vae.decode(latents).sample)


# --------------------------------------------------------------------------- text encoder files


@pytest.fixture(scope="module")
def encoder_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("text_encoders")
    models = {"clip_l": L.tiny_clip("clip_l", 10), "clip_g": L.tiny_clip("clip_g", 11), "t5": L.tiny_t5(12)}
    L.write(L.clip_file_state(models["clip_l"]), folder / "clip_l.safetensors")
    L.write(L.clip_file_state(models["clip_g"]), folder / "clip_g.safetensors")
    L.write(L.t5_file_state(models["t5"]), folder / "t5xxl_fp16.safetensors")
    L.write(L.t5_file_state(models["t5"]), folder / "t5xxl_fp8_e4m3fn.safetensors", F8)
    return folder, models


def test_three_encoder_files_load_in_sd3_order(encoder_files: tuple[Path, dict[str, Any]]) -> None:
    folder, models = encoder_files
    names = ("t5xxl_fp16", "clip_g", "clip_l")  # any order
    checkpoint = load_encoder_files([folder / f"{n}.safetensors" for n in names], "sd3")
    assert checkpoint.extra["encoders"] == ("clip_l", "clip_g", "t5")
    assert checkpoint.unet is None and checkpoint.vae is None
    for loaded, role in zip(checkpoint.text_encoders, checkpoint.extra["encoders"], strict=True):
        assert all(close(a, b) for a, b in zip(encoder_out(loaded), encoder_out(models[role]), strict=True))
    assert checkpoint.tokenizers[2]("hello world").input_ids == [21820, 296, 1]


def test_flux_encoders_and_fp8_t5(encoder_files: tuple[Path, dict[str, Any]]) -> None:
    folder, models = encoder_files
    checkpoint = load_encoder_files(
        [folder / "t5xxl_fp8_e4m3fn.safetensors", folder / "clip_l.safetensors"], "flux"
    )
    assert checkpoint.extra["encoders"] == ("clip_l", "t5")
    clip, t5 = checkpoint.text_encoders
    assert clip.__class__.__name__ == "CLIPTextModel"
    assert t5.encoder.block[0].layer[0].SelfAttention.q.weight.dtype == F8
    reference = L.tiny_t5(12)
    with torch.no_grad():
        for param in reference.parameters():
            if param.dim() >= 2:
                param.copy_(param.to(F8).float())
    assert close(encoder_out(t5)[0], encoder_out(reference)[0], rtol=1e-3)


def test_encoder_roles_are_checked(encoder_files: tuple[Path, dict[str, Any]]) -> None:
    folder, _ = encoder_files
    with pytest.raises(CheckpointError, match="clip_g.*flux model does not use"):
        load_encoder_files([folder / "clip_g.safetensors", folder / "clip_l.safetensors"], "flux")
    with pytest.raises(CheckpointError, match="two t5 encoders"):
        load_encoder_files(
            [folder / "t5xxl_fp16.safetensors", folder / "t5xxl_fp8_e4m3fn.safetensors"], "sd3"
        )
    one = load_encoder_files([folder / "t5xxl_fp16.safetensors"], "sd3")  # CLIPLoader type sd3: one of three
    assert one.extra["encoders"] == ("t5",)


# --------------------------------------------------------------------------- nodes and ComfyUI import


def test_loader_nodes(tmp_path: Path, encoder_files: tuple[Path, dict[str, Any]]) -> None:
    from models.manager import ModelManager
    from nodes.base import CancelToken, Context, NodeInputError, RunSettings
    from nodes.registry import default_registry
    from tests.fixtures.services import services_over

    folder, _ = encoder_files
    models = tmp_path / "models"
    shutil.copytree(folder, models / "text_encoders")
    L.write(
        L.transformer_only_state("flux", L.tiny_flux_transformer(0, guidance=False)),
        models / "diffusion_models" / "flux1-schnell.safetensors",
    )
    manager = ModelManager(device="cpu")
    ctx = Context(
        node_id="n", node_type="X", run_id="t", seed=1,
        settings=RunSettings(services=services_over(models, manager=manager), output_dir=tmp_path),
        cancel_token=CancelToken(), emit=lambda e: None,
    )  # fmt: skip
    registry = default_registry()

    def run(type_: str, **inputs: Any) -> Any:
        return registry.get(type_)().run(ctx, **inputs)

    clip = run(
        "DualCLIPLoader", clip_name1="clip_l.safetensors", clip_name2="t5xxl_fp16.safetensors", type="flux"
    )["clip"]
    assert clip.checkpoint.family == "flux" and clip.checkpoint.get().extra["encoders"] == ("clip_l", "t5")
    names = ("clip_g.safetensors", "t5xxl_fp16.safetensors", "clip_l.safetensors")
    clip = run("TripleCLIPLoader", clip_name1=names[0], clip_name2=names[1], clip_name3=names[2])["clip"]
    assert clip.checkpoint.get().extra["encoders"] == ("clip_l", "clip_g", "t5")
    clip = run("CLIPLoader", clip_name="t5xxl_fp16.safetensors", type="sd3")["clip"]
    assert clip.checkpoint.get().extra["encoders"] == ("t5",)
    with pytest.raises(NodeInputError) as caught:
        run("DualCLIPLoader", clip_name1="clip_l.safetensors", clip_name2="clip_g.safetensors", type="flux")
    assert caught.value.input_name == "clip_name2"
    model = run("UNETLoader", unet_name="flux1-schnell.safetensors", weight_dtype="fp8_e4m3fn")["model"]
    loaded = model.checkpoint.get()
    assert loaded.family == "flux" and loaded.unet.transformer_blocks[0].attn.to_q.weight.dtype == F8


def test_comfy_import_of_the_loaders() -> None:
    from comfy_import import convert, read_prompt

    cl, g, t5 = "clip_l.safetensors", "clip_g.safetensors", "t5xxl_fp16.safetensors"
    api = {
        "1": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": "f.safetensors", "weight_dtype": "fp8_e4m3fn"},
        },
        "2": {
            "class_type": "DualCLIPLoader",
            "inputs": {"clip_name1": cl, "clip_name2": t5, "type": "flux", "device": "default"},
        },
        "3": {
            "class_type": "TripleCLIPLoader",
            "inputs": {"clip_name1": cl, "clip_name2": g, "clip_name3": t5},
        },
        "4": {"class_type": "CLIPLoader", "inputs": {"clip_name": t5, "type": "sd3", "device": "default"}},
    }
    result = convert(read_prompt(api))
    nodes = result.workflow["nodes"]
    assert nodes["1"]["inputs"] == {"unet_name": "f.safetensors", "weight_dtype": "fp8_e4m3fn"}
    assert nodes["2"]["type"] == "DualCLIPLoader"
    assert nodes["2"]["inputs"] == {
        "clip_name1": "clip_l.safetensors",
        "clip_name2": "t5xxl_fp16.safetensors",
        "type": "flux",
    }
    assert nodes["3"]["inputs"]["clip_name3"] == "t5xxl_fp16.safetensors"
    assert nodes["4"]["inputs"]["type"] == "sd3"


# --------------------------------------------------------------------------- the bring-your-own examples


@pytest.mark.slow
@pytest.mark.parametrize("example", ["flux-schnell", "flux-dev", "sd35-medium"])
def test_bring_your_own_example_runs_headless(tmp_path: Path, example: str) -> None:
    """workflows/bring-your-own/<example>.json runs through ``app.py --models ROOT run`` with tiny
    stand-ins under the file names it asks for (64 px, 2 steps) and saves a picture."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    root = L.write_bring_your_own_models(tmp_path / "models")
    sets = ["lat.width=64", "lat.height=64", "s.steps=2"]
    if example == "flux-dev":
        sets += ["ms.width=64", "ms.height=64"]
    args = [sys.executable, str(repo / "app.py"), "--models", str(root), "run"]
    args += [str(repo / "workflows" / "bring-your-own" / f"{example}.json"), "--out", str(tmp_path / "out")]
    args += [item for value in sets for item in ("--set", value)]
    env = {**os.environ, "PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    (saved,) = (tmp_path / "out").glob("*.png")
    assert saved.stat().st_size > 0
