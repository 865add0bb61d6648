"""Loading Stable Video Diffusion (image to video) offline: a diffusers folder or Stability's
single file.

- A diffusers ``StableVideoDiffusionPipeline`` folder: the spatio-temporal UNet, the VAE with
  the temporal decoder, the CLIP vision image encoder and the Euler scheduler's config, each
  loaded from its subfolder with ``local_files_only``.
- A single file in the original layout (``svd.safetensors``, ``svd_xt.safetensors``): the
  configs come from a ``<file stem>.config`` folder beside it when there is one, else from the
  shipped config-only folders ``models/configs/svd`` (14 frames) or ``models/configs/svd-xt``
  (25 frames, chosen when the file name says "xt"); the weights are renamed by
  :mod:`models.svd_keys` (diffusers has no single-file support for SVD).

Both give a :class:`models.loading.Checkpoint` of family ``"svd"``: ``unet`` the spatio-temporal
UNet, ``vae`` the temporal-decoder VAE, no text encoders, and the image encoder in
``extra["image_encoder"]``. A file or folder of another model is refused with what it is.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.loading import CONFIGS, Checkpoint, CheckpointError
from models.safety import check_weights_file, check_weights_folder, load_state_dict, plain_load_error
from models.svd_keys import SVD_MARKER, VISION_PREFIX, gather, unet_original_key, vae_original_key
from models.values import ModuleRef

if TYPE_CHECKING:
    import torch

PIPELINE = "StableVideoDiffusionPipeline"
IMAGE_ENCODER = "image_encoder"


def load_svd(
    path: Path, *, device: str = "cpu", dtype: torch.dtype | None = None, allow_pickle: bool = False
) -> Checkpoint:
    """An SVD checkpoint from a diffusers folder or an original-layout single file."""
    import torch

    dtype = dtype or torch.float32
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")
    checkpoint = _load_folder(path, allow_pickle) if path.is_dir() else _load_file(path, allow_pickle)
    for module in (checkpoint.unet, checkpoint.vae, checkpoint.extra[IMAGE_ENCODER]):
        module.to(device=device, dtype=dtype)
        module.eval()
        module.requires_grad_(False)
    return checkpoint


def _load_folder(path: Path, allow_pickle: bool) -> Checkpoint:
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPVisionModelWithProjection

    index = path / "model_index.json"
    try:
        kind = json.loads(index.read_text()).get("_class_name", "")
    except (OSError, json.JSONDecodeError):
        raise CheckpointError(
            f"{path.name} is a folder without model_index.json: not a diffusers model"
        ) from None
    if kind != PIPELINE:
        raise CheckpointError(
            f"{path.name} is a {kind or 'diffusers'} folder, not Stable Video Diffusion "
            f"({PIPELINE}); load image models with CheckpointLoader"
        )
    try:
        use_safetensors = check_weights_folder(path, allow_pickle, skip=("feature_extractor",))
        options: dict[str, Any] = {"local_files_only": True, "use_safetensors": use_safetensors}
        unet = UNetSpatioTemporalConditionModel.from_pretrained(str(path), subfolder="unet", **options)
        vae = AutoencoderKLTemporalDecoder.from_pretrained(str(path), subfolder="vae", **options)
        encoder = CLIPVisionModelWithProjection.from_pretrained(str(path / IMAGE_ENCODER), **options)
        scheduler = EulerDiscreteScheduler.from_pretrained(
            str(path), subfolder="scheduler", local_files_only=True
        )
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError) as exc:
        raise CheckpointError(f"cannot load the SVD folder {path.name}: {plain_load_error(exc)}") from None
    return _checkpoint(unet, vae, encoder, dict(scheduler.config), str(path))


def is_svd_state(state: dict[str, Any]) -> bool:
    """Whether a single file's keys are Stable Video Diffusion's (the UNet's temporal layers)."""
    return SVD_MARKER in state


def config_folder_for(path: Path) -> Path:
    """The config-only folder for a single file: ``<stem>.config`` beside it, else the shipped
    svd-xt (25 frames) when the name says xt, else svd (14 frames)."""
    sidecar = path.with_name(path.stem + ".config")
    if (sidecar / "unet" / "config.json").is_file():
        return sidecar
    return CONFIGS / ("svd-xt" if "xt" in path.stem.lower() else "svd")


def _load_file(path: Path, allow_pickle: bool) -> Checkpoint:
    check_weights_file(path, allow_pickle)
    state = load_state_dict(path, allow_pickle=allow_pickle)
    if not is_svd_state(state):
        raise CheckpointError(f"{path.name} is not a Stable Video Diffusion checkpoint: {_what_it_is(state)}")
    config = config_folder_for(path)
    try:
        unet, vae, encoder = _models_from_state(state, config)
        scheduler_config = _read_json(config / "scheduler" / "scheduler_config.json")
    except (KeyError, OSError, ValueError, RuntimeError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        raise CheckpointError(f"cannot load {path.name} as Stable Video Diffusion: {message}") from None
    return _checkpoint(unet, vae, encoder, scheduler_config, str(path))


def _what_it_is(state: dict[str, Any]) -> str:
    """A plain guess at what a non-SVD file holds, to say in the refusal."""
    if any(k.startswith("model.diffusion_model.") for k in state):
        return "it holds an image model (SD 1.x/2.x/XL UNet); load it with CheckpointLoader"
    sample = ", ".join(sorted(state)[:3])
    return f"its weights ({len(state)}, e.g. {sample}) are not SVD's UNet (model.diffusion_model.*)"


def _read_json(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def _build(cls: Any, config: dict[str, Any], state: dict[str, Any], original: Any, what: str) -> Any:
    """A diffusers model of ``config`` holding the original ``state``'s weights, built without
    random initialisation (its parameters are created empty and replaced)."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = cls.from_config(config)
    weights = gather(model.state_dict(), state, original, what)
    model.load_state_dict(weights, strict=True, assign=True)
    return model


def _models_from_state(state: dict[str, Any], config: Path) -> tuple[Any, Any, Any]:
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from models.clip_vision import from_open_clip

    unet_config = _read_json(config / "unet" / "config.json")
    vae_config = _read_json(config / "vae" / "config.json")
    unet = _build(
        UNetSpatioTemporalConditionModel, unet_config, state, unet_original_key(unet_config), "UNet"
    )
    vae = _build(AutoencoderKLTemporalDecoder, vae_config, state, vae_original_key(vae_config), "VAE")
    vision = from_open_clip(state, VISION_PREFIX)
    if not vision:
        raise KeyError(f"the file lacks the image encoder ({VISION_PREFIX}*)")
    vision_config = CLIPVisionConfig.from_json_file(str(config / IMAGE_ENCODER / "config.json"))
    with init_empty_weights():  # buffers (position ids) are still made for real
        encoder = CLIPVisionModelWithProjection(vision_config)
    weights = gather(encoder.state_dict(), vision, lambda key: key, "image encoder")
    encoder.load_state_dict(weights, strict=True, assign=True)
    return unet, vae, encoder


def _checkpoint(
    unet: Any, vae: Any, encoder: Any, scheduler_config: dict[str, Any], source: str
) -> Checkpoint:
    return Checkpoint(
        family="svd",
        unet=unet,
        vae=vae,
        text_encoders=[],
        tokenizers=[],
        scheduler_config=scheduler_config,
        source=source,
        extra={IMAGE_ENCODER: encoder},
    )


@dataclass(frozen=True, eq=False)
class ExtraRef(ModuleRef):
    """A model kept in a checkpoint's ``extra`` (an SVD checkpoint's image encoder, as CLIP_VISION):
    the manager's entry ``key``, item ``part`` of its ``extra``."""

    def get(self) -> Any:
        value = self.manager.get(self.key, self.load)
        return value.extra[self.part]
