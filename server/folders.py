"""The folders the studio page works with, handed to the API's page routes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StudioFolders:
    """``input_dir``: LoadImage's pictures, uploads and painted masks; ``library_dir``: the
    named workflows the page saves; ``examples_dir``: the example workflows it offers."""

    input_dir: Path
    library_dir: Path
    examples_dir: Path
