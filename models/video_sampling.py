"""Image to video: the denoising loop of Stable Video Diffusion.

It follows ``StableVideoDiffusionPipeline`` step for step, so that with the same model, picture,
seed and settings it makes the same frames (tests/test_video.py holds it to that):

1. the picture's CLIP image embedding conditions the UNet (zeros for the unconditional half);
2. the picture, noised by ``augmentation`` (noise drawn first from the seeded CPU generator), is
   encoded by the VAE (its mode, unscaled) and concatenated on the channels of every frame's
   latents (zeros for the unconditional half);
3. ``added_time_ids`` are (fps - 1, motion bucket, augmentation), as SVD was trained;
4. the frames' latents start as noise (drawn next from the generator) and are denoised by the
   checkpoint's Euler scheduler (v-prediction, Karras sigmas), with classifier-free guidance whose
   scale may change over the frames (VideoLinearCFGGuidance: from ``min_cfg`` on the first frame
   to the sampler's cfg on the last, as the pipeline's min/max_guidance_scale).

The frames travel as a LATENT batch (frames, 4, h, w); VAEDecode decodes them together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from models.sampling import SampleJob, _randn, make_scheduler
from models.values import Cond

if TYPE_CHECKING:
    import torch

#: The key of a :class:`VideoImage` in ``Cond.extra`` (SVD_img2vid_Conditioning puts it there).
VIDEO_IMAGE = "svd_image"
#: The key of the frame-wise guidance in a MODEL's sampling overrides: (shape, min_cfg), shape
#: "linear" or "triangle" (VideoLinearCFGGuidance, VideoTriangleCFGGuidance).
FRAME_GUIDANCE = "frame_guidance"
GUIDANCE_SHAPES = ("linear", "triangle")
#: SVD's samplers: the Euler scheduler its config describes (continuous timesteps, Karras sigmas).
VIDEO_SAMPLERS = ("euler",)


class VideoSamplingError(ValueError):
    """What stops a video from being sampled, and the sampler's input to change (``input_name``)."""

    def __init__(self, input_name: str, message: str) -> None:
        super().__init__(message)
        self.input_name = input_name


@dataclass(frozen=True, eq=False)
class VideoImage:
    """The picture a video starts from and its micro-conditioning, carried on a Cond."""

    pixels: torch.Tensor  # (1, 3, H, W) in [-1, 1], float32 on the CPU, at the video's size
    vae: Any  # a VAE handle (``.get()``): encodes the picture when sampling
    fps: int
    motion_bucket_id: int
    augmentation: float
    #: True on the negative conditioning: its picture latents are zeros, as the pipeline's.
    negative: bool = False


def frame_guidance(shape: str, min_cfg: float, cfg: float, frames: int) -> torch.Tensor:
    """The guidance scale of each frame (frames,): ``linear`` rises from ``min_cfg`` to ``cfg``
    (the pipeline's linspace), ``triangle`` rises to ``cfg`` mid-video and falls back (ComfyUI's
    VideoTriangleCFGGuidance)."""
    import torch

    if shape == "linear":
        return torch.linspace(min_cfg, cfg, frames)
    if shape == "triangle":
        values = torch.linspace(0, 1, frames)
        values = 2 * (values - torch.floor(values + 0.5)).abs()
        return values * (cfg - min_cfg) + min_cfg
    raise ValueError(f"frame guidance must be one of {', '.join(GUIDANCE_SHAPES)}, not {shape!r}")


def _video_cond(conds: Sequence[Cond], which: str) -> tuple[Cond, VideoImage]:
    if len(conds) != 1 or VIDEO_IMAGE not in conds[0].extra:
        raise VideoSamplingError(
            which,
            f"a video model takes one {which} conditioning from SVD_img2vid_Conditioning "
            f"(got {len(conds)} conditioning{'s' if len(conds) != 1 else ''} without its picture)",
        )
    return conds[0], conds[0].extra[VIDEO_IMAGE]


def _check_job(job: SampleJob) -> None:
    if job.sampler not in VIDEO_SAMPLERS:
        raise VideoSamplingError(
            "sampler",
            f"Stable Video Diffusion samples with {', '.join(VIDEO_SAMPLERS)} (its Euler scheduler "
            f"with Karras sigmas), not {job.sampler}",
        )
    if job.denoise < 1.0 or job.start_step or job.end_step is not None or not job.add_noise:
        raise VideoSamplingError(
            "denoise", "Stable Video Diffusion samples the whole schedule from noise: use denoise 1"
        )


def _image_latents(info: VideoImage, noise: torch.Tensor, dtype: Any) -> torch.Tensor:
    """The picture, noised by its augmentation, encoded by the VAE (mode, unscaled)."""
    import torch

    vae = info.vae.get()
    pixels = info.pixels.to(noise.device, torch.float32) + info.augmentation * noise
    with torch.no_grad():
        latents = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mode()
    return latents.to(noise.device, dtype)


def sample_video(job: SampleJob, check_cancelled: Callable[[], None] = lambda: None) -> torch.Tensor:
    """Denoise the frames of ``job.latent`` (frames, 4, h, w); returns them float32 on the CPU."""
    import torch

    _check_job(job)
    device, dtype = job.device, job.dtype or torch.float32
    config = dict(job.scheduler_config)
    shape, min_cfg = config.pop(FRAME_GUIDANCE, ("linear", job.cfg))
    scheduler = make_scheduler(job.sampler, config)
    positive, info = _video_cond(job.positive, "positive")
    frames, channels, height, width = job.latent.samples.shape
    scale = frame_guidance(shape, float(min_cfg), float(job.cfg), frames)
    use_cfg = bool(scale.max() > 1.0)
    if use_cfg:
        negative, negative_info = _video_cond(job.negative, "negative")
        conds, infos = [negative, positive], [negative_info, info]
    else:
        conds, infos = [positive], [info]

    generator = torch.Generator("cpu").manual_seed(int(job.seed))
    noise = _randn(tuple(info.pixels.shape), generator, device, torch.float32)  # augmentation, first
    encoded = _image_latents(info, noise, dtype)
    if tuple(encoded.shape[-2:]) != (height, width):
        raise VideoSamplingError(
            "latent",
            f"the picture encodes to {encoded.shape[-1]}x{encoded.shape[-2]} latents but the latent is "
            f"{width}x{height}: use the latent of the same SVD_img2vid_Conditioning",
        )
    image_latents = torch.cat([torch.zeros_like(encoded) if i.negative else encoded for i in infos])
    image_latents = image_latents.unsqueeze(1).repeat(1, frames, 1, 1, 1)
    embeds = torch.cat([c.embeds.to(device, dtype) for c in conds])
    time_ids = _added_time_ids(job.unet, infos, dtype).to(device)

    scheduler.set_timesteps(job.steps, device=device)
    latents = _randn((1, frames, channels, height, width), generator, device, dtype)
    latents = latents * scheduler.init_noise_sigma
    scale = scale.to(device, dtype).view(1, frames, 1, 1, 1)
    total = len(scheduler.timesteps)
    for index, t in enumerate(scheduler.timesteps):
        check_cancelled()
        model_input = torch.cat([latents] * len(conds))
        model_input = scheduler.scale_model_input(model_input, t)
        model_input = torch.cat([model_input, image_latents], dim=2)
        with torch.no_grad():
            pred = job.unet(
                model_input, t, encoder_hidden_states=embeds, added_time_ids=time_ids, return_dict=False
            )[0]
        if use_cfg:
            uncond, cond = pred.chunk(2)
            pred = uncond + scale * (cond - uncond)
        latents = scheduler.step(pred, t, latents).prev_sample
        if job.on_step is not None:
            job.on_step(index + 1, total, latents[0])
    return latents[0].to("cpu", torch.float32)


def _added_time_ids(unet: Any, infos: Sequence[VideoImage], dtype: Any) -> torch.Tensor:
    """(fps - 1, motion bucket, augmentation) per conditioning, checked against the UNet's width."""
    import torch

    ids = [[float(i.fps - 1), float(i.motion_bucket_id), float(i.augmentation)] for i in infos]
    expected = int(unet.add_embedding.linear_1.in_features)
    given = int(unet.config.addition_time_embed_dim) * 3
    if expected != given:
        raise VideoSamplingError(
            "model", f"the model embeds {expected} numbers of micro-conditioning, SVD gives {given}"
        )
    return torch.tensor(ids, dtype=dtype)
