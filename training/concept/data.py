"""The pictures and captions a concept is learnt from: a folder of png/jpg/webp files, each with an
optional ``.txt`` caption of the same stem, read with Pillow and fitted to the model's resolution
(scaled so the short side fits, then cropped in the middle: no flips, which would move things)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.concept.config import ConceptError

SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass(frozen=True)
class Example:
    pixels: np.ndarray  # (3, H, W) float32 in [-1, 1]
    caption: str
    name: str


def picture_files(folder: Path) -> list[Path]:
    """The pictures of a folder, sorted by name; ConceptError when there is none or no folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConceptError(f"the picture folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
    if not files:
        raise ConceptError(f"{folder} holds no pictures (png, jpg or webp)")
    return files


def fit(path: Path, resolution: int) -> np.ndarray:
    """The picture as (3, r, r) float32 in [-1, 1]; ConceptError when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ConceptError(f"cannot read the picture {path.name}: {exc}; remove or replace it") from None
    width, height = image.size
    scale = resolution / min(width, height)
    size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    if size != image.size:
        image = image.resize(size, Image.Resampling.BICUBIC)
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def caption_of(path: Path, fallback: str) -> str:
    text_file = path.with_suffix(".txt")
    if text_file.is_file():
        text = " ".join(text_file.read_text(encoding="utf-8", errors="replace").split())
        if text:
            return text
    return fallback


def read_examples(folder: Path, resolution: int, token: str) -> list[Example]:
    """Every picture of ``folder`` with its caption ("a photo of <token>" when it has none)."""
    return [
        Example(fit(path, resolution), caption_of(path, f"a photo of {token}"), path.name)
        for path in picture_files(folder)
    ]


def check_pictures(folder: Path) -> None:
    """Open every picture (headers only) so a broken one is reported before any training."""
    from PIL import Image, UnidentifiedImageError

    for path in picture_files(folder):
        try:
            with Image.open(path) as image:
                image.verify()
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
            raise ConceptError(f"cannot read the picture {path.name}: {exc}; remove or replace it") from None
