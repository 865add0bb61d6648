"""``GET /api/models``: the checkpoints on disk, each with its family and native size.

The page gives new nodes defaults from this answer (the first checkpoint, a latent of
its native size). Each checkpoint is read once (models/checkpoint_info.py reads only
configs and headers) and remembered until its files change: the cache is keyed by the
path and the modification times and sizes of the files read.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from models.checkpoint_info import DEFAULT_SIZE, CheckpointInfo, checkpoint_info
from models.services import Services

#: The files of a diffusers folder (or a sidecar config folder) whose changes matter.
_FOLDER_FILES = ("model_index.json", "unet/config.json", "vae/config.json")

Stamp = tuple[tuple[str, int, int], ...]


def _stamp(path: Path) -> Stamp:
    """What tells that a checkpoint changed: the times and sizes of the files its info is read from."""
    if path.is_dir():
        files = [path / name for name in _FOLDER_FILES]
    else:
        sidecar = path.with_name(path.stem + ".config")
        files = [path, *(sidecar / name for name in _FOLDER_FILES)]
    stamp = []
    for file in files:
        try:
            stat = file.stat()
        except OSError:
            continue
        stamp.append((str(file), stat.st_mtime_ns, stat.st_size))
    return tuple(stamp)


class ModelCatalog:
    """The checkpoints of some services' model folders, with their info cached by file state."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[Path, tuple[Stamp, CheckpointInfo]] = {}

    def info(self, path: Path) -> CheckpointInfo:
        stamp = _stamp(path)
        with self._lock:
            cached = self._cache.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        found = checkpoint_info(path)
        with self._lock:
            self._cache[path] = (stamp, found)
        return found

    def answer(self, services: Services) -> dict[str, Any]:
        """``{"checkpoints": [{name, family, width, height, in_channels}], "defaults": {...}}``.

        The default checkpoint is the first that makes pictures from text (a UNet of 4 input
        channels, or one not known), else the first; without any, ``null`` at 512 x 512.
        """
        checkpoints = []
        seen: set[Path] = set()
        for name in services.paths.list("checkpoints"):
            path = services.paths.find("checkpoints", name)
            if path is None:
                continue
            seen.add(path)
            info = self.info(path)
            checkpoints.append(
                {
                    "name": name,
                    "family": info.family,
                    "width": info.width,
                    "height": info.height,
                    "in_channels": info.in_channels,
                }
            )
        with self._lock:
            for gone in set(self._cache) - seen:
                del self._cache[gone]
        plain = [c for c in checkpoints if c["in_channels"] in (4, None)]
        first = (plain or checkpoints or [None])[0]
        defaults = {
            "ckpt_name": first["name"] if first else None,
            "width": first["width"] if first else DEFAULT_SIZE,
            "height": first["height"] if first else DEFAULT_SIZE,
        }
        return {"checkpoints": checkpoints, "defaults": defaults}
