"""Translations of ComfyUI constants into the studio's, for the table's ``values`` and ``adjust``:
sampler and scheduler names, seeds, scale, crop and pad settings, filename prefixes, colours,
Canny thresholds, UNet weight types and IP-Adapter weight types. Each takes ``warn`` and calls it
when the meaning changes."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from comfy_import.rules.base import Warn, is_int

#: The largest seed the studio's samplers take (ComfyUI's go up to 2**64 - 1).
SEED_MAX = 2**53 - 1

#: ComfyUI sampler names with an exact equivalent in the studio's Sampler.
SAMPLERS: dict[str, str] = {
    "euler": "euler",
    "euler_ancestral": "euler_ancestral",
    "ddim": "ddim",
    "ddpm": "ddpm",
    "dpmpp_2m": "dpmpp_2m",
    "uni_pc": "unipc",
    "uni_pc_bh2": "unipc",
    "lcm": "lcm",
}
#: Schedulers that are (close to) the default schedule of our samplers.
PLAIN_SCHEDULERS = frozenset({"normal", "simple", "sgm_uniform"})


def closest_sampler(name: str) -> str:
    """Our sampler nearest to a ComfyUI one without an exact equivalent."""
    if name.startswith("dpmpp"):
        return "dpmpp_2m"
    if "ancestral" in name:
        return "euler_ancestral"
    if name.startswith("uni_pc"):
        return "unipc"
    if name.startswith("ddim"):
        return "ddim"
    return "euler"  # heun, dpm_2, lms, ipndm, deis, euler_cfg_pp, ...


def map_sampler(sampler_name: Any, scheduler: Any, warn: Warn) -> str:
    """The studio Sampler's ``sampler`` for a ComfyUI sampler_name + scheduler pair."""
    if not isinstance(sampler_name, str):
        warn(f"sampler_name {short(sampler_name)} is not a sampler name; using 'euler'")
        return "euler"
    sampler = SAMPLERS.get(sampler_name)
    if sampler is None:
        sampler = closest_sampler(sampler_name)
        warn(f"sampler {sampler_name!r} has no equivalent; using the closest, {sampler!r}")
    if sampler == "dpmpp_2m" and scheduler == "karras":
        return "dpmpp_2m_karras"
    if isinstance(scheduler, str) and scheduler not in PLAIN_SCHEDULERS:
        warn(f"scheduler {scheduler!r} has no equivalent for {sampler!r}; its own schedule is used")
    return sampler


def custom_sampling_names() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(K_SAMPLERS, SCHEDULERS) of SamplerSelect and BasicScheduler; empty if not installed."""
    try:
        from models.schedules import K_SAMPLERS, SCHEDULERS
    except ImportError:
        return (), ()
    return tuple(K_SAMPLERS), tuple(SCHEDULERS)


def exact_pair(sampler_name: Any, scheduler: Any) -> bool:
    """Whether the studio's Sampler reproduces this ComfyUI sampler + scheduler pair."""
    warnings: list[str] = []
    map_sampler(sampler_name, scheduler, warnings.append)
    return not warnings


def sampler_inputs(values: Mapping[str, Any], warn: Warn) -> dict[str, Any]:
    return {"sampler": map_sampler(values.get("sampler_name"), values.get("scheduler", "normal"), warn)}


def seed_value(value: Any, warn: Warn) -> Any:
    if is_int(value) and value > SEED_MAX:
        reduced = value % (SEED_MAX + 1)
        warn(f"seed {value} is above the studio's largest ({SEED_MAX}); using {reduced}")
        return reduced
    return value


def enable(value: Any, warn: Warn) -> Any:
    """ComfyUI's "enable"/"disable" combo as a boolean."""
    if value in ("enable", "disable"):
        return value == "enable"
    if isinstance(value, bool):
        return value
    warn(f"{short(value)} is neither 'enable' nor 'disable'; using 'enable'")
    return True


_SCALE_METHODS = {
    "nearest-exact": "nearest",
    "bilinear": "bilinear",
    "bicubic": "bicubic",
    "lanczos": "lanczos",
    "area": "bilinear",
}


def scale_method(value: Any, warn: Warn) -> Any:
    method = _SCALE_METHODS.get(value) if isinstance(value, str) else None
    if method is None:
        warn(f"upscale_method {value!r} has no equivalent; using 'bilinear'")
        return "bilinear"
    if value == "area":
        warn("upscale_method 'area' has no equivalent; using 'bilinear'")
    return method


def crop_mode(value: Any, warn: Warn) -> str:
    if value not in ("disabled", "center"):
        warn(f"crop {value!r} has no equivalent; stretching")
    return "fill" if value == "center" else "stretch"


def scale_checks(values: Mapping[str, Any], warn: Warn) -> dict[str, Any]:
    for name in ("width", "height"):
        if values.get(name) == 0:
            warn(f"{name} 0 (keep the aspect ratio) has no equivalent; give a size")
    return {}


def pad_checks(values: Mapping[str, Any], warn: Warn) -> dict[str, Any]:
    feathering = values.get("feathering", 0)
    if feathering:
        warn(f"feathering {feathering} is dropped: ImagePad's mask has a hard edge")
    return {}


#: What SaveImage accepts as a prefix (the same as nodes/image_io.py's ``_PREFIX``).
PREFIX = re.compile(r"^[\w\- .]+(/[\w\- .]+)*$")


def clean_prefix(value: Any, warn: Warn) -> Any:
    """A ComfyUI filename prefix our SaveImage takes: %tokens% and odd characters removed."""
    if not isinstance(value, str):
        return value
    text = re.sub(r"%[^%]*%", "", value)
    text = re.sub(r"[^\w\- ./]", "", text.replace("\\", "/"))
    parts = [p.strip() for p in text.split("/")]
    parts = [p for p in parts if p and p not in (".", "..")]
    cleaned = "/".join(parts) or "ComfyUI"
    if cleaned != value:
        warn(f"filename_prefix {value!r} becomes {cleaned!r} (the studio takes letters, digits, - _ . /)")
    return cleaned


def checkpoint_prefix(value: Any, warn: Warn) -> Any:
    """CheckpointSave's prefix: ComfyUI's default "checkpoints/..." loses the folder, which
    the studio's CheckpointSave adds itself (OUTPUT/checkpoints/)."""
    cleaned = clean_prefix(value, warn)
    if isinstance(cleaned, str) and cleaned.startswith("checkpoints/"):
        return cleaned.removeprefix("checkpoints/")
    return cleaned


def image_name(value: Any, warn: Warn) -> Any:
    """ComfyUI's "name.png [input]" annotation removed."""
    if isinstance(value, str):
        return re.sub(r"\s*\[(input|output|temp)\]$", "", value)
    return value


def mask_channel(value: Any, warn: Warn) -> Any:
    """ImageToMask's channel: ours has no alpha (a loaded image's alpha is LoadImage's mask)."""
    if value == "alpha":
        warn("channel 'alpha' has no equivalent; using 'luminance' (LoadImage's mask output is the alpha)")
        return "luminance"
    return value


def hex_color(value: Any, warn: Warn) -> Any:
    """EmptyImage's colour: ComfyUI's 0xRRGGBB number as "#rrggbb"."""
    if is_int(value) and 0 <= value <= 0xFFFFFF:
        return f"#{value:06x}"
    return value


def blend_mode(value: Any, warn: Warn) -> Any:
    """ImageBlend's modes are ComfyUI's but for soft_light."""
    if value == "soft_light":
        warn("blend_mode 'soft_light' has no equivalent; using 'overlay'")
        return "overlay"
    return value


def canny_threshold(value: Any, warn: Warn) -> Any:
    """Canny's thresholds: ComfyUI's fractions (0.01..0.99) as CannyEdges' 0..255 levels."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return max(0, min(255, round(value * 255)))
    return value


def canny_checks(values: Mapping[str, Any], warn: Warn) -> dict[str, Any]:
    warn("ComfyUI's Canny is kornia's; CannyEdges (OpenCV's) finds slightly different edges")
    return {}


def short(value: Any) -> str:
    import json

    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


#: UNETLoader's weight_dtype choices the studio honours (fp8 storage, upcast per layer).
UNET_WEIGHT_DTYPES = ("default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2")


def unet_weight_dtype(value: Any, warn: Warn) -> str:
    """UNETLoader's weight_dtype: ComfyUI's fp8 choices are kept (models/dit_files.py stores the
    weights in fp8); anything else loads in the studio's own type."""
    if value not in UNET_WEIGHT_DTYPES:
        warn(f"weight_dtype {short(value)} is not supported; the model loads in the studio's own type")
        return "default"
    return str(value)


def ipadapter_weight_type(value: Any, warn: Warn) -> str:
    """IPAdapterAdvanced's weight_type: the studio weighs the pictures the same in every layer."""
    if value != "linear":
        warn(
            f"weight_type {short(value)} (a per-layer weight curve) is not supported; linear used "
            "(the same weight in every layer)"
        )
    return "linear"


def ipadapter_simple_weight_type(value: Any, warn: Warn) -> str:
    """IPAdapter's weight_type: only "standard" (linear) is supported."""
    if value != "standard":
        warn(f"weight_type {short(value)} is not supported; standard used (the same weight in every layer)")
    return "standard"
