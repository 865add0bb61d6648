"""Loading a UNet alone: ComfyUI's ``models/unet`` and ``models/diffusion_models`` files.

Such a file holds only the denoising model, in one of two layouts:

- the original (LDM) names, usually without the checkpoint's ``model.diffusion_model.`` prefix
  (``input_blocks.0.0.weight``, ``middle_block.1...``), as ComfyUI and Stability save them;
- diffusers' ``UNet2DConditionModel`` names (``conv_in.weight``, ``down_blocks.0...``), or a
  diffusers UNet folder (``config.json`` and its weights).

The family is read from the weights' shapes: the width of the first cross-attention's keys (768:
SD 1.x, 1024: SD 2.x, 2048 with the size embedding: SDXL) and the input channels (9:
inpainting). The UNet is built from the shipped config folder of that family (models/configs)
or from a sidecar ``<file stem>.config`` folder (a UNet config, or a config-only pipeline
folder) for models whose shapes differ; the scheduler config comes from the same folder.
SD 2.x UNets take that folder's prediction type (v-prediction for the shipped one); use
ModelSamplingDiscrete for an epsilon model.

The diffusion transformers ComfyUI users keep in the same folders (SD3 / SD3.5 ``joint_blocks.*``,
Flux ``double_blocks.*`` / ``single_blocks.*``) are recognised by their keys and loaded by
models/dit_files.py. ``weight_dtype`` (ComfyUI's choices) keeps the weights in fp8 in memory,
upcast layer by layer when they run; "default" keeps an fp8 file in fp8 and anything else in the
studio's dtype.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from models.loading import CONFIGS, Checkpoint, CheckpointError, config_folder, weight_mismatch
from models.safety import check_weights_file, check_weights_folder, load_state_dict, plain_load_error

if TYPE_CHECKING:
    import torch

#: The prefix a whole checkpoint gives UNet weights (some UNet files keep it).
LDM_PREFIX = "model.diffusion_model."
#: Cross-attention width -> (family, shipped config folder).
FAMILIES_BY_WIDTH = {768: ("sd1", "sd15"), 1024: ("sd2", "sd2"), 2048: ("sdxl", "sdxl")}
_LDM_CROSS = re.compile(r"(?:input|output)_blocks\.\d+\.1\.transformer_blocks\.0\.attn2\.to_k\.weight$")
#: SDXL's size-and-crop embedding, in each layout.
LDM_SIZED, DIFFUSERS_SIZED = "label_emb.0.0.weight", "add_embedding.linear_1.weight"
_DIFFUSERS_CROSS = re.compile(r"blocks\.\d+\.attentions\.\d+\.transformer_blocks\.0\.attn2\.to_k\.weight$")


@dataclass(frozen=True)
class UnetLayout:
    """What a UNet file's weights say about it."""

    layout: str  # "ldm" | "diffusers"
    family: str | None  # None: not an SD family (the sidecar config must say)
    folder: str | None  # the shipped config folder of the family
    in_channels: int
    cross_width: int | None


def read_layout(state: dict[str, Any]) -> UnetLayout:
    """The layout and family of a UNet state dict (keys without the checkpoint prefix)."""
    if "input_blocks.0.0.weight" in state:
        layout, conv_in, pattern, sized = "ldm", "input_blocks.0.0.weight", _LDM_CROSS, LDM_SIZED
    elif "conv_in.weight" in state:
        layout, conv_in, pattern, sized = "diffusers", "conv_in.weight", _DIFFUSERS_CROSS, DIFFUSERS_SIZED
    else:
        raise CheckpointError(
            "holds no UNet or diffusion transformer weights (no input_blocks.0.0.weight, conv_in.weight, "
            f"joint_blocks or double_blocks; its keys begin {', '.join(sorted(state)[:3])}); "
            "a whole checkpoint goes in models/checkpoints and loads with CheckpointLoader"
        )
    in_channels = int(state[conv_in].shape[1])
    widths = [int(t.shape[1]) for k, t in state.items() if pattern.search(k)]
    width = widths[0] if widths else None
    family, folder = FAMILIES_BY_WIDTH.get(width, (None, None)) if width is not None else (None, None)
    if (family == "sdxl") != (sized in state):
        family, folder = None, None  # SDXL's width without its size embedding (or the reverse)
    return UnetLayout(layout, family, folder, in_channels, width)


def strip_prefix(state: dict[str, Any]) -> dict[str, Any]:
    """The UNet weights without a whole checkpoint's ``model.diffusion_model.`` prefix."""
    if any(k.startswith(LDM_PREFIX) for k in state):
        return {k[len(LDM_PREFIX) :]: v for k, v in state.items() if k.startswith(LDM_PREFIX)}
    return state


def _sidecar(path: Path) -> Path | None:
    """A ``<stem>.config`` folder next to the file: a UNet config, or a config-only pipeline."""
    folder = path.with_name(path.stem + ".config")
    if (folder / "unet" / "config.json").is_file():
        return folder
    if (folder / "config.json").is_file():
        return folder
    return None


def _parts(folder: Path) -> tuple[Path, Path | None, Path | None]:
    """(UNet config folder, scheduler folder, VAE config folder) of a config folder."""
    if (folder / "unet" / "config.json").is_file():
        scheduler = folder / "scheduler" if (folder / "scheduler").is_dir() else None
        vae = folder / "vae" if (folder / "vae" / "config.json").is_file() else None
        return folder / "unet", scheduler, vae
    return folder, None, None


def family_of_config(config: dict[str, Any]) -> str:
    """SD family of a UNet config (for a sidecar whose shapes are not the standard ones)."""
    if config.get("addition_embed_type") == "text_time":
        return "sdxl"
    return "sd2" if config.get("cross_attention_dim") == 1024 else "sd1"


def scheduler_config(folder: Path) -> dict[str, Any]:
    """A scheduler config as the scheduler's class reads it (defaults filled, as loading a
    checkpoint gives them)."""
    import diffusers

    raw = json.loads((folder / "scheduler_config.json").read_text())
    cls = getattr(diffusers, raw.get("_class_name", "PNDMScheduler"), diffusers.PNDMScheduler)
    return dict(cls.from_config(raw).config)


def _vae_shape(folder: Path) -> SimpleNamespace:
    """Stands in for the VAE a UNet file lacks: the sampler needs only its scale (the number of
    levels of the family's VAE)."""
    config = json.loads((folder / "config.json").read_text())
    return SimpleNamespace(config=SimpleNamespace(block_out_channels=list(config["block_out_channels"])))


def _build(config: dict[str, Any], weights: dict[str, Any], dtype: torch.dtype, name: str) -> Any:
    """A UNet2DConditionModel of ``config`` holding exactly ``weights`` (built without random
    initialisation: full-size UNets have billions of weights)."""
    import torch
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
    mismatch = weight_mismatch(unet.state_dict(), weights)
    if mismatch:
        raise CheckpointError(
            f"{name} {mismatch}: its shapes are not the detected family's; put a diffusers UNet config "
            f"in a folder named {Path(name).stem}.config next to it"
        )
    unet.load_state_dict({k: v.to(dtype) for k, v in weights.items()}, strict=True, assign=True)
    stuck = [n for n, t in [*unet.named_parameters(), *unet.named_buffers()] if t.is_meta]
    if stuck:
        raise CheckpointError(f"{name}: {stuck[0]} was not loaded")
    return unet


def load_unet_file(
    path: Path,
    *,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    allow_pickle: bool = False,
    weight_dtype: str = "default",
) -> Checkpoint:
    """A :class:`~models.loading.Checkpoint` holding only a UNet or a diffusion transformer (no
    VAE, no text encoders: those come from other loaders) and its family's scheduler config."""
    import torch

    from models.dit_files import is_dit, load_dit_transformer_file, storage_dtype_of

    dtype = dtype or torch.float32
    path = Path(path)
    if path.is_dir():
        return _load_folder(path, device, dtype, allow_pickle)
    check_weights_file(path, allow_pickle)
    try:
        state = load_state_dict(path, allow_pickle=allow_pickle)
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot read {path.name}: {plain_load_error(exc)}") from None
    if is_dit(state):
        return load_dit_transformer_file(path, state, device=device, dtype=dtype, weight_dtype=weight_dtype)
    state = strip_prefix(state)
    storage = storage_dtype_of(weight_dtype, state)
    try:
        found = read_layout(state)
    except CheckpointError as exc:
        raise CheckpointError(f"{path.name} {exc}") from None
    sidecar = _sidecar(path)
    if sidecar is not None:
        unet_folder, scheduler_folder, vae_folder = _parts(sidecar)
        config = json.loads((unet_folder / "config.json").read_text())
        family = family_of_config(config)
    elif found.family is not None and found.folder is not None:
        shipped = config_folder(found.folder, found.in_channels)
        unet_folder, scheduler_folder, vae_folder = _parts(shipped)
        config = json.loads((unet_folder / "config.json").read_text())
        family = found.family
    else:
        raise CheckpointError(
            f"{path.name} is not an SD 1.x, SD 2.x, SDXL UNet, SD3 or Flux transformer (its cross-attention "
            f"is {found.cross_width} wide); put a diffusers UNet config in {path.stem}.config next to it"
        )
    default = CONFIGS / {"sd1": "sd15", "sd2": "sd2", "sdxl": "sdxl"}[family]
    weights = state
    if found.layout == "ldm":
        from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

        prefixed = {LDM_PREFIX + k: v for k, v in state.items()}
        weights = convert_ldm_unet_checkpoint(prefixed, config)
    unet = _build(config, weights, dtype, path.name)
    if storage is not None:  # fp8 storage, upcast per layer when it runs
        unet.enable_layerwise_casting(storage_dtype=storage, compute_dtype=dtype)
    return _checkpoint(
        family,
        unet,
        scheduler_folder or default / "scheduler",
        vae_folder or default / "vae",
        str(path),
        device,
    )


def _load_folder(path: Path, device: str, dtype: torch.dtype, allow_pickle: bool) -> Checkpoint:
    """A diffusers UNet folder (``config.json`` with its weights)."""
    from diffusers import UNet2DConditionModel

    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path.name} is a folder without config.json: not a diffusers UNet")
    try:
        use_safetensors = check_weights_folder(path, allow_pickle)
        unet = UNet2DConditionModel.from_pretrained(
            str(path), local_files_only=True, dtype=dtype, use_safetensors=use_safetensors
        )
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise CheckpointError(f"cannot load the UNet folder {path.name}: {plain_load_error(exc)}") from None
    family = family_of_config(dict(unet.config))
    default = CONFIGS / {"sd1": "sd15", "sd2": "sd2", "sdxl": "sdxl"}[family]
    return _checkpoint(family, unet, default / "scheduler", default / "vae", str(path), device)


def _checkpoint(
    family: str, unet: Any, scheduler_folder: Path, vae_folder: Path, source: str, device: str
) -> Checkpoint:
    unet = unet.to(device).eval().requires_grad_(False)
    return Checkpoint(
        family=family,
        unet=unet,
        vae=_vae_shape(vae_folder),
        text_encoders=[],
        tokenizers=[],
        scheduler_config=scheduler_config(scheduler_folder),
        source=source,
    )
