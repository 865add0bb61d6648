"""A training script's frame: its common command-line arguments and settings, a step-time
measurement, model sizes, and writing an export safely (staged, swapped in, weights halved)."""

from __future__ import annotations

import argparse
import filecmp
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file


def add_common_args(parser: argparse.ArgumentParser, steps: int, batch: int, lr: float) -> None:
    parser.add_argument(
        "--out", type=Path, required=True, help="the run folder (resumed if it holds a state)"
    )
    parser.add_argument("--steps", type=int, default=steps, help="total steps (a resumed run goes on to it)")
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--warmup", type=int, default=100, help="learning-rate warm-up steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=32, help="picture size in pixels")
    parser.add_argument("--save-every", type=int, default=500)
    parser.add_argument("--log-every", type=int, default=1)
    parser.add_argument("--max-minutes", type=float, default=None, help="save and stop after this long")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--measure", action="store_true", help="print parameters and seconds per step, then exit (no run)"
    )


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The run's settings for config.json (paths as strings, no 'measure')."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "measure"}


def measure_step(
    step_fn: Callable[[int], dict[str, float]],
    optimizer: torch.optim.Optimizer,
    warmup: int = 2,
    steps: int = 5,
) -> float:
    """Seconds per training step (data, forward, backward, optimizer): the median of ``steps`` timed
    steps after ``warmup`` untimed ones (the median shrugs off other processes' bursts on a shared
    machine). The models are changed: measure on throw-away copies."""
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        step_fn(step)
        optimizer.step()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def model_config(module: Any) -> dict[str, Any]:
    """A diffusers or transformers model's config as plain JSON data, without private keys (whose
    contents, such as sets, vary between processes)."""
    config = module.config.to_dict() if hasattr(module.config, "to_dict") else dict(module.config)
    return {k: v for k, v in json.loads(json.dumps(config, default=list)).items() if not k.startswith("_")}


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def halve_weights(folder: Path) -> int:
    """Store every float32 tensor of the ``*.safetensors`` files under ``folder`` as float16 (keeping
    each file's metadata), halving what the repository ships; the studio loads them in its own dtype
    (float32 on a CPU). Returns the folder's weight bytes afterwards."""
    from safetensors import safe_open

    total = 0
    for path in sorted(Path(folder).rglob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata()
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - not a dict
        halved = {k: v.half() if v.dtype == torch.float32 else v for k, v in tensors.items()}
        save_file(halved, str(path), metadata=metadata)
        total += path.stat().st_size
    return total


def staging(out: Path) -> Path:
    """An empty folder beside ``out`` to write an export into before :func:`swap_in`."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    return tmp


def swap_in(tmp: Path, out: Path) -> Path:
    """Replace ``out`` by the finished export ``tmp`` (the old one is removed only once the new one
    is in place), so a failed export never leaves a half-written model folder."""
    out = Path(out)
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    Path(tmp).rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return out


SHARED = ("text_encoder", "tokenizer", "vae")


def same_file(a: Path, b: Path) -> bool:
    """Same bytes; for JSON configs the same settings (the ``_name_or_path`` a config records of where
    its model was loaded from does not count); for safetensors the same tensors and metadata (a file
    written again may order its header differently)."""
    if a.suffix == ".json":
        first, second = (json.loads(path.read_text()) for path in (a, b))
        for config in (first, second):
            config.pop("_name_or_path", None)
        return first == second
    if a.suffix == ".safetensors" and not filecmp.cmp(a, b, shallow=False):
        from safetensors import safe_open

        with safe_open(str(a), framework="pt") as first, safe_open(str(b), framework="pt") as second:
            if first.metadata() != second.metadata() or set(first.keys()) != set(second.keys()):
                return False
            for key in first.keys():
                x, y = first.get_tensor(key), second.get_tensor(key)
                if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(x, y):
                    return False
        return True
    return filecmp.cmp(a, b, shallow=False)


def same_files(a: Path, b: Path) -> bool:
    """Whether two folders hold the same files with the same contents."""
    names = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    if names != sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()):
        return False
    return all(same_file(a / name, b / name) for name in names)


def link_shared(folder: Path, sd_folder: Path) -> list[str]:
    """Replace the parts of the export that are byte for byte the SD's (its frozen text encoder,
    tokenizer and VAE) by relative links into the SD's folder, when the two folders sit side by side,
    so the repository and a checkout hold them once. Returns the parts linked."""
    folder, sd_folder = Path(folder), Path(sd_folder)
    if folder.resolve().parent != sd_folder.resolve().parent:
        return []
    linked = []
    for part in SHARED:
        if (sd_folder / part).is_dir() and same_files(folder / part, sd_folder / part):
            shutil.rmtree(folder / part)
            (folder / part).symlink_to(Path("..") / sd_folder.name / part, target_is_directory=True)
            linked.append(part)
    return linked
