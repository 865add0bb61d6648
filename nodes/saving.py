"""Writing output files safely: inside the output folder, under the next free name, never
replacing a file, never half-written (a hidden temporary file is written, then hard-linked to
its name). SaveImage (PNG) and the animation and video savers (nodes/video.py) share these.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path

import numpy as np

from nodes.base import NodeInputError, RunSettings

_PREFIX = re.compile(r"^[\w\- .]+(/[\w\- .]+)*$")


def to_uint8(image: np.ndarray) -> np.ndarray:
    """IMAGE (batch, h, w, 3) float in [0, 1] to uint8, rounding to nearest."""
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def next_free_path(folder: Path, prefix: str, suffix: str = ".png") -> tuple[Path, int]:
    """The first ``prefix_00001.png``-style name that does not exist yet in ``folder``."""
    stem = Path(prefix).name
    numbers = []
    if folder.is_dir():
        pattern = re.compile(re.escape(stem) + r"_(\d+)" + re.escape(suffix) + "$")
        for existing in folder.iterdir():
            match = pattern.match(existing.name)
            if match:
                numbers.append(int(match.group(1)))
    counter = max(numbers, default=0) + 1
    return folder / f"{stem}_{counter:05d}{suffix}", counter


#: How many times a save looks for a free name before giving up (others may be saving at once).
MAX_NAME_TRIES = 1000


def create_temporary(folder: Path, suffix: str = ".png") -> tuple[int, Path]:
    """A new hidden file in ``folder``, open for writing, made with the process umask
    (``tempfile.mkstemp`` would make it 0600, and the saved PNG would keep that mode)."""
    for _ in range(MAX_NAME_TRIES):
        path = folder / f".saving-{secrets.token_hex(8)}{suffix}"
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {folder}")


def write_exclusive(folder: Path, prefix: str, suffix: str, write: Callable[[Path], None]) -> Path:
    """Write a file through ``write(temporary path)``, then give it the next free
    ``prefix_00001<suffix>`` name in ``folder``; never replaces an existing file."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temporary(folder, suffix)
    os.close(fd)
    try:
        write(tmp)
        for _ in range(MAX_NAME_TRIES):
            target, _ = next_free_path(folder, prefix, suffix)
            try:
                os.link(tmp, target)  # atomic, and fails if the name was taken meanwhile
                return target
            except FileExistsError:
                continue
        raise FileExistsError(f"no free name for {Path(prefix).name!r} in {folder}")
    finally:
        tmp.unlink(missing_ok=True)


def write_png_exclusive(folder: Path, prefix: str, pixels: np.ndarray, text: dict[str, str]) -> Path:
    """Write a PNG under the next free name; never replaces an existing file."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)

    def write(path: Path) -> None:
        Image.fromarray(pixels).save(path, format="PNG", pnginfo=info, compress_level=4)

    return write_exclusive(folder, prefix, ".png", write)


def output_folder(settings: RunSettings, filename_prefix: str) -> tuple[Path, str]:
    """(folder to write in, prefix) for ``filename_prefix``, refused by name unless the folder,
    with symbolic links followed, lies inside the output folder and no part starts with a dot."""
    prefix = filename_prefix.strip()
    parts = prefix.split("/")
    if not _PREFIX.match(prefix) or any(part in ("..", ".") for part in parts):
        raise NodeInputError(
            "filename_prefix",
            f"{filename_prefix!r} is not a usable name: use letters, digits, '-', '_' "
            "and '/' for sub-folders, without '..'",
        )
    hidden = [part for part in parts if part.startswith(".")]
    if hidden:
        raise NodeInputError(
            "filename_prefix",
            f"{filename_prefix!r} has a part starting with a dot ({hidden[0]!r}): such names are kept "
            "for the studio's own files (like its history in .studio); use a name without the dot",
        )
    folder = settings.output_dir / Path(prefix).parent
    if not folder.resolve().is_relative_to(settings.output_dir.resolve()):
        raise NodeInputError(
            "filename_prefix",
            f"{filename_prefix!r} leads outside the output folder through a symbolic link; "
            "choose a sub-folder inside it",
        )
    return folder, prefix
