"""The denoising loop of the flow-matching transformer (DiT) models: SD3 / SD3.5 and Flux.1.

It follows ``StableDiffusion3Pipeline`` (and its Img2Img and Inpaint pipelines) and
``FluxPipeline`` step for step, so that the same model, seed, prompt, steps and guidance draw
the same picture; the tests hold it to that.

- The model predicts a velocity ``v``; a latent at level ``sigma`` is ``(1 - sigma) * x0 +
  sigma * noise``. Levels come from ``FlowMatchEulerDiscreteScheduler``: SD3 spaces them as its
  pipeline does and shifts them by the config's ``shift`` (ModelSamplingSD3 overrides it); Flux
  takes ``linspace(1, 1/steps)`` and, when the config says ``use_dynamic_shifting``, shifts by
  ``mu`` from the number of image tokens (the resolution-dependent shift; ModelSamplingFlux fixes
  it). ``dpmpp_2m`` and ``unipc`` use diffusers' flow-sigma variants of those solvers.
- SD3 runs classifier-free guidance with the negatives and positives in one batch; SD3.5's
  skip-layer guidance (:class:`SkipLayers`) adds a pass without some layers. Flux dev embeds its
  guidance (FluxGuidance, default 3.5); a cfg above 1 with a negative prompt runs true CFG (a
  second pass), as FluxPipeline's ``true_cfg_scale``.
- Flux's transformer sees 2x2 patches of the latents (packed) with position ids; latents stay
  unpacked between steps, so masks, regions and previews work alike for both families.
- Image to image (``denoise`` < 1) starts from the image noised to the first kept level;
  a latent noise mask keeps the known part after every step (the inpaint pipeline's blend).

- Custom sampling (SamplerCustom / SamplerCustomAdvanced, ComfyUI's Flux and SD3.5 templates)
  runs k-diffusion's sigma-space rules over given levels on the clean estimate ``x - sigma * v``,
  with ComfyUI's noising of flow models (:func:`sample_flow_custom`); the KSampler's ``heun``
  steps the same way over the Euler scheduler's levels (:func:`sample_flow_levels`).

Noise is drawn on a CPU generator seeded with the seed, with the pipelines' shapes and order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from models.values import Cond

if TYPE_CHECKING:
    import torch

    from models.sampling import Sampled, SampleJob

#: Sampler name -> (diffusers scheduler class, config for flow matching). ``None``: the
#: checkpoint's own FlowMatchEulerDiscreteScheduler config.
FLOW_SAMPLERS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "euler": ("FlowMatchEulerDiscreteScheduler", None),
    "dpmpp_2m": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "prediction_type": "flow_prediction"},
    ),
    "unipc": ("UniPCMultistepScheduler", {"prediction_type": "flow_prediction"}),
}
#: Samplers run as sigma-space rules (models.schedules.KStepper) over the Euler scheduler's
#: levels: "heun" is FlowMatchHeunDiscreteScheduler's method (which takes neither Flux's custom
#: levels nor its resolution-dependent shift, so it is not used itself).
SIGMA_SAMPLERS = ("heun",)
#: Flux.1's default embedded guidance (FluxPipeline's and CLIPTextEncodeFlux's).
FLUX_GUIDANCE = 3.5


class FlowSamplingError(ValueError):
    """A setting the flow sampler cannot use; ``input_name`` is the node input to blame."""

    def __init__(self, input_name: str, message: str) -> None:
        super().__init__(message)
        self.input_name = input_name


@dataclass(frozen=True)
class SkipLayers:
    """SD3.5 skip-layer guidance (diffusers' ``skip_guidance_layers``): during steps ``i`` with
    ``start * n < i < end * n`` of ``n``, the guided prediction gains ``scale * (cond -
    cond_without_layers)``, where ``cond_without_layers`` runs the positive prompt with the
    transformer blocks ``layers`` skipped."""

    layers: tuple[int, ...]
    scale: float = 2.8
    start: float = 0.01
    end: float = 0.2


# --------------------------------------------------------------------------- schedule


def calculate_shift(image_seq_len: int, config: dict[str, Any]) -> float:
    """Flux's ``mu``: linear in the number of image tokens between the config's two anchors."""
    base_len = float(config.get("base_image_seq_len", 256))
    max_len = float(config.get("max_image_seq_len", 4096))
    base_shift = float(config.get("base_shift", 0.5))
    max_shift = float(config.get("max_shift", 1.15))
    slope = (max_shift - base_shift) / (max_len - base_len)
    return image_seq_len * slope + (base_shift - slope * base_len)


def flux_shift(width: int, height: int, base_shift: float, max_shift: float) -> float:
    """ModelSamplingFlux's shift for a picture of ``width`` x ``height`` pixels, as a plain
    shift factor: ``exp(mu)`` for the 2x2-packed tokens of an 8x-downsampling VAE (the
    exponential time shift with ``mu`` equals the plain shift by ``exp(mu)``)."""
    tokens = (width // 16) * (height // 16)
    config = {"base_shift": base_shift, "max_shift": max_shift}
    return math.exp(calculate_shift(tokens, config))


def make_flow_scheduler(
    name: str, config: dict[str, Any], family: str, image_seq_len: int
) -> tuple[Any, Any]:
    """(scheduler with its timesteps set, keyword arguments used) for ``name`` on a flow model.

    SD3's pipeline lets the scheduler space its levels; FluxPipeline passes
    ``linspace(1, 1/steps)``. The solvers other than Euler get the same shift as a plain
    ``flow_shift``.
    """
    import diffusers

    if name not in FLOW_SAMPLERS:
        raise FlowSamplingError(
            "sampler",
            f"the {name} sampler does not work with {family} models (flow matching); "
            f"choose {', '.join((*FLOW_SAMPLERS, *SIGMA_SAMPLERS))}",
        )
    class_name, flow_config = FLOW_SAMPLERS[name]
    mu = calculate_shift(image_seq_len, config) if config.get("use_dynamic_shifting") else None
    if flow_config is None:
        return getattr(diffusers, class_name).from_config(config), {"mu": mu}
    shift = math.exp(mu) if mu is not None else float(config.get("shift", 1.0))
    settings = {
        "num_train_timesteps": int(config.get("num_train_timesteps", 1000)),
        "use_flow_sigmas": True,
        "flow_shift": shift,
        **flow_config,
    }
    return getattr(diffusers, class_name).from_config(settings), {}


def _set_timesteps(scheduler: Any, steps: int, family: str, kwargs: dict[str, Any], device: str) -> None:
    import numpy as np

    if getattr(scheduler.config, "use_flow_sigmas", False):
        scheduler.set_timesteps(steps, device=device)
        return
    mu = kwargs.get("mu")
    extra: dict[str, Any] = {"mu": mu} if mu is not None else {}
    if family == "flux":
        extra["sigmas"] = np.linspace(1.0, 1 / steps, steps)
    scheduler.set_timesteps(steps, device=device, **extra)


# --------------------------------------------------------------------------- the model


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(b, c, h, w) -> (b, h/2 * w/2, 4c): Flux's 2x2 patches (FluxPipeline._pack_latents)."""
    b, c, h, w = latents.shape
    packed = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return packed.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(packed: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The inverse of :func:`pack` (FluxPipeline._unpack_latents)."""
    b, _, channels = packed.shape
    latents = packed.view(b, h // 2, w // 2, channels // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return latents.reshape(b, channels // 4, h, w)


def image_ids(h: int, w: int, device: Any, dtype: Any) -> torch.Tensor:
    """Flux's position ids of the packed image tokens: (h/2 * w/2, 3), (0, row, column)."""
    import torch

    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] = ids[..., 1] + torch.arange(h // 2)[:, None]
    ids[..., 2] = ids[..., 2] + torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


class FlowModel:
    """The transformer with the prompts, guidance and family rules: ``velocity(x, t, i, n)``."""

    def __init__(self, job: SampleJob, device: str, dtype: Any) -> None:
        self.job, self.device, self.dtype = job, device, dtype
        self.family = job.family
        self.transformer = job.unet
        config = self.transformer.config
        self.shape = tuple(job.latent.samples.shape)
        self.batch = self.shape[0]
        self.joint_dim = int(config.joint_attention_dim)
        self._check_latent(config)
        self.use_cfg = job.cfg > 1.0 and len(job.negative) > 0
        self.conds = list(job.negative) + list(job.positive) if self.use_cfg else list(job.positive)
        for cond in self.conds:
            self._check_cond(cond, config)
        #: ConditioningSetTimestepRange (models/per_step.py's TimestepRanges); None when every
        #: conditioning acts throughout.
        self.ranges: TimestepRanges | None = None
        if any(c.timestep_range != (0.0, 1.0) for c in self.conds):
            from models.per_step import TimestepRanges

            self.ranges = TimestepRanges.of(job)
        self.skip: SkipLayers | None = job.extra.get("skip_layers")
        if self.skip is not None and self.family != "sd3":
            raise FlowSamplingError("model", "skip-layer guidance works with SD3 models only")
        if self.skip is not None:
            depth = int(config.num_layers)
            wrong = [layer for layer in self.skip.layers if not 0 <= layer < depth]
            if wrong:
                raise FlowSamplingError(
                    "model",
                    f"skip-layer guidance names layer(s) {wrong}, but this model has layers 0 to {depth - 1}",
                )
        h, w = self.shape[-2:]
        self.seq_len = (
            (h // 2) * (w // 2)
            if self.family == "flux"
            else (h // config.patch_size) * (w // config.patch_size)
        )
        self.img_ids = image_ids(h, w, device, dtype) if self.family == "flux" else None

    def _check_latent(self, config: Any) -> None:
        channels = int(config.in_channels) // (4 if self.family == "flux" else 1)
        if self.shape[1] != channels:
            raise FlowSamplingError(
                "latent",
                f"the model expects {channels} latent channels, the latent has {self.shape[1]}; make it with "
                "EmptySD3LatentImage (connect the VAE) or encode with this model's VAE",
            )
        if self.family == "flux" and (self.shape[-1] % 2 or self.shape[-2] % 2):
            raise FlowSamplingError(
                "latent", "Flux needs latents of even size: make width and height multiples of 16 pixels"
            )

    def _check_cond(self, cond: Cond, config: Any) -> None:
        width = int(cond.embeds.shape[-1])
        if width > self.joint_dim:
            raise FlowSamplingError(
                "positive",
                f"the prompt's features are {width} wide but the model takes {self.joint_dim}: "
                "encode it with this model's own text encoders",
            )
        pooled_dim = int(config.pooled_projection_dim)
        if cond.pooled is None or int(cond.pooled.shape[-1]) != pooled_dim:
            found = "none" if cond.pooled is None else str(int(cond.pooled.shape[-1]))
            raise FlowSamplingError(
                "positive",
                f"the model needs a pooled prompt vector of {pooled_dim} numbers (found {found}): encode the "
                f"prompt with this {self.family} model's CLIP",
            )

    def _embeds(self, cond: Cond) -> torch.Tensor:
        """The cond's joint text sequence, zero-padded to the transformer's width (SD3 without
        T5: the CLIP features alone, as ComfyUI and StableDiffusion3Pipeline pad them)."""
        import torch.nn.functional as F

        embeds = cond.embeds.to(self.device, self.dtype)
        if embeds.shape[-1] < self.joint_dim:
            embeds = F.pad(embeds, (0, self.joint_dim - embeds.shape[-1]))
        return embeds.repeat(self.batch, 1, 1)

    def _run(self, latents: torch.Tensor, t: Any, conds: Sequence[Cond], **kwargs: Any) -> torch.Tensor:
        """Predictions for ``latents`` (b, c, h, w) under each of ``conds``, stacked in that order."""
        import torch

        if self.family == "flux":
            return torch.cat([self._run_flux(latents, t, cond) for cond in conds])
        lengths = {int(c.embeds.shape[1]) for c in conds}
        groups = [list(conds)] if len(lengths) == 1 else [[c] for c in conds]
        preds = []
        for group in groups:
            x = torch.cat([latents] * len(group))
            with torch.no_grad():
                preds.append(
                    self.transformer(
                        hidden_states=x,
                        timestep=t.expand(x.shape[0]),
                        encoder_hidden_states=torch.cat([self._embeds(c) for c in group]),
                        pooled_projections=torch.cat(
                            [c.pooled.to(self.device, self.dtype).repeat(self.batch, 1) for c in group]
                        ),
                        return_dict=False,
                        **kwargs,
                    )[0]
                )
        return torch.cat(preds)

    def _run_flux(self, latents: torch.Tensor, t: Any, cond: Cond) -> torch.Tensor:
        import torch

        h, w = latents.shape[-2:]
        embeds = self._embeds(cond)
        guidance = None
        if self.transformer.config.guidance_embeds:
            value = float(cond.extra.get("guidance", FLUX_GUIDANCE))
            guidance = torch.full([1], value, device=self.device, dtype=torch.float32).expand(self.batch)
        timestep = t.expand(self.batch).to(self.dtype)
        with torch.no_grad():
            out = self.transformer(
                hidden_states=pack(latents),
                timestep=timestep / 1000,
                guidance=guidance,
                pooled_projections=cond.pooled.to(self.device, self.dtype).repeat(self.batch, 1),
                encoder_hidden_states=embeds,
                txt_ids=torch.zeros(embeds.shape[1], 3, device=self.device, dtype=self.dtype),
                img_ids=self.img_ids,
                return_dict=False,
            )[0]
        return unpack(out, h, w)

    def velocity(self, latents: torch.Tensor, t: Any, index: int, total: int) -> torch.Tensor:
        """The guided velocity at step ``index`` of ``total``."""
        from models.sampling import combine

        job, batch, scale = self.job, self.batch, self.job.vae_scale
        side = combine if self.ranges is None else self.ranges.combiner(latents, t)
        pred = self._run(latents, t, self.conds)
        if not self.use_cfg:
            return side(pred, job.positive, batch, scale=scale)
        n_neg = len(job.negative)
        uncond = side(pred[: n_neg * batch], job.negative, batch, scale=scale)
        cond = side(pred[n_neg * batch :], job.positive, batch, scale=scale)
        guided = uncond + job.cfg * (cond - uncond)
        skip = self.skip
        if skip is not None and total * skip.start < index < total * skip.end:
            skipped = self._run(latents, t, job.positive, skip_layers=list(skip.layers))
            guided = guided + (cond - combine(skipped, job.positive, batch, scale=scale)) * skip.scale
        return guided


# --------------------------------------------------------------------------- the loop


def _randn(shape: tuple[int, ...], generator: Any, device: str, dtype: Any) -> torch.Tensor:
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    return randn_tensor(shape, generator=generator, device=torch.device(device), dtype=dtype)


def _window(job: SampleJob, steps: int) -> tuple[int, int]:
    """[first, last) of the schedule: denoise < 1 keeps its last part as the Img2Img pipeline
    (``int(steps - steps * denoise)`` steps skipped), start/end_step cut KSamplerAdvanced's window."""
    first = job.start_step
    if job.denoise < 1.0:
        first = max(first, int(max(steps - min(steps * job.denoise, steps), 0)))
    last = steps if job.end_step is None else min(job.end_step, steps)
    return first, last


def sample_flow(job: SampleJob, check_cancelled: Callable[[], None] = lambda: None) -> torch.Tensor:
    """Denoise ``job.latent`` with an SD3 or Flux transformer; latents (b, c, h, w), float32, CPU."""
    import torch

    if job.sampler in SIGMA_SAMPLERS:
        return sample_flow_levels(job, check_cancelled)
    device, dtype = job.device, job.dtype or torch.float32
    model = FlowModel(job, device, dtype)
    scheduler, kwargs = make_flow_scheduler(job.sampler, job.scheduler_config, job.family, model.seq_len)
    _set_timesteps(scheduler, job.steps, job.family, kwargs, device)
    timesteps = scheduler.timesteps
    order = int(getattr(scheduler, "order", 1))
    first, last = _window(job, len(timesteps) // order)
    first, last = first * order, last * order
    if first >= last:
        return job.latent.samples.clone()
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(first)
    sigmas = scheduler.sigmas.to(device, dtype)
    generator = torch.Generator("cpu").manual_seed(int(job.seed))
    latent = job.latent
    mask = latent.noise_mask.to(device, dtype) if latent.noise_mask is not None else None
    init = latent.samples.to(device, dtype)
    if job.add_noise:
        empty = latent.std is None and not bool(latent.samples.any())
        pure_noise = first == 0 and job.denoise >= 1.0 and empty
        if latent.std is not None and not pure_noise:  # the image is drawn first, as the pipelines do
            init = init + latent.std.to(device, dtype) * _randn(model.shape, generator, device, dtype)
        noise = _randn(model.shape, generator, device, dtype)
        latents = noise if pure_noise else sigmas[first] * noise + (1.0 - sigmas[first]) * init
    else:  # already noisy at the window's first level, in ComfyUI's scale (divided by 1 - sigma)
        noise = torch.zeros_like(init)
        latents = init * (1.0 - sigmas[first])
    total = len(timesteps)
    force_clean = last < total and not job.leftover_noise
    for index in range(first, last):
        check_cancelled()
        t = timesteps[index]
        # skip-layer guidance counts the steps run by image to image, the whole schedule otherwise
        step, count = (index - first, last - first) if job.denoise < 1.0 else (index, total)
        velocity = model.velocity(latents, t, step, count)
        if force_clean and index == last - 1:
            latents = latents - sigmas[index] * velocity  # the clean estimate, for an early end
        else:
            latents = scheduler.step(velocity, t, latents, return_dict=False)[0]
        if mask is not None:
            level = (
                sigmas[index + 1] if index + 1 < total and not (force_clean and index == last - 1) else 0.0
            )
            known = level * noise + (1.0 - level) * init if level else init
            latents = (1 - mask) * known + mask * latents
        if job.on_step is not None:
            job.on_step(index + 1 - first, last - first, latents)
    if last < total and job.leftover_noise:  # handed on noisy, as ComfyUI does: divided by 1 - sigma
        latents = latents / (1.0 - sigmas[last])
    return latents.to("cpu", torch.float32)


# --------------------------------------------------------------------------- custom sampling


class FlowDenoiser:
    """The flow model as k-diffusion's denoiser ``D(x, sigma)``: the clean estimate
    ``x - sigma * v`` (ComfyUI's CONST models), the transformer fed ``sigma * 1000`` as the
    diffusers pipelines feed it. ``index`` is the step being run (for skip-layer guidance)."""

    def __init__(self, model: FlowModel, total: int) -> None:
        self.model, self.total, self.index = model, total, 0

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        import torch

        t = torch.tensor(sigma * 1000.0, dtype=torch.float32, device=self.model.device)
        return x - sigma * self.model.velocity(x, t, self.index, self.total)


def _check_levels(levels: list[float]) -> None:
    if levels[0] > 1.0 + 1e-6:
        raise FlowSamplingError(
            "sigmas",
            f"flow models (SD3, Flux) take noise levels from 1 down to 0, these start at {levels[0]:g}: "
            "make them with BasicScheduler on this model (or keep sigma_max at most 1)",
        )


def step_levels(
    model: FlowModel,
    sampler: str,
    levels: list[float],
    latents: torch.Tensor,
    init: torch.Tensor,
    noise: torch.Tensor,
    generator: Any,
    check_cancelled: Callable[[], None],
    level_table: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a sigma-space rule (``models.schedules.K_SAMPLERS``) over ``levels`` from ``latents``;
    (latents where the levels end, the model's last clean estimate).

    A latent noise mask keeps the known part: after each step it is ``init`` noised with
    ``noise`` to the next level. ``level_table`` (:class:`~models.schedules.FlowLevels`) moves a
    first level of 1 for DPM++ 2M SDE, as ComfyUI does (its log-SNR is infinite there).
    """
    from models.schedules import KStepper, offset_first_sigma

    job, device, dtype = model.job, model.device, model.dtype
    total = len(levels) - 1
    denoiser = FlowDenoiser(model, total)
    run_levels = levels
    if sampler == "dpmpp_2m_sde" and level_table is not None:
        run_levels = offset_first_sigma(levels, level_table)
    stepper = KStepper(
        sampler, run_levels, denoiser, lambda x: _randn(tuple(x.shape), generator, device, dtype), flow=True
    )
    mask = job.latent.noise_mask.to(device, dtype) if job.latent.noise_mask is not None else None
    for index in range(total):
        check_cancelled()
        denoiser.index = index
        latents = stepper.step(index, latents)
        if mask is not None:
            level = levels[index + 1]
            known = level * noise + (1.0 - level) * init if level > 0 else init
            latents = (1 - mask) * known + mask * latents
        if job.on_step is not None:
            job.on_step(index + 1, total, latents)
    denoised = stepper.denoised if stepper.denoised is not None else latents
    return latents, denoised


def sample_flow_custom(
    job: SampleJob,
    sampler: str,
    sigmas: torch.Tensor,
    noise_seed: int | None,
    check_cancelled: Callable[[], None] = lambda: None,
) -> Sampled:
    """Custom sampling (SamplerCustom / SamplerCustomAdvanced) of an SD3 or Flux model, the way
    ComfyUI samples its flow (CONST) models.

    - The latent starts at ``sigmas[0] * noise + (1 - sigmas[0]) * latent`` (noise drawn from
      ``noise_seed`` on the CPU; ``None`` draws none, so an already noisy latent is taken as is
      up to that scaling) and the result is divided by ``1 - sigmas[-1]``: ComfyUI's
      ``noise_scaling`` / ``inverse_noise_scaling``, so a schedule split over two samplers hands
      over a latent in sigma space (``x0 + sigma' * noise``), as the SD models do.
    - Each step asks the transformer (with the guider's prompts, CFG, Flux guidance, skip-layer
      guidance: :class:`FlowModel`) for its clean estimate ``x - sigma * v``.
    """
    import torch

    from models.sampling import Sampled
    from models.schedules import flow_levels

    device, dtype = job.device, job.dtype or torch.float32
    levels = [float(s) for s in sigmas]
    if len(levels) < 2:
        return Sampled(job.latent.samples.clone(), job.latent.samples.clone())
    _check_levels(levels)
    model = FlowModel(job, device, dtype)
    generator = torch.Generator("cpu").manual_seed(int(noise_seed or 0))
    latent = job.latent
    init = latent.samples.to(device, dtype)
    top = levels[0]
    if noise_seed is not None:
        if latent.std is not None:  # an encoded image is drawn first, as the pipelines do
            init = init + latent.std.to(device, dtype) * _randn(model.shape, generator, device, dtype)
        noise = _randn(model.shape, generator, device, dtype)
    else:
        noise = torch.zeros_like(init)
    start = top * noise + (1.0 - top) * init
    table = flow_levels(job.scheduler_config, job.family)
    latents, denoised = step_levels(
        model, sampler, levels, start, init, noise, generator, check_cancelled, level_table=table
    )
    if 0.0 < levels[-1] < 1.0:
        latents = latents / (1.0 - levels[-1])
    return Sampled(latents.to("cpu", torch.float32), denoised.to("cpu", torch.float32))


def sample_flow_levels(job: SampleJob, check_cancelled: Callable[[], None] = lambda: None) -> torch.Tensor:
    """The KSampler's :data:`SIGMA_SAMPLERS` on a flow model: the rule stepped over the levels
    the pipeline's Euler scheduler gives (SD3's spacing and shift, Flux's ``linspace(1, 1/steps)``
    and resolution-dependent shift), with :func:`sample_flow`'s window, noise and mask rules."""
    import torch

    device, dtype = job.device, job.dtype or torch.float32
    model = FlowModel(job, device, dtype)
    scheduler, kwargs = make_flow_scheduler("euler", job.scheduler_config, job.family, model.seq_len)
    _set_timesteps(scheduler, job.steps, job.family, kwargs, device)
    sigmas = [float(s) for s in scheduler.sigmas]
    count = len(sigmas) - 1
    first, last = _window(job, count)
    if first >= last:
        return job.latent.samples.clone()
    levels = sigmas[first : last + 1]
    if last < count and not job.leftover_noise:
        levels[-1] = 0.0  # an early end steps to the clean estimate, as ComfyUI's force_full_denoise
    generator = torch.Generator("cpu").manual_seed(int(job.seed))
    latent = job.latent
    init = latent.samples.to(device, dtype)
    if job.add_noise:
        empty = latent.std is None and not bool(latent.samples.any())
        pure_noise = first == 0 and job.denoise >= 1.0 and empty
        if latent.std is not None and not pure_noise:
            init = init + latent.std.to(device, dtype) * _randn(model.shape, generator, device, dtype)
        noise = _randn(model.shape, generator, device, dtype)
        latents = noise if pure_noise else levels[0] * noise + (1.0 - levels[0]) * init
    else:  # already noisy at the window's first level, in ComfyUI's scale (divided by 1 - sigma)
        noise = torch.zeros_like(init)
        latents = init * (1.0 - sigmas[first])
    latents, _ = step_levels(model, job.sampler, levels, latents, init, noise, generator, check_cancelled)
    return latents.to("cpu", torch.float32)
