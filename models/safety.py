"""Safe loading of weight files: safetensors always; pickle only when the user opts in.

Pickle files (``.ckpt``, ``.pt``, ``.pth``, ``.bin``) can run code when loaded. They are
refused unless the user passes ``--allow-pickle`` (or sets ``allow_pickle``), and even
then they are read with ``torch.load(weights_only=True)``, which loads tensors only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


class PickleRefused(Exception):
    """A pickle file was given without the opt-in."""


class UnsafeOrBrokenFile(Exception):
    """A weights file that cannot be read safely (corrupt, or holding more than tensors)."""


def refuse_pickle_message(path: Path) -> str:
    return (
        f"{path.name} is a pickle file ({path.suffix}), which can run code when loaded, so it is "
        "refused. Convert it to .safetensors, or start the studio with --allow-pickle to load it "
        "with torch.load(weights_only=True), which loads tensors only"
    )


def check_weights_file(path: Path, allow_pickle: bool) -> None:
    """Raise :class:`PickleRefused` for a pickle file without the opt-in."""
    if path.suffix.lower() in PICKLE_SUFFIXES and not allow_pickle:
        raise PickleRefused(refuse_pickle_message(path))


def load_state_dict(path: Path, allow_pickle: bool = False, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file, or from a pickle file when allowed (weights only)."""
    import torch

    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device=device)
        except Exception as exc:  # noqa: BLE001 - report any corrupt file in plain words
            raise UnsafeOrBrokenFile(f"{path.name} is not a readable safetensors file: {exc}") from None
    check_weights_file(path, allow_pickle)
    try:
        data: Any = torch.load(str(path), map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise UnsafeOrBrokenFile(
            f"{path.name} could not be loaded as weights only (it may hold code or be corrupt): {exc}"
        ) from None
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise UnsafeOrBrokenFile(f"{path.name} does not hold a dictionary of tensors")
    return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
