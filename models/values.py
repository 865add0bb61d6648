"""The values that travel between diffusion nodes: model handles, latents, conditioning.

Model handles are light: they name a model in the :class:`~models.manager.ModelManager`
and say how to load it, so the executor's cache never pins gigabytes and the manager
can evict and reload freely.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from models.conditioning import Area, SizeConditioning
    from models.loading import Checkpoint
    from models.manager import ModelManager
    from models.merge import Blend


@dataclass(frozen=True, eq=False)
class CheckpointRef:
    """A loaded (or loadable) checkpoint in the manager."""

    key: Hashable
    manager: ModelManager
    load: Callable[[], Checkpoint]
    family: str

    def get(self) -> Checkpoint:
        return self.manager.get(self.key, self.load)

    def cache_size(self) -> int:
        return 256


@dataclass(frozen=True, eq=False)
class ModelRef:
    """MODEL: the denoising UNet of a checkpoint (with LoRAs to apply, if any)."""

    checkpoint: CheckpointRef
    #: (path, UNet strength, text encoder strength, file state) for each LoRA, in order
    loras: tuple[tuple[str, float, float, str], ...] = ()
    #: Other models merged into this one, in order: (model, ratio of *this* one kept) for
    #: ModelMergeSimple, or a :class:`~models.merge.Blend` (Add, Subtract, Blocks...).
    merges: tuple[tuple[ModelRef, float | Blend], ...] = ()
    #: Scheduler config overrides (ModelSamplingDiscrete): (key, value) pairs, e.g.
    #: ("prediction_type", "v_prediction").
    sampling: tuple[tuple[str, Any], ...] = ()
    #: SD3.5 skip-layer guidance (SkipLayerGuidanceSD3): a models.flow_sampling.SkipLayers, or None.
    skip_layers: Any = None
    #: IP-Adapter image prompts applied while sampling (models.ip_adapter.ImagePrompt), in order;
    #: the sampler installs them on a view of the UNet for the run (models/ip_adapter.py).
    image_prompts: tuple[Any, ...] = ()
    #: Attend-and-Excite's settings (models.attend_excite.ExciteSettings), or None; the sampler moves the
    #: latents toward the subject tokens' attention peaks during the first steps.
    attend_excite: Any = None
    #: DifferentialDiffusion's strength, or None: a soft noise mask then says how early each place may
    #: change (models.per_step.differential_mask).
    differential: float | None = None
    #: Hypernetworks (HypernetworkLoader: models.hypernetwork.HypernetworkPatch), in order; the sampler
    #: applies them to the keys and values of a view of the UNet for the run.
    hypernetworks: tuple[Any, ...] = ()

    def with_(self, **changes: Any) -> ModelRef:
        return replace(self, **changes)

    def cache_size(self) -> int:
        return 256


@dataclass(frozen=True, eq=False)
class ClipRef:
    """CLIP: the text encoder(s) and tokenizer(s) of a checkpoint, or of a text encoder file
    (CLIPLoader: then ``checkpoint`` loads a :class:`~models.loading.Checkpoint` holding only
    text encoders and tokenizers, so every text node works with both)."""

    checkpoint: CheckpointRef
    loras: tuple[tuple[str, float, float, str], ...] = ()
    #: CLIPSetLastLayer's stop_at_clip_layer, as ComfyUI counts (-1 the last layer, -2 the one
    #: before); None is the model's own default (SD1: last, SDXL: penultimate).
    layer: int | None = None
    #: Text encoders merged into these (CLIPMergeSimple/Add/Subtract), in order: (clip, blend).
    merges: tuple[tuple[ClipRef, Blend], ...] = ()

    def with_(self, **changes: Any) -> ClipRef:
        return replace(self, **changes)

    def cache_size(self) -> int:
        return 256


@dataclass(frozen=True, eq=False)
class ModuleRef:
    """A model in the manager (VAE, CONTROL_NET, ...): the entry itself, or one ``part`` of it
    (a checkpoint's ``vae``)."""

    key: Hashable
    manager: ModelManager
    load: Callable[[], Any]
    part: str | None = None

    def get(self) -> Any:
        value = self.manager.get(self.key, self.load)
        return getattr(value, self.part) if self.part else value

    def cache_size(self) -> int:
        return 256


@dataclass(frozen=True, eq=False)
class Latent:
    """LATENT: scaled latents (batch, channels, h, w) on the CPU, in float32.

    ``std`` (same shape) is kept when the latents come from encoding an image: the
    sampler then draws the latents from the encoder's distribution with its own
    generator, as the diffusers pipelines do. ``noise_mask`` (batch, 1, h, w), 1 where
    the sampler may change the latents, makes sampling inpaint.
    """

    samples: torch.Tensor
    std: torch.Tensor | None = None
    noise_mask: torch.Tensor | None = None
    masked_image: torch.Tensor | None = None  # latents of the masked image, for 9-channel UNets
    masked_image_std: torch.Tensor | None = None
    #: The mask a 9-channel inpainting UNet sees, (batch, 1, h, w) of 0/1, when it is not the noise
    #: mask: InpaintModelConditioning keeps the drawn (soft) mask as noise mask, or none at all, and
    #: gives the model its binarised mask here. None: the model sees ``noise_mask``.
    inpaint_mask: torch.Tensor | None = None

    def with_(self, **changes: Any) -> Latent:
        return replace(self, **changes)

    @property
    def nbytes(self) -> int:
        total = self.samples.numel() * 4
        for extra in (self.std, self.noise_mask, self.masked_image, self.masked_image_std, self.inpaint_mask):
            if extra is not None:
                total += extra.numel() * 4
        return total


@dataclass(frozen=True, eq=False)
class Cond:
    """One prompt's conditioning: CLIP hidden states, SDXL's pooled embedding, where it applies."""

    embeds: torch.Tensor  # (1, tokens, dim), float32 on the CPU
    pooled: torch.Tensor | None = None  # (1, dim) for SDXL
    region: torch.Tensor | None = None  # (1, 1, H, W) in [0, 1], any resolution; None = everywhere
    strength: float = 1.0
    controls: tuple[Any, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    #: A box (pixels or fractions) the conditioning is limited to, resolved when sampling against
    #: the latent grid and the VAE's scale; combines with ``region`` (both must allow a place).
    area: Area | None = None
    #: SDXL's size, crop and aesthetic-score conditioning; None: the picture's size, no crop.
    size: SizeConditioning | None = None
    #: The part of sampling it acts in, as fractions (start, end) of the way from the most noise to
    #: none, compared with the noise level as ComfyUI's ConditioningSetTimestepRange does.
    timestep_range: tuple[float, float] = (0.0, 1.0)
    #: InstructPixToPixConditioning: the source picture's latents (the VAE's mode, unscaled, as
    #: diffusers' InstructPix2Pix pipeline takes them), (batch, channels, h, w) on the CPU, that an
    #: 8-channel editing UNet sees beside the noisy latents (:mod:`models.concat_image`).
    concat_image: torch.Tensor | None = None

    def with_(self, **changes: Any) -> Cond:
        return replace(self, **changes)

    @property
    def nbytes(self) -> int:
        total = self.embeds.numel() * 4
        for extra in (self.pooled, self.region, self.concat_image):
            if extra is not None:
                total += extra.numel() * 4
        return total


#: CONDITIONING is a tuple of Cond: several entries are combined (regions, blends).
Conditioning = tuple[Cond, ...]
