"""Upscale models through spandrel: UpscaleModelLoader and ImageUpscaleWithModel.

Tiny random models of two real architectures (ESRGAN's RRDBNet in Real-ESRGAN's names, and
Real-ESRGAN's SRVGGNetCompact), saved in their released key layouts, must be recognised from the
file and upscale exactly as the architecture's own forward pass (written in the fixture) does.
Tiled upscaling must match the whole-picture result to within 1/255 at most (the seams are blended
over the overlap; measured: about 7e-4 at most, 3e-5 on average, for 32-pixel tiles overlapping by 8).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from graph.events import NodeProgress
from models.manager import ModelManager
from models.services import Services
from nodes.base import Cancelled, CancelToken, Context, NodeInputError, RunSettings
from nodes.model_ops import ImageUpscaleWithModel, UpscaleModelLoader
from tests.fixtures.services import services_over
from tests.fixtures.upscale_models import save_pickle, save_safetensors, tiny_compact, tiny_rrdbnet

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def upscale_root(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A models root with upscale models in models/upscale_models (and ESRGAN/, as A1111 names it)."""
    root = tmp_path_factory.mktemp("upscale-root")
    models = {"esrgan": tiny_rrdbnet(), "compact": tiny_compact()}
    save_safetensors(models["esrgan"], root / "upscale_models" / "tiny-esrgan-x4.safetensors")
    save_safetensors(models["compact"], root / "ESRGAN" / "tiny-compact-x2.safetensors")
    save_pickle(models["esrgan"], root / "upscale_models" / "tiny-esrgan-x4.pth")
    from safetensors.torch import save_file

    save_file({"not.a.model": torch.zeros(3)}, str(root / "upscale_models" / "junk.safetensors"))
    return root, models


def services_in(upscale_root: Any, allow_pickle: bool = False) -> Services:
    """Services over the fixture's models root, with a fresh CPU model manager."""
    root, _ = upscale_root
    return services_over(root, manager=ModelManager(device="cpu", allow_pickle=allow_pickle))


def context(services: Services, events: list | None = None, token: CancelToken | None = None) -> Context:
    return Context(
        node_id="up",
        node_type="ImageUpscaleWithModel",
        run_id="test",
        seed=0,
        settings=RunSettings(services=services),
        cancel_token=token or CancelToken(),
        emit=(events.append if events is not None else lambda e: None),
    )


def picture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth picture with some detail (random pixels would make every seam look like an edge)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [0.5 + 0.4 * np.sin(x / (3 + c) + y / (5 + c) + c) for c in range(3)]
    image = np.stack(channels, -1) + 0.05 * rng.standard_normal((height, width, 3))
    return np.clip(image, 0, 1).astype(np.float32)[None]


def load(services: Services, name: str) -> Any:
    return UpscaleModelLoader().run(context(services), model_name=name)["upscale_model"]


def oracle(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(torch.from_numpy(image).permute(0, 3, 1, 2)).clamp(0, 1)
    return out.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize(
    ("name", "key", "arch", "scale"),
    [
        ("tiny-esrgan-x4.safetensors", "esrgan", "ESRGAN", 4),
        ("tiny-compact-x2.safetensors", "compact", "Compact", 2),
    ],
)
def test_a_real_architecture_is_recognised_and_upscales_as_its_forward_pass(
    upscale_root: Any, name: str, key: str, arch: str, scale: int
) -> None:
    _, models = upscale_root
    services = services_in(upscale_root)
    ref = load(services, name)
    descriptor = ref.get()
    assert descriptor.architecture.id == arch and descriptor.scale == scale
    image = picture(20, 28)
    out = ImageUpscaleWithModel().run(context(services), upscale_model=ref, image=image)["image"]
    want = oracle(models[key], image)
    assert out.shape == (1, 20 * scale, 28 * scale, 3) and out.dtype == np.float32
    inside = (want > 0) & (want < 1)
    assert inside.mean() > 0.9  # the comparison is not hidden by clamping
    np.testing.assert_allclose(out, want, atol=1e-5)


def test_the_model_is_kept_in_the_manager(upscale_root: Any) -> None:
    services = services_in(upscale_root)
    first, second = load(services, "tiny-esrgan-x4.safetensors"), load(services, "tiny-esrgan-x4.safetensors")
    assert services.loads == 1 and first.get() is second.get()
    assert services.models().loaded_bytes > 0


@pytest.mark.parametrize("key", ["esrgan", "compact"])
def test_tiled_equals_untiled(upscale_root: Any, key: str) -> None:
    from models.upscale import import_spandrel, upscale_images

    _, models = upscale_root
    descriptor = import_spandrel().ModelLoader().load_from_state_dict(models[key].state_dict())
    image = picture(56, 72, seed=1)
    whole = oracle(models[key], image)
    done: list[tuple[int, int]] = []
    tiled = upscale_images(descriptor, image, tile=32, overlap=8, on_tile=lambda d, t: done.append((d, t)))
    assert done == [(i, 6) for i in range(1, 7)]  # 2 rows x 3 columns, reported one by one
    difference = np.abs(tiled - whole)
    assert difference.max() < 1 / 255 and difference.mean() < 2e-4


def test_tile_starts_cover_every_pixel_with_the_overlap() -> None:
    from models.upscale import tile_starts

    for length in (1, 31, 32, 33, 100, 257, 1000):
        for tile, overlap in ((32, 8), (64, 16), (512, 32)):
            starts = tile_starts(length, tile, overlap)
            assert starts[0] == 0 and min(starts[-1] + tile, length) == length
            ends = [s + tile for s in starts]
            assert all(ends[i] - starts[i + 1] >= overlap for i in range(len(starts) - 1)), (length, tile)


def test_tile_size_follows_the_memory_budget(upscale_root: Any) -> None:
    from models.upscale import MAX_TILE, MIN_TILE, tile_for_memory

    descriptor = load(services_in(upscale_root), "tiny-esrgan-x4.safetensors").get()
    sizes = [tile_for_memory(descriptor, budget) for budget in (1, 2**24, 2**28, 2**30, 2**40)]
    assert sizes == sorted(sizes) and sizes[0] == MIN_TILE and sizes[-1] == MAX_TILE
    assert all(size % 8 == 0 for size in sizes)


def test_progress_per_tile_and_cancel_between_tiles(
    upscale_root: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import models.upscale as upscale

    services = services_in(upscale_root)
    ref = load(services, "tiny-compact-x2.safetensors")
    monkeypatch.setattr(upscale, "tile_for_memory", lambda descriptor, budget: 32)
    events: list = []
    image = np.concatenate([picture(40, 64), picture(40, 64, seed=2)])
    out = ImageUpscaleWithModel().run(context(services, events), upscale_model=ref, image=image)["image"]
    assert out.shape == (2, 80, 128, 3)
    steps = [(e.step, e.total) for e in events if isinstance(e, NodeProgress)]
    assert steps == [(i, 12) for i in range(1, 13)]  # 2 pictures x 2 rows x 3 columns

    token = CancelToken()
    seen: list = []

    def cancel_after_first(event: Any) -> None:
        seen.append(event)
        token.cancel()

    ctx = context(services, token=token)
    ctx.emit = cancel_after_first
    with pytest.raises(Cancelled):
        ImageUpscaleWithModel().run(ctx, upscale_model=ref, image=image)
    assert len(seen) == 1


def test_the_output_size_is_checked_against_the_pixel_budget(
    upscale_root: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nodes import limits

    services = services_in(upscale_root)
    ref = load(services, "tiny-esrgan-x4.safetensors")
    monkeypatch.setattr(limits, "MAX_PIXELS", 16 * 16 * 16 - 1)  # a 16x16 picture makes 64x64 = 4096
    with pytest.raises(NodeInputError) as raised:
        ImageUpscaleWithModel().run(context(services), upscale_model=ref, image=picture(16, 16))
    assert raised.value.input_name == "image" and "64x64" in raised.value.message


def test_pickle_is_refused_by_name_and_loaded_weights_only_when_allowed(upscale_root: Any) -> None:
    _, models = upscale_root
    with pytest.raises(NodeInputError) as raised:
        load(services_in(upscale_root), "tiny-esrgan-x4.pth")
    assert raised.value.input_name == "model_name"
    assert "pickle" in raised.value.message and "--allow-pickle" in raised.value.message

    services = services_in(upscale_root, allow_pickle=True)
    ref = load(services, "tiny-esrgan-x4.pth")  # Real-ESRGAN's wrapping under params_ema is unwrapped
    image = picture(12, 12)
    out = ImageUpscaleWithModel().run(context(services), upscale_model=ref, image=image)["image"]
    np.testing.assert_allclose(out, oracle(models["esrgan"], image), atol=1e-5)


def test_files_that_are_not_upscale_models_are_refused_by_name(upscale_root: Any) -> None:
    services = services_in(upscale_root)
    for name, words in (
        ("junk.safetensors", "architecture spandrel knows"),
        ("missing.safetensors", "not in"),
    ):
        with pytest.raises(NodeInputError) as raised:
            load(services, name)
        assert raised.value.input_name == "model_name" and words in raised.value.message


def test_spandrel_is_imported_without_a_fake_torchvision_left_behind() -> None:
    """In a fresh interpreter (this one may have imported spandrel already): after the import,
    no torchvision is in sys.modules, importing it still fails, and the architectures that need
    it say so when called."""
    script = """
import sys
from models.upscale import TorchvisionMissing, import_spandrel, torchvision_stand_in
spandrel = import_spandrel()
assert spandrel.__version__
assert not [m for m in sys.modules if m.split(".")[0] == "torchvision"], "stand-ins left behind"
try:
    import torchvision
except ImportError:
    pass
else:
    raise SystemExit("torchvision imported after the stand-ins were removed")
lama = sys.modules["spandrel.architectures.LaMa.__arch.LaMa"]
try:
    lama.rotate(None, 0)
except TorchvisionMissing as exc:
    assert "torchvision" in str(exc)
else:
    raise SystemExit("the stand-in rotate did not raise")
with torchvision_stand_in() as used:
    import torchvision.transforms.functional as F
    assert used and F.InterpolationMode.BILINEAR
assert "torchvision" not in sys.modules
print("ok")
"""
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001
        pass
    else:
        pytest.skip("a working torchvision is installed: no stand-ins are needed")
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
