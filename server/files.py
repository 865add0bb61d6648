"""Which files the API may serve: pictures and videos inside the output folder.

A requested path is refused when it is absolute, holds a ``..`` part, a hidden
part (a name starting with ``.``) or a NUL, when it resolves (symbolic links
followed) to somewhere outside the output folder, or when its kind is not in
``server.guard.SERVED_SUFFIXES`` (the list Gradio's file routes are held to).
"""

from __future__ import annotations

import errno
from pathlib import Path, PurePosixPath, PureWindowsPath

from server.guard import NOT_SERVED, SERVED_SUFFIXES


class FileRefused(Exception):
    """A file the API will not serve; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def output_file(root: Path, requested: str) -> Path:
    """The file ``requested`` (a relative path, '/'-separated) inside ``root``, resolved."""
    if not requested or "\x00" in requested:
        raise FileRefused(400, "give the path of a file inside the output folder")
    posix = PurePosixPath(requested)
    if posix.is_absolute() or PureWindowsPath(requested).is_absolute() or requested.startswith("\\"):
        raise FileRefused(400, "absolute paths are refused: give a path inside the output folder")
    parts = requested.replace("\\", "/").split("/")
    if ".." in parts:
        raise FileRefused(400, "paths with '..' are refused: give a path inside the output folder")
    if any(part.startswith(".") for part in parts if part):
        raise FileRefused(403, "hidden files and folders are not served")
    try:
        base = root.resolve()
        target = (base / posix).resolve()
        inside = target.is_relative_to(base)
        is_file = inside and target.is_file()
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise FileRefused(400, "that path is too long for a file in the output folder") from None
        raise FileRefused(404, f"there is no file {requested[:200]!r} in the output folder") from None
    except ValueError:  # characters the file system cannot name
        raise FileRefused(404, f"there is no file {requested[:200]!r} in the output folder") from None
    if not inside:
        raise FileRefused(403, "that path leads outside the output folder")
    if not is_file:
        raise FileRefused(404, f"there is no file {requested[:200]!r} in the output folder")
    if target.suffix.lower() not in SERVED_SUFFIXES or posix.suffix.lower() not in SERVED_SUFFIXES:
        raise FileRefused(403, NOT_SERVED)
    return target
