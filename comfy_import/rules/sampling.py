"""The table's sampling entries: KSampler (the studio's Sampler, or ComfyUI's custom-sampling
chain when the Sampler cannot reproduce the sampler/scheduler pair), KSamplerAdvanced, and the
custom-sampling nodes (samplers, schedulers, sigmas, noise, guiders)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from comfy_import.rules.base import Part, Rule, one, same
from comfy_import.rules.values import custom_sampling_names, enable, exact_pair, sampler_inputs, seed_value

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

SAMPLING_RULES: dict[str, Rule] = {
    "KSampler": _KSAMPLER,
    "KSamplerAdvanced": _KSAMPLER_ADVANCED,
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
    # older ComfyUI has no style input (its guidance is "regular", our default)
    "DualCFGGuider": one(
        "DualCFGGuider",
        same("model", "cond1", "cond2", "negative", "cfg_conds", "cfg_cond2_negative", "style"),
        ("guider",),
        widgets=("cfg_conds", "cfg_cond2_negative", "style"),
    ),
}
