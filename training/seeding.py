"""Seeds for training runs: every random draw of a step comes from (run seed, step, stream), so a
resumed run reaches the same weights as one that never stopped."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


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
