"""Upscale models (ESRGAN, Real-ESRGAN, SwinIR, HAT, ...) through spandrel: safe loading, tiled running.

spandrel reads the architecture and its sizes from a state dict's keys and shapes, so any
file in the layout its authors released works without a config. Files are read by the
project's own safety rules (:mod:`models.safety`): ``.safetensors`` always, pickle files
only with the opt-in and then with ``torch.load(weights_only=True)``.

Big pictures are upscaled in overlapping tiles whose outputs are blended with feathered
weights, so memory stays bounded by the tile size (chosen from a memory budget) and the
seams do not show.

spandrel imports torchvision when it is imported, though only two restoration architectures
(LaMa, RestoreFormer) ever call it; this project installs no torchvision (there is no
working CPU build on the registry). :func:`import_spandrel` lends it stand-in modules for the
length of the import only, so nothing else in the process ever sees a fake torchvision.
"""

from __future__ import annotations

import enum
import math
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.safety import PICKLE_SUFFIXES, check_weights_file, plain_load_error

if TYPE_CHECKING:
    import numpy as np
    import torch

#: The torchvision modules spandrel imports from (and the names it takes from them).
TORCHVISION_MODULES = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")

#: Tiles overlap by this many input pixels, and are blended across it.
DEFAULT_OVERLAP = 32
#: Tiles are at most this wide (input pixels), however much memory there is.
MAX_TILE = 1024
#: Tiles are at least this wide, however little memory there is (plus the overlap on each side).
MIN_TILE = 32


class UpscaleModelError(Exception):
    """An upscale model file that cannot be used, said in plain words."""


class TorchvisionMissing(RuntimeError):
    """Raised by the torchvision stand-ins when an architecture really needs torchvision."""


def _needs_torchvision(name: str) -> Callable[..., Any]:
    def stand_in(*args: Any, **kwargs: Any) -> Any:
        raise TorchvisionMissing(
            f"this model's architecture calls torchvision.transforms.functional.{name}, and torchvision "
            "is not installed; install a torchvision build matching this torch to use it"
        )

    stand_in.__name__ = name
    return stand_in


class _InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


def _stand_in_modules() -> dict[str, types.ModuleType]:
    top, transforms, functional = (types.ModuleType(name) for name in TORCHVISION_MODULES)
    functional.InterpolationMode = _InterpolationMode  # type: ignore[attr-defined]
    for name in ("rotate", "normalize"):
        setattr(functional, name, _needs_torchvision(name))
    transforms.functional = functional  # type: ignore[attr-defined]
    top.transforms = transforms  # type: ignore[attr-defined]
    for module in (top, transforms, functional):
        module.__dict__["__studio_stand_in__"] = True
    return dict(zip(TORCHVISION_MODULES, (top, transforms, functional), strict=True))


def _torchvision_works() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken build raises RuntimeError as well as ImportError
        return False
    return True


@contextmanager
def torchvision_stand_in() -> Iterator[bool]:
    """While inside, ``import torchvision.transforms.functional`` gives stand-ins when the real
    torchvision cannot be imported (yields whether stand-ins were put in place). They are removed
    on leaving, and whatever ``sys.modules`` held under those names before is put back."""
    if _torchvision_works():
        yield False
        return
    saved = {name: sys.modules.get(name) for name in TORCHVISION_MODULES}
    stand_ins = _stand_in_modules()
    sys.modules.update(stand_ins)
    try:
        yield True
    finally:
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
            if saved[name] is not None:
                sys.modules[name] = saved[name]  # type: ignore[assignment]


def import_spandrel() -> Any:
    """The ``spandrel`` module, imported with :func:`torchvision_stand_in` the first time."""
    if "spandrel" in sys.modules:
        return sys.modules["spandrel"]
    with torchvision_stand_in():
        import spandrel  # imports every architecture module, LaMa and RestoreFormer included
    return spandrel


# --------------------------------------------------------------------------- loading


def read_weights(path: Path, allow_pickle: bool) -> dict[str, Any]:
    """The state dict in ``path``: safetensors, or a pickle file (weights only) when allowed."""
    import torch

    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001 - any corrupt file, in plain words
            raise UpscaleModelError(f"{path.name} is not a readable safetensors file: {exc}") from None
    if suffix not in PICKLE_SUFFIXES:
        raise UpscaleModelError(
            f"{path.name} is not a weights file (.safetensors, or with --allow-pickle "
            f"{', '.join(PICKLE_SUFFIXES)})"
        )
    check_weights_file(path, allow_pickle)  # PickleRefused without the opt-in
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise UpscaleModelError(
            f"{path.name} could not be loaded as weights only: {plain_load_error(exc)}"
        ) from None
    if not isinstance(data, dict):
        raise UpscaleModelError(f"{path.name} does not hold a dictionary of weights")
    return data


def load_upscale_model(
    path: Path, *, device: str = "cpu", dtype: torch.dtype | None = None, allow_pickle: bool = False
) -> Any:
    """A spandrel ``ImageModelDescriptor`` for the upscale model in ``path``, on ``device``,
    in ``dtype`` where the architecture supports it (float32 otherwise)."""
    import torch

    path = Path(path)
    state = read_weights(path, allow_pickle)
    spandrel = import_spandrel()
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(spandrel.canonicalize_state_dict(state))
    except spandrel.UnsupportedModelError:
        raise UpscaleModelError(
            f"{path.name} is not a model architecture spandrel knows (ESRGAN, Real-ESRGAN, SwinIR, HAT, "
            "DAT, OmniSR, ...); check that it is an image upscale model"
        ) from None
    except (KeyError, RuntimeError, ValueError, AssertionError, IndexError) as exc:
        raise UpscaleModelError(
            f"{path.name} looks like an upscale model but cannot be built: {exc}"
        ) from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise UpscaleModelError(
            f"{path.name} is a {descriptor.architecture.name} {descriptor.purpose} model, which needs a "
            "mask; use an image-to-image upscale model"
        )
    wanted = dtype or torch.float32
    supported = {torch.float16: descriptor.supports_half, torch.bfloat16: descriptor.supports_bfloat16}
    if not supported.get(wanted, True) or device == "cpu":
        wanted = torch.float32
    descriptor.to(device=torch.device(device), dtype=wanted)
    descriptor.eval()
    descriptor.model.requires_grad_(False)
    return descriptor


# --------------------------------------------------------------------------- running


def widest_channels(model: Any) -> int:
    """The most channels any convolution or linear layer of ``model`` makes or takes."""
    import torch

    widest = 3
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            widest = max(widest, module.in_channels, module.out_channels)
        elif isinstance(module, torch.nn.Linear):
            widest = max(widest, module.in_features, module.out_features)
    return widest


def tile_for_memory(descriptor: Any, budget_bytes: int) -> int:
    """The widest square tile (input pixels, a multiple of 8) whose activations fit ``budget_bytes``.

    A super-resolution network keeps a few feature maps of its widest layer at up to the output
    size, so one input pixel costs about ``widest * scale**2 * 8`` values; the estimate is rough
    and errs large (an out-of-memory error halves the tile anyway, see :func:`upscale_tensor`).
    """
    element = descriptor.dtype.itemsize if hasattr(descriptor.dtype, "itemsize") else 4
    per_pixel = widest_channels(descriptor.model) * max(1, descriptor.scale) ** 2 * 8 * element
    side = int(math.sqrt(max(1, budget_bytes) / per_pixel)) // 8 * 8
    return max(MIN_TILE, min(MAX_TILE, side))


def memory_budget(device: str) -> int:
    """Bytes one tile may use: half the free memory of a GPU, or 1 GiB on the CPU."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free * 0.5)
    return 1024**3


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where tiles of ``tile`` pixels start along one side of ``length`` pixels, spread evenly so
    neighbours overlap by at least ``overlap`` and the last tile ends at the edge."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def _ramp(size: int, feather: int, fade_start: bool, fade_end: bool) -> torch.Tensor:
    """1-D blend weights: 1 inside, falling linearly towards a side shared with another tile."""
    import torch

    position = torch.arange(size, dtype=torch.float32)
    weight = torch.ones(size)
    if feather > 0:
        if fade_start:
            weight = torch.minimum(weight, (position + 0.5) / feather)
        if fade_end:
            weight = torch.minimum(weight, (size - position - 0.5) / feather)
    return weight


def upscale_tensor(
    descriptor: Any,
    pixels: torch.Tensor,
    *,
    tile: int,
    overlap: int = DEFAULT_OVERLAP,
    on_tile: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Upscale one picture ``pixels`` (1, c, h, w) in [0, 1], in tiles of at most ``tile`` input pixels
    overlapping by ``overlap``; returns (1, c', h * scale, w * scale) float32 on the CPU.

    Each tile's output is weighted by ramps that fall to near zero at sides shared with another tile
    (over ``overlap * scale`` output pixels) and the weighted sum is divided by the total weight, so
    the result is a smooth blend where tiles meet. ``on_tile(done, total)`` is called after each tile
    (it may raise to cancel). A tile too large for the device's memory is halved and tried again.
    """
    import torch

    while True:
        try:
            return _tiled(descriptor, pixels, tile, min(overlap, tile // 4), on_tile)
        except torch.OutOfMemoryError:
            if tile <= MIN_TILE:
                raise
            if pixels.device.type == "cuda":
                torch.cuda.empty_cache()
            tile = max(MIN_TILE, tile // 2)


def _tiled(
    descriptor: Any,
    pixels: torch.Tensor,
    tile: int,
    overlap: int,
    on_tile: Callable[[int, int], None] | None,
) -> torch.Tensor:
    import torch

    scale = descriptor.scale
    _, _, height, width = pixels.shape
    rows, cols = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    total = len(rows) * len(cols)
    device, dtype = descriptor.device, descriptor.dtype
    if total == 1:
        with torch.no_grad():
            out = descriptor(pixels.to(device, dtype)).float().cpu()
        if on_tile is not None:
            on_tile(1, 1)
        return out
    result: torch.Tensor | None = None
    weights = torch.zeros(1, 1, height * scale, width * scale)
    done = 0
    for top in rows:
        for left in cols:
            bottom, right = min(top + tile, height), min(left + tile, width)
            with torch.no_grad():
                out = descriptor(pixels[..., top:bottom, left:right].to(device, dtype)).float().cpu()
            if result is None:
                result = torch.zeros(1, out.shape[1], height * scale, width * scale)
            feather = overlap * scale
            wy = _ramp(out.shape[2], feather, top > 0, bottom < height)
            wx = _ramp(out.shape[3], feather, left > 0, right < width)
            weight = (wy[:, None] * wx[None, :])[None, None]
            ys, xs = slice(top * scale, bottom * scale), slice(left * scale, right * scale)
            result[..., ys, xs] += out * weight
            weights[..., ys, xs] += weight
            done += 1
            if on_tile is not None:
                on_tile(done, total)
    assert result is not None
    return result / weights


def upscale_images(
    descriptor: Any,
    images: np.ndarray,
    *,
    tile: int | None = None,
    overlap: int = DEFAULT_OVERLAP,
    on_tile: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """IMAGE (b, h, w, 3) in [0, 1] through the model, tiled (``tile`` None: from the memory budget).

    Grayscale models get the pictures' luminance and give gray pictures; models with an alpha
    channel get an opaque one, which is dropped from the result.
    """
    import numpy as np
    import torch

    spandrel = import_spandrel()
    if tile is None:
        tile = tile_for_memory(descriptor, memory_budget(str(descriptor.device)))
    if descriptor.tiling == spandrel.ModelTiling.INTERNAL:
        tile = max(images.shape[1], images.shape[2])  # the model tiles by itself
    batch = images.shape[0]
    outputs = []
    for index, picture in enumerate(images):
        pixels = torch.from_numpy(np.ascontiguousarray(picture, dtype=np.float32)).permute(2, 0, 1)[None]
        pixels = _to_channels(pixels, descriptor.input_channels)

        def report(done: int, total: int, index: int = index) -> None:
            if on_tile is not None:
                on_tile(index * total + done, batch * total)

        out = upscale_tensor(descriptor, pixels, tile=tile, overlap=overlap, on_tile=report)
        outputs.append(_to_channels(out, 3).clamp(0, 1)[0].permute(1, 2, 0).numpy())
    return np.stack(outputs).astype(np.float32)


def _to_channels(pixels: torch.Tensor, channels: int) -> torch.Tensor:
    """(1, c, h, w) with ``channels`` channels: RGB to luminance or RGBA (opaque), and back."""
    import torch

    have = pixels.shape[1]
    if have == channels:
        return pixels
    if channels == 1:
        coefficients = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (pixels[:, :3] * coefficients).sum(dim=1, keepdim=True)
    if have == 1:
        pixels = pixels.repeat(1, 3, 1, 1)
    if channels == 4:
        return torch.cat([pixels[:, :3], torch.ones_like(pixels[:, :1])], dim=1)
    return pixels[:, :channels]
