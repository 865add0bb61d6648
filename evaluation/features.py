"""The feature model: a CLIP image tower as a ``torch.nn.Module`` from uint8 pictures
(N x 3 x H x W) to feature vectors (N x D), as torchmetrics' FID and KID take it.

The user chooses it (``--features``): a transformers ``CLIPModel`` folder (which also has the
text tower the CLIP score needs), a CLIP vision folder, or a single CLIP vision safetensors file
(any layout :func:`models.clip_vision.load_clip_vision` reads). The default is the bundled toy
CLIP (``models/clip/toy-clip``). Nothing is downloaded; there is no Inception default, because
Inception's weights would have to be downloaded.

This module imports torch: import it where features are needed, not at a node pack's top.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evaluation.images import EvaluationInputError, as_uint8

REPO = Path(__file__).resolve().parent.parent
DEFAULT_FEATURES = REPO / "models" / "clip" / "toy-clip"
BATCH = 64


class ClipImageFeatures(torch.nn.Module):
    """uint8 pictures (N x 3 x H x W) -> CLIP image embeddings (N x D, float32).

    Pictures are resized (shortest side to the tower's size, bicubic with antialiasing),
    centre-cropped and normalised with CLIP's mean and std, as CLIP was trained.
    ``num_features`` tells torchmetrics the embedding size without a trial run.
    """

    def __init__(self, vision: Any, projection: Any, image_size: int) -> None:
        super().__init__()
        from models.clip_vision import CLIP_MEAN, CLIP_STD

        self.vision = vision
        self.projection = projection
        self.image_size = int(image_size)
        self.num_features = int(projection.out_features)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        h, w = x.shape[-2:]
        size = self.image_size
        if (h, w) != (size, size):
            scale = size / min(h, w)
            nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
            top, left = (nh - size) // 2, (nw - size) // 2
            x = x[:, :, top : top + size, left : left + size].clamp(0, 1)
        return (x - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixel_values = self.preprocess(images).to(self.projection.weight.dtype)
        pooled = self.vision(pixel_values=pixel_values).pooler_output
        return self.projection(pooled).float()


@dataclass(eq=False)
class FeatureModel:
    """The chosen feature model: its image module, and its text side where it has one."""

    name: str
    image: ClipImageFeatures
    text_model: Any = None  # a CLIPModel with the text tower, or None
    tokenizer: Any = None

    @property
    def dim(self) -> int:
        return self.image.num_features

    @property
    def has_text(self) -> bool:
        return self.text_model is not None and self.tokenizer is not None

    def embed(self, pictures: Sequence[np.ndarray]) -> np.ndarray:
        """Image features (N x D, float64) of pictures of any sizes (grouped by size, in batches)."""
        out = np.zeros((len(pictures), self.dim), dtype=np.float64)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        arrays = [as_uint8(p) for p in pictures]
        for i, array in enumerate(arrays):
            by_shape.setdefault(array.shape, []).append(i)
        # the model manager may have moved the model to the GPU
        device = next(self.image.parameters()).device
        with torch.inference_mode():
            for indices in by_shape.values():
                for start in range(0, len(indices), BATCH):
                    chunk = indices[start : start + BATCH]
                    batch = torch.from_numpy(np.stack([arrays[i] for i in chunk])).permute(0, 3, 1, 2)
                    out[chunk] = self.image(batch.to(device)).double().cpu().numpy()
        return out

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Text embeddings (N x D, float64) of the CLIP text tower."""
        if not self.has_text:
            raise EvaluationInputError(f"{self.name} has no text tower (a CLIP vision model only)")
        max_length = int(self.text_model.config.text_config.max_position_embeddings)
        tokens = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        with torch.inference_mode():
            pooled = self.text_model.text_model(
                input_ids=tokens["input_ids"], attention_mask=tokens.get("attention_mask")
            ).pooler_output
            embeds = self.text_model.text_projection(pooled)
        return embeds.double().numpy()


def load_features(path: Path | str | None = None) -> FeatureModel:
    """The feature model at ``path`` (a CLIPModel folder, a CLIP vision folder or safetensors
    file), or the bundled toy CLIP; offline, on the CPU, float32, in eval mode."""
    path = Path(path) if path else DEFAULT_FEATURES
    if not path.exists():
        raise EvaluationInputError(f"the feature model {path} does not exist")
    config = _config(path)
    if config.get("model_type") == "clip":
        return _full_clip(path)
    from models.clip_vision import ClipVisionError, load_clip_vision
    from models.safety import PickleRefused, UnsafeOrBrokenFile

    try:
        tower = load_clip_vision(path, dtype=torch.float32)
    except (ClipVisionError, PickleRefused, UnsafeOrBrokenFile, OSError, ValueError, KeyError) as exc:
        raise EvaluationInputError(f"{path.name} is not a CLIP model the evaluation can use: {exc}") from None
    image = ClipImageFeatures(tower.vision_model, tower.visual_projection, tower.config.image_size)
    return FeatureModel(path.name, image.eval())


def _config(path: Path) -> dict[str, Any]:
    file = path / "config.json"
    if not path.is_dir() or not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _full_clip(path: Path) -> FeatureModel:
    from transformers import AutoTokenizer, CLIPModel

    from models.safety import PickleRefused, check_weights_folder

    try:
        use_safetensors = check_weights_folder(path, False)
        model = CLIPModel.from_pretrained(
            str(path), local_files_only=True, use_safetensors=use_safetensors, dtype=torch.float32
        ).eval()
    except (PickleRefused, OSError, ValueError, RuntimeError) as exc:
        raise EvaluationInputError(f"cannot load the CLIP folder {path.name}: {exc}") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError):
        tokenizer = None
    model.requires_grad_(False)
    image = ClipImageFeatures(
        model.vision_model, model.visual_projection, model.config.vision_config.image_size
    )
    return FeatureModel(path.name, image.eval(), model, tokenizer)
