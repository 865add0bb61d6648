"""Safe loading of weight files: safetensors always; pickle only when the user opts in.

Pickle files (``.ckpt``, ``.pt``, ``.pth``, ``.bin``) can run code when loaded. They are
refused unless the user passes ``--allow-pickle`` (or sets ``allow_pickle``), and even
then they are read with ``torch.load(weights_only=True)``, which loads tensors only.

The same holds for model folders (diffusers and transformers): a folder whose weights
are only pickle files (``diffusion_pytorch_model.bin``, ``pytorch_model.bin``) is
refused without the opt-in (:func:`check_weights_folder`), and loaded with it through
the libraries' own loaders, which call ``torch.load(weights_only=True)`` explicitly
(tests/test_pickle_refusal.py pins that). Errors from torch are passed on without its
advice to load with ``weights_only=False`` (:func:`plain_load_error`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
#: Pickle weights the libraries load from a model folder (``pytorch_model.bin``, ...).
FOLDER_PICKLE_SUFFIXES = (".bin", ".pt", ".pth")


class PickleRefused(Exception):
    """A pickle file was given without the opt-in."""


class UnsafeOrBrokenFile(Exception):
    """A weights file that cannot be read safely (corrupt, or holding more than tensors)."""


#: The way out, said the same way for single files and folders.
PICKLE_WAY_OUT = (
    "Convert {it} to .safetensors, or start the studio (or app.py run) with --allow-pickle to load "
    "{it} with torch.load(weights_only=True), which loads tensors only"
)


def refuse_pickle_message(path: Path) -> str:
    return (
        f"{path.name} is a pickle file ({path.suffix}), which can run code when loaded, so it is "
        f"refused. {PICKLE_WAY_OUT.format(it='it')}"
    )


def refuse_pickle_folder_message(folder: Path, pickles: list[Path]) -> str:
    shown = ", ".join(p.relative_to(folder).as_posix() for p in pickles[:3])
    more = f" and {len(pickles) - 3} more" if len(pickles) > 3 else ""
    return (
        f"the folder {folder.name} holds its weights only as pickle files ({shown}{more}), which can "
        f"run code when loaded, so it is refused. {PICKLE_WAY_OUT.format(it='them')}"
    )


def pickle_only_weights(folder: Path, skip: Iterable[str] = ()) -> list[Path]:
    """Pickle weight files in ``folder`` and its sub-folders (a diffusers pipeline's components)
    that have no ``.safetensors`` file beside them: what a library would fall back to.
    Hidden folders (``.git``) and the sub-folders named in ``skip`` (parts not loaded) are
    left out."""
    skipped = set(skip)
    found: list[Path] = []
    for directory in sorted({p.parent for p in folder.rglob("*") if p.is_file()}):
        parts = directory.relative_to(folder).parts
        if any(part.startswith(".") for part in parts) or (parts and parts[0] in skipped):
            continue
        files = [p for p in directory.iterdir() if p.is_file()]
        if any(p.name.endswith(".safetensors") or p.name == "model.safetensors.index.json" for p in files):
            continue
        found += sorted(p for p in files if p.suffix.lower() in FOLDER_PICKLE_SUFFIXES)
    return found


def check_weights_folder(folder: Path, allow_pickle: bool, skip: Iterable[str] = ()) -> bool | None:
    """``use_safetensors`` for ``from_pretrained`` of a model folder, or :class:`PickleRefused`.

    ``True`` (safetensors only: the libraries never fall back to pickle) unless some part
    of the folder (other than the sub-folders in ``skip``) has only pickle weights; then
    :class:`PickleRefused` without the opt-in, and ``None`` with it (safetensors where there
    are any, pickle loaded weights-only elsewhere).
    """
    pickles = pickle_only_weights(Path(folder), skip)
    if not pickles:
        return True
    if not allow_pickle:
        raise PickleRefused(refuse_pickle_folder_message(Path(folder), pickles))
    return None


def plain_load_error(exc: BaseException) -> str:
    """An error from loading weights, in plain words; torch's advice to retry with
    ``weights_only=False`` (which would run the code) is never passed on.

    Libraries wrap torch's refusal in errors of their own (diffusers: "Unable to load
    weights from checkpoint file"), so the chain of causes is searched for it.
    """
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            break
        text = str(seen)
        if "Weights only load failed" in text or "weights_only" in text:
            named = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
            what = f" (it names {named.group(1)})" if named else ""
            return (
                f"it holds more than tensors{what}, and loading it could run code, so it was not "
                "loaded; use a .safetensors version of this model"
            )
        seen = seen.__cause__ or seen.__context__
    return str(exc)


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
            f"{path.name} could not be loaded as weights only (it may hold code or be corrupt): "
            f"{plain_load_error(exc)}"
        ) from None
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise UnsafeOrBrokenFile(f"{path.name} does not hold a dictionary of tensors")
    return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
