"""Sampling in parts: KSamplerAdvanced's step windows, and ComfyUI's custom sampling as types.

- SamplerAdvanced runs a window of a schedule (base + refiner workflows hand the noisy latent on).
- Custom sampling splits a sampler into what it is made of: a noise schedule (SIGMAS, from
  BasicScheduler, KarrasScheduler, ...), a stepping rule (SAMPLER, from SamplerSelect), the
  starting noise (NOISE) and the model with its prompts and guidance (GUIDER); SamplerCustom
  and SamplerCustomAdvanced put them together.
- ModelSamplingDiscrete tells the samplers what the model predicts (eps, v, x0, LCM) and
  whether it was trained with zero terminal SNR.

torch and diffusers are imported inside ``run`` only, so listing nodes stays fast.
"""

from __future__ import annotations

from typing import Any

from models.schedules import K_SAMPLERS, SAMPLING_TYPES, SCHEDULERS
from nodes import types as T
from nodes.base import Context, Input, Node, NodeInputError, Output
from nodes.support import (
    CFG,
    PREVIEW,
    SAMPLER_NAMES,
    SEED,
    SEED_MAX,
    STEPS,
    checkpoint_for,
    sampling_job,
)

CUSTOM = "sampling/custom"
SIGMAS_STEPS = Input("steps", T.INT, default=20, min=1, max=10000)


def _levels(ctx: Context, model: Any) -> Any:
    """The MODEL's noise levels: its scheduler config with ModelSampling* overrides; flow
    matching's levels for SD3 and Flux (ComfyUI's ModelSamplingDiscreteFlow / ModelSamplingFlux)."""
    from models.schedules import model_levels, scheduler_config

    checkpoint = checkpoint_for(model, ctx)
    return model_levels(scheduler_config(checkpoint.scheduler_config, model.sampling), checkpoint.family)


class SamplerAdvanced(Node):
    display_name = "KSampler Advanced"
    category = "sampling"
    description = (
        "Run only some steps of a schedule: steps start_at_step to end_at_step of 'steps'. "
        "A base model can stop early and hand its still-noisy latent to a refiner that carries on "
        "(turn off add_noise there)."
    )
    inputs = (
        Input("model", T.MODEL),
        Input("positive", T.CONDITIONING),
        Input("negative", T.CONDITIONING),
        Input("latent", T.LATENT),
        Input(
            "add_noise",
            T.BOOLEAN,
            default=True,
            description="Add noise first. Off when the latent is already noisy (from an earlier window).",
        ),
        SEED,
        STEPS,
        CFG,
        Input("sampler", T.STRING, default="dpmpp_2m_karras", choices=SAMPLER_NAMES),
        Input("start_at_step", T.INT, default=0, min=0, max=10000, description="First step to run."),
        Input(
            "end_at_step",
            T.INT,
            default=10000,
            min=0,
            max=10000,
            description="Stop before this step (anything above 'steps' runs to the end).",
        ),
        Input(
            "return_with_leftover_noise",
            T.BOOLEAN,
            default=False,
            description="When stopping early, return the noisy latent (for the next window) "
            "instead of finishing it to a clean one.",
        ),
        PREVIEW,
    )
    outputs = (Output("latent", T.LATENT),)

    def run(
        self,
        ctx: Context,
        model: Any,
        positive: Any,
        negative: Any,
        latent: Any,
        add_noise: bool,
        seed: int,
        steps: int,
        cfg: float,
        sampler: str,
        start_at_step: int,
        end_at_step: int,
        return_with_leftover_noise: bool,
        preview: bool,
    ) -> dict[str, Any]:
        from models.sampling import sample

        job = sampling_job(
            ctx,
            model,
            positive,
            negative,
            latent,
            seed=seed,
            steps=steps,
            cfg=cfg,
            sampler=sampler,
            start_step=start_at_step,
            end_step=end_at_step,
            add_noise=add_noise,
            leftover_noise=return_with_leftover_noise,
            preview=preview,
        )
        try:
            samples = sample(job, ctx.check_cancelled)
        except ValueError as exc:
            name = "sampler" if "cannot run part" in str(exc) else "latent"
            raise NodeInputError(getattr(exc, "input_name", name), str(exc)) from None
        return {"latent": latent.with_(samples=samples, std=None)}


class SamplerSelect(Node):
    category = CUSTOM
    description = "Choose a stepping rule (Euler, DPM++ 2M, ...) for SamplerCustom."
    inputs = (Input("sampler_name", T.STRING, default="euler", choices=K_SAMPLERS),)
    outputs = (Output("sampler", T.SAMPLER),)

    def run(self, ctx: Context, sampler_name: str) -> dict[str, Any]:
        from models.schedules import SamplerSpec

        return {"sampler": SamplerSpec(sampler_name)}


class BasicScheduler(Node):
    category = CUSTOM
    description = "The model's noise levels for a number of steps, spaced by a named rule (karras, ...)."
    inputs = (
        Input("model", T.MODEL),
        Input("scheduler", T.STRING, default="normal", choices=SCHEDULERS),
        SIGMAS_STEPS,
        Input(
            "denoise",
            T.FLOAT,
            default=1.0,
            min=0.0,
            max=1.0,
            step=0.01,
            description="Below 1, start part-way down (image-to-image).",
        ),
    )
    outputs = (Output("sigmas", T.SIGMAS),)

    def run(self, ctx: Context, model: Any, scheduler: str, steps: int, denoise: float) -> dict[str, Any]:
        from models.schedules import basic_schedule

        return {"sigmas": basic_schedule(_levels(ctx, model), scheduler, steps, denoise)}


def _check_range(sigma_max: float, sigma_min: float) -> None:
    if sigma_min <= 0:
        raise NodeInputError("sigma_min", "must be above 0; the schedule ends at 0 by itself")
    if sigma_max <= sigma_min:
        raise NodeInputError("sigma_max", f"must be above sigma_min ({sigma_min}); raise it")


SIGMA_MAX = Input("sigma_max", T.FLOAT, default=14.614642, min=0.0, max=5000.0, step=0.01)
SIGMA_MIN = Input("sigma_min", T.FLOAT, default=0.0291675, min=0.0, max=5000.0, step=0.01)


class KarrasScheduler(Node):
    category = CUSTOM
    description = "Noise levels from sigma_max down to sigma_min, closer together at the low end (Karras)."
    inputs = (
        SIGMAS_STEPS,
        SIGMA_MAX,
        SIGMA_MIN,
        Input("rho", T.FLOAT, default=7.0, min=0.0, max=100.0, step=0.01),
    )
    outputs = (Output("sigmas", T.SIGMAS),)

    def run(self, ctx: Context, steps: int, sigma_max: float, sigma_min: float, rho: float) -> dict[str, Any]:
        from models.schedules import karras

        _check_range(sigma_max, sigma_min)
        if rho <= 0:
            raise NodeInputError("rho", "must be above 0 (7 is the usual value)")
        return {"sigmas": karras(steps, sigma_min, sigma_max, rho)}


class ExponentialScheduler(Node):
    category = CUSTOM
    description = "Noise levels from sigma_max down to sigma_min, evenly spaced in log sigma."
    inputs = (SIGMAS_STEPS, SIGMA_MAX, SIGMA_MIN)
    outputs = (Output("sigmas", T.SIGMAS),)

    def run(self, ctx: Context, steps: int, sigma_max: float, sigma_min: float) -> dict[str, Any]:
        from models.schedules import exponential

        _check_range(sigma_max, sigma_min)
        return {"sigmas": exponential(steps, sigma_min, sigma_max)}


class SDTurboScheduler(Node):
    category = CUSTOM
    description = "SD-Turbo's noise levels (1 to 10 steps); denoise below 1 starts lower."
    inputs = (
        Input("model", T.MODEL),
        Input("steps", T.INT, default=1, min=1, max=10),
        Input("denoise", T.FLOAT, default=1.0, min=0.0, max=1.0, step=0.01),
    )
    outputs = (Output("sigmas", T.SIGMAS),)

    def run(self, ctx: Context, model: Any, steps: int, denoise: float) -> dict[str, Any]:
        from models.schedules import ModelLevels, sd_turbo_schedule

        levels = _levels(ctx, model)
        if not isinstance(levels, ModelLevels):
            raise NodeInputError(
                "model",
                "SD-Turbo's schedule is for SD-Turbo and SDXL-Turbo; use BasicScheduler on this model",
            )
        return {"sigmas": sd_turbo_schedule(levels, steps, denoise)}


class SplitSigmas(Node):
    category = CUSTOM
    description = "Cut a schedule in two at a step: the first part for one sampler, the rest for another."
    inputs = (Input("sigmas", T.SIGMAS), Input("step", T.INT, default=0, min=0, max=10000))
    outputs = (Output("high_sigmas", T.SIGMAS), Output("low_sigmas", T.SIGMAS))

    def run(self, ctx: Context, sigmas: Any, step: int) -> dict[str, Any]:
        from models.schedules import split

        high, low = split(sigmas, step)
        return {"high_sigmas": high, "low_sigmas": low}


class RandomNoise(Node):
    category = CUSTOM
    description = "Starting noise drawn from a seed (on the CPU, so a seed gives the same picture anywhere)."
    inputs = (Input("noise_seed", T.INT, default=0, min=0, max=SEED_MAX),)
    outputs = (Output("noise", T.NOISE),)

    def run(self, ctx: Context, noise_seed: int) -> dict[str, Any]:
        from models.schedules import NoiseSpec

        return {"noise": NoiseSpec(noise_seed)}


class DisableNoise(Node):
    category = CUSTOM
    description = "No starting noise: for a latent that is already noisy (the second half of a split)."
    inputs = ()
    outputs = (Output("noise", T.NOISE),)

    def run(self, ctx: Context) -> dict[str, Any]:
        from models.schedules import NoiseSpec

        return {"noise": NoiseSpec(None)}


class CFGGuider(Node):
    category = CUSTOM
    description = "A model with positive and negative prompts and a guidance scale (cfg), for sampling."
    inputs = (
        Input("model", T.MODEL),
        Input("positive", T.CONDITIONING),
        Input("negative", T.CONDITIONING),
        Input("cfg", T.FLOAT, default=8.0, min=0.0, max=100.0, step=0.1),
    )
    outputs = (Output("guider", T.GUIDER),)

    def run(self, ctx: Context, model: Any, positive: Any, negative: Any, cfg: float) -> dict[str, Any]:
        from models.schedules import GuiderSpec

        return {"guider": GuiderSpec(model, tuple(positive), tuple(negative), float(cfg))}


class BasicGuider(Node):
    category = CUSTOM
    description = "A model with one prompt and no guidance (for models that need none, e.g. distilled)."
    inputs = (Input("model", T.MODEL), Input("conditioning", T.CONDITIONING))
    outputs = (Output("guider", T.GUIDER),)

    def run(self, ctx: Context, model: Any, conditioning: Any) -> dict[str, Any]:
        from models.schedules import GuiderSpec

        return {"guider": GuiderSpec(model, tuple(conditioning), (), 1.0)}


class DualCFGGuider(Node):
    category = CUSTOM
    description = (
        "Guidance over three prompts with two scales (ComfyUI's node of this name): from the negative "
        "towards cond2 by cfg_cond2_negative, and from cond2 towards cond1 by cfg_conds. For "
        "instruction editing (InstructPix2Pix): cond1 and cond2 are InstructPixToPixConditioning's "
        "positive and negative, negative the bare negative prompt; cfg_conds is then the text guidance "
        "and cfg_cond2_negative the image guidance, as in the InstructPix2Pix pipeline."
    )
    inputs = (
        Input("model", T.MODEL),
        Input("cond1", T.CONDITIONING, description="The prompt to move towards (the instruction)."),
        Input("cond2", T.CONDITIONING, description="The prompt in the middle (e.g. the picture alone)."),
        Input("negative", T.CONDITIONING),
        Input(
            "cfg_conds",
            T.FLOAT,
            default=8.0,
            min=0.0,
            max=100.0,
            step=0.1,
            description="How far from cond2 towards cond1 (text guidance).",
        ),
        Input(
            "cfg_cond2_negative",
            T.FLOAT,
            default=8.0,
            min=0.0,
            max=100.0,
            step=0.1,
            description="How far from the negative towards cond2 (image guidance).",
        ),
        Input(
            "style",
            T.STRING,
            default="regular",
            choices=("regular", "nested"),
            description="regular: the two steps added; nested: the cond1 step first, then scaled "
            "from the negative by cfg_cond2_negative.",
        ),
    )
    outputs = (Output("guider", T.GUIDER),)

    def run(
        self,
        ctx: Context,
        model: Any,
        cond1: Any,
        cond2: Any,
        negative: Any,
        cfg_conds: float,
        cfg_cond2_negative: float,
        style: str,
    ) -> dict[str, Any]:
        from models.schedules import GuiderSpec

        guider = GuiderSpec(
            model,
            tuple(cond1),
            tuple(negative),
            float(cfg_conds),
            middle=tuple(cond2),
            middle_cfg=float(cfg_cond2_negative),
            nested=style == "nested",
        )
        return {"guider": guider}


CUSTOM_OUTPUTS = (
    Output("output", T.LATENT, description="The latent where the schedule ends."),
    Output("denoised_output", T.LATENT, description="The model's last estimate of the clean latent."),
)


def _sample_custom(
    ctx: Context,
    guider: Any,
    sampler: Any,
    sigmas: Any,
    latent: Any,
    noise: Any,
    preview: bool,
    model_input: str = "guider",
) -> dict[str, Any]:
    import torch

    from models.sampling import sample_custom

    if not isinstance(sigmas, torch.Tensor) or sigmas.ndim != 1:
        raise NodeInputError("sigmas", "expects a 1-D list of noise levels (from a scheduler node)")
    if len(sigmas) > 1 and bool((sigmas[1:] > sigmas[:-1]).any()):
        raise NodeInputError("sigmas", "must go down from step to step; use a scheduler node's output")
    family = getattr(getattr(guider.model, "checkpoint", None), "family", None)
    if family == "svd":
        raise NodeInputError(
            model_input,
            "custom sampling (sigma schedules and samplers as nodes) runs image models; "
            "this is a video (svd) model: sample it with KSampler",
        )
    if guider.middle is not None and family is not None and family not in ("sd1", "sd2", "sdxl"):
        raise NodeInputError(
            model_input,
            f"DualCFGGuider runs UNet models (SD1, SD2, SDXL); this is a {family} model: "
            "use CFGGuider or BasicGuider",
        )
    from models.dual_cfg import dual_of

    job = sampling_job(
        ctx,
        guider.model,
        guider.positive,
        guider.negative,
        latent,
        seed=noise.seed or 0,
        steps=max(len(sigmas) - 1, 1),
        cfg=guider.cfg,
        sampler=sampler.name,
        preview=preview,
        dual=dual_of(guider.middle, guider.middle_cfg, guider.nested),
    )
    try:
        result = sample_custom(job, sampler.name, sigmas, noise.seed, ctx.check_cancelled)
    except ValueError as exc:
        name = getattr(exc, "input_name", "latent")  # models.flow_sampling.FlowSamplingError names one
        own = ("latent", "sigmas", "sampler") + (
            ("model", "positive", "negative") if model_input == "model" else ()
        )
        if name not in own:
            name = model_input  # the guider carries the model and its prompts
        raise NodeInputError(name, str(exc)) from None
    return {
        "output": latent.with_(samples=result.samples, std=None),
        "denoised_output": latent.with_(samples=result.denoised, std=None),
    }


class SamplerCustom(Node):
    category = CUSTOM
    description = "Sample with a chosen stepping rule (sampler) over chosen noise levels (sigmas)."
    inputs = (
        Input("model", T.MODEL),
        Input("add_noise", T.BOOLEAN, default=True, description="Off when the latent is already noisy."),
        Input("noise_seed", T.INT, default=0, min=0, max=SEED_MAX),
        CFG,
        Input("positive", T.CONDITIONING),
        Input("negative", T.CONDITIONING),
        Input("sampler", T.SAMPLER),
        Input("sigmas", T.SIGMAS),
        Input("latent", T.LATENT),
        PREVIEW,
    )
    outputs = CUSTOM_OUTPUTS

    def run(
        self,
        ctx: Context,
        model: Any,
        add_noise: bool,
        noise_seed: int,
        cfg: float,
        positive: Any,
        negative: Any,
        sampler: Any,
        sigmas: Any,
        latent: Any,
        preview: bool,
    ) -> dict[str, Any]:
        from models.schedules import GuiderSpec, NoiseSpec

        guider = GuiderSpec(model, tuple(positive), tuple(negative), float(cfg))
        noise = NoiseSpec(noise_seed if add_noise else None)
        return _sample_custom(ctx, guider, sampler, sigmas, latent, noise, preview, model_input="model")


class SamplerCustomAdvanced(Node):
    category = CUSTOM
    description = "Sample from its parts: noise, guider (model and prompts), sampler and sigmas."
    inputs = (
        Input("noise", T.NOISE),
        Input("guider", T.GUIDER),
        Input("sampler", T.SAMPLER),
        Input("sigmas", T.SIGMAS),
        Input("latent", T.LATENT),
        PREVIEW,
    )
    outputs = CUSTOM_OUTPUTS

    def run(
        self, ctx: Context, noise: Any, guider: Any, sampler: Any, sigmas: Any, latent: Any, preview: bool
    ) -> dict[str, Any]:
        return _sample_custom(ctx, guider, sampler, sigmas, latent, noise, preview)


class ModelSamplingDiscrete(Node):
    category = "sampling/model"
    description = (
        "Say what the model predicts (eps, v_prediction, x0, or an LCM-distilled model) and whether it "
        "was trained with zero terminal SNR (zsnr); every sampler then uses it."
    )
    inputs = (
        Input("model", T.MODEL),
        Input("sampling", T.STRING, default="eps", choices=("eps", "v_prediction", "lcm", "x0")),
        Input(
            "zsnr", T.BOOLEAN, default=False, description="Rescale the noise schedule to zero terminal SNR."
        ),
    )
    outputs = (Output("model", T.MODEL),)

    def run(self, ctx: Context, model: Any, sampling: str, zsnr: bool) -> dict[str, Any]:
        replaced = {key for settings in SAMPLING_TYPES.values() for key, _ in settings}
        overrides = {k: v for k, v in model.sampling if k not in replaced}
        overrides.update(SAMPLING_TYPES[sampling])
        overrides["rescale_betas_zero_snr"] = bool(zsnr)
        return {"model": model.with_(sampling=tuple(overrides.items()))}


NODES = (
    SamplerAdvanced,
    SamplerSelect,
    BasicScheduler,
    KarrasScheduler,
    ExponentialScheduler,
    SDTurboScheduler,
    SplitSigmas,
    RandomNoise,
    DisableNoise,
    CFGGuider,
    BasicGuider,
    DualCFGGuider,
    SamplerCustom,
    SamplerCustomAdvanced,
    ModelSamplingDiscrete,
)
