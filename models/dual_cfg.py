"""Two-scale guidance over three prompts: ComfyUI's DualCFGGuider (``Guider_DualCFG``).

Each step predicts with the negative, the middle prompt (``cond2``) and the positive (``cond1``), and
combines them, with ``cfg1`` (cfg_conds) and ``cfg2`` (cfg_cond2_negative):

- "regular": ``negative + cfg2 * (middle - negative) + cfg1 * (positive - middle)``;
- "nested": ``negative + cfg2 * (text - negative)`` where ``text = middle + cfg1 * (positive - middle)``.

With InstructPixToPixConditioning's prompts as positive and middle and the bare negative prompt,
"regular" is the InstructPix2Pix pipeline's three-way guidance (text scale ``cfg1``, image scale
``cfg2``). ComfyUI combines clean-latent estimates where the studio combines the model's outputs;
both combinations' weights sum to 1, so they are the same. Like ComfyUI, "regular" skips the
predictions whose weight is 0 (the negative at ``cfg2 == 1``, and the middle too at ``cfg1 == 1``),
and the middle prompt counts as a negative one where that matters (SDXL's refiner aesthetic score).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from models.sampling import SampleJob
    from models.values import Cond


@dataclass(frozen=True, eq=False)
class DualGuidance:
    """What DualCFGGuider adds to a sampling job: the middle prompt, its scale and the style."""

    middle: tuple[Cond, ...]
    cfg: float  # cfg_cond2_negative: how far from the negative towards the middle prompt
    nested: bool = False


class DualSides:
    """The prompts one model call predicts with (negative, middle, positive, in this order) and the
    combination of their predictions."""

    def __init__(self, job: SampleJob) -> None:
        dual = job.dual
        assert dual is not None
        self.cfg1, self.cfg2, self.nested = float(job.cfg), float(dual.cfg), dual.nested
        negative, middle, positive = list(job.negative), list(dual.middle), list(job.positive)
        if not self.nested and math.isclose(self.cfg2, 1.0):  # the negative's weight is 0
            negative = []
            if math.isclose(self.cfg1, 1.0):  # and the middle's
                middle = []
        self.sides: tuple[list[Cond], list[Cond], list[Cond]] = (negative, middle, positive)
        self.conds: list[Cond] = negative + middle + positive

    def combine(
        self,
        pred: torch.Tensor,
        side: Callable[..., torch.Tensor],
        batch: int,
        scale: int,
    ) -> torch.Tensor:
        """The guided prediction from one call's ``pred`` (rows in the order of :attr:`conds`);
        ``side`` combines one side's prompts (regions, strengths, timestep ranges)."""
        import torch

        outs: list[torch.Tensor | None] = []
        start = 0
        for conds in self.sides:
            rows = len(conds) * batch
            outs.append(side(pred[start : start + rows], conds, batch, scale=scale) if conds else None)
            start += rows
        shape_of = next(o for o in outs if o is not None)
        negative, middle, positive = (o if o is not None else torch.zeros_like(shape_of) for o in outs)
        if self.nested:
            text = middle + self.cfg1 * (positive - middle)
            return negative + self.cfg2 * (text - negative)
        return negative + self.cfg2 * (middle - negative) + self.cfg1 * (positive - middle)


def dual_of(middle: Sequence[Cond] | None, cfg: float, nested: bool) -> DualGuidance | None:
    """A job's :class:`DualGuidance` from a guider's fields (None: ordinary guidance)."""
    return None if middle is None else DualGuidance(tuple(middle), float(cfg), nested)
