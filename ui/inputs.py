"""The input folder as the page sees it: images listed for LoadImage, uploads and painted masks.

Files go into the first input folder of the run settings (``input/`` for the
studio), made when needed. A file is never overwritten: a name that is taken
(by a file, a folder or a symlink, even a dangling one) gets a number
(``photo_2.png``). Names with folder parts, hidden names and anything but image
types are refused, and so are images too large to open safely (image bombs).
The list offered to LoadImage leaves out symlinks that lead outside the folder,
which LoadImage refuses.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nodes.limits import bomb_text

#: Image types LoadImage reads (and uploads may have).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
#: Most file names offered in the LoadImage path list.
MAX_LISTED = 500
#: Deepest folder level searched under an input folder.
MAX_DEPTH = 3
#: How many numbered names a save tries before giving up (others may be saving at once).
MAX_CLAIM_TRIES = 1000

_NAME_OK = re.compile(r"^[\w][\w .()+-]*$")


class InputRefused(ValueError):
    """An upload or a mask name that cannot be saved; the message says why."""


def list_images(folders: Sequence[Path]) -> list[str]:
    """Image files in the input folders, as names LoadImage takes (relative, first folder wins)."""
    names: dict[str, None] = {}
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        root = folder.resolve()
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder)
            if len(rel.parts) > MAX_DEPTH or any(part.startswith(".") for part in rel.parts):
                continue
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and _inside(path, root):
                names.setdefault(rel.as_posix(), None)
                if len(names) >= MAX_LISTED:
                    return list(names)
    return list(names)


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path``, with every symlink followed, lies in the (resolved) folder ``root``."""
    return path.resolve().is_relative_to(root)


def check_name(name: str, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> str:
    """``name`` when it is a plain image file name, else :class:`InputRefused`."""
    name = str(name or "").strip()
    if not name:
        raise InputRefused("give a file name")
    if "/" in name or "\\" in name or name in (".", "..") or Path(name).name != name:
        raise InputRefused(f"{name!r} has folder parts; give a plain file name")
    if name.startswith(".") or not _NAME_OK.match(name):
        raise InputRefused(f"{name!r} is not a usable file name (letters, digits, spaces, . _ - ( ) +)")
    if Path(name).suffix.lower() not in suffixes:
        raise InputRefused(f"{name!r} is not an image file (one of {', '.join(suffixes)})")
    return name


def free_path(folder: Path, name: str) -> Path:
    """``folder / name``, or with a number added (``name_2.png``) when that is taken.

    A symlink takes its name even when it leads nowhere (a dangling link).
    """
    path = folder / name
    stem, suffix = path.stem, path.suffix
    number = 2
    while os.path.lexists(path):
        path = folder / f"{stem}_{number}{suffix}"
        number += 1
    return path


def _claim(folder: Path, name: str) -> Path:
    """Create an empty file at a free name (exclusively, so two saves never share one).

    The file is made with ``O_EXCL``, which never follows a symlink; a name taken
    meanwhile moves on to the next free one, at most :data:`MAX_CLAIM_TRIES` times.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for _ in range(MAX_CLAIM_TRIES):
        path = free_path(folder, name)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return path
        except FileExistsError:
            continue
    raise InputRefused(f"found no free name for {name!r} in the input folder; try another name")


def _too_large(name: str, exc: Exception) -> InputRefused:
    """An image bomb (Pillow's DecompressionBombError or Warning), said in plain words."""
    return InputRefused(f"{name!r} is too large to open safely: {bomb_text(exc)}")


def save_upload(folder: Path, source: Path | str, name: str | None = None) -> Path:
    """Copy an uploaded image into ``folder`` under its own (checked) name or ``name``."""
    source = Path(source)
    name = check_name(name or source.name)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as image:
            image.verify()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_large(name, exc) from None
    except (OSError, UnidentifiedImageError, ValueError):
        raise InputRefused(f"{name!r} is not an image that can be read") from None
    path = _claim(folder, name)
    try:
        shutil.copyfile(source, path)
    except OSError:
        path.unlink(missing_ok=True)
        raise
    return path


def _rgba(value: Any) -> np.ndarray | None:
    """An editor layer (numpy array, PIL image or file path) as an RGBA uint8 array."""
    if value is None:
        return None
    if isinstance(value, str | Path):
        from PIL import Image

        try:
            with Image.open(value) as image:
                return np.asarray(image.convert("RGBA"))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _too_large(Path(value).name, exc) from None
    if hasattr(value, "convert"):  # PIL
        return np.asarray(value.convert("RGBA"))
    array = np.asarray(value)
    if array.ndim == 2:
        array = np.stack([array, array, array, np.full_like(array, 255)], axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        return None
    if array.dtype != np.uint8:
        floats = np.nan_to_num(array.astype(np.float32))
        if floats.size and floats.max() <= 1.0:
            floats = floats * 255.0
        array = np.clip(floats, 0.0, 255.0).round().astype(np.uint8)
    if array.shape[-1] == 3:
        array = np.concatenate([array, np.full(array.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    return array


def mask_from_editor(value: Any) -> np.ndarray:
    """The painted strokes of a ``gr.ImageEditor`` value as a mask: 255 where painted, else 0.

    The value is the editor's dict (``background``, ``layers``, ``composite``); every
    layer's opaque pixels count as painted. The mask has the background's size.
    """
    if not isinstance(value, dict):
        raise InputRefused("open an image in the mask editor and paint on it first")
    background = _rgba(value.get("background"))
    layers = [layer for layer in (_rgba(item) for item in value.get("layers") or []) if layer is not None]
    if background is None and not layers:
        raise InputRefused("open an image in the mask editor and paint on it first")
    height, width = (background if background is not None else layers[0]).shape[:2]
    mask = np.zeros((height, width), dtype=bool)
    for layer in layers:
        h, w = min(height, layer.shape[0]), min(width, layer.shape[1])
        mask[:h, :w] |= layer[:h, :w, 3] > 0
    if not mask.any():
        raise InputRefused("nothing is painted yet: paint where the image should change")
    return np.where(mask, 255, 0).astype(np.uint8)


def save_mask(folder: Path, value: Any, name: str) -> Path:
    """Save the painted mask as a black-and-white PNG (white = repaint) in ``folder``."""
    name = str(name or "").strip()
    if name and not Path(name).suffix:
        name += ".png"
    name = check_name(name, (".png",))
    mask = mask_from_editor(value)
    from PIL import Image

    path = _claim(folder, name)
    try:
        Image.fromarray(mask, mode="L").convert("RGB").save(path, format="PNG")
    except OSError:
        path.unlink(missing_ok=True)
        raise
    return path
