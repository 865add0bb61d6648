"""Prompts a LoRA leaves alone (``ConceptConfig.protect``): the LoRA learns only where those prompts'
text states do not reach.

With ``targets="cross"`` a LoRA changes only the cross-attention's key and value projections, whose input
is the prompt's text states (one vector per token). A layer's change is ``up @ down``; a token state
``e`` sees ``up @ (down @ e)``. The protected prompts' states, all their tokens together (the empty
prompt, the unconditional half of guidance, always among them), fill only part of the space: the
eigenvectors of their second moment that hold ``share`` of its energy. Keeping every ``down`` matrix's
rows orthogonal to those (projected once at the start and after every optimizer step) means a
protected prompt's layers change only by what its states hold outside them (``1 - share`` of their
energy at most), while a new word learnt with the LoRA (``pivotal``) can move its own state into the
rest of the space. It is the null-space constraint of model editing (AlphaEdit, Fang et al. 2025)
applied to LoRA training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from training.concept.config import ConceptError
from training.concept.lora_file import UNET_TARGETS_CROSS


def prompt_lines(text: str) -> tuple[str, ...]:
    """The prompts of a text, one per line (blank lines skipped, spaces around each trimmed): the
    ``--protect`` file's and the Train LoRA node's ``protect_prompts``."""
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def read_prompts(path: Path) -> tuple[str, ...]:
    """The prompts of a text file, one per line (blank lines skipped): ``--protect FILE``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConceptError(f"the protected prompts file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConceptError(f"cannot read the protected prompts {path}: {exc}") from None
    prompts = prompt_lines(text)
    if not prompts:
        raise ConceptError(f"{path} holds no prompt: write the prompts to keep as they are, one per line")
    return prompts


def with_empty(prompts: Sequence[str]) -> list[str]:
    """The prompts to protect: the empty one (guidance's unconditional half) and each given one once."""
    return list(dict.fromkeys(["", *(p.strip() for p in prompts)]))


def protected_basis(states: torch.Tensor, share: float) -> torch.Tensor:
    """(width, k): orthonormal directions holding ``share`` of the energy of ``states`` (any shape
    ending in the state width), the fewest that do."""
    flat = states.reshape(-1, states.shape[-1]).double()
    moment = flat.T @ flat / max(1, flat.shape[0])
    values, vectors = torch.linalg.eigh(moment)
    values, vectors = values.flip(0).clamp(min=0), vectors.flip(1)
    total = float(values.sum())
    if total <= 0:
        return vectors[:, :0].float()
    cumulative = values.cumsum(0) / total
    k = int((cumulative < share).sum()) + 1
    return vectors[:, : min(k, vectors.shape[1])].float()


def cross_downs(unet: Any) -> list[torch.Tensor]:
    """The ``down`` (lora_A) weights of the LoRA layers on the UNet's cross-attention key and value
    projections (peft's layout: ``...attn2.to_k.lora_A.<adapter>``)."""
    return [
        module.weight
        for name, module in unet.named_modules()
        if any(f".{target}.lora_A." in name for target in UNET_TARGETS_CROSS)
    ]


def projector(downs: Sequence[torch.Tensor], basis: torch.Tensor) -> Callable[[], None]:
    """A function that makes every ``down``'s rows orthogonal to ``basis`` in place (call it after every
    optimizer step)."""

    pairs = [(weight, basis.to(weight.device, weight.dtype)) for weight in downs]

    def project() -> None:
        with torch.no_grad():
            for weight, b in pairs:
                weight -= (weight @ b) @ b.T

    return project


def protection(
    unet: Any, encode: Callable[[list[str]], torch.Tensor], prompts: list[str], share: float
) -> tuple[Callable[[], None], int]:
    """Set up the constraint on ``unet``'s cross-attention LoRA layers: returns the projection (already
    applied once) and the number of directions kept away. ``encode`` gives the prompts' text states as
    the UNet reads them."""
    downs = cross_downs(unet)
    if not downs:
        raise ConceptError("protected prompts need LoRA layers on the cross-attention (targets 'cross')")
    with torch.no_grad():
        basis = protected_basis(encode(prompts), share)
    project = projector(downs, basis)
    project()
    return project, int(basis.shape[1])
