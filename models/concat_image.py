"""The source picture an instruction-editing (InstructPix2Pix) UNet sees beside the noisy latents.

ComfyUI's InstructPixToPixConditioning puts the picture's latents on the conditionings
(``Cond.concat_image``) rather than on the latent, so any sampler can feed an 8-channel UNet:
each conditioning's prediction is made with its own picture, and a conditioning without one gets
zeros (ComfyUI's IP2P ``concat_cond``). That is how the InstructPix2Pix pipeline's third
prediction, "no text, no image", is written as a conditioning: a prompt that did not pass through
InstructPixToPixConditioning.

The latents stay as the VAE gives them (its mode, unscaled): diffusers' SD1.5 and SDXL
InstructPix2Pix pipelines take them so, as ComfyUI does for both. ComfyUI scales them by the
latent format only for CosXL edit models (SDXL with EDM v-prediction sampling), which the
studio's samplers do not run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from models.sampling import SampleJob
    from models.values import Cond

#: The families whose samplers feed a UNet concatenated inputs (the SD sampler, models/sampling.py).
UNET_FAMILIES = ("sd1", "sd2", "sdxl")
ADD_IT = "add InstructPixToPixConditioning (the picture to edit) between the prompts and the sampler"


class EditInputError(ValueError):
    """A conditioning and a model that do not go together; ``input_name`` is the node input to blame."""

    def __init__(self, input_name: str, message: str) -> None:
        super().__init__(message)
        self.input_name = input_name


def is_editor(unet: Any, latent_channels: int) -> bool:
    """Whether ``unet`` is an instruction-editing UNet: it takes the latents and a picture's latents
    of as many channels (8 for SD's 4-channel latents)."""
    config = getattr(unet, "config", None)
    in_channels = getattr(config, "in_channels", None)
    return in_channels is not None and int(in_channels) == 2 * latent_channels


def check(
    unet: Any, family: str, latent_channels: int, conds: Sequence[Cond], input_name: str = "positive"
) -> None:
    """Refuse pictures given to a model that cannot see them, and an editing model given none.

    ``input_name`` is the sampler input to blame (custom sampling's nodes name their guider instead).
    """
    given = any(c.concat_image is not None for c in conds)
    editor = family in UNET_FAMILIES and is_editor(unet, latent_channels)
    if given and family not in UNET_FAMILIES:
        raise EditInputError(
            input_name,
            "carries a picture for the model to see (InstructPixToPixConditioning), but the studio "
            f"feeds such pictures only to SD1/SD2/SDXL instruction-editing UNets, not to {family} "
            "models (Flux Canny and Depth models are not run yet)",
        )
    if given and not editor:
        raise EditInputError(
            input_name,
            "carries a picture to edit (InstructPixToPixConditioning), but the model is not an "
            "instruction-editing model (an InstructPix2Pix UNet with 8 input channels): load one, "
            "or take the prompts from before InstructPixToPixConditioning",
        )
    if editor and not given:
        raise EditInputError(
            input_name,
            "the model is an instruction-editing model (InstructPix2Pix) and needs the picture to "
            f"edit: {ADD_IT}",
        )


def check_job(job: SampleJob) -> None:
    """:func:`check` for a sampling job's prompts (with DualCFGGuider's middle ones)."""
    middle = job.dual.middle if job.dual is not None else ()
    conds = (*job.positive, *job.negative, *middle)
    check(job.unet, job.family, int(job.latent.samples.shape[1]), conds)


def concat_inputs(
    conds: Sequence[Cond], batch: int, size: tuple[int, int], device: str, dtype: Any
) -> torch.Tensor:
    """The pictures to concatenate to the model input: each conditioning's, repeated for ``batch``
    rows and fitted to the latent grid ``size`` (h, w), zeros for a conditioning without one; in the
    order of ``conds`` (the order of the model's batch)."""
    import torch

    parts = []
    for cond in conds:
        image = cond.concat_image
        if image is None:
            channels = next(c.concat_image for c in conds if c.concat_image is not None).shape[1]
            parts.append(torch.zeros(batch, channels, *size))
        else:
            parts.append(_fitted(image.to(torch.float32), batch, size))
    return torch.cat(parts).to(device, dtype)


def _fitted(image: torch.Tensor, batch: int, size: tuple[int, int]) -> torch.Tensor:
    """``image`` at ``size``, as ComfyUI fits it (cut to the grid's aspect about the centre, then
    bilinear), with its rows repeated or cut to ``batch``."""
    import math

    import torch.nn.functional as F

    from imaging.crop import center_crop_box

    if tuple(image.shape[-2:]) != tuple(size):
        top, bottom, left, right = center_crop_box(*image.shape[-2:], *size)
        cut = image[..., top:bottom, left:right]
        image = F.interpolate(cut, size=tuple(size), mode="bilinear", align_corners=False)
    if image.shape[0] != batch:
        image = image.repeat(math.ceil(batch / image.shape[0]), 1, 1, 1)[:batch]
    return image
