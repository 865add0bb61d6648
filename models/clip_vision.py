"""CLIP vision: load an image tower, encode pictures, and turn image embeddings into unCLIP inputs.

- :func:`load_clip_vision` reads a transformers ``CLIPVisionModelWithProjection`` from the files
  users have: a single safetensors file with transformers keys (``vision_model.*`` and
  ``visual_projection.weight``, ComfyUI's ``clip_vision`` files, optionally under a prefix), the
  same tower in OpenCLIP's layout (``visual.*``, as inside unCLIP checkpoints), or a transformers
  folder. The configuration comes from the weights' shapes (ViT-L/14, ViT-H/14, ViT-bigG/14 get
  ComfyUI's exact settings; other sizes are read from the shapes).
- :func:`encode_images` preprocesses as ComfyUI does (shortest side to the tower's size, bicubic
  with antialiasing, centre crop or stretch, 8-bit rounding, CLIP's mean and std) and returns a
  :class:`VisionEncoding` (CLIP_VISION_OUTPUT).
- :func:`unclip_vector` is ComfyUI's ``unclip_adm``: each image embedding noise-augmented
  (:class:`EmbeddingNoise`), joined to the embedding of its noise level, weighted by its strength;
  several are summed and augmented once more. SD 2.x unCLIP UNets take it as ``class_labels``;
  SDXL ("revision") takes its first columns in place of the pooled text embedding.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.safety import check_weights_folder, load_state_dict, plain_load_error

if TYPE_CHECKING:
    import numpy as np
    import torch

#: The key of :class:`UnclipEntry` tuples in ``Cond.extra``.
UNCLIP = "unclip"
#: CLIP's pixel statistics (OpenAI's, used by every CLIP vision tower ComfyUI loads).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CROPS = ("center", "none")
#: ComfyUI's three towers by (width, layers): heads, MLP activation. ViT-L/14 is OpenAI's (quick
#: GELU); ViT-H/14 and ViT-bigG/14 are OpenCLIP's (GELU).
KNOWN_TOWERS: dict[tuple[int, int], tuple[int, str]] = {
    (1024, 24): (16, "quick_gelu"),
    (1280, 32): (16, "gelu"),
    (1664, 48): (16, "gelu"),
}
#: The noise schedule of unCLIP's embedding augmentation (SD 2.x unCLIP and SDXL alike).
NOISE_LEVELS = 1000


class ClipVisionError(Exception):
    """A CLIP vision file that cannot be loaded, said in plain words."""


@dataclass(frozen=True, eq=False)
class VisionEncoding:
    """CLIP_VISION_OUTPUT: what a CLIP vision tower makes of a batch of pictures (float32, CPU)."""

    image_embeds: torch.Tensor  # (batch, projection_dim): the projected image embedding
    last_hidden_state: torch.Tensor  # (batch, tokens, width)
    penultimate_hidden_states: torch.Tensor  # (batch, tokens, width): the layer before the last

    @property
    def nbytes(self) -> int:
        tensors = (self.image_embeds, self.last_hidden_state, self.penultimate_hidden_states)
        return sum(t.numel() * 4 for t in tensors)


@dataclass(frozen=True)
class UnclipEntry:
    """One unCLIPConditioning on a Cond: the image embeddings, their weight and noise augmentation."""

    image_embeds: torch.Tensor  # (images, dim), float32 on the CPU
    strength: float
    noise_augmentation: float  # 0..1, the share of the 1000 noise levels


# --------------------------------------------------------------------------- loading


def load_clip_vision(
    path: Path, *, device: str = "cpu", dtype: torch.dtype | None = None, allow_pickle: bool = False
) -> Any:
    """A ``CLIPVisionModelWithProjection`` from a file or a transformers folder (or a diffusers
    pipeline folder's ``image_encoder``), in eval mode on ``device``."""
    import torch

    dtype = dtype or torch.float32
    path = Path(path)
    if path.is_dir():
        model = _load_folder(path, allow_pickle)
    else:
        model = _load_file(path, allow_pickle)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def _load_folder(path: Path, allow_pickle: bool) -> Any:
    from transformers import CLIPVisionModelWithProjection

    if not (path / "config.json").is_file() and (path / "image_encoder" / "config.json").is_file():
        path = path / "image_encoder"
    if not (path / "config.json").is_file():
        raise ClipVisionError(f"{path.name} is a folder without config.json: not a transformers CLIP model")
    use_safetensors = check_weights_folder(path, allow_pickle)
    try:
        return CLIPVisionModelWithProjection.from_pretrained(
            str(path), local_files_only=True, use_safetensors=use_safetensors
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise ClipVisionError(
            f"cannot load the CLIP vision folder {path.name}: {plain_load_error(exc)}"
        ) from None


def _load_file(path: Path, allow_pickle: bool) -> Any:
    return tower_from_state(load_state_dict(path, allow_pickle=allow_pickle), path.name)


def tower_from_state(raw: dict[str, torch.Tensor], name: str) -> Any:
    """A ``CLIPVisionModelWithProjection`` holding the tower found in ``raw`` (any layout
    :func:`vision_state_dict` reads), its configuration read from the shapes."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    state = vision_state_dict(raw, name)
    config = CLIPVisionConfig(**infer_vision_config(state))
    model = CLIPVisionModelWithProjection(config)
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise ClipVisionError(f"{name} lacks weights of the CLIP vision tower: {shown}")
    try:
        model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=True)
    except RuntimeError as exc:
        raise ClipVisionError(f"{name} does not fit a CLIP vision tower: {exc}") from None
    return model


def vision_state_dict(state: dict[str, torch.Tensor], name: str = "the file") -> dict[str, torch.Tensor]:
    """The tower's weights under transformers' keys, from transformers keys (under any prefix, e.g.
    ``clip_vision.``) or OpenCLIP's (``visual.`` or ``embedder.model.visual.``)."""
    for key in state:
        if key.endswith("vision_model.embeddings.patch_embedding.weight"):
            prefix = key[: -len("vision_model.embeddings.patch_embedding.weight")]
            return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    for key in state:
        if key.endswith("transformer.resblocks.0.attn.in_proj_weight") and "visual" in key:
            return from_open_clip(state, key[: -len("transformer.resblocks.0.attn.in_proj_weight")])
    raise ClipVisionError(
        f"{name} holds no CLIP vision tower (no vision_model.* or visual.* weights): "
        "give a CLIP vision file (models/clip_vision), e.g. clip_vision_g.safetensors"
    )


_OPEN_CLIP_LAYER = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}
_OPEN_CLIP_TOP = {
    "class_embedding": "vision_model.embeddings.class_embedding",
    "conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "ln_post.weight": "vision_model.post_layernorm.weight",
    "ln_post.bias": "vision_model.post_layernorm.bias",
}


def from_open_clip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """OpenCLIP's visual tower (fused q/k/v, ``proj`` as width x dim) under transformers' keys."""
    out: dict[str, torch.Tensor] = {}
    layer = re.compile(re.escape(prefix) + r"transformer\.resblocks\.(\d+)\.(.+)[._](weight|bias)$")
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix) :]
        if rest in _OPEN_CLIP_TOP:
            out[_OPEN_CLIP_TOP[rest]] = value
        elif rest == "proj":
            out["visual_projection.weight"] = value.t().contiguous()
        elif match := layer.match(key):
            index, part, kind = match.groups()
            base = f"vision_model.encoder.layers.{index}."
            if part == "attn.in_proj":
                for name, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3), strict=True):
                    out[f"{base}self_attn.{name}.{kind}"] = chunk.contiguous()
            elif part in _OPEN_CLIP_LAYER:
                out[f"{base}{_OPEN_CLIP_LAYER[part]}.{kind}"] = value
    return out


def infer_vision_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """A ``CLIPVisionConfig``'s arguments from the weights' shapes. Heads cannot be seen in the
    shapes: ComfyUI's towers use 16 (so does this for other widths that 16 divides)."""
    try:
        patch = state["vision_model.embeddings.patch_embedding.weight"]
        positions = state["vision_model.embeddings.position_embedding.weight"].shape[0]
        projection = state["visual_projection.weight"]
        intermediate = state["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0]
    except KeyError as exc:
        raise ClipVisionError(f"the CLIP vision weights lack {exc.args[0]}") from None
    width, channels, patch_size = int(patch.shape[0]), int(patch.shape[1]), int(patch.shape[-1])
    layers = 1 + max(
        int(m.group(1)) for k in state if (m := re.match(r"vision_model\.encoder\.layers\.(\d+)\.", k))
    )
    side = math.isqrt(positions - 1)
    if side * side != positions - 1:
        raise ClipVisionError(f"{positions - 1} patch positions do not make a square picture")
    heads, activation = KNOWN_TOWERS.get((width, layers), (16 if width % 16 == 0 else 1, "gelu"))
    return {
        "hidden_size": width,
        "intermediate_size": int(intermediate),
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_channels": channels,
        "image_size": side * patch_size,
        "patch_size": patch_size,
        "projection_dim": int(projection.shape[0]),
        "hidden_act": activation,
        "layer_norm_eps": 1e-5,
    }


# --------------------------------------------------------------------------- encoding


def preprocess(images: np.ndarray, size: int, crop: bool = True) -> torch.Tensor:
    """ComfyUI's CLIP preprocessing of IMAGE (batch, H, W, 3) in [0, 1]: the shortest side to ``size``
    (bicubic, antialiased) and a centre crop, or (``crop`` False) a stretch to ``size`` x ``size``;
    then rounded to 8 bits and normalised with CLIP's mean and std. Returns (batch, 3, size, size)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    pixels = torch.from_numpy(np.ascontiguousarray(images[..., :3], dtype=np.float32)).movedim(-1, 1)
    height, width = pixels.shape[-2:]
    if (height, width) != (size, size):
        if crop:
            scale = size / min(height, width)
            target = (round(scale * height), round(scale * width))
        else:
            target = (size, size)
        pixels = F.interpolate(pixels, size=target, mode="bicubic", antialias=True)
        top, left = (pixels.shape[2] - size) // 2, (pixels.shape[3] - size) // 2
        pixels = pixels[:, :, top : top + size, left : left + size]
    pixels = torch.clip(pixels * 255.0, 0, 255).round() / 255.0
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


def encode_images(model: Any, images: np.ndarray, crop: str = "center") -> VisionEncoding:
    """Encode IMAGE pictures with a CLIP vision tower (:func:`preprocess`, then the tower)."""
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {', '.join(CROPS)}, not {crop!r}")
    size = int(model.config.image_size)
    return encode_pixels(model, preprocess(images, size, crop == "center"))


def encode_blank(model: Any, count: int = 1) -> VisionEncoding:
    """The tower's features of ``count`` all-zero *normalised* pictures (CLIP's mean colour): the
    unconditional picture diffusers' IP-Adapter pipelines use for adapters that read hidden states."""
    import torch

    size = int(model.config.image_size)
    return encode_pixels(model, torch.zeros(count, 3, size, size))


def encode_pixels(model: Any, pixels: torch.Tensor) -> VisionEncoding:
    """Run the tower on preprocessed pixels (batch, 3, size, size)."""
    import torch

    parameter = next(model.parameters())
    with torch.no_grad():
        out = model(pixel_values=pixels.to(parameter.device, parameter.dtype), output_hidden_states=True)
    return VisionEncoding(
        image_embeds=out.image_embeds.to("cpu", torch.float32),
        last_hidden_state=out.last_hidden_state.to("cpu", torch.float32),
        penultimate_hidden_states=out.hidden_states[-2].to("cpu", torch.float32),
    )


# --------------------------------------------------------------------------- unCLIP


@dataclass(frozen=True, eq=False)
class EmbeddingNoise:
    """unCLIP's noise augmentation of image embeddings: normalise by the embeddings' statistics,
    noise to a level of a 1000-step squared-cosine schedule, un-normalise (ComfyUI's
    ``CLIPEmbeddingNoiseAugmentation``; diffusers' ``image_normalizer`` + ``image_noising_scheduler``).
    ``mean``/``std`` None are 0 and 1 (SDXL, and ComfyUI's SD 2.x unCLIP)."""

    mean: torch.Tensor | None = None  # (1, dim)
    std: torch.Tensor | None = None  # (1, dim)
    beta_schedule: str = "squaredcos_cap_v2"

    def alphas_cumprod(self) -> torch.Tensor:
        from diffusers import DDPMScheduler

        schedule = DDPMScheduler(num_train_timesteps=NOISE_LEVELS, beta_schedule=self.beta_schedule)
        return schedule.alphas_cumprod

    def augment(self, embeds: torch.Tensor, level: int, noise: torch.Tensor) -> torch.Tensor:
        """``embeds`` (n, dim) noised to ``level`` (0..999) with ``noise`` (n, dim)."""
        alpha = self.alphas_cumprod()[level].to(embeds.dtype)
        mean = self.mean.to(embeds) if self.mean is not None else 0.0
        std = self.std.to(embeds) if self.std is not None else 1.0
        scaled = (embeds - mean) / std
        noised = alpha.sqrt() * scaled + (1 - alpha).sqrt() * noise
        return noised * std + mean


def noise_level_embedding(level: int, dim: int) -> torch.Tensor:
    """The sinusoidal embedding of a noise level, cosines first (1, dim)."""
    import torch
    from diffusers.models.embeddings import get_timestep_embedding

    steps = torch.tensor([level])
    return get_timestep_embedding(steps, dim, flip_sin_to_cos=True, downscale_freq_shift=0)


def noise_level_of(noise_augmentation: float) -> int:
    """ComfyUI's level for unCLIPConditioning's noise_augmentation (0..1): round(999 x it)."""
    return round((NOISE_LEVELS - 1) * float(noise_augmentation))


def unclip_vector(
    entries: Sequence[UnclipEntry], noise: EmbeddingNoise, seed: int, merge_augmentation: float
) -> torch.Tensor:
    """ComfyUI's ``unclip_adm`` (1, 2 x dim): for each image embedding of each entry, the embedding
    augmented to its entry's level joined to that level's embedding, times the entry's strength.
    One: that. Several: their sum, whose embedding half is augmented again to
    ``merge_augmentation`` (SD 2.x unCLIP 0.05, SDXL 0) and joined to that level's embedding.

    Noise is drawn from a CPU generator seeded with ``seed - 10`` for each embedding, as ComfyUI
    seeds it from the sampler's seed (the merge's noise too, which ComfyUI leaves unseeded).
    """
    import torch

    parts = []
    for entry in entries:
        level = noise_level_of(entry.noise_augmentation)
        for embed in entry.image_embeds.to(torch.float32):
            embed = embed[None]
            dim = int(embed.shape[-1])
            noised = noise.augment(embed, level, _seeded_noise(embed.shape, seed))
            parts.append(torch.cat([noised, noise_level_embedding(level, dim)], dim=1) * entry.strength)
    if not parts:
        raise ValueError("no image embeddings to condition on")
    if len(parts) == 1:
        return parts[0]
    total = torch.stack(parts).sum(0)
    dim = total.shape[1] // 2
    level = noise_level_of(merge_augmentation)
    noised = noise.augment(total[:, :dim], level, _seeded_noise((1, dim), seed))
    return torch.cat([noised, noise_level_embedding(level, dim)], dim=1)


def _seeded_noise(shape: Sequence[int], seed: int) -> torch.Tensor:
    import torch

    return torch.randn(tuple(shape), generator=torch.Generator("cpu").manual_seed(int(seed) - 10))


def unclip_entries(cond: Any) -> tuple[UnclipEntry, ...]:
    """The unCLIPConditioning entries of a Cond (none when it has no image conditioning)."""
    return tuple(cond.extra.get(UNCLIP, ()))


# --------------------------------------------------------------------------- unCLIP models

#: Where an unCLIP UNet keeps its embedding augmentation (a plain attribute: not in its weights).
_NOISE_ATTRIBUTE = "unclip_noise"


def attach_embedding_noise(unet: Any, noise: EmbeddingNoise) -> None:
    """Give an unCLIP UNet its embedding augmentation (read back by :func:`embedding_noise_of`)."""
    object.__setattr__(unet, _NOISE_ATTRIBUTE, noise)


def embedding_noise_of(unet: Any) -> EmbeddingNoise:
    """The UNet's embedding augmentation; the plain one (mean 0, std 1) when none was attached."""
    noise = getattr(unet, _NOISE_ATTRIBUTE, None)
    return noise if isinstance(noise, EmbeddingNoise) else EmbeddingNoise()


def is_unclip_unet(unet: Any) -> bool:
    """Whether a UNet takes image embeddings as class labels (SD 2.x unCLIP: a projection class
    embedding of 2 x the image embedding's width)."""
    return getattr(unet.config, "class_embed_type", None) == "projection"


def folder_embedding_noise(folder: Path) -> EmbeddingNoise:
    """The augmentation of a diffusers StableUnCLIP folder: ``image_normalizer``'s statistics and
    ``image_noising_scheduler``'s schedule."""
    import json

    normalizer = folder / "image_normalizer"
    mean = std = None
    weights = normalizer / "diffusion_pytorch_model.safetensors"
    if weights.is_file():
        from safetensors.torch import load_file

        stats = load_file(str(weights))
        mean, std = stats.get("mean"), stats.get("std")
    schedule = "squaredcos_cap_v2"
    scheduler_config = folder / "image_noising_scheduler" / "scheduler_config.json"
    if scheduler_config.is_file():
        schedule = str(json.loads(scheduler_config.read_text()).get("beta_schedule", schedule))
    return EmbeddingNoise(mean=mean, std=std, beta_schedule=schedule)


#: ComfyUI's augmentation of the sum when several pictures condition an SD 2.x unCLIP model
#: (``unclip_noise_augment_merge``); SDXL revision uses 0.
UNCLIP_MERGE_AUGMENTATION = 0.05


def unclip_class_labels(
    unet: Any, conds: Sequence[Any], batch: int, seed: int, device: str, dtype: Any
) -> torch.Tensor | None:
    """An SD 2.x unCLIP UNet's ``class_labels`` for a batch of conditionings (``batch`` rows each):
    each one's :func:`unclip_vector`, zeros for those without a picture (ComfyUI's empty ADM input,
    the diffusers pipeline's unconditional embedding). None for other UNets."""
    import torch

    if not is_unclip_unet(unet):
        return None
    width = int(unet.config.projection_class_embeddings_input_dim)
    noise = embedding_noise_of(unet)
    rows = []
    for cond in conds:
        entries = unclip_entries(cond)
        vector = (
            unclip_vector(entries, noise, seed, UNCLIP_MERGE_AUGMENTATION)
            if entries
            else torch.zeros(1, width)
        )
        if vector.shape[1] != width:
            raise ValueError(
                f"the picture's CLIP vision embedding has {vector.shape[1] // 2} numbers, this unCLIP "
                f"model takes {width // 2}: encode it with the model's own CLIP vision output"
            )
        rows.append(vector.repeat(batch, 1))
    return torch.cat(rows).to(device, dtype)


def revision_pooled(cond: Any, seed: int) -> torch.Tensor | None:
    """SDXL revision: a conditioning's pooled embedding, replaced (as ComfyUI does) by the image half
    of its :func:`unclip_vector` when it has pictures (plain augmentation, no merge noise)."""
    entries = unclip_entries(cond)
    if not entries:
        return cond.pooled
    vector = unclip_vector(entries, EmbeddingNoise(), seed, 0.0)
    dim = vector.shape[1] // 2
    if cond.pooled is not None and int(cond.pooled.shape[-1]) != dim:
        raise ValueError(
            f"the picture's CLIP vision embedding has {dim} numbers, the model's pooled text embedding "
            f"{int(cond.pooled.shape[-1])}: use the CLIP vision model made for it (clip_vision_g for SDXL)"
        )
    return vector[:, :dim]


# --------------------------------------------------------------------------- single-file unCLIP

#: The UNet's ADM input in an original-layout unCLIP file: [image embedding, level embedding].
UNCLIP_LABEL_KEY = "model.diffusion_model.label_emb.0.0.weight"
#: Where an original-layout unCLIP file keeps its image encoder (OpenCLIP layout).
UNCLIP_VISION_PREFIX = "embedder.model.visual."


def load_unclip_file(
    path: Path, *, device: str = "cpu", dtype: torch.dtype | None = None, allow_pickle: bool = False
) -> Any:
    """An SD 2.x unCLIP checkpoint from one original-layout file (Stability's
    ``sd21-unclip-h.ckpt`` layout): an SD2 :class:`~models.loading.Checkpoint` whose UNet takes the
    image embeddings (``label_emb``) as a projection class embedding, with its embedding
    augmentation attached (the file's ``noise_augmentor`` statistics when it has them). The
    configuration is the shipped SD2 one with that class embedding, or a ``<stem>.config`` folder
    beside the file."""
    import torch
    from diffusers import StableDiffusionPipeline

    from models.loading import Checkpoint, CheckpointError
    from models.tokenizer import clip_tokenizer

    dtype = dtype or torch.float32
    path = Path(path)
    state = load_state_dict(path, allow_pickle=allow_pickle)
    label = state.get(UNCLIP_LABEL_KEY)
    if label is None or not any(k.startswith(UNCLIP_VISION_PREFIX) for k in state):
        raise CheckpointError(
            f"{path.name} is not an unCLIP checkpoint (no image-embedding input or image encoder); "
            "load it with CheckpointLoader"
        )
    mean, std = state.get("noise_augmentor.data_mean"), state.get("noise_augmentor.data_std")
    noise = EmbeddingNoise(
        mean=None if mean is None else mean.float().reshape(1, -1),
        std=None if std is None else std.float().reshape(1, -1),
    )
    del state
    sidecar = path.with_name(path.stem + ".config")
    config = (
        sidecar if (sidecar / "model_index.json").is_file() else unclip_config_folder(int(label.shape[1]))
    )
    try:
        pipe = StableDiffusionPipeline.from_single_file(
            str(path),
            config=str(config),
            local_files_only=True,
            torch_dtype=dtype,
            tokenizer=clip_tokenizer("!"),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(
            f"cannot load {path.name} as an unCLIP checkpoint: {plain_load_error(exc)}"
        ) from None
    unet = pipe.unet
    if not is_unclip_unet(unet):
        raise CheckpointError(f"{config.name}'s UNet configuration has no projection class embedding")
    attach_embedding_noise(unet, noise)
    for module in (unet, pipe.vae, pipe.text_encoder):
        module.to(device).eval().requires_grad_(False)
    return Checkpoint(
        family="sd2",
        unet=unet,
        vae=pipe.vae,
        text_encoders=[pipe.text_encoder],
        tokenizers=[pipe.tokenizer],
        scheduler_config=dict(pipe.scheduler.config),
        source=str(path),
    )


def load_unclip_file_vision(
    path: Path, *, device: str = "cpu", dtype: torch.dtype | None = None, allow_pickle: bool = False
) -> Any:
    """The image encoder inside an original-layout unCLIP file (OpenCLIP layout)."""
    import torch

    raw = load_state_dict(Path(path), allow_pickle=allow_pickle)
    state = {k: v for k, v in raw.items() if k.startswith(UNCLIP_VISION_PREFIX)}
    model = tower_from_state(state, Path(path).name)
    return model.to(device=device, dtype=dtype or torch.float32).eval().requires_grad_(False)


def unclip_config_folder(adm_width: int) -> Path:
    """The shipped SD2 config folder with a UNet taking ``adm_width`` numbers of image embedding as
    a projection class embedding (made once under models/.cache/configs)."""
    import json
    import shutil

    from models.loading import CONFIG_CACHE, CONFIGS

    variant = CONFIG_CACHE / f"sd2-unclip-{adm_width}"
    if (variant / "unet" / "config.json").is_file():
        return variant
    tmp = CONFIG_CACHE / f".{variant.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(CONFIGS / "sd2", tmp)
    unet_config = json.loads((tmp / "unet" / "config.json").read_text())
    unet_config.update(class_embed_type="projection", projection_class_embeddings_input_dim=adm_width)
    (tmp / "unet" / "config.json").write_text(json.dumps(unet_config, indent=2))
    shutil.rmtree(variant, ignore_errors=True)
    tmp.rename(variant)
    return variant
