"""What every toy-model training script shares: seeding, a toy-world data stream, a resumable run
folder, a JSONL loss log, a time budget and a step-time measurement.

A run folder holds::

    config.json        the run's settings and the models' configs (written at the start)
    log.jsonl          one line per logged step: {"step", "loss", ..., "lr", "seconds"}
    state/             the latest training state, replaced atomically:
        <model>.safetensors   each model's (and EMA copy's) weights
        optimizer.safetensors the optimizer's tensors; rng.safetensors torch's RNG states
        state.json            step, status, elapsed seconds, optimizer hyper-parameters, numpy/python RNG

Batches depend only on (seed, step), and so does every random draw of a step (noise, timesteps,
latent samples come from a generator seeded by :func:`step_generator`), so a run resumed from its
state reaches the same weights as one that never stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")

STATE = "state"
LOG = "log.jsonl"
CONFIG = "config.json"
#: Settings a resumed run may change; any other difference from the saved config.json is an error.
RESUMABLE_CHANGES = frozenset(
    {"out", "steps", "save_every", "log_every", "max_minutes", "device", "threads", "export", "eval"}
)


# --------------------------------------------------------------------------- seeding


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch, and ask torch for deterministic algorithms where it has them."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """A 63-bit seed for (run seed, step, stream), well mixed."""
    state = np.random.SeedSequence([seed, step, stream]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def step_generator(
    seed: int, step: int, device: str | torch.device = "cpu", stream: int = 0
) -> torch.Generator:
    """The torch generator for one step's random draws (noise, timesteps, latent samples)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(step_seed(seed, step, stream))
    return generator


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# --------------------------------------------------------------------------- data


@dataclass
class Batch:
    images: torch.Tensor  # (B, 3, H, W) float32 in [-1, 1]
    captions: list[str]
    scenes: list[Any]


def toy_batch(
    step: int,
    batch: int,
    seed: int,
    size: int = 32,
    *,
    background_p: float = 0.5,
    drop_p: float = 0.0,
) -> Batch:
    """Step ``step``'s batch of toy-world training pictures: item i is drawn from the generator seeded
    by (seed, step, i), from the "train" split only (held-out combinations never appear). The caption
    names the background with probability ``background_p`` and is "" with probability ``drop_p``
    (caption dropout for classifier-free guidance)."""
    from toyworld import caption, random_scene, render, split_of

    images, captions, scenes = [], [], []
    for i in range(batch):
        rng = np.random.default_rng([seed, step, i])
        scene = random_scene(rng, size=size, split="train")
        if split_of(scene) != "train":  # random_scene guarantees it; a training set must never leak
            raise AssertionError("a held-out scene reached the training stream")
        text = caption(scene, background=bool(rng.random() < background_p))
        if rng.random() < drop_p:
            text = ""
        images.append(render(scene))
        captions.append(text)
        scenes.append(scene)
    array = np.stack(images).astype(np.float32) / 127.5 - 1.0
    return Batch(torch.from_numpy(array).permute(0, 3, 1, 2).contiguous(), captions, scenes)


def toy_images(n: int, seed: int, size: int = 32, split: str = "train") -> torch.Tensor:
    """``n`` pictures of one split as a (n, 3, H, W) tensor in [-1, 1] (for evaluation and calibration)."""
    from toyworld import dataset

    array = np.stack([image for image, _, _ in dataset(n, seed=seed, size=size, split=split)])
    return torch.from_numpy(array.astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------- EMA, learning rate


def ema_update(ema: torch.nn.Module, model: torch.nn.Module, step: int, decay: float) -> None:
    """Move ``ema`` towards ``model`` (decay warms up as (1 + step) / (10 + step))."""
    rate = 1.0 - min(decay, (1.0 + step) / (10.0 + step))
    with torch.no_grad():
        for shadow, param in zip(ema.parameters(), model.parameters(), strict=True):
            shadow.lerp_(param.detach(), rate)
        for shadow, buffer in zip(ema.buffers(), model.buffers(), strict=True):
            shadow.copy_(buffer)


def warmup_lr(base: float, warmup: int) -> Callable[[int], float]:
    """Linear warm-up over ``warmup`` steps, then constant: a function of the step alone."""
    return lambda step: base * min(1.0, (step + 1) / max(1, warmup))


# --------------------------------------------------------------------------- state


@dataclass
class TrainState:
    step: int = 0
    status: str = "new"  # "new" | "running" | "done" | "stopped"
    elapsed: float = 0.0  # training seconds over all sessions
    extra: dict[str, Any] = field(default_factory=dict)


def _optimizer_split(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The optimizer's state dict as (tensors for safetensors, everything else for JSON)."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                plain.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "plain": plain}


def _optimizer_join(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    for index, entries in meta["plain"].items():
        state.setdefault(int(index), {}).update(entries)
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_py = random.getstate()
    plain = {
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "python": [version, list(internal), gauss_py],
    }
    return tensors, plain


def _set_rng_state(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    kind, keys, pos, has_gauss, gauss = plain["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_py = plain["python"]
    random.setstate((version, tuple(internal), gauss_py))


def save_state(
    run: Path, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer, state: TrainState
) -> Path:
    """Write the state to ``run/state`` atomically (a new folder renamed over the old one)."""
    run = Path(run)
    tmp, target, old = run / f".{STATE}.tmp", run / STATE, run / f".{STATE}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, module in modules.items():
        weights = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        save_file(weights, str(tmp / f"{name}.safetensors"))
    opt_tensors, opt_meta = _optimizer_split(optimizer)
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    rng_tensors, rng_plain = _rng_state()
    save_file(rng_tensors, str(tmp / "rng.safetensors"))
    meta = {
        "step": state.step,
        "status": state.status,
        "elapsed": state.elapsed,
        "extra": state.extra,
        "modules": sorted(modules),
        "optimizer": opt_meta,
        "rng": rng_plain,
    }
    (tmp / "state.json").write_text(json.dumps(meta, indent=1))
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def state_folder(run: Path) -> Path | None:
    """The run's latest complete state folder (``state``, or the previous one if a save was cut short)."""
    for name in (STATE, f".{STATE}.old"):
        folder = Path(run) / name
        if (folder / "state.json").is_file():
            return folder
    return None


def read_state(run: Path) -> TrainState | None:
    folder = state_folder(run)
    if folder is None:
        return None
    meta = json.loads((folder / "state.json").read_text())
    return TrainState(meta["step"], meta["status"], meta["elapsed"], meta.get("extra", {}))


def load_module_weights(run: Path, name: str) -> dict[str, torch.Tensor]:
    folder = state_folder(run)
    if folder is None:
        raise FileNotFoundError(f"{run} holds no training state")
    return load_file(str(folder / f"{name}.safetensors"))


def load_state(
    run: Path, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer
) -> TrainState | None:
    """Restore models, optimizer and RNG from the run's latest state; None when there is none."""
    folder = state_folder(run)
    if folder is None:
        return None
    meta = json.loads((folder / "state.json").read_text())
    if sorted(modules) != meta["modules"]:
        raise ValueError(f"{run}'s state holds {meta['modules']}, not {sorted(modules)}")
    for name, module in modules.items():
        device = next(iter(module.state_dict().values())).device
        module.load_state_dict(load_file(str(folder / f"{name}.safetensors"), device=str(device)))
    optimizer.load_state_dict(
        _optimizer_join(load_file(str(folder / "optimizer.safetensors")), meta["optimizer"])
    )
    _set_rng_state(load_file(str(folder / "rng.safetensors")), meta["rng"])
    return TrainState(meta["step"], meta["status"], meta["elapsed"], meta.get("extra", {}))


# --------------------------------------------------------------------------- config and log


def write_config(run: Path, config: dict[str, Any], resuming: bool) -> None:
    """Save the run's config; when resuming, refuse settings that differ from the saved ones (other
    than :data:`RESUMABLE_CHANGES`), since the result would no longer be one run."""
    path = Path(run) / CONFIG
    config = json.loads(json.dumps(config))  # tuples -> lists, as read back
    if resuming and path.is_file():
        saved = json.loads(path.read_text())
        changed = sorted(
            k
            for k in set(saved) | set(config)
            if k not in RESUMABLE_CHANGES and saved.get(k) != config.get(k)
        )
        if changed:
            raise ValueError(f"cannot resume {run} with different settings: {', '.join(changed)}")
        for key in ("device", "threads"):
            if saved.get(key) != config.get(key):
                print(
                    f"note: resuming with {key} {config.get(key)} (was {saved.get(key)}): the result will "
                    "differ from an uninterrupted run in rounding",
                    file=sys.stderr,
                )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=1))


def read_log(run: Path) -> list[dict[str, Any]]:
    path = Path(run) / LOG
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _truncate_log(run: Path, step: int) -> None:
    """Drop log lines past ``step`` (steps done after the last saved state, to be redone)."""
    path = Path(run) / LOG
    if path.is_file():
        kept = [r for r in read_log(run) if r["step"] <= step]
        path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def recent_loss(run: Path, last: int = 100, key: str = "loss") -> float | None:
    values = [r[key] for r in read_log(run)[-last:] if key in r]
    return float(np.mean(values)) if values else None


# --------------------------------------------------------------------------- the loop


@dataclass
class Loop:
    """One training run: ``step_fn(step)`` does the forward and backward pass of a step and returns
    its metrics (floats, "loss" among them); the loop clips gradients, steps the optimizer, updates
    EMA copies, logs, saves every ``save_every`` steps and at the end, and stops cleanly (saving)
    when ``max_minutes`` have passed or on Ctrl-C."""

    run: Path
    modules: dict[str, torch.nn.Module]  # everything saved: trained models and EMA copies
    optimizer: torch.optim.Optimizer
    step_fn: Callable[[int], dict[str, float]]
    steps: int
    lr_at: Callable[[int], float]
    save_every: int = 500
    log_every: int = 1
    max_minutes: float | None = None
    grad_clip: float | None = 1.0
    ema: dict[str, tuple[str, float]] = field(default_factory=dict)  # ema name -> (model name, decay)
    quiet: bool = False

    def run_loop(self) -> TrainState:
        run = Path(self.run)
        run.mkdir(parents=True, exist_ok=True)
        state = load_state(run, self.modules, self.optimizer) or TrainState()
        _truncate_log(run, state.step)
        if state.step >= self.steps:
            return state
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        start = time.monotonic()
        deadline = start + self.max_minutes * 60 if self.max_minutes else math.inf
        elapsed0 = state.elapsed
        state.status = "running"
        with _stop_on_interrupt() as interrupted, (run / LOG).open("a") as log:
            for step in range(state.step, self.steps):
                lr = self.lr_at(step)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                self.optimizer.zero_grad(set_to_none=True)
                metrics = self.step_fn(step)
                if self.grad_clip:
                    metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, self.grad_clip))
                self.optimizer.step()
                for ema_name, (model_name, decay) in self.ema.items():
                    ema_update(self.modules[ema_name], self.modules[model_name], step, decay)
                state.step = step + 1
                state.elapsed = elapsed0 + time.monotonic() - start
                if not math.isfinite(metrics["loss"]):
                    raise FloatingPointError(f"the loss is {metrics['loss']} at step {state.step}")
                if state.step % self.log_every == 0 or state.step == self.steps:
                    record = {"step": state.step, **metrics, "lr": lr, "seconds": round(state.elapsed, 3)}
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    if not self.quiet and (state.step % (self.log_every * 50) == 0 or state.step < 4):
                        print(_progress(state, self.steps, metrics), flush=True)
                out_of_time = time.monotonic() >= deadline
                if state.step == self.steps:
                    state.status = "done"
                elif out_of_time or interrupted():
                    state.status = "stopped"
                if state.status != "running" or state.step % self.save_every == 0:
                    save_state(run, self.modules, self.optimizer, state)
                if state.status != "running":
                    break
        if not self.quiet:
            print(f"{state.status} at step {state.step}/{self.steps} after {state.elapsed:.0f} s", flush=True)
        return state


def _progress(state: TrainState, steps: int, metrics: dict[str, float]) -> str:
    per_step = state.elapsed / max(1, state.step)
    shown = " ".join(f"{k} {v:.4g}" for k, v in metrics.items())
    eta = per_step * (steps - state.step) / 60
    timing = f"{per_step:.2f} s/step, {state.elapsed:.0f} s, {eta:.1f} min left"
    return f"step {state.step}/{steps} {shown} ({timing})"


@contextlib.contextmanager
def _stop_on_interrupt() -> Iterator[Callable[[], bool]]:
    """Ctrl-C (SIGINT) or SIGTERM asks the loop to save and stop after the current step."""
    flag = {"stop": False}

    def handler(signum: int, frame: Any) -> None:
        flag["stop"] = True

    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: no handlers, the time budget still works
        previous = {}
    try:
        yield lambda: flag["stop"]
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# --------------------------------------------------------------------------- measurement


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


# --------------------------------------------------------------------------- command line


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


# --------------------------------------------------------------------------- export


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


# --------------------------------------------------------------------------- a script's frame


def prepare(args: argparse.Namespace) -> torch.device:
    """Threads, device and seeds from a script's arguments. The thread count and device actually used
    are written back into ``args`` (and so into config.json): other ones change results in rounding."""
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    device = pick_device(args.device)
    args.device = str(device)
    seed_everything(args.seed)
    return device


def train(
    args: argparse.Namespace,
    modules: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer,
    step_fn: Callable[[int], dict[str, float]],
    *,
    lr_at: Callable[[int], float] | None = None,
    ema: dict[str, tuple[str, float]] | None = None,
) -> TrainState:
    """Run (or resume) the :class:`Loop` in ``args.out`` with the common arguments' settings
    (warm-up then constant learning rate unless ``lr_at`` says otherwise)."""
    loop = Loop(
        run=Path(args.out),
        modules=modules,
        optimizer=optimizer,
        step_fn=step_fn,
        steps=args.steps,
        lr_at=lr_at or warmup_lr(args.lr, args.warmup),
        save_every=args.save_every,
        log_every=args.log_every,
        max_minutes=args.max_minutes,
        ema=ema or {},
    )
    return loop.run_loop()


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
