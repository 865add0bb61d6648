""" "Diff" ControlNets: files stored as their difference to the base model's UNet.

Early ControlNet releases (``diff_control_sd15_*``) keep, for every weight the ControlNet
shares with the UNet's encoder half, the ControlNet's weight minus the UNet's, and mark the file
with a ``difference`` key. Loading one needs the model it was made against: as ComfyUI does,
each ``control_model.<name>`` whose ``<name>`` is a weight of the model's UNet (in the original
LDM layout) gets that weight added back; the rest (hint encoder, zero convolutions) is stored
whole. A file without the marker is an ordinary ControlNet.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.loading import CONFIGS, CheckpointError
from models.safety import check_weights_file, load_state_dict, plain_load_error

if TYPE_CHECKING:
    import torch

#: The key that marks a diff ControlNet (its value is an empty tensor).
MARKER = "difference"
#: The prefix of the ControlNet's weights in the original single-file layout.
PREFIX = "control_model."


def is_difference_file(path: Path, allow_pickle: bool) -> bool:
    """Whether a ControlNet file is stored as differences (a diffusers folder never is)."""
    path = Path(path)
    if path.is_dir():
        return False
    check_weights_file(path, allow_pickle)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as opened:
            return MARKER in opened.keys()  # noqa: SIM118 - safe_open has no __contains__
    return MARKER in load_state_dict(path, allow_pickle=allow_pickle)


def add_unet(state: dict[str, Any], unet: Any) -> dict[str, Any]:
    """The full ControlNet state dict: each difference plus the UNet's weight of the same name."""
    import torch

    from models.checkpoint_save import SaveError, unet_to_original

    try:
        base = unet_to_original(unet)
    except SaveError as exc:
        raise CheckpointError(f"the model's UNet has no original layout to add: {exc}") from None
    out: dict[str, Any] = {}
    added = 0
    for key, tensor in state.items():
        if key == MARKER:
            continue
        weight = base.get(key[len(PREFIX) :]) if key.startswith(PREFIX) else None
        if weight is None:
            out[key] = tensor
            continue
        if weight.shape != tensor.shape:
            raise CheckpointError(
                f"its {key} is {tuple(tensor.shape)} but the model's is {tuple(weight.shape)}: "
                "the diff ControlNet was made for another model family"
            )
        out[key] = tensor.to(torch.float32) + weight.to(tensor.device, torch.float32)
        added += 1
    if not added:
        raise CheckpointError("none of its weights is a difference to this model's UNet")
    return out


def load_diff_controlnet(
    path: Path,
    unet: Any,
    *,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    allow_pickle: bool = False,
) -> Any:
    """A ControlNet from a diff file and the UNet it was made against. Its config comes from a
    sidecar ``<stem>.config`` folder when there is one, else the shipped SD 1.x or SDXL one."""
    import torch
    from diffusers import ControlNetModel

    dtype = dtype or torch.float32
    path = Path(path)
    check_weights_file(path, allow_pickle)
    state = add_unet(load_state_dict(path, allow_pickle=allow_pickle), unet)
    sidecar = path.with_name(path.stem + ".config")
    if (sidecar / "config.json").is_file():
        config = sidecar
    else:
        xl = any("label_emb" in key for key in state)
        config = CONFIGS / ("controlnet-sdxl" if xl else "controlnet-sd15")
    try:
        model = ControlNetModel.from_single_file(state, config=str(config), local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"cannot load the ControlNet {path.name}: {plain_load_error(exc)}") from None
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)
