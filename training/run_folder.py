"""A resumable training run's folder: its state, its settings and its loss log.

A run folder holds::

    config.json        the run's settings and the models' configs (written at the start)
    log.jsonl          one line per logged step: {"step", "loss", ..., "lr", "seconds"}
    state/             the latest training state, replaced atomically:
        <model>.safetensors   each model's (and EMA copy's) weights
        optimizer.safetensors the optimizer's tensors; rng.safetensors torch's RNG states
        state.json            step, status, elapsed seconds, optimizer hyper-parameters, numpy/python RNG
"""

from __future__ import annotations

import json
import random
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

STATE = "state"
LOG = "log.jsonl"
CONFIG = "config.json"
#: Settings a resumed run may change; any other difference from the saved config.json is an error.
RESUMABLE_CHANGES = frozenset(
    {"out", "steps", "save_every", "log_every", "max_minutes", "device", "threads", "export", "eval"}
)


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


def read_config(run: Path) -> dict[str, Any]:
    """The config a run saved (:func:`write_config`)."""
    return json.loads((Path(run) / CONFIG).read_text())


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


def truncate_log(run: Path, step: int) -> None:
    """Drop log lines past ``step`` (steps done after the last saved state, to be redone)."""
    path = Path(run) / LOG
    if path.is_file():
        kept = [r for r in read_log(run) if r["step"] <= step]
        path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def recent_loss(run: Path, last: int = 100, key: str = "loss") -> float | None:
    values = [r[key] for r in read_log(run)[-last:] if key in r]
    return float(np.mean(values)) if values else None
