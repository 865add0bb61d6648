"""The trained toy SD, frozen, for the models trained on top of it (the edge ControlNet and the
InstructPix2Pix editor): its folder's UNet, text encoder and VAE, and the noising step they share.

Both read the SD from its exported diffusers folder (``models/checkpoints/toy-sd``), the very files the
studio loads, so what they learn to steer is what users run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.sd import SD_SCHEDULER_CONFIG, Tokens

DEFAULT_SD = Path("models/checkpoints/toy-sd")


@dataclass
class FrozenSD:
    """The exported SD's parts, in eval mode with gradients off, and CLIP's tokenizer."""

    folder: Path
    unet: Any
    text_encoder: Any
    vae: Any
    tokens: Tokens
    scheduler: Any

    @property
    def factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def latent_size(self) -> int:
        return int(self.unet.config.sample_size)

    @torch.no_grad()
    def text_states(self, captions: list[str], device: torch.device) -> torch.Tensor:
        return self.text_encoder(self.tokens(captions).to(device))[0]

    @torch.no_grad()
    def latents(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Scaled latents (posterior samples) of pictures in [-1, 1], as the SD was trained on."""
        return self.vae.encode(images).latent_dist.sample(generator=generator) * self.factor

    def noised(
        self, latents: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(noisy latents, the noise, timesteps): the forward process at uniform random timesteps."""
        noise = torch.randn(latents.shape, generator=generator, device=latents.device)
        timesteps = torch.randint(
            0,
            self.scheduler.config.num_train_timesteps,
            (len(latents),),
            generator=generator,
            device=latents.device,
        )
        return self.scheduler.add_noise(latents, noise, timesteps), noise, timesteps


def load_frozen_sd(folder: Path, device: torch.device) -> FrozenSD:
    """The SD in a diffusers folder (as :mod:`training.export` writes it), frozen, on ``device``."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(
            f"{folder} is not an exported SD folder (no model_index.json): train and export it first "
            "(python -m training.sd, then python -m training.export)"
        )

    def frozen(module: Any) -> Any:
        return module.to(device, torch.float32).eval().requires_grad_(False)

    unet = frozen(UNet2DConditionModel.from_pretrained(folder, subfolder="unet", local_files_only=True))
    text_encoder = frozen(
        CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", local_files_only=True)
    )
    vae = frozen(AutoencoderKL.from_pretrained(folder, subfolder="vae", local_files_only=True))
    return FrozenSD(folder, unet, text_encoder, vae, Tokens(), DDPMScheduler.from_config(SD_SCHEDULER_CONFIG))


def to_tensor(images: list[np.ndarray] | np.ndarray, low: float = -1.0) -> torch.Tensor:
    """uint8 pictures (N, H, W, 3), or (N, H, W) grey, as a float (N, 3, H, W) tensor in [low, 1]."""
    array = np.asarray(images)
    if array.ndim == 3:
        array = np.repeat(array[..., None], 3, axis=-1)
    unit = torch.from_numpy(array.astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()
    return unit if low == 0.0 else unit * (1.0 - low) + low
