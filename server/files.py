"""Which files the API may serve: only regular files inside the output folder.

A requested path is refused when it is absolute, holds a ``..`` part, a hidden
part (``.studio``, where the history lives) or a NUL, or when it resolves
(symbolic links followed) to somewhere outside the output folder.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath


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
    base = root.resolve()
    target = (base / posix).resolve()
    if not target.is_relative_to(base):
        raise FileRefused(403, "that path leads outside the output folder")
    if not target.is_file():
        raise FileRefused(404, f"there is no file {requested!r} in the output folder")
    return target
