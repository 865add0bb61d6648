"""The denoising loop over a diffusers UNet and scheduler.

It follows the diffusers pipelines step for step (StableDiffusionPipeline, Img2Img,
Inpaint, XL), so that with the same model, seed and settings it makes the same image;
the tests hold it to that. On top, it combines several conditionings (regions and
strengths), blends a noise mask for inpainting with any UNet, feeds 9-channel inpainting
UNets their extra inputs, adds ControlNet residuals, reports each step, and stops
between steps when cancelled.

Noise is drawn on a CPU generator seeded with the seed, so a seed reproduces across
devices.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from models.values import Cond, Latent

if TYPE_CHECKING:
    import torch

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


def timesteps_for(scheduler: Any, steps: int, denoise: float, device: str) -> Any:
    """Scheduler timesteps for ``steps``, keeping the last ``denoise`` fraction (image-to-image)."""
    scheduler.set_timesteps(steps, device=device)
    if denoise >= 1.0:
        return scheduler.timesteps
    init_timestep = min(int(steps * denoise), steps)
    t_start = max(steps - init_timestep, 0)
    timesteps = scheduler.timesteps[t_start * scheduler.order :]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(t_start * scheduler.order)
    return timesteps


def _step_kwargs(scheduler: Any, generator: Any) -> dict[str, Any]:
    import inspect

    params = set(inspect.signature(scheduler.step).parameters)
    kwargs: dict[str, Any] = {}
    if "eta" in params:
        kwargs["eta"] = 0.0
    if "generator" in params:
        kwargs["generator"] = generator
    return kwargs


def region_weight(cond: Cond, height: int, width: int) -> torch.Tensor:
    """(1, 1, h, w) weight of a conditioning over the latent grid."""
    import torch
    import torch.nn.functional as F

    if cond.region is None:
        return torch.full((1, 1, height, width), float(cond.strength))
    region = cond.region.to(torch.float32)
    if region.shape[-2:] != (height, width):
        region = F.interpolate(region, size=(height, width), mode="bilinear", align_corners=False)
    return region.clamp(0, 1) * float(cond.strength)


def combine(preds: torch.Tensor, conds: Sequence[Cond], batch: int) -> torch.Tensor:
    """Weighted mean of each conditioning's prediction, by region and strength.

    With one conditioning everywhere at strength 1 this is that prediction, exactly.
    """
    import torch

    if len(conds) == 1 and conds[0].region is None and conds[0].strength == 1.0:
        return preds
    height, width = preds.shape[-2:]
    chunks = preds.chunk(len(conds))
    weights = [region_weight(c, height, width).to(preds.device, preds.dtype) for c in conds]
    total = torch.stack(weights).sum(0)
    mixed = sum(w * p for w, p in zip(weights, chunks, strict=True))
    mean = sum(chunks) / len(chunks)
    covered = total > 1e-6
    return torch.where(covered, mixed / total.clamp_min(1e-6), mean)


def _embeds(conds: Sequence[Cond], batch: int, device: str, dtype: Any) -> torch.Tensor:
    import torch

    tokens = max(c.embeds.shape[1] for c in conds)
    parts = []
    for cond in conds:
        embeds = cond.embeds
        if embeds.shape[1] < tokens:  # prompts longer than 77 tokens come in chunks of 77
            repeats = -(-tokens // embeds.shape[1])
            embeds = embeds.repeat(1, repeats, 1)[:, :tokens]
        parts.append(embeds.repeat(batch, 1, 1))
    return torch.cat(parts).to(device, dtype)


def _randn(shape: tuple[int, ...], generator: Any, device: str, dtype: Any) -> torch.Tensor:
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    return randn_tensor(shape, generator=generator, device=torch.device(device), dtype=dtype)


def sample(job: SampleJob, check_cancelled: Callable[[], None] = lambda: None) -> torch.Tensor:
    """Denoise ``job.latent``; returns latents (batch, 4, h, w) in float32 on the CPU."""
    import torch

    device, dtype = job.device, job.dtype or torch.float32
    scheduler = make_scheduler(job.sampler, job.scheduler_config)
    timesteps = timesteps_for(scheduler, job.steps, job.denoise, device)
    if len(timesteps) == 0:
        return job.latent.samples.clone()

    generator = torch.Generator("cpu").manual_seed(int(job.seed))
    latent = job.latent
    batch = latent.samples.shape[0]
    shape = tuple(latent.samples.shape)
    in_channels = int(job.unet.config.in_channels)
    mask = latent.noise_mask.to(device, dtype) if latent.noise_mask is not None else None
    empty = latent.std is None and not bool(latent.samples.any())
    pure_noise = job.denoise >= 1.0 and (empty or mask is not None)
    # Draw from the generator in the pipelines' order: the image's latents (when they are
    # used), the noise, then (9-channel inpainting) the masked image's latents.
    init = latent.samples.to(device, dtype)
    if latent.std is not None and (not pure_noise or (mask is not None and in_channels != 9)):
        init = init + latent.std.to(device, dtype) * _randn(shape, generator, device, dtype)
    noise = _randn(shape, generator, device, dtype)
    if pure_noise:
        latents = noise * scheduler.init_noise_sigma
    else:
        latents = scheduler.add_noise(init, noise, timesteps[:1].repeat(batch))

    if in_channels == 9:
        if mask is None or latent.masked_image is None:
            raise ValueError(
                "this is an inpainting model: give it a latent from InpaintEncode (image and mask)"
            )
        masked = latent.masked_image.to(device, dtype)
        if latent.masked_image_std is not None:
            masked = masked + latent.masked_image_std.to(device, dtype) * _randn(
                shape, generator, device, dtype
            )
        extra_inputs = torch.cat([mask, masked], dim=1)
    elif in_channels == shape[1]:
        extra_inputs = None
    else:
        raise ValueError(f"the model expects {in_channels} latent channels, the latent has {shape[1]}")

    conds = list(job.negative) + list(job.positive)
    use_cfg = job.cfg > 1.0 and len(job.negative) > 0
    if not use_cfg:
        conds = list(job.positive)
    embeds = _embeds(conds, batch, device, dtype)
    added = _sdxl_added_inputs(job, conds, batch, device, dtype)
    step_kwargs = _step_kwargs(scheduler, generator)
    total = len(timesteps)

    for index, t in enumerate(timesteps):
        check_cancelled()
        model_input = torch.cat([latents] * len(conds))
        model_input = scheduler.scale_model_input(model_input, t)
        if extra_inputs is not None:
            model_input = torch.cat([model_input, extra_inputs.repeat(len(conds), 1, 1, 1)], dim=1)
        down, mid = _control_residuals(job, conds, model_input, t, embeds, added, index, total)
        with torch.no_grad():
            pred = job.unet(
                model_input,
                t,
                encoder_hidden_states=embeds,
                added_cond_kwargs=added,
                cross_attention_kwargs=job.cross_attention_kwargs,
                down_block_additional_residuals=down,
                mid_block_additional_residual=mid,
                return_dict=False,
            )[0]
        if use_cfg:
            n_neg = len(job.negative)
            uncond = combine(pred[: n_neg * batch], job.negative, batch)
            cond = combine(pred[n_neg * batch :], job.positive, batch)
            pred = uncond + job.cfg * (cond - uncond)
        else:
            pred = combine(pred, job.positive, batch)
        latents = scheduler.step(pred, t, latents, **step_kwargs, return_dict=False)[0]
        if mask is not None and in_channels != 9:
            known = init
            if index < total - 1:
                known = scheduler.add_noise(init, noise, timesteps[index + 1 : index + 2].repeat(batch))
            latents = (1 - mask) * known + mask * latents
        if job.on_step is not None:
            job.on_step(index + 1, total, latents)
    return latents.to("cpu", torch.float32)


def _sdxl_added_inputs(
    job: SampleJob, conds: Sequence[Cond], batch: int, device: str, dtype: Any
) -> dict[str, Any] | None:
    import torch

    if job.family != "sdxl":
        return None
    height, width = (s * job.vae_scale for s in job.latent.samples.shape[-2:])
    pooled = []
    for cond in conds:
        if cond.pooled is None:
            raise ValueError("SDXL needs conditioning from its own text encoders (no pooled embedding found)")
        pooled.append(cond.pooled.repeat(batch, 1))
    time_ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=dtype)
    return {
        "text_embeds": torch.cat(pooled).to(device, dtype),
        "time_ids": time_ids.repeat(len(conds) * batch, 1).to(device),
    }


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
