"""The input folder as the page sees it: the pictures LoadImage offers, uploads, painted masks.

Files go into the studio's input folder (``input/``), made when needed. A file is
never overwritten: a name that is taken (by a file, a folder or a symlink, even a
dangling one) gets a number (``photo_2.png``). Names with folder parts, hidden names
and anything but image types are refused, and so are pictures that cannot be read or
are too large to open safely (image bombs). The list offered to LoadImage leaves out
symlinks that lead outside the folder, which LoadImage refuses. Pictures are served
back (:func:`input_picture`) under the rules of ``/api/files``.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nodes.limits import bomb_text
from server.files import FileRefused, output_file
from server.guard import IMAGE_SUFFIXES as SERVED_PICTURES

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
    """An upload that cannot be saved; the message says why."""


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


def _check_picture(name: str, opened: Any) -> None:
    """Raise :class:`InputRefused` unless Pillow reads ``opened`` (a path or a file) as a picture
    of a safe size."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(opened) as image:
            image.verify()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_large(name, exc) from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        raise InputRefused(f"{name!r} is not an image that can be read") from None


def save_upload(folder: Path, source: Path | str, name: str | None = None) -> Path:
    """Copy an uploaded image into ``folder`` under its own (checked) name or ``name``."""
    source = Path(source)
    name = check_name(name or source.name)
    _check_picture(name, source)
    path = _claim(folder, name)
    try:
        shutil.copyfile(source, path)
    except OSError:
        path.unlink(missing_ok=True)
        raise
    return path


def save_bytes(folder: Path, data: bytes, name: str) -> Path:
    """Save a picture sent as bytes (the page's uploads and painted masks) into ``folder`` as
    ``name``, or ``name`` with a number when that is taken."""
    name = check_name(name)
    if not data:
        raise InputRefused(f"{name!r} is empty: send the picture's bytes")
    _check_picture(name, io.BytesIO(data))
    path = _claim(folder, name)
    try:
        path.write_bytes(data)
    except OSError:
        path.unlink(missing_ok=True)
        raise
    return path


def input_picture(folder: Path, requested: str) -> Path:
    """The picture ``requested`` (a relative, '/'-separated path) inside the input folder, resolved.

    Held to the rules of ``/api/files`` (no absolute paths, ``..``, hidden parts or links leading
    out), and to pictures only: :class:`server.files.FileRefused` otherwise.
    """
    try:
        target = output_file(folder, requested)
    except FileRefused as exc:
        raise FileRefused(exc.status, exc.message.replace("output folder", "input folder")) from None
    if target.suffix.lower() not in SERVED_PICTURES:
        raise FileRefused(403, "only pictures are served from the input folder")
    return target
