"""The denoising loop over a diffusers UNet and scheduler.

It follows the diffusers pipelines step for step (StableDiffusionPipeline, Img2Img,
Inpaint, XL), so that with the same model, seed and settings it makes the same image;
the tests hold it to that. On top, it combines several conditionings (regions and
strengths), blends a noise mask for inpainting with any UNet, feeds 9-channel inpainting
UNets their extra inputs and 8-channel editing UNets their pictures (models/concat_image.py),
guides over three prompts for DualCFGGuider (models/dual_cfg.py), adds ControlNet residuals,
reports each step, and stops between steps when cancelled.

Noise is drawn on a CPU generator seeded with the seed, so a seed reproduces across
devices.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from models.clip_vision import revision_pooled, unclip_class_labels
from models.values import Cond, Latent

if TYPE_CHECKING:
    import torch

    from models.dual_cfg import DualGuidance, DualSides

#: ``SampleJob.extra`` keys GuidedModel reads: callables (step index, step count) run before each
#: model call, and IP-Adapter image prompts (a sequence of models.ip_adapter.ImagePrompt).
STEP_HOOKS = "step_hooks"
IMAGE_PROMPTS = "image_prompts"
#: ``SampleJob.extra`` key of Attend-and-Excite's settings (models.attend_excite.ExciteSettings).
ATTEND_EXCITE = "attend_excite"
#: ``SampleJob.extra`` key of DifferentialDiffusion's strength (a float in [0, 1]):
#: :func:`models.per_step.differential_mask`.
DIFFERENTIAL = "differential_diffusion"
#: ``SampleJob.extra`` key of the hypernetworks to apply: (models.hypernetwork.Hypernetwork, strength)
#: pairs, in order; the model runs on a view of ``job.unet`` with them
#: (:func:`models.hypernetwork.hypernetwork_view`).
HYPERNETWORKS = "hypernetworks"

#: Sampler name -> (diffusers scheduler class, config overrides).
SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "unipc": ("UniPCMultistepScheduler", {}),
    "lcm": ("LCMScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
}


def make_scheduler(name: str, config: dict[str, Any]) -> Any:
    import diffusers

    if name == "heun":
        raise ValueError("heun runs SD3 and Flux models; for this model choose euler, dpmpp_2m or another")
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    class_name, overrides = SAMPLERS[name]
    return getattr(diffusers, class_name).from_config(config, **overrides)


@dataclass
class ControlHint:
    """A ControlNet applied to a conditioning: model, hint image (pixels in [0, 1]) and when."""

    model: Any  # a callable returning the ControlNetModel
    image: torch.Tensor  # (1, 3, H, W) float32 in [0, 1]
    strength: float = 1.0
    start: float = 0.0
    end: float = 1.0


@dataclass
class SampleJob:
    unet: Any
    scheduler_config: dict[str, Any]
    positive: Sequence[Cond]
    negative: Sequence[Cond]
    latent: Latent
    seed: int
    steps: int
    cfg: float
    sampler: str
    denoise: float = 1.0
    family: str = "sd1"
    vae_scale: int = 8
    device: str = "cpu"
    dtype: Any = None
    on_step: Callable[[int, int, torch.Tensor], None] | None = None
    cross_attention_kwargs: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: KSamplerAdvanced's window: run steps [start_step, end_step) of ``steps``.
    start_step: int = 0
    end_step: int | None = None
    #: False: the latent is already noisy at the window's first level (sigma space).
    add_noise: bool = True
    #: True: an early end returns the noisy latents (sigma space) instead of clean ones.
    leftover_noise: bool = False
    #: DualCFGGuider's middle prompt, second scale and style (:mod:`models.dual_cfg`); None: plain CFG.
    dual: DualGuidance | None = None


def _step_kwargs(scheduler: Any, generator: Any) -> dict[str, Any]:
    import inspect

    params = set(inspect.signature(scheduler.step).parameters)
    kwargs: dict[str, Any] = {}
    if "eta" in params:
        kwargs["eta"] = 0.0
    if "generator" in params:
        kwargs["generator"] = generator
    return kwargs


def region_weight(cond: Cond, height: int, width: int, scale: int = 8) -> torch.Tensor:
    """(1, 1, h, w) weight of a conditioning over the latent grid: its region (resized to the
    grid) times its area (a box resolved here, with ``scale`` pixels per latent cell: the VAE's
    factor) times its strength. An area outside the picture raises
    :class:`~models.conditioning.AreaOutside` (a ValueError)."""
    import torch
    import torch.nn.functional as F

    weight = torch.full((1, 1, height, width), float(cond.strength))
    if cond.region is not None:
        region = cond.region.to(torch.float32)
        if region.shape[-2:] != (height, width):
            region = F.interpolate(region, size=(height, width), mode="bilinear", align_corners=False)
        weight = weight * region.clamp(0, 1)
    if cond.area is not None:
        top, bottom, left, right = cond.area.cells(height, width, scale)
        box = torch.zeros(1, 1, height, width)
        box[..., top:bottom, left:right] = 1.0
        weight = weight * box
    return weight


def combine(preds: torch.Tensor, conds: Sequence[Cond], batch: int, scale: int = 8) -> torch.Tensor:
    """Weighted mean of each conditioning's prediction, by region, area and strength (``scale``:
    pixels per latent cell, to place areas given in pixels). Where no conditioning has weight,
    the plain mean.

    With one conditioning everywhere at strength 1 this is that prediction, exactly.
    """
    import torch

    if len(conds) == 1 and conds[0].region is None and conds[0].area is None and conds[0].strength == 1.0:
        return preds
    height, width = preds.shape[-2:]
    chunks = preds.chunk(len(conds))
    weights = [region_weight(c, height, width, scale).to(preds.device, preds.dtype) for c in conds]
    total = torch.stack(weights).sum(0)
    mixed = sum(w * p for w, p in zip(weights, chunks, strict=True))
    mean = sum(chunks) / len(chunks)
    covered = total > 1e-6
    return torch.where(covered, mixed / total.clamp_min(1e-6), mean)


#: The longest token sequence _embeds builds by repeating prompts of different lengths.
MAX_BATCHED_TOKENS = 77 * 400


def _embeds(conds: Sequence[Cond], batch: int, device: str, dtype: Any) -> torch.Tensor:
    """The conditionings' token sequences as one batch. Sequences of different lengths (long
    prompts, ConditioningConcat) are each repeated whole up to the least common multiple of
    the lengths, as ComfyUI does: cross-attention over a sequence repeated k times equals
    attention over it once, so no prompt is cut or changed."""
    import math

    import torch

    lengths = sorted({int(c.embeds.shape[1]) for c in conds})
    tokens = math.lcm(*lengths)
    if tokens > MAX_BATCHED_TOKENS:
        raise ValueError(
            f"prompts of {', '.join(map(str, lengths))} tokens cannot be sampled together (they would "
            f"repeat to {tokens} tokens); keep prompt lengths to multiples of 77, as the text encoders give"
        )
    parts = []
    for cond in conds:
        embeds = cond.embeds
        if embeds.shape[1] < tokens:
            embeds = embeds.repeat(1, tokens // embeds.shape[1], 1)
        parts.append(embeds.repeat(batch, 1, 1))
    return torch.cat(parts).to(device, dtype)


def _randn(shape: tuple[int, ...], generator: Any, device: str, dtype: Any) -> torch.Tensor:
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    return randn_tensor(shape, generator=generator, device=torch.device(device), dtype=dtype)


@dataclass
class Sampled:
    """What a sampling run returns: the latents, and the model's last estimate of the clean latents
    (ComfyUI's ``denoised_output``), both (batch, channels, h, w) float32 on the CPU."""

    samples: torch.Tensor
    denoised: torch.Tensor


def sample(job: SampleJob, check_cancelled: Callable[[], None] = lambda: None) -> torch.Tensor:
    """Denoise ``job.latent`` with a diffusers scheduler; returns latents (batch, 4, h, w), float32, CPU.

    ``job.start_step`` / ``job.end_step`` run only part of the schedule (KSamplerAdvanced): see
    :class:`SchedulerStepper` for what the latents mean at the window's edges.
    """
    import torch

    from models.concat_image import check_job

    check_job(job)  # InstructPixToPixConditioning's picture and the model go together
    if job.family in ("sd3", "flux"):  # transformer (DiT) models, flow matching
        from models.flow_sampling import sample_flow

        return sample_flow(job, check_cancelled)
    if job.family == "svd":  # image to video
        from models.video_sampling import sample_video

        return sample_video(job, check_cancelled)
    device, dtype = job.device, job.dtype or torch.float32
    scheduler = make_scheduler(job.sampler, job.scheduler_config)
    first, last, force_clean = _window(job, scheduler, device)
    if first >= last:
        return job.latent.samples.clone()
    generator = torch.Generator("cpu").manual_seed(int(job.seed))
    model = GuidedModel(job, device, dtype)
    stepper = SchedulerStepper(scheduler, model, generator, first, last, force_clean)
    latent = job.latent
    if job.add_noise:
        pure_noise = first == 0 and job.denoise >= 1.0 and (model.empty or model.mask is not None)
        init = model.initial(generator, draw=not pure_noise or model.blends)
        noise = _randn(model.shape, generator, device, dtype)
        start = noise * scheduler.init_noise_sigma if pure_noise else stepper.known(init, noise, first)
    else:  # the latent is already noisy, at the window's first level, in sigma space
        init = latent.samples.to(device, dtype)
        noise = torch.zeros_like(init)
        start = init / stepper.sigma_space_scale(first)
    model.prepare_extra(generator)
    latents = run_loop(model, stepper, start, init, noise, check_cancelled)
    if not force_clean and last < len(scheduler.timesteps):
        latents = latents * stepper.sigma_space_scale(last)  # leftover noise, in sigma space
    return latents.to("cpu", torch.float32)


def sample_custom(
    job: SampleJob,
    sampler: str,
    sigmas: torch.Tensor,
    noise_seed: int | None,
    check_cancelled: Callable[[], None] = lambda: None,
) -> Sampled:
    """Custom sampling: a sigma-space rule (``models.schedules.K_SAMPLERS``) over explicit levels.

    ``noise_seed`` None adds no noise (the latent is taken as already noisy at ``sigmas[0]``);
    otherwise noise drawn from the seed on the CPU is scaled to ``sigmas[0]`` (by
    ``sqrt(1 + sigma^2)`` when that is the model's highest level, as txt2img starts).
    SD3 and Flux models sample in flow's own noising (``models.flow_sampling.sample_flow_custom``).
    """
    import torch

    from models.concat_image import check_job
    from models.schedules import KStepper, model_levels

    check_job(job)  # InstructPixToPixConditioning's picture and the model go together
    if job.family in ("sd3", "flux"):
        from models.flow_sampling import sample_flow_custom

        return sample_flow_custom(job, sampler, sigmas, noise_seed, check_cancelled)

    device, dtype = job.device, job.dtype or torch.float32
    levels = [float(s) for s in sigmas]
    if len(levels) < 2:
        return Sampled(job.latent.samples.clone(), job.latent.samples.clone())
    generator = torch.Generator("cpu").manual_seed(int(noise_seed or 0))
    model = GuidedModel(job, device, dtype)
    table = model_levels(job.scheduler_config)
    prediction = str(job.scheduler_config.get("prediction_type", "epsilon"))
    total = len(levels) - 1

    def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
        scale = (sigma**2 + 1) ** 0.5
        x_in = x / scale
        t = torch.tensor(table.timestep(sigma), dtype=torch.float32, device=device)
        pred = model(x_in, t, stepper.index, total)
        return to_clean(pred, x_in, sigma, prediction)

    kstepper = KStepper(sampler, levels, denoise, lambda x: _randn(tuple(x.shape), generator, device, dtype))
    stepper = SigmaStepper(kstepper)
    if noise_seed is not None:
        init = model.initial(generator, draw=True)
        noise = _randn(model.shape, generator, device, dtype)
        top = levels[0]
        max_denoise = math.isclose(top, table.sigma_max, rel_tol=1e-5) or top > table.sigma_max
        start = init + noise * ((1 + top**2) ** 0.5 if max_denoise else top)
    else:
        init = job.latent.samples.to(device, dtype)
        noise = torch.zeros_like(init)
        start = init
    model.prepare_extra(generator)
    latents = run_loop(model, stepper, start, init, noise, check_cancelled)
    denoised = kstepper.denoised if kstepper.denoised is not None else latents
    return Sampled(latents.to("cpu", torch.float32), denoised.to("cpu", torch.float32))


def to_clean(pred: torch.Tensor, x_in: torch.Tensor, sigma: float, prediction: str) -> torch.Tensor:
    """The clean latent a model output implies, from the scaled input ``x_in`` at level ``sigma``.

    ``x_in`` is in the model's own (variance-preserving) space: ``alpha * x0 + s * noise`` with
    ``alpha = 1 / sqrt(1 + sigma^2)`` and ``s = sigma * alpha``.
    """
    alpha = 1.0 / (1.0 + sigma**2) ** 0.5
    if prediction == "epsilon":
        return (x_in - sigma * alpha * pred) / alpha
    if prediction == "v_prediction":
        return alpha * x_in - sigma * alpha * pred
    if prediction == "sample":
        return pred
    raise ValueError(f"unknown prediction type {prediction!r} (epsilon, v_prediction or sample)")


def run_loop(
    model: GuidedModel,
    stepper: Any,
    latents: torch.Tensor,
    init: torch.Tensor,
    noise: torch.Tensor,
    check_cancelled: Callable[[], None],
) -> torch.Tensor:
    """The one denoising loop both paths share: step, keep the unmasked part, report, check cancel."""
    count = stepper.last - stepper.first
    for index in range(stepper.first, stepper.last):
        check_cancelled()
        stepper.index = index
        if model.excite is not None:  # Attend-and-Excite (models/attend_excite.py)
            latents = model.excite(index, latents, stepper)
        latents = stepper.step(index, latents)
        if model.mask is not None and model.blends:
            known = stepper.known(init, noise, index + 1)
            mask = model.mask
            if model.differential is not None:
                from models.per_step import differential_mask

                mask = differential_mask(model, stepper, index)
            latents = (1 - mask) * known + mask * latents
        if model.job.on_step is not None:
            model.job.on_step(index + 1 - stepper.first, count, latents)
    return latents


def _window(job: SampleJob, scheduler: Any, device: str) -> tuple[int, int, bool]:
    """Which of the scheduler's timesteps to run: [first, last), and whether to end clean.

    ``denoise`` < 1 keeps its last fraction (image-to-image); ``start_step`` / ``end_step`` cut
    a window out of ``steps`` (KSamplerAdvanced). An early end returns clean latents unless
    ``leftover_noise`` asks for the noisy ones.
    """
    scheduler.set_timesteps(job.steps, device=device)
    order = int(getattr(scheduler, "order", 1))
    count = len(scheduler.timesteps)
    start = job.start_step
    if job.denoise < 1.0:
        start = max(start, job.steps - min(int(job.steps * job.denoise), job.steps))
    end = job.steps if job.end_step is None else min(job.end_step, job.steps)
    if start >= end:
        return 0, 0, False
    first = start * order
    last = count if end >= job.steps else end * order
    if (first > 0 and job.denoise >= 1.0 or last < count) and count != job.steps * order:
        raise ValueError(
            f"the {job.sampler} sampler cannot run part of a schedule (it needs its warm-up steps); "
            "choose euler, ddim or dpmpp_2m for start_at_step / end_at_step"
        )
    if (first > 0 or job.denoise < 1.0) and hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(first)
    return first, last, last < count and not job.leftover_noise


class GuidedModel:
    """The UNet with everything the conditioning asks for: CFG, regions and strengths,
    ControlNet residuals, SDXL's added inputs, inpainting channels. Called with the scaled model
    input and a timestep, it returns the guided prediction."""

    def __init__(self, job: SampleJob, device: str, dtype: Any) -> None:
        if job.extra.get(HYPERNETWORKS):  # the run's UNet is a view with them (the cached one is kept)
            from models.hypernetwork import hypernetwork_view

            job = replace(job, unet=hypernetwork_view(job.unet, job.extra[HYPERNETWORKS], device, dtype))
        self.job, self.device, self.dtype = job, device, dtype
        latent = job.latent
        self.shape = tuple(latent.samples.shape)
        self.batch = self.shape[0]
        self.in_channels = int(job.unet.config.in_channels)
        mask = latent.noise_mask
        if self.in_channels == 9 and latent.inpaint_mask is not None:
            mask = latent.inpaint_mask  # InpaintModelConditioning: the model's own, binarised mask
        self.mask = mask.to(device, dtype) if mask is not None else None
        #: whether the loop keeps the unmasked part itself (any UNet but a 9-channel inpainting one)
        self.blends = self.mask is not None and self.in_channels != 9
        #: DifferentialDiffusion's strength (``job.extra[DIFFERENTIAL]``): the kept part shrinks step by step
        self.differential: float | None = job.extra.get(DIFFERENTIAL)
        if self.differential is not None:
            from models.schedules import model_levels

            self.levels = model_levels(job.scheduler_config)
        self.empty = latent.std is None and not bool(latent.samples.any())
        if self.in_channels == 9 and (self.mask is None or latent.masked_image is None):
            raise ValueError(
                "this is an inpainting model: give it a latent from InpaintEncode or "
                "InpaintModelConditioning (image and mask)"
            )
        #: an instruction-editing UNet's pictures, one per conditioning (models/concat_image.py)
        self.concat: torch.Tensor | None = None
        editor = self.in_channels == 2 * self.shape[1]
        if self.in_channels not in (9, self.shape[1]) and not editor:
            raise ValueError(
                f"the model expects {self.in_channels} latent channels, the latent has {self.shape[1]}"
            )
        self.use_cfg = job.cfg > 1.0 and len(job.negative) > 0
        self.conds = list(job.negative) + list(job.positive) if self.use_cfg else list(job.positive)
        #: DualCFGGuider: three sides (negative, middle, positive) instead of CFG's two
        self.dual: DualSides | None = None
        if job.dual is not None:
            from models.dual_cfg import DualSides

            self.dual = DualSides(job)
            self.conds = self.dual.conds
        if editor:
            from models.concat_image import concat_inputs

            self.concat = concat_inputs(self.conds, self.batch, self.shape[-2:], device, dtype)
        self.embeds = _embeds(self.conds, self.batch, device, dtype)
        self.added = _sdxl_added_inputs(job, self.conds, self.batch, device, dtype)
        #: an SD 2.x unCLIP UNet's image embeddings (unCLIPConditioning), None for other UNets
        self.class_labels = unclip_class_labels(job.unet, self.conds, self.batch, job.seed, device, dtype)
        self.extra_inputs: torch.Tensor | None = None
        #: The per-step hook: callables (step index, step count) run before each model call, from
        #: ``job.extra[STEP_HOOKS]`` and the image prompts below.
        self.step_hooks: list[Callable[[int, int], None]] = list(job.extra.get(STEP_HOOKS, ()))
        #: The UNet to call and its added inputs: IP-Adapter image prompts (``job.extra[IMAGE_PROMPTS]``)
        #: run on a view of ``job.unet`` that shares its weights (models/ip_adapter.py), with
        #: their image embeddings beside SDXL's added inputs.
        self.unet, self.unet_added = job.unet, self.added
        prompts = job.extra.get(IMAGE_PROMPTS, ())
        if prompts:
            from models.ip_adapter import adapt_unet

            rows = [i >= len(self.conds) - len(job.positive) for i in range(len(self.conds))]
            adapted = adapt_unet(
                job.unet, prompts, [r for r in rows for _ in range(self.batch)], device, dtype
            )
            self.unet = adapted.unet
            self.unet_added = {**(self.added or {}), "image_embeds": adapted.image_embeds}
            self.step_hooks.append(adapted.at_step)
        #: GLIGEN boxes on the conditionings (models/gligen.py): a view with the adapter's fusers, their
        #: inputs in ``cross_attention_kwargs["gligen"]``, the fusers off after ``beta`` of the steps.
        self.cross_attention_kwargs = job.cross_attention_kwargs
        from models.gligen import ground_unet, groundings_of

        if any(groundings_of(self.conds)):
            picture = (self.shape[-2] * job.vae_scale, self.shape[-1] * job.vae_scale)
            grounded = ground_unet(self.unet, self.conds, self.batch, picture, job.family, device, dtype)
            self.unet = grounded.unet
            self.cross_attention_kwargs = {**(job.cross_attention_kwargs or {}), "gligen": grounded.inputs}
            self.step_hooks.append(grounded.at_step)
        #: ConditioningSetTimestepRange: the model's noise levels, to leave conditionings out of the
        #: steps outside their range (:class:`models.per_step.TimestepRanges`); None when every
        #: conditioning acts throughout.
        ranged = any(c.timestep_range != (0.0, 1.0) for c in self.conds)
        self.ranges: TimestepRanges | None = None
        if ranged:
            from models.per_step import TimestepRanges

            self.ranges = TimestepRanges.of(job)
        #: Attend-and-Excite (``job.extra[ATTEND_EXCITE]``): moves the latents before a step's model call
        #: (models/attend_excite.py); None when not asked for.
        self.excite: Callable[[int, torch.Tensor, Any], torch.Tensor] | None = None
        if job.extra.get(ATTEND_EXCITE) is not None:
            from models.attend_excite import Exciter

            self.excite = Exciter(job.extra[ATTEND_EXCITE], self)

    def initial(self, generator: Any, draw: bool) -> torch.Tensor:
        """The clean latents to start from: an encoded image is drawn from its distribution
        (first from the generator, as the pipelines do) when ``draw``."""
        latent = self.job.latent
        init = latent.samples.to(self.device, self.dtype)
        if latent.std is not None and draw:
            init = init + latent.std.to(self.device, self.dtype) * _randn(
                self.shape, generator, self.device, self.dtype
            )
        return init

    def prepare_extra(self, generator: Any) -> None:
        """A 9-channel inpainting UNet's extra inputs: the mask and the masked image's latents
        (drawn after the noise, as the inpainting pipeline draws them)."""
        import torch

        if self.in_channels != 9:
            return
        latent = self.job.latent
        masked = latent.masked_image.to(self.device, self.dtype)
        if latent.masked_image_std is not None:
            masked = masked + latent.masked_image_std.to(self.device, self.dtype) * _randn(
                self.shape, generator, self.device, self.dtype
            )
        assert self.mask is not None
        self.extra_inputs = torch.cat([self.mask, masked], dim=1)

    def __call__(self, model_input: torch.Tensor, t: Any, index: int, total: int) -> torch.Tensor:
        import torch

        job, batch, conds = self.job, self.batch, self.conds
        x_in = model_input
        model_input = torch.cat([model_input] * len(conds))
        if self.extra_inputs is not None:
            model_input = torch.cat([model_input, self.extra_inputs.repeat(len(conds), 1, 1, 1)], dim=1)
        elif self.concat is not None:
            model_input = torch.cat([model_input, self.concat], dim=1)
        for hook in self.step_hooks:
            hook(index, total)
        down, mid = _control_residuals(job, conds, model_input, t, self.embeds, self.added, index, total)
        with torch.no_grad():
            pred = self.unet(
                model_input,
                t,
                encoder_hidden_states=self.embeds,
                added_cond_kwargs=self.unet_added,
                class_labels=self.class_labels,
                cross_attention_kwargs=self.cross_attention_kwargs,
                down_block_additional_residuals=down,
                mid_block_additional_residual=mid,
                return_dict=False,
            )[0]
        side = combine if self.ranges is None else self.ranges.combiner(x_in, t)
        if self.dual is not None:
            return self.dual.combine(pred, side, batch, job.vae_scale)
        if self.use_cfg:
            n_neg = len(job.negative)
            uncond = side(pred[: n_neg * batch], job.negative, batch, scale=job.vae_scale)
            cond = side(pred[n_neg * batch :], job.positive, batch, scale=job.vae_scale)
            return uncond + job.cfg * (cond - uncond)
        return side(pred, job.positive, batch, scale=job.vae_scale)


class SchedulerStepper:
    """Steps a diffusers scheduler over its timesteps ``[first, last)``.

    Latents live in the scheduler's own space (sigma space for Euler-like schedulers,
    variance-preserving for DDIM, DPM-Solver, UniPC, LCM). At a window's edges they are
    exchanged in sigma space (``x0 + sigma * noise``), ComfyUI's convention, so a window of
    one sampler can hand over to another. With ``force_clean`` the window's last step returns
    the model's estimate of the clean latents, as ComfyUI's step to sigma 0 does.
    """

    def __init__(
        self, scheduler: Any, model: GuidedModel, generator: Any, first: int, last: int, force_clean: bool
    ) -> None:
        self.scheduler, self.model = scheduler, model
        self.first, self.last, self.force_clean = first, last, force_clean
        self.index = first
        self.step_kwargs = _step_kwargs(scheduler, generator)
        self.timesteps = scheduler.timesteps

    def sigma_level(self, index: int) -> float:
        """The noise level (sigma) of the latents before timestep ``index`` (0 past the end)."""
        scheduler = self.scheduler
        if index >= len(self.timesteps):
            return 0.0
        sigmas = getattr(scheduler, "sigmas", None)
        if sigmas is not None and len(sigmas) == len(self.timesteps) + 1:
            return float(sigmas[index])
        alpha = float(scheduler.alphas_cumprod[int(self.timesteps[index])])
        return ((1 - alpha) / alpha) ** 0.5

    def sigma_space_scale(self, index: int) -> float:
        """x_sigma_space / x_scheduler_space at ``index``: 1 for Euler-like schedulers."""
        if float(self.scheduler.init_noise_sigma) > 1.0:
            return 1.0
        return (1.0 + self.sigma_level(index) ** 2) ** 0.5

    def known(self, init: torch.Tensor, noise: torch.Tensor, index: int) -> torch.Tensor:
        """``init`` noised to the level of timestep ``index`` (clean at the run's end)."""
        if index >= len(self.timesteps) or (self.force_clean and index >= self.last):
            return init
        return self.scheduler.add_noise(init, noise, self.timesteps[index : index + 1].repeat(init.shape[0]))

    def step(self, index: int, latents: torch.Tensor) -> torch.Tensor:
        scheduler, t = self.scheduler, self.timesteps[index]
        model_input = scheduler.scale_model_input(latents, t)
        pred = self.model(model_input, t, index, len(self.timesteps))
        output = scheduler.step(pred, t, latents, **self.step_kwargs, return_dict=True)
        if self.force_clean and index == self.last - 1:
            clean = getattr(output, "pred_original_sample", None)
            if clean is None:
                clean = getattr(output, "denoised", None)
            if clean is None:
                prediction = str(scheduler.config.get("prediction_type", "epsilon"))
                clean = to_clean(pred, model_input, self.sigma_level(index), prediction)
            return clean
        return output.prev_sample


class SigmaStepper:
    """Runs a :class:`models.schedules.KStepper` (sigma space throughout) in the shared loop."""

    def __init__(self, kstepper: Any) -> None:
        self.kstepper = kstepper
        self.first, self.last, self.index = 0, len(kstepper.sigmas) - 1, 0

    def known(self, init: torch.Tensor, noise: torch.Tensor, index: int) -> torch.Tensor:
        return init + noise * self.kstepper.sigmas[index]

    def sigma_level(self, index: int) -> float:
        """The noise level before step ``index`` (0 past the end)."""
        sigmas = self.kstepper.sigmas
        return float(sigmas[index]) if index < len(sigmas) else 0.0

    def step(self, index: int, latents: torch.Tensor) -> torch.Tensor:
        return self.kstepper.step(index, latents)


def _sdxl_added_inputs(
    job: SampleJob, conds: Sequence[Cond], batch: int, device: str, dtype: Any
) -> dict[str, Any] | None:
    """SDXL's extra UNet inputs: each conditioning's pooled embedding and its own time ids
    (size, crop, target, or a refiner's aesthetic score; :class:`SizeConditioning`), as many
    ids as the UNet was built for. ``conds`` is the negatives then the positives."""
    import torch

    from models.conditioning import SizeConditioning

    if job.family != "sdxl":
        return None
    picture = tuple(s * job.vae_scale for s in job.latent.samples.shape[-2:])
    count = _time_id_count(job.unet, conds)
    negatives = len(conds) - len(job.positive)  # 0 when the sampler runs without CFG
    pooled, time_ids = [], []
    for index, cond in enumerate(conds):
        vector = revision_pooled(cond, job.seed)  # a picture's embedding replaces it (revision)
        if vector is None:
            raise ValueError("SDXL needs conditioning from its own text encoders (no pooled embedding found)")
        pooled.append(vector.repeat(batch, 1))
        size = cond.size or SizeConditioning()
        time_ids += [size.time_ids(picture, count, negative=index < negatives)] * batch
    return {
        "text_embeds": torch.cat(pooled).to(device, dtype),
        "time_ids": torch.tensor(time_ids, dtype=dtype).to(device),
    }


def _time_id_count(unet: Any, conds: Sequence[Cond]) -> int:
    """How many time ids the UNet embeds: 6 for an SDXL base, 5 for a refiner (read from its
    added-embedding width, as the diffusers pipelines check it)."""
    config = unet.config
    total = getattr(config, "projection_class_embeddings_input_dim", None)
    per_id = getattr(config, "addition_time_embed_dim", None)
    pooled = conds[0].pooled
    if not total or not per_id or pooled is None:
        return 6
    count, rest = divmod(int(total) - int(pooled.shape[-1]), int(per_id))
    if rest or count not in (5, 6):
        raise ValueError(
            f"the model's added embedding ({total} numbers) does not fit a pooled prompt of "
            f"{pooled.shape[-1]} and 5 or 6 time ids: the prompt comes from another model's text encoder"
        )
    return count


def _control_residuals(
    job: SampleJob,
    conds: Sequence[Cond],
    model_input: torch.Tensor,
    t: Any,
    embeds: torch.Tensor,
    added: dict[str, Any] | None,
    index: int,
    total: int,
) -> tuple[list[torch.Tensor] | None, torch.Tensor | None]:
    """Sum the residuals of every ControlNet on every conditioning active at this step."""
    import torch
    import torch.nn.functional as F

    if not any(c.controls for c in conds):
        return None, None

    batch = job.latent.samples.shape[0]
    pixels = tuple(size * job.vae_scale for size in job.latent.samples.shape[-2:])
    down_total: list[torch.Tensor] | None = None
    mid_total: torch.Tensor | None = None
    for position, cond in enumerate(conds):
        for hint in cond.controls:
            # the ControlNet pipeline's rule: active from start to end, as fractions of the steps
            if index / total < hint.start or (index + 1) / total > hint.end:
                continue
            controlnet = hint.model()
            rows = slice(position * batch, (position + 1) * batch)
            image = hint.image.to(model_input.device, model_input.dtype)
            if tuple(image.shape[-2:]) != pixels:
                image = F.interpolate(image, size=pixels, mode="bilinear", align_corners=False)
            image = image.repeat(batch, 1, 1, 1)
            cond_added = {k: v[rows] for k, v in added.items()} if added else None
            with torch.no_grad():
                down, mid = controlnet(
                    model_input[rows][:, : controlnet.config.in_channels],
                    t,
                    encoder_hidden_states=embeds[rows],
                    controlnet_cond=image,
                    conditioning_scale=float(hint.strength),
                    added_cond_kwargs=cond_added,
                    return_dict=False,
                )
            if down_total is None:
                down_total = [d.new_zeros((model_input.shape[0], *d.shape[1:])) for d in down]
                mid_total = mid.new_zeros((model_input.shape[0], *mid.shape[1:]))
            for slot, residual in zip(down_total, down, strict=True):
                slot[rows] += residual
            assert mid_total is not None
            mid_total[rows] += mid
    return down_total, mid_total


@dataclass
class EditJob:
    """InstructPix2Pix: an 8-channel UNet edits ``image_latents`` (the VAE's mode, unscaled)
    as the text says, with separate text and image guidance."""

    unet: Any
    scheduler_config: dict[str, Any]
    positive: Sequence[Cond]
    negative: Sequence[Cond]
    image_latents: torch.Tensor
    seed: int
    steps: int
    text_cfg: float
    image_cfg: float
    sampler: str
    device: str = "cpu"
    dtype: Any = None
    on_step: Callable[[int, int, torch.Tensor], None] | None = None


def sample_edit(job: EditJob, check_cancelled: Callable[[], None] = lambda: None) -> torch.Tensor:
    """The InstructPix2Pix loop: predictions for (text, image), (no text, image) and (nothing)."""
    import torch

    if int(job.unet.config.in_channels) != 8:
        raise ValueError("InstructPix2Pix needs an instruction-editing model (a UNet with 8 input channels)")
    if len(job.positive) != 1 or len(job.negative) != 1:
        raise ValueError("InstructPix2Pix takes one positive and one negative conditioning")
    device, dtype = job.device, job.dtype or torch.float32
    scheduler = make_scheduler(job.sampler, job.scheduler_config)
    scheduler.set_timesteps(job.steps, device=device)
    image = job.image_latents.to(device, dtype)
    batch = image.shape[0]
    generator = torch.Generator("cpu").manual_seed(int(job.seed))
    shape = (batch, int(job.unet.config.out_channels), *image.shape[-2:])
    latents = _randn(shape, generator, device, dtype) * scheduler.init_noise_sigma
    guided = job.text_cfg > 1.0 and job.image_cfg >= 1.0
    if guided:
        conds = [job.positive[0], job.negative[0], job.negative[0]]
        images = torch.cat([image, image, torch.zeros_like(image)])
    else:
        conds, images = [job.positive[0]], image
    embeds = _embeds(conds, batch, device, dtype)
    step_kwargs = _step_kwargs(scheduler, generator)
    total = len(scheduler.timesteps)
    for index, t in enumerate(scheduler.timesteps):
        check_cancelled()
        model_input = scheduler.scale_model_input(torch.cat([latents] * len(conds)), t)
        model_input = torch.cat([model_input, images], dim=1)
        with torch.no_grad():
            pred = job.unet(model_input, t, encoder_hidden_states=embeds, return_dict=False)[0]
        if guided:
            text, with_image, uncond = pred.chunk(3)
            pred = uncond + job.text_cfg * (text - with_image) + job.image_cfg * (with_image - uncond)
        latents = scheduler.step(pred, t, latents, **step_kwargs, return_dict=False)[0]
        if job.on_step is not None:
            job.on_step(index + 1, total, latents)
    return latents.to("cpu", torch.float32)
