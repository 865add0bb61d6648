"""The mapping table: how each ComfyUI node type becomes studio nodes.

:data:`RULES` is declarative: for each ComfyUI type, the studio node(s) it makes
(:class:`Part`), which ComfyUI input feeds which of ours, its outputs by index,
translations of constants, and the order of ``widgets_values`` in ComfyUI's UI format.
It does not consult the node registry (a target may come from a pack that is not
installed): the validation of the converted workflow does.

ComfyUI's input names and widget orders come from its ``nodes.py`` and
``comfy_extras``; seed widgets are followed by ComfyUI's ``control_after_generate``
value in the UI format.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: The largest seed the studio's samplers take (ComfyUI's go up to 2**64 - 1).
SEED_MAX = 2**53 - 1

Warn = Callable[[str], None]
#: Turns a ComfyUI constant into ours; calls ``warn`` when the meaning changes.
ValueMap = Callable[[Any, Warn], Any]
#: Computes inputs of ours from several ComfyUI constants at once (sampler + scheduler...).
Adjust = Callable[[Mapping[str, Any], Warn], dict[str, Any]]


@dataclass(frozen=True)
class Part:
    """One studio node made from a ComfyUI node (most make one; some make several)."""

    type: str
    #: ComfyUI input name -> our input name.
    inputs: Mapping[str, str]
    #: Appended to the ComfyUI id to make ours ("" keeps it).
    suffix: str = ""
    #: Constants always set on this node.
    fixed: Mapping[str, Any] = field(default_factory=dict)
    #: Appended to the title.
    title_suffix: str = ""
    #: Links between the parts of one rule: our input -> (suffix of the part, its output).
    links: Mapping[str, tuple[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    """How one ComfyUI node type becomes studio nodes."""

    parts: tuple[Part, ...]
    #: ComfyUI output index -> (part suffix, our output name); ``None``: no equivalent.
    outputs: tuple[tuple[str, str] | None, ...]
    #: Translations of ComfyUI constants, by ComfyUI input name.
    values: Mapping[str, ValueMap] = field(default_factory=dict)
    #: ComfyUI inputs read by ``adjust`` or deliberately left out.
    consumed: frozenset[str] = frozenset()
    adjust: Adjust | None = None
    #: The order of ``widgets_values`` in ComfyUI's UI format.
    widgets: tuple[str, ...] = ()
    #: Picks another rule from the node's constants (``None``: keep this one).
    variant: Callable[[Mapping[str, Any]], Rule | None] | None = None


def one(
    type_: str,
    inputs: Mapping[str, str],
    outputs: tuple[str | None, ...],
    *,
    widgets: tuple[str, ...] = (),
    values: Mapping[str, ValueMap] | None = None,
    fixed: Mapping[str, Any] | None = None,
    consumed: tuple[str, ...] = (),
    adjust: Adjust | None = None,
) -> Rule:
    """A rule that makes a single node keeping the ComfyUI id."""
    return Rule(
        parts=(Part(type_, inputs, fixed=fixed or {}),),
        outputs=tuple(None if name is None else ("", name) for name in outputs),
        values=values or {},
        consumed=frozenset(consumed),
        adjust=adjust,
        widgets=widgets,
    )


def same(*names: str) -> dict[str, str]:
    """Inputs that keep their ComfyUI names."""
    return {name: name for name in names}


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- value translations ------------------------------------------------------------

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


# --- samplers --------------------------------------------------------------------

_SAMPLING = same("steps", "cfg", "model", "positive", "negative")
_SEED_WIDGETS = ("seed", "control_after_generate")

#: KSampler whose sampler/scheduler pair the Sampler cannot reproduce, as ComfyUI's own
#: custom-sampling chain, which honours the schedule.
KSAMPLER_AS_CUSTOM = Rule(
    parts=(
        Part("SamplerSelect", {"sampler_name": "sampler_name"}, suffix="_sampler", title_suffix=" (sampler)"),
        Part(
            "BasicScheduler",
            same("model", "scheduler", "steps", "denoise"),
            suffix="_sigmas",
            title_suffix=" (schedule)",
        ),
        Part(
            "SamplerCustom",
            {**same("model", "cfg", "positive", "negative"), "seed": "noise_seed", "latent_image": "latent"},
            fixed={"add_noise": True},
            links={"sampler": ("_sampler", "sampler"), "sigmas": ("_sigmas", "sigmas")},
        ),
    ),
    outputs=(("", "output"),),
    values={"seed": seed_value},
    consumed=frozenset({"control_after_generate"}),
    widgets=(*_SEED_WIDGETS, "steps", "cfg", "sampler_name", "scheduler", "denoise"),
)


def ksampler_variant(values: Mapping[str, Any]) -> Rule | None:
    """The custom-sampling chain when the pair has no exact Sampler equivalent but
    SamplerSelect and BasicScheduler both know it."""
    sampler_name, scheduler = values.get("sampler_name"), values.get("scheduler", "normal")
    if exact_pair(sampler_name, scheduler):
        return None
    k_samplers, schedulers = custom_sampling_names()
    if sampler_name in k_samplers and scheduler in schedulers:
        return KSAMPLER_AS_CUSTOM
    return None


_KSAMPLER = Rule(
    parts=(Part("Sampler", {**_SAMPLING, "seed": "seed", "denoise": "denoise", "latent_image": "latent"}),),
    outputs=(("", "latent"),),
    values={"seed": seed_value},
    consumed=frozenset({"sampler_name", "scheduler", "control_after_generate"}),
    adjust=sampler_inputs,
    widgets=(*_SEED_WIDGETS, "steps", "cfg", "sampler_name", "scheduler", "denoise"),
    variant=ksampler_variant,
)

_KSAMPLER_ADVANCED = one(
    "SamplerAdvanced",
    {
        **_SAMPLING,
        "noise_seed": "seed",
        "latent_image": "latent",
        "add_noise": "add_noise",
        "start_at_step": "start_at_step",
        "end_at_step": "end_at_step",
        "return_with_leftover_noise": "return_with_leftover_noise",
    },
    ("latent",),
    values={"noise_seed": seed_value, "add_noise": enable, "return_with_leftover_noise": enable},
    consumed=("sampler_name", "scheduler", "control_after_generate"),
    adjust=sampler_inputs,
    widgets=(
        "add_noise",
        "noise_seed",
        "control_after_generate",
        "steps",
        "cfg",
        "sampler_name",
        "scheduler",
        "start_at_step",
        "end_at_step",
        "return_with_leftover_noise",
    ),
)

_CUSTOM_SAMPLING: dict[str, Rule] = {
    "SamplerCustom": one(
        "SamplerCustom",
        {**same("model", "add_noise", "noise_seed", "cfg", "positive", "negative", "sampler", "sigmas")}
        | {"latent_image": "latent"},
        ("output", "denoised_output"),
        values={"noise_seed": seed_value},
        consumed=("control_after_generate",),
        widgets=("add_noise", "noise_seed", "control_after_generate", "cfg"),
    ),
    "SamplerCustomAdvanced": one(
        "SamplerCustomAdvanced",
        {**same("noise", "guider", "sampler", "sigmas"), "latent_image": "latent"},
        ("output", "denoised_output"),
    ),
    "KSamplerSelect": one("SamplerSelect", same("sampler_name"), ("sampler",), widgets=("sampler_name",)),
    "BasicScheduler": one(
        "BasicScheduler",
        same("model", "scheduler", "steps", "denoise"),
        ("sigmas",),
        widgets=("scheduler", "steps", "denoise"),
    ),
    "KarrasScheduler": one(
        "KarrasScheduler",
        same("steps", "sigma_max", "sigma_min", "rho"),
        ("sigmas",),
        widgets=("steps", "sigma_max", "sigma_min", "rho"),
    ),
    "ExponentialScheduler": one(
        "ExponentialScheduler",
        same("steps", "sigma_max", "sigma_min"),
        ("sigmas",),
        widgets=("steps", "sigma_max", "sigma_min"),
    ),
    "SDTurboScheduler": one(
        "SDTurboScheduler", same("model", "steps", "denoise"), ("sigmas",), widgets=("steps", "denoise")
    ),
    "SplitSigmas": one(
        "SplitSigmas", same("sigmas", "step"), ("high_sigmas", "low_sigmas"), widgets=("step",)
    ),
    "RandomNoise": one(
        "RandomNoise",
        same("noise_seed"),
        ("noise",),
        values={"noise_seed": seed_value},
        consumed=("control_after_generate",),
        widgets=("noise_seed", "control_after_generate"),
    ),
    "DisableNoise": one("DisableNoise", {}, ("noise",)),
    "CFGGuider": one(
        "CFGGuider", same("model", "positive", "negative", "cfg"), ("guider",), widgets=("cfg",)
    ),
    "BasicGuider": one("BasicGuider", same("model", "conditioning"), ("guider",)),
}


# --- the table ---------------------------------------------------------------------

_CONTROL_ADVANCED_INPUTS = {
    "control_net": "control_net",
    "image": "image",
    "strength": "strength",
    "start_percent": "start",
    "end_percent": "end",
}
_AREA = ("width", "height", "x", "y", "strength")
_TILED = ("tile_size", "overlap", "temporal_size", "temporal_overlap")

# --- model merging by blocks, UNet files ----------------------------------------------------

#: ModelMergeSD1/SD2's inputs: ComfyUI's names (LDM prefixes with a dot) -> ours (identifiers).
_SD1_BLOCKS: tuple[tuple[str, str], ...] = (
    ("time_embed.", "time_embed"),
    ("label_emb.", "label_emb"),
    *((f"input_blocks.{i}.", f"input_blocks_{i}") for i in range(12)),
    *((f"middle_block.{i}.", f"middle_block_{i}") for i in range(3)),
    *((f"output_blocks.{i}.", f"output_blocks_{i}") for i in range(12)),
    ("out.", "out"),
)
#: ModelMergeSDXL's inputs (ComfyUI names its blocks without the trailing dot).
_SDXL_BLOCKS: tuple[tuple[str, str], ...] = (
    ("time_embed.", "time_embed"),
    ("label_emb.", "label_emb"),
    *((f"input_blocks.{i}", f"input_blocks_{i}") for i in range(9)),
    *((f"middle_block.{i}", f"middle_block_{i}") for i in range(3)),
    *((f"output_blocks.{i}", f"output_blocks_{i}") for i in range(9)),
    ("out.", "out"),
)


def _block_merge(type_: str, blocks: tuple[tuple[str, str], ...]) -> Rule:
    """A per-block merge: one ratio widget per block, in ComfyUI's order."""
    return one(
        type_,
        {"model1": "model1", "model2": "model2", **dict(blocks)},
        ("model",),
        widgets=tuple(comfy for comfy, _ in blocks),
    )


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


RULES: dict[str, Rule] = {
    "CheckpointLoaderSimple": one(
        "CheckpointLoader", same("ckpt_name"), ("model", "clip", "vae"), widgets=("ckpt_name",)
    ),
    "CheckpointLoader": one(
        "CheckpointLoader",
        same("ckpt_name"),
        ("model", "clip", "vae"),
        consumed=("config_name",),  # the studio finds the configuration itself
        widgets=("config_name", "ckpt_name"),
    ),
    "CLIPTextEncode": one("CLIPTextEncode", same("text", "clip"), ("conditioning",), widgets=("text",)),
    "CLIPSetLastLayer": one(
        "CLIPSetLastLayer", same("clip", "stop_at_clip_layer"), ("clip",), widgets=("stop_at_clip_layer",)
    ),
    "CLIPTextEncodeSDXL": one(
        "CLIPTextEncodeSDXL",
        same(
            "clip", "width", "height", "crop_w", "crop_h", "target_width", "target_height", "text_g", "text_l"
        ),
        ("conditioning",),
        widgets=("width", "height", "crop_w", "crop_h", "target_width", "target_height", "text_g", "text_l"),
    ),
    "CLIPTextEncodeSDXLRefiner": one(
        "CLIPTextEncodeSDXLRefiner",
        same("clip", "ascore", "width", "height", "text"),
        ("conditioning",),
        widgets=("ascore", "width", "height", "text"),
    ),
    "CLIPLoader": one(
        "CLIPLoader",
        same("clip_name", "type"),
        ("clip",),
        consumed=("device",),
        widgets=("clip_name", "type", "device"),
    ),
    "EmptyLatentImage": one(
        "EmptyLatent",
        same("width", "height", "batch_size"),
        ("latent",),
        widgets=("width", "height", "batch_size"),
    ),
    "DualCLIPLoader": one(
        "DualCLIPLoader",
        same("clip_name1", "clip_name2", "type"),
        ("clip",),
        consumed=("device",),
        widgets=("clip_name1", "clip_name2", "type", "device"),
    ),
    "TripleCLIPLoader": one(
        "TripleCLIPLoader",
        same("clip_name1", "clip_name2", "clip_name3"),
        ("clip",),
        widgets=("clip_name1", "clip_name2", "clip_name3"),
    ),
    "EmptySD3LatentImage": one(
        "EmptySD3LatentImage",
        same("width", "height", "batch_size"),
        ("latent",),
        widgets=("width", "height", "batch_size"),
    ),
    "ModelSamplingSD3": one("ModelSamplingSD3", same("model", "shift"), ("model",), widgets=("shift",)),
    "ModelSamplingFlux": one(
        "ModelSamplingFlux",
        same("model", "max_shift", "base_shift", "width", "height"),
        ("model",),
        widgets=("max_shift", "base_shift", "width", "height"),
    ),
    "FluxGuidance": one(
        "FluxGuidance", same("conditioning", "guidance"), ("conditioning",), widgets=("guidance",)
    ),
    "CLIPTextEncodeSD3": one(
        "CLIPTextEncodeSD3",
        same("clip", "clip_l", "clip_g", "t5xxl", "empty_padding"),
        ("conditioning",),
        widgets=("clip_l", "clip_g", "t5xxl", "empty_padding"),
    ),
    "CLIPTextEncodeFlux": one(
        "CLIPTextEncodeFlux",
        same("clip", "clip_l", "t5xxl", "guidance"),
        ("conditioning",),
        widgets=("clip_l", "t5xxl", "guidance"),
    ),
    "SkipLayerGuidanceSD3": one(
        "SkipLayerGuidanceSD3",
        same("model", "layers", "scale", "start_percent", "end_percent"),
        ("model",),
        widgets=("layers", "scale", "start_percent", "end_percent"),
    ),
    "ImageOnlyCheckpointLoader": one(
        "ImageOnlyCheckpointLoader",
        same("ckpt_name"),
        ("model", "clip_vision", "vae"),
        widgets=("ckpt_name",),
    ),
    "SVD_img2vid_Conditioning": one(
        "SVD_img2vid_Conditioning",
        same(
            "clip_vision",
            "init_image",
            "vae",
            "width",
            "height",
            "video_frames",
            "motion_bucket_id",
            "fps",
            "augmentation_level",
        ),
        ("positive", "negative", "latent"),
        widgets=("width", "height", "video_frames", "motion_bucket_id", "fps", "augmentation_level"),
    ),
    "VideoLinearCFGGuidance": one(
        "VideoLinearCFGGuidance", same("model", "min_cfg"), ("model",), widgets=("min_cfg",)
    ),
    "VideoTriangleCFGGuidance": one(
        "VideoTriangleCFGGuidance", same("model", "min_cfg"), ("model",), widgets=("min_cfg",)
    ),
    "SaveAnimatedWEBP": one(
        "SaveAnimatedWEBP",
        same("images", "filename_prefix", "fps", "lossless", "quality", "method"),
        (),
        values={"filename_prefix": clean_prefix},
        widgets=("filename_prefix", "fps", "lossless", "quality", "method"),
    ),
    "SaveAnimatedPNG": one(
        "SaveAnimatedPNG",
        same("images", "filename_prefix", "fps", "compress_level"),
        (),
        values={"filename_prefix": clean_prefix},
        widgets=("filename_prefix", "fps", "compress_level"),
    ),
    "IPAdapterModelLoader": one(
        "IPAdapterModelLoader", same("ipadapter_file"), ("ipadapter",), widgets=("ipadapter_file",)
    ),
    "IPAdapter": one(
        "IPAdapter",
        same("model", "ipadapter", "image", "weight", "start_at", "end_at", "weight_type"),
        ("model",),
        values={"weight_type": ipadapter_simple_weight_type},
        widgets=("weight", "start_at", "end_at", "weight_type"),
    ),
    "IPAdapterAdvanced": one(
        "IPAdapterAdvanced",
        same(
            "model",
            "ipadapter",
            "image",
            "weight",
            "weight_type",
            "combine_embeds",
            "start_at",
            "end_at",
            "embeds_scaling",
            "image_negative",
            "clip_vision",
        ),
        ("model",),
        values={"weight_type": ipadapter_weight_type},
        widgets=("weight", "weight_type", "combine_embeds", "start_at", "end_at", "embeds_scaling"),
    ),
    "GLIGENLoader": one("GLIGENLoader", same("gligen_name"), ("gligen",), widgets=("gligen_name",)),
    "GLIGENTextBoxApply": one(
        "GLIGENTextBoxApply",
        same("conditioning_to", "clip", "gligen_textbox_model", "text", "width", "height", "x", "y"),
        ("conditioning",),
        fixed={"beta": 1.0},  # ComfyUI keeps the boxes on at every step
        widgets=("text", "width", "height", "x", "y"),
    ),
    "KSampler": _KSAMPLER,
    "KSamplerAdvanced": _KSAMPLER_ADVANCED,
    **_CUSTOM_SAMPLING,
    "VAEDecode": one("VAEDecode", {"samples": "latent", "vae": "vae"}, ("image",)),
    "VAEEncode": one("VAEEncode", {"pixels": "image", "vae": "vae"}, ("latent",)),
    "VAEDecodeTiled": one(
        "VAEDecode", {"samples": "latent", "vae": "vae"}, ("image",), consumed=_TILED, widgets=_TILED
    ),
    "VAEEncodeTiled": one(
        "VAEEncode", {"pixels": "image", "vae": "vae"}, ("latent",), consumed=_TILED, widgets=_TILED
    ),
    "VAEEncodeForInpaint": one(
        "InpaintEncode",
        {"pixels": "image", "vae": "vae", "mask": "mask", "grow_mask_by": "grow_mask_by"},
        ("latent",),
        widgets=("grow_mask_by",),
    ),
    "SaveImage": one(
        "SaveImage",
        same("images", "filename_prefix"),
        (),
        values={"filename_prefix": clean_prefix},
        widgets=("filename_prefix",),
    ),
    "PreviewImage": one("PreviewImage", same("images"), ()),
    "LoadImage": one(
        "LoadImage",
        {"image": "path"},
        ("image", "mask"),
        values={"image": image_name},
        consumed=("upload",),
        widgets=("image", "upload"),
    ),
    "ControlNetLoader": one(
        "ControlNetLoader", same("control_net_name"), ("control_net",), widgets=("control_net_name",)
    ),
    "ControlNetApply": one(
        "ControlNetApply",
        same("conditioning", "control_net", "image", "strength"),
        ("conditioning",),
        widgets=("strength",),
    ),
    "ControlNetApplyAdvanced": Rule(
        parts=(
            Part(
                "ControlNetApply",
                {"positive": "conditioning", **_CONTROL_ADVANCED_INPUTS},
                suffix="_pos",
                title_suffix=" (positive)",
            ),
            Part(
                "ControlNetApply",
                {"negative": "conditioning", **_CONTROL_ADVANCED_INPUTS},
                suffix="_neg",
                title_suffix=" (negative)",
            ),
        ),
        outputs=(("_pos", "conditioning"), ("_neg", "conditioning")),
        consumed=frozenset({"vae"}),
        widgets=("strength", "start_percent", "end_percent"),
    ),
    "LoraLoader": one(
        "LoraLoader",
        same("model", "clip", "lora_name", "strength_model", "strength_clip"),
        ("model", "clip"),
        widgets=("lora_name", "strength_model", "strength_clip"),
    ),
    "VAELoader": one("VAELoader", same("vae_name"), ("vae",), widgets=("vae_name",)),
    "ConditioningCombine": one(
        "ConditioningCombine",
        {"conditioning_1": "conditioning_a", "conditioning_2": "conditioning_b"},
        ("conditioning",),
    ),
    "ConditioningSetArea": one(
        "ConditioningSetArea", same("conditioning", *_AREA), ("conditioning",), widgets=_AREA
    ),
    "ConditioningSetAreaPercentage": one(
        "ConditioningSetAreaPercentage", same("conditioning", *_AREA), ("conditioning",), widgets=_AREA
    ),
    "ConditioningSetAreaStrength": one(
        "ConditioningSetAreaStrength",
        same("conditioning", "strength"),
        ("conditioning",),
        widgets=("strength",),
    ),
    "ConditioningAverage": one(
        "ConditioningAverage",
        same("conditioning_to", "conditioning_from", "conditioning_to_strength"),
        ("conditioning",),
        widgets=("conditioning_to_strength",),
    ),
    "ConditioningConcat": one(
        "ConditioningConcat", same("conditioning_to", "conditioning_from"), ("conditioning",)
    ),
    "SetLatentNoiseMask": one("SetLatentNoiseMask", {"samples": "latent", "mask": "mask"}, ("latent",)),
    "LatentUpscale": one(
        "LatentUpscale",
        {"samples": "latent", **same("upscale_method", "width", "height", "crop")},
        ("latent",),
        widgets=("upscale_method", "width", "height", "crop"),
    ),
    "LatentUpscaleBy": one(
        "LatentUpscaleBy",
        {"samples": "latent", **same("upscale_method", "scale_by")},
        ("latent",),
        widgets=("upscale_method", "scale_by"),
    ),
    "LatentComposite": one(
        "LatentComposite",
        same("samples_to", "samples_from", "x", "y", "feather"),
        ("latent",),
        widgets=("x", "y", "feather"),
    ),
    "LatentBlend": one(
        "LatentBlend",
        same("samples1", "samples2", "blend_factor"),
        ("latent",),
        consumed=("blend_mode",),  # older ComfyUI: always "normal"
        widgets=("blend_factor", "blend_mode"),
    ),
    "ImageScale": one(
        "ImageResize",
        {"image": "image", "upscale_method": "method", "width": "width", "height": "height", "crop": "mode"},
        ("image",),
        values={"upscale_method": scale_method, "crop": crop_mode},
        adjust=scale_checks,
        widgets=("upscale_method", "width", "height", "crop"),
    ),
    "ImageScaleBy": one(
        "ImageScaleBy",
        same("image", "upscale_method", "scale_by"),
        ("image",),
        widgets=("upscale_method", "scale_by"),
    ),
    "ImageInvert": one("ImageInvert", same("image"), ("image",)),
    "ImageBlend": one(
        "ImageBlend",
        {"image1": "image_a", "image2": "image_b", "blend_factor": "factor", "blend_mode": "mode"},
        ("image",),
        values={"blend_mode": blend_mode},
        widgets=("blend_factor", "blend_mode"),
    ),
    "ImagePadForOutpaint": one(
        "ImagePad",
        same("image", "left", "top", "right", "bottom"),
        ("image", "mask"),
        fixed={"fill": "edge"},
        consumed=("feathering",),
        adjust=pad_checks,
        widgets=("left", "top", "right", "bottom", "feathering"),
    ),
    "SolidMask": one(
        "SolidMask", same("value", "width", "height"), ("mask",), widgets=("value", "width", "height")
    ),
    "InvertMask": one("MaskInvert", same("mask"), ("mask",)),
    "MaskToImage": one("MaskToImage", same("mask"), ("image",)),
    "ImageToMask": one(
        "ImageToMask",
        same("image", "channel"),
        ("mask",),
        values={"channel": mask_channel},
        widgets=("channel",),
    ),
    "EmptyImage": one(
        "EmptyImage",
        same("width", "height", "batch_size", "color"),
        ("image",),
        values={"color": hex_color},
        widgets=("width", "height", "batch_size", "color"),
    ),
    "ModelMergeSimple": one(
        "ModelMergeSimple", same("model1", "model2", "ratio"), ("model",), widgets=("ratio",)
    ),
    "ModelMergeAdd": one("ModelMergeAdd", same("model1", "model2"), ("model",)),
    "RepeatLatentBatch": one(
        "RepeatLatentBatch", {"samples": "latent", "amount": "amount"}, ("latent",), widgets=("amount",)
    ),
    "ModelMergeSubtract": one(
        "ModelMergeSubtract", same("model1", "model2", "multiplier"), ("model",), widgets=("multiplier",)
    ),
    "ModelMergeBlocks": one(
        "ModelMergeBlocks",
        same("model1", "model2", "input", "middle", "out"),
        ("model",),
        widgets=("input", "middle", "out"),
    ),
    "ModelMergeSD1": _block_merge("ModelMergeSD1", _SD1_BLOCKS),
    "ModelMergeSD2": _block_merge("ModelMergeSD1", _SD1_BLOCKS),  # ComfyUI: the same blocks as SD1
    "ModelMergeSDXL": _block_merge("ModelMergeSDXL", _SDXL_BLOCKS),
    "CLIPMergeSimple": one("CLIPMergeSimple", same("clip1", "clip2", "ratio"), ("clip",), widgets=("ratio",)),
    "CLIPMergeAdd": one("CLIPMergeAdd", same("clip1", "clip2"), ("clip",)),
    "CLIPMergeSubtract": one(
        "CLIPMergeSubtract", same("clip1", "clip2", "multiplier"), ("clip",), widgets=("multiplier",)
    ),
    "LoraLoaderModelOnly": one(
        "LoraLoaderModelOnly",
        same("model", "lora_name", "strength_model"),
        ("model",),
        widgets=("lora_name", "strength_model"),
    ),
    "DiffControlNetLoader": one(
        "DiffControlNetLoader",
        same("model", "control_net_name"),
        ("control_net",),
        widgets=("control_net_name",),
    ),
    "UNETLoader": one(
        "UNETLoader",
        same("unet_name", "weight_dtype"),
        ("model",),
        values={"weight_dtype": unet_weight_dtype},
        widgets=("unet_name", "weight_dtype"),
    ),
    "CheckpointSave": one(
        "CheckpointSave",
        same("model", "clip", "vae", "filename_prefix"),
        (),
        values={"filename_prefix": checkpoint_prefix},
        widgets=("filename_prefix",),
    ),
    "UpscaleModelLoader": one(
        "UpscaleModelLoader", same("model_name"), ("upscale_model",), widgets=("model_name",)
    ),
    "ImageUpscaleWithModel": one("ImageUpscaleWithModel", same("upscale_model", "image"), ("image",)),
    "ModelSamplingDiscrete": one(
        "ModelSamplingDiscrete", same("model", "sampling", "zsnr"), ("model",), widgets=("sampling", "zsnr")
    ),
    "CLIPVisionLoader": one("CLIPVisionLoader", same("clip_name"), ("clip_vision",), widgets=("clip_name",)),
    "CLIPVisionEncode": one(  # files before ComfyUI added crop have no widget: ours defaults to center
        "CLIPVisionEncode",
        same("clip_vision", "image", "crop"),
        ("clip_vision_output",),
        widgets=("crop",),
    ),
    "unCLIPConditioning": one(
        "unCLIPConditioning",
        same("conditioning", "clip_vision_output", "strength", "noise_augmentation"),
        ("conditioning",),
        widgets=("strength", "noise_augmentation"),
    ),
    "unCLIPCheckpointLoader": one(
        "unCLIPCheckpointLoader",
        same("ckpt_name"),
        ("model", "clip", "vae", "clip_vision"),
        widgets=("ckpt_name",),
    ),
    "ConditioningZeroOut": one("ConditioningZeroOut", same("conditioning"), ("conditioning",)),
    "LatentCrop": one(
        "LatentCrop",
        {"samples": "latent", **same("width", "height", "x", "y")},
        ("latent",),
        widgets=("width", "height", "x", "y"),
    ),
    "ComfySwitchNode": one(
        "Switch",
        {"switch": "select", "on_true": "on_true", "on_false": "on_false"},
        ("value",),
        widgets=("switch",),
    ),
    "ImageScaleToTotalPixels": one(  # files before ComfyUI added resolution_steps: ours defaults to 1
        "ImageScaleToTotalPixels",
        same("image", "upscale_method", "megapixels", "resolution_steps"),
        ("image",),
        widgets=("upscale_method", "megapixels", "resolution_steps"),
    ),
    "MaskComposite": one(
        "MaskComposite",
        same("destination", "source", "x", "y", "operation"),
        ("mask",),
        widgets=("x", "y", "operation"),
    ),
    "GetImageSize": one("GetImageSize", same("image"), ("width", "height", "batch_size")),
    "Canny": one(
        "CannyEdges",
        same("image", "low_threshold", "high_threshold"),
        ("image",),
        values={"low_threshold": canny_threshold, "high_threshold": canny_threshold},
        adjust=canny_checks,
        widgets=("low_threshold", "high_threshold"),
    ),
}

#: UI-format node types that exist only in ComfyUI's editor: resolved, never reported.
UI_ONLY = frozenset({"Reroute", "PrimitiveNode", "Note", "MarkdownNote"})
#: ComfyUI's newer primitive nodes: each passes its one widget value on.
PRIMITIVES = frozenset(
    {"PrimitiveInt", "PrimitiveFloat", "PrimitiveString", "PrimitiveStringMultiline", "PrimitiveBoolean"}
)

#: Node types of model families (and ComfyUI VIDEO/audio nodes) the studio does not run yet.
NOT_YET = frozenset(
    {
        "QuadrupleCLIPLoader",
        "CLIPTextEncodeHunyuanDiT",
        "ModelSamplingAuraFlow",
        "EmptyHunyuanLatentVideo",
        "EmptyLTXVLatentVideo",
        "EmptyMochiLatentVideo",
        "EmptyCosmosLatentVideo",
        "EmptyHunyuanImageLatent",
        "EmptyChromaRadianceLatentImage",
        "WanImageToVideo",
        "WanFirstLastFrameToVideo",
        "LTXVConditioning",
        "LTXVImgToVideo",
        "CosmosImageToVideoLatent",
        "StableCascade_EmptyLatentImage",
        "StableCascade_StageB_Conditioning",
        "StableZero123_Conditioning",
        "SaveWEBM",
        "SaveVideo",
        "CreateVideo",
        "LoadVideo",
        "EmptyAceStepLatentAudio",
        "SaveAudio",
    }
)
