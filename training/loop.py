"""The training loop every toy-model script runs: optimizer steps with gradient clipping, EMA copies,
a learning-rate schedule, the loss log, saving every so often, a time budget and Ctrl-C that saves.

Batches depend only on (seed, step), and so does every random draw of a step (noise, timesteps,
latent samples come from a generator seeded by :func:`training.seeding.step_generator`), so a run
resumed from its state reaches the same weights as one that never stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from training.run_folder import LOG, TrainState, load_state, save_state, truncate_log
from training.seeding import pick_device, seed_everything


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


def cosine_lr(base: float, warmup: int, steps: int, floor: float) -> Callable[[int], float]:
    """Linear warm-up over ``warmup`` steps, then a cosine from ``base`` to ``floor * base`` at ``steps``,
    constant after: a function of the step alone, so a resumed run follows the same schedule."""

    def lr_at(step: int) -> float:
        if step < warmup:
            return base * (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, steps - warmup))
        return base * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))

    return lr_at


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
        truncate_log(run, state.step)
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
