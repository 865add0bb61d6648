"""The pictures and captions a concept is learnt from: a folder of png/jpg/webp files, each with an
optional ``.txt`` caption of the same stem, read with Pillow and fitted to the model's resolution
(scaled so the short side fits, then cropped in the middle: no flips, which would move things).

:func:`shifted` is the one augmentation: each picture also seen moved by a few pixels (edges
repeated), so a few pictures teach the concept's look a little apart from the exact places it stands
in them, while captions that say where things are stay true."""

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


#: At most this many placements per picture when shifting (all of them when there are fewer).
SHIFT_VARIANTS = 25


def shifted(examples: list[Example], shift: int, seed: int = 0) -> list[Example]:
    """Each example moved by offsets (dx, dy) in [-shift, shift]^2, edges repeated: every offset when
    there are at most :data:`SHIFT_VARIANTS`, else the unshifted picture and randomly chosen others
    (fixed by ``seed``). ``shift`` 0 gives the examples back."""
    if shift <= 0:
        return list(examples)
    offsets = [(dx, dy) for dy in range(-shift, shift + 1) for dx in range(-shift, shift + 1)]
    rng = np.random.default_rng(seed)
    out = []
    for example in examples:
        chosen = offsets
        if len(offsets) > SHIFT_VARIANTS:
            others = [o for o in offsets if o != (0, 0)]
            picks = rng.choice(len(others), size=SHIFT_VARIANTS - 1, replace=False)
            chosen = [(0, 0), *(others[i] for i in sorted(picks))]
        for dx, dy in chosen:
            out.append(Example(shift_pixels(example.pixels, dx, dy), example.caption, example.name))
    return out


def shift_pixels(pixels: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """(C, H, W) moved right by ``dx`` and down by ``dy`` pixels, the edge rows and columns repeated."""
    height, width = pixels.shape[1:]
    pad = max(abs(dx), abs(dy))
    if pad == 0:
        return pixels
    padded = np.pad(pixels, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    top, left = pad - dy, pad - dx
    return np.ascontiguousarray(padded[:, top : top + height, left : left + width])


def check_pictures(folder: Path) -> None:
    """Open every picture (headers only) so a broken one is reported before any training."""
    from PIL import Image, UnidentifiedImageError

    for path in picture_files(folder):
        try:
            with Image.open(path) as image:
                image.verify()
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
            raise ConceptError(f"cannot read the picture {path.name}: {exc}; remove or replace it") from None
