"""What a checkpoint is, read cheaply: its family and the picture size it was trained for.

Used to give new nodes sensible defaults (the first checkpoint, its native size)
without loading anything: only configuration files and a safetensors file's header
(its key names and shapes) are read, never weights, and neither torch nor diffusers
is imported.

- A diffusers folder: the UNet's ``sample_size`` times the VAE's scale
  (``2 ** (len(block_out_channels) - 1)``) is the native size (64 x 8 = 512 for SD 1.x);
  the family comes from the second text encoder (SDXL) or the UNet's cross-attention
  width (768: SD 1.x, 1024: SD 2.x, 2048: SDXL), as models/unet_files.py reads it.
- A single ``.safetensors`` file: the UNet's keys and shapes (models/unet_files.py's
  :func:`~models.unet_files.read_layout`), and the family's size: 512 (SD 1.x), 768 (SD 2.x,
  whose single files are mostly the 768 v-prediction models) or 1024 (SDXL). A
  ``<stem>.config`` folder beside it (the loader's configuration) is read as a folder.
- A model of none of these families is ``toy`` when it was made for pictures under
  256 px (the bundled toy-world models), else ``unknown``; an unreadable one is
  ``unknown`` at 512 x 512.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from models.loading import CheckpointError
from models.unet_files import FAMILIES_BY_WIDTH, read_layout, strip_prefix

#: The picture size each family was trained for.
NATIVE_SIZES = {"sd1": 512, "sd2": 768, "sdxl": 1024}
#: The size assumed when nothing better is known.
DEFAULT_SIZE = 512
#: Below this native size a model is a toy (no Stable Diffusion family is trained that small).
TOY_BELOW = 256
#: The largest safetensors header read (real checkpoints have headers of a few hundred KB).
MAX_HEADER_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint's family (``sd1``, ``sd2``, ``sdxl``, ``toy`` or ``unknown``), native size and
    UNet input channels (4 for text-to-image, 9 inpainting, 8 instruction editing; None unknown)."""

    family: str
    width: int
    height: int
    in_channels: int | None = None


UNKNOWN = CheckpointInfo("unknown", DEFAULT_SIZE, DEFAULT_SIZE)


def checkpoint_info(path: Path) -> CheckpointInfo:
    """The family and native size of the checkpoint at ``path`` (a folder or a single file)."""
    path = Path(path)
    try:
        if path.is_dir():
            return _folder_info(path)
        sidecar = path.with_name(path.stem + ".config")
        if (sidecar / "unet" / "config.json").is_file():
            return _folder_info(sidecar)
        if path.suffix.lower() == ".safetensors":
            return _single_file_info(path)
    except (OSError, ValueError, KeyError, TypeError, CheckpointError):
        pass
    return UNKNOWN


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _folder_info(folder: Path) -> CheckpointInfo:
    index = _read_json(folder / "model_index.json")
    unet = _read_json(folder / "unet" / "config.json")
    vae = _read_json(folder / "vae" / "config.json")
    blocks = vae.get("block_out_channels")
    scale = 2 ** (len(blocks) - 1) if isinstance(blocks, list) and blocks else 8
    sample = unet.get("sample_size")
    if isinstance(sample, list | tuple) and len(sample) == 2:
        height, width = (int(side) * scale for side in sample)
    elif isinstance(sample, int) and not isinstance(sample, bool) and sample > 0:
        height = width = sample * scale
    else:
        height = width = 0
    family = _family(index, unet)
    if not width:
        width = height = NATIVE_SIZES.get(family, DEFAULT_SIZE)
    if family is None:
        family = "toy" if max(width, height) < TOY_BELOW else "unknown"
    channels = unet.get("in_channels")
    return CheckpointInfo(family, width, height, channels if isinstance(channels, int) else None)


def _family(index: dict[str, Any], unet: dict[str, Any]) -> str | None:
    second = index.get("text_encoder_2")
    if isinstance(second, list) and any(second):
        return "sdxl"
    if unet.get("addition_embed_type") == "text_time":
        return "sdxl"
    width = unet.get("cross_attention_dim")
    return FAMILIES_BY_WIDTH[width][0] if width in FAMILIES_BY_WIDTH else None


def _single_file_info(path: Path) -> CheckpointInfo:
    layout = read_layout(strip_prefix(safetensors_shapes(path)))
    family = layout.family or "unknown"
    size = NATIVE_SIZES.get(family, DEFAULT_SIZE)
    return CheckpointInfo(family, size, size, layout.in_channels)


def safetensors_shapes(path: Path) -> dict[str, SimpleNamespace]:
    """The tensors of a safetensors file by name, each with its ``shape`` only, from the header."""
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise ValueError(f"{path.name} is too short to be a safetensors file")
        (length,) = struct.unpack("<Q", head)
        if length > MAX_HEADER_BYTES:
            raise ValueError(f"{path.name} has a header of {length} bytes: not a safetensors file")
        header = json.loads(handle.read(length).decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError(f"{path.name} has no safetensors header")
    return {
        name: SimpleNamespace(shape=tuple(entry["shape"]))
        for name, entry in header.items()
        if name != "__metadata__" and isinstance(entry, dict)
    }
