"""Loading Stable Diffusion checkpoints offline: diffusers folders and single files.

- A diffusers folder (``model_index.json``) loads with ``from_pretrained(local_files_only=True)``.
- A single ``.safetensors`` file in the original (CompVis / Stability) layout loads with
  ``from_single_file(config=<config-only folder>, local_files_only=True)``: the family
  (SD1.x, SD2.x, SDXL, and their inpainting variants) is read from the weights' keys by
  diffusers' own detector, and the configs come from ``models/configs/`` (shipped), or
  from a folder next to the checkpoint named ``<file stem>.config`` when there is one
  (for models whose shapes differ from the standard ones). The tokenizer is CLIP's,
  built offline (:mod:`models.tokenizer`).

Nothing here contacts a model hub.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.safety import check_weights_file, check_weights_folder, load_state_dict, plain_load_error

if TYPE_CHECKING:
    import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CONFIGS = Path(__file__).resolve().parent / "configs"
CONFIG_CACHE = Path(__file__).resolve().parent / ".cache" / "configs"

#: diffusers' model type (infer_diffusers_model_type) -> (our family, config folder)
SINGLE_FILE_FAMILIES: dict[str, tuple[str, str]] = {
    "v1": ("sd1", "sd15"),
    "inpainting": ("sd1", "sd15"),
    "v2": ("sd2", "sd2"),
    "inpainting_v2": ("sd2", "sd2"),
    "xl_base": ("sdxl", "sdxl"),
    "xl_inpaint": ("sdxl", "sdxl"),
}

PREDICTIONS = ("auto", "epsilon", "v_prediction")


class CheckpointError(Exception):
    """A checkpoint that cannot be loaded, said in plain words."""


@dataclass
class Checkpoint:
    """The parts of a Stable Diffusion checkpoint, as diffusers and transformers modules."""

    family: str  # "sd1" | "sd2" | "sdxl" | "sd3" | "flux" (see DIT_FAMILIES) | "svd"
    #: The denoiser: a UNet, or for the DiT families the transformer (SD3Transformer2DModel,
    #: FluxTransformer2DModel); the field keeps its name so every node handles both alike.
    unet: Any
    vae: Any
    text_encoders: list[Any]
    tokenizers: list[Any]
    scheduler_config: dict[str, Any]
    source: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


def load_checkpoint(
    path: Path,
    *,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    allow_pickle: bool = False,
    prediction: str = "auto",
) -> Checkpoint:
    """Load a diffusers folder or a single-file checkpoint."""
    import torch

    dtype = dtype or torch.float32
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")
    if path.is_dir():
        checkpoint = _load_folder(path, dtype, allow_pickle)
    else:
        checkpoint = _load_single_file(path, dtype, allow_pickle)
    if prediction != "auto":
        if prediction not in PREDICTIONS:
            raise CheckpointError(f"prediction must be one of {PREDICTIONS}, not {prediction!r}")
        from models.schedules import scheduler_config

        # through scheduler_config: a plain dict update is ignored when the saved config lacked the key
        checkpoint.scheduler_config = scheduler_config(
            checkpoint.scheduler_config, (("prediction_type", prediction),)
        )
    for module in (checkpoint.unet, checkpoint.vae, *checkpoint.text_encoders):
        module.to(device)
        module.eval()
        module.requires_grad_(False)
    return checkpoint


#: diffusers pipeline class (model_index.json's ``_class_name``) -> family, for the transformer
#: (DiT) families whose denoiser is ``transformer`` rather than ``unet``.
DIT_PIPELINES: dict[str, str] = {
    "StableDiffusion3Pipeline": "sd3",
    "StableDiffusion3Img2ImgPipeline": "sd3",
    "StableDiffusion3InpaintPipeline": "sd3",
    "FluxPipeline": "flux",
    "FluxImg2ImgPipeline": "flux",
    "FluxInpaintPipeline": "flux",
}

#: Families whose denoiser is a transformer over patches (flow matching), sampled by
#: :mod:`models.flow_sampling` instead of the UNet loop.
DIT_FAMILIES = ("sd3", "flux")


def _family_of_folder(path: Path, components: dict[str, Any]) -> str:
    try:
        class_name = json.loads((path / "model_index.json").read_text()).get("_class_name", "")
    except (OSError, json.JSONDecodeError):
        class_name = ""
    if class_name in DIT_PIPELINES:
        return DIT_PIPELINES[class_name]
    if components.get("text_encoder_2") is not None:
        return "sdxl"
    encoder = components.get("text_encoder")
    if encoder is not None and getattr(encoder.config, "hidden_size", 768) == 1024:
        return "sd2"
    return "sd1"


def _load_folder(path: Path, dtype: torch.dtype, allow_pickle: bool) -> Checkpoint:
    from diffusers import DiffusionPipeline

    index = path / "model_index.json"
    if not index.is_file():
        raise CheckpointError(f"{path.name} is a folder without model_index.json: not a diffusers model")
    try:
        spec = json.loads(index.read_text())
        if spec.get("_class_name") == "StableVideoDiffusionPipeline":
            raise CheckpointError(
                f"{path.name} is a Stable Video Diffusion checkpoint: "
                "load it with Image Only Checkpoint Loader"
            )
        extra: dict[str, Any] = {}
        for optional in ("safety_checker", "feature_extractor", "image_encoder"):
            if optional in spec:
                extra[optional] = None
        for name, value in spec.items():  # saved without a part ([null, null]: an SD3 without T5)
            if isinstance(value, list) and value == [None, None]:
                extra[name] = None
        use_safetensors = check_weights_folder(path, allow_pickle, skip=extra)  # parts not loaded
        pipe = DiffusionPipeline.from_pretrained(
            str(path), local_files_only=True, dtype=dtype, use_safetensors=use_safetensors, **extra
        )
    except (OSError, ValueError, json.JSONDecodeError, RuntimeError, pickle.UnpicklingError) as exc:
        raise CheckpointError(
            f"cannot load the diffusers folder {path.name}: {plain_load_error(exc)}"
        ) from None
    components = pipe.components
    return _from_components(components, _family_of_folder(path, components), str(path))


def _from_components(components: dict[str, Any], family: str, source: str) -> Checkpoint:
    names = ("text_encoder", "text_encoder_2", "text_encoder_3")
    encoders = [components[k] for k in names if components.get(k) is not None]
    tokenizer_names = ("tokenizer", "tokenizer_2", "tokenizer_3")
    tokenizers = [components[k] for k in tokenizer_names if components.get(k) is not None]
    denoiser = components.get("transformer") if family in DIT_FAMILIES else components.get("unet")
    if denoiser is None or components.get("vae") is None or not encoders:
        what = "transformer" if family in DIT_FAMILIES else "UNet"
        raise CheckpointError(f"{source} lacks a {what}, a VAE or a text encoder")
    return Checkpoint(
        family=family,
        unet=denoiser,
        vae=components["vae"],
        text_encoders=encoders,
        tokenizers=tokenizers,
        scheduler_config=dict(components["scheduler"].config),
        source=source,
        extra={"encoders": _encoder_roles(components, family)} if family in DIT_FAMILIES else {},
    )


def _encoder_roles(components: dict[str, Any], family: str) -> tuple[str, ...]:
    """The role of each text encoder a DiT folder holds, in ``text_encoders`` order (H2 reads it)."""
    roles = {"sd3": ("clip_l", "clip_g", "t5"), "flux": ("clip_l", "t5")}[family]
    names = ("text_encoder", "text_encoder_2", "text_encoder_3")
    return tuple(role for name, role in zip(names, roles, strict=False) if components.get(name) is not None)


def detect_family(state_dict: dict[str, Any]) -> tuple[str, str, int]:
    """(family, config folder name, UNet input channels) from a single file's keys."""
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    kind = infer_diffusers_model_type(state_dict)
    if "model.diffusion_model.input_blocks.0.0.weight" not in state_dict and kind in ("v1", "inpainting"):
        # diffusers answers "v1" for anything it does not know: say what the file holds instead
        keys = sorted(state_dict)[:3]
        raise CheckpointError(
            "this file is not a checkpoint of a family the studio knows (SD 1.x, 2.x, XL, SD3, Flux): "
            f"it has no UNet and its keys begin {', '.join(keys) or 'nowhere (it is empty)'}"
        )
    if kind not in SINGLE_FILE_FAMILIES:
        raise CheckpointError(
            f"this file looks like a {kind!r} model; the studio loads SD 1.x, SD 2.x and SDXL checkpoints"
        )
    family, folder = SINGLE_FILE_FAMILIES[kind]
    conv_in = state_dict.get("model.diffusion_model.input_blocks.0.0.weight")
    in_channels = int(conv_in.shape[1]) if conv_in is not None else 4
    return family, folder, in_channels


def config_folder(name: str, in_channels: int) -> Path:
    """The shipped config folder, or a copy with the UNet's input channels changed (inpainting: 9)."""
    base = CONFIGS / name
    unet_config = json.loads((base / "unet" / "config.json").read_text())
    if unet_config.get("in_channels") == in_channels:
        return base
    variant = CONFIG_CACHE / f"{name}-in{in_channels}"
    if not (variant / "unet" / "config.json").is_file():
        tmp = CONFIG_CACHE / f".{variant.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(base, tmp)
        unet_config["in_channels"] = in_channels
        (tmp / "unet" / "config.json").write_text(json.dumps(unet_config, indent=2))
        shutil.rmtree(variant, ignore_errors=True)
        tmp.rename(variant)
    return variant


def _load_single_file(path: Path, dtype: torch.dtype, allow_pickle: bool) -> Checkpoint:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from models.tokenizer import clip_tokenizer

    check_weights_file(path, allow_pickle)
    state = load_state_dict(path, allow_pickle=allow_pickle)
    from models.dit_files import is_dit, load_dit_checkpoint

    if is_dit(state):  # SD3 / SD3.5 / Flux all-in-one (models/dit_files.py)
        return load_dit_checkpoint(path, state, dtype=dtype)
    family, folder_name, in_channels = detect_family(state)
    del state
    sidecar = path.with_name(path.stem + ".config")
    config = sidecar if (sidecar / "model_index.json").is_file() else config_folder(folder_name, in_channels)
    kwargs: dict[str, Any] = {"config": str(config), "local_files_only": True, "torch_dtype": dtype}
    if family == "sdxl":
        kwargs.update(tokenizer=clip_tokenizer("<|endoftext|>"), tokenizer_2=clip_tokenizer("!"))
        cls: Any = StableDiffusionXLPipeline
    else:
        kwargs.update(
            tokenizer=clip_tokenizer("!" if family == "sd2" else "<|endoftext|>"),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        cls = StableDiffusionPipeline
    try:
        pipe = cls.from_single_file(str(path), **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError, pickle.UnpicklingError) as exc:
        raise CheckpointError(
            f"cannot load {path.name} as a {family} checkpoint: {plain_load_error(exc)}"
        ) from None
    return _from_components(pipe.components, family, str(path))


def weight_mismatch(expected: dict[str, Any], weights: dict[str, Any]) -> str | None:
    """Why ``weights`` do not fill a model whose state dict is ``expected`` exactly ("lacks X (1
    missing, 0 unknown, 0 misshapen)"), or None when they do. Used where models are built on the meta
    device and given the file's weights, so nothing is left randomly initialised."""
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    wrong = sorted(k for k in set(expected) & set(weights) if expected[k].shape != weights[k].shape)
    if not (missing or extra or wrong):
        return None
    shown = (missing or extra or wrong)[0]
    what = "lacks" if missing else ("has an unknown weight" if extra else "has a wrong shape for")
    return f"{what} {shown} ({len(missing)} missing, {len(extra)} unknown, {len(wrong)} misshapen)"


def load_controlnet(
    path: Path, *, device: str = "cpu", dtype: torch.dtype | None = None, allow_pickle: bool = False
) -> Any:
    """A ControlNet from a diffusers folder or a single file (SD 1.x or SDXL layout)."""
    from diffusers import ControlNetModel

    def default_config(state: dict[str, Any]) -> Path:
        xl = any("add_embedding" in k or "label_emb" in k for k in state)
        return CONFIGS / ("controlnet-sdxl" if xl else "controlnet-sd15")

    return _load_model(ControlNetModel, "ControlNet", path, default_config, device, dtype, allow_pickle)


def load_vae(
    path: Path, *, device: str = "cpu", dtype: torch.dtype | None = None, allow_pickle: bool = False
) -> Any:
    """A VAE from a diffusers folder or a single file (the original layout). A 16-channel file
    (Flux's ``ae.safetensors``, SD3's VAE) loads with its family's config (models/dit_files.py)."""
    from diffusers import AutoencoderKL

    path = Path(path)
    sidecar = path.with_name(path.stem + ".config")
    if (
        path.is_file()
        and not (sidecar / "config.json").is_file()
        and latent_channels_of(path, allow_pickle) == 16
    ):
        import torch

        from models.dit_files import load_vae_file

        try:
            vae = load_vae_file(
                path, load_state_dict(path, allow_pickle=allow_pickle), dtype or torch.float32
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"cannot load the VAE {path.name}: {plain_load_error(exc)}") from None
        return vae.to(device).eval().requires_grad_(False)
    return _load_model(
        AutoencoderKL, "VAE", path, lambda _: CONFIGS / "sd15" / "vae", device, dtype, allow_pickle
    )


#: Where a single VAE file keeps its decoder's input (its latent channels), by layout.
DECODER_INPUTS = (
    "decoder.conv_in.weight",
    "first_stage_model.decoder.conv_in.weight",
    "vae.decoder.conv_in.weight",
)


def latent_channels_of(path: Path, allow_pickle: bool) -> int | None:
    """A single VAE file's latent channels, read from its decoder's first convolution (only that
    tensor's shape is read from a safetensors file); None when the file has none."""
    check_weights_file(path, allow_pickle)
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                keys = set(handle.keys())
                key = next((k for k in DECODER_INPUTS if k in keys), None)
                return int(handle.get_slice(key).get_shape()[1]) if key else None
        except (OSError, ValueError, RuntimeError, StopIteration):
            return None  # unreadable: the normal loader says why
    state = load_state_dict(path, allow_pickle=allow_pickle)
    key = next((k for k in DECODER_INPUTS if k in state), None)
    return int(state[key].shape[1]) if key else None


def _load_model(
    cls: Any,
    what: str,
    path: Path,
    default_config: Any,
    device: str,
    dtype: torch.dtype | None,
    allow_pickle: bool,
) -> Any:
    """One diffusers model from its folder, or from a single file with a config folder (a sidecar
    ``<stem>.config`` next to the file, else ``default_config(state_dict)``)."""
    import torch

    dtype = dtype or torch.float32
    path = Path(path)
    try:
        if path.is_dir():
            use_safetensors = check_weights_folder(path, allow_pickle)
            model = cls.from_pretrained(
                str(path), local_files_only=True, dtype=dtype, use_safetensors=use_safetensors
            )
        else:
            check_weights_file(path, allow_pickle)
            sidecar = path.with_name(path.stem + ".config")
            if (sidecar / "config.json").is_file():
                config = sidecar
            else:
                config = default_config(load_state_dict(path, allow_pickle=allow_pickle))
            model = cls.from_single_file(str(path), config=str(config), local_files_only=True, dtype=dtype)
    except (OSError, ValueError, KeyError, RuntimeError, pickle.UnpicklingError) as exc:
        raise CheckpointError(f"cannot load the {what} {path.name}: {plain_load_error(exc)}") from None
    return model.to(device).eval().requires_grad_(False)


def with_loras(
    checkpoint: Checkpoint, loras: list[tuple[Path, float, float]], allow_pickle: bool
) -> Checkpoint:
    """A copy of ``checkpoint`` with LoRAs fused in (kohya or diffusers keys), each at
    (UNet strength, text encoder strength). The shared original is left untouched."""
    import copy

    from models.lora import LoraError, fuse, read_pairs

    # a UNet-only file (UNETLoader) has no text encoders, a text encoder file (CLIPLoader) no
    # UNet: the LoRA's layers for the part that is not there are left out, as ComfyUI does
    unet = copy.deepcopy(checkpoint.unet)
    encoders = [copy.deepcopy(e) for e in checkpoint.text_encoders]
    components = {
        "unet": unet,
        "text_encoder": encoders[0] if encoders else None,
        "text_encoder_2": encoders[1] if len(encoders) > 1 else None,
    }
    for path, unet_strength, clip_strength in loras:
        state = load_state_dict(path, allow_pickle=allow_pickle)
        strengths = {"unet": unet_strength, "text_encoder": clip_strength, "text_encoder_2": clip_strength}
        try:
            fuse(components, read_pairs(state, dict(unet.config) if unet is not None else None), strengths)
        except LoraError as exc:
            family = checkpoint.family
            raise CheckpointError(f"{path.name} is not a LoRA for this {family} model: {exc}") from None
    return Checkpoint(
        family=checkpoint.family,
        unet=unet,
        vae=checkpoint.vae,
        text_encoders=encoders,
        tokenizers=checkpoint.tokenizers,
        scheduler_config=checkpoint.scheduler_config,
        source=checkpoint.source + "+" + ",".join(p.name for p, _, _ in loras),
    )
