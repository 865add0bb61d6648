"""``/system_stats`` and ``/embeddings``: what ComfyUI clients ask about the machine and its files.

Both are cheap and answer what client libraries read: the platform, Python and
memory (no device list: the studio places models itself), and the names of the
textual-inversion embeddings in the model folders.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.paths import ModelPaths


def system_stats() -> dict[str, Any]:
    try:
        page_size = os.sysconf("SC_PAGE_SIZE")
        pages, available = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_AVPHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        page_size = pages = available = 0
    return {
        "system": {
            "os": sys.platform,
            "python_version": sys.version,
            "embedded_python": False,
            "comfyui_version": "workflow-studio",
            "ram_total": pages * page_size,
            "ram_free": available * page_size,
            "argv": [],
        },
        "devices": [],
    }


class Embeddings:
    """``/embeddings``: the names of the embeddings in the studio's model folders."""

    def __init__(self, paths: ModelPaths) -> None:
        self.paths = paths

    def get(self) -> list[str]:
        return sorted({Path(name).stem for name in self.paths.list("embeddings")})
