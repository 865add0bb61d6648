"""What sampling changes from one step to the next besides the latents: which conditionings act
(ConditioningSetTimestepRange: :class:`TimestepRanges`) and which places may change
(DifferentialDiffusion: :func:`differential_mask`). The SD sampler (models/sampling.py) and the flow
sampler (models/flow_sampling.py) call these only when a workflow asks for them."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from models.sampling import combine
from models.values import Cond

if TYPE_CHECKING:
    import torch

    from models.sampling import GuidedModel, SampleJob


@dataclass
class TimestepRanges:
    """Leaves conditionings out of the steps outside their ``timestep_range``, as ComfyUI does: a
    range's fractions become noise levels (ComfyUI's ``percent_to_sigma``) and a conditioning acts
    while the step's level lies between them. When none of a side's conditionings acts, that side
    predicts a clean latent of zeros, as ComfyUI's empty sum does. It knows flow models' levels too
    (timestep ``sigma * 1000``, a velocity prediction) for the flow sampler to call."""

    levels: Any  # models.schedules.ModelLevels or FlowLevels
    prediction: str  # epsilon, v_prediction, sample, or flow

    @classmethod
    def of(cls, job: SampleJob) -> TimestepRanges:
        from models.schedules import FLOW_FAMILIES, model_levels

        flow = job.family in FLOW_FAMILIES
        prediction = "flow" if flow else str(job.scheduler_config.get("prediction_type", "epsilon"))
        return cls(model_levels(job.scheduler_config, job.family if flow else None), prediction)

    def level(self, percent: float) -> float:
        """The noise level ``percent`` of the way through sampling (ComfyUI's percent_to_sigma)."""
        if self.prediction == "flow":
            return float(self.levels.percent_to_sigma(percent))
        if percent <= 0.0:
            return math.inf
        if percent >= 1.0:
            return 0.0
        return self.levels.sigma((1.0 - percent) * (len(self.levels.sigmas) - 1))

    def sigma(self, t: Any) -> float:
        """The noise level of the model's timestep ``t``."""
        return float(t) / 1000.0 if self.prediction == "flow" else self.levels.sigma(float(t))

    def acts(self, cond: Cond, sigma: float) -> bool:
        start, end = cond.timestep_range
        return self.level(end) <= sigma <= self.level(start)

    def combiner(self, x_in: torch.Tensor, t: Any) -> Callable[..., torch.Tensor]:
        """:func:`combine` over the conditionings that act at timestep ``t`` (``x_in``: the model input)."""
        import torch

        sigma = self.sigma(t)

        def side(preds: torch.Tensor, conds: Sequence[Cond], batch: int, scale: int = 8) -> torch.Tensor:
            acting = [self.acts(c, sigma) for c in conds]
            if all(acting):
                return combine(preds, conds, batch, scale)
            if not any(acting):  # the prediction whose clean latent is zeros
                if self.prediction == "sample":
                    return torch.zeros_like(x_in)
                if self.prediction == "epsilon":
                    return x_in * (1.0 + sigma**2) ** 0.5 / sigma
                return x_in / sigma  # v_prediction (x_in scaled), flow (x - sigma * v = 0)
            chunks = preds.chunk(len(conds))
            kept = [c for c, a in zip(conds, acting, strict=True) if a]
            acting_preds = torch.cat([p for p, a in zip(chunks, acting, strict=True) if a])
            return combine(acting_preds, kept, batch, scale)

        return side


def differential_mask(model: GuidedModel, stepper: Any, index: int) -> torch.Tensor:
    """DifferentialDiffusion's mask for step ``index``, as ComfyUI's node makes it: a soft noise mask
    read as "how early each place may start changing". The place may change once the step's
    timestep has fallen below its mask value times the run's span of timesteps (from the first
    step's level to the last one, or the model's lowest), so 1 changes from the start and 0.3 only
    in the last 30%. A strength below 1 mixes that 0/1 mask with the soft one (ComfyUI takes 0 as 1).
    """
    levels = model.levels
    end = 0.0 if getattr(stepper, "force_clean", False) else stepper.sigma_level(stepper.last)
    ts_to = levels.schedule_time(max(levels.sigma_min, end))
    ts_from = levels.schedule_time(stepper.sigma_level(stepper.first))
    now = levels.schedule_time(stepper.sigma_level(index))
    threshold = (now - ts_to) / (ts_from - ts_to) if ts_from > ts_to else 0.0
    assert model.mask is not None and model.differential is not None
    binary = (model.mask >= threshold).to(model.mask.dtype)
    strength = float(model.differential)
    return strength * binary + (1 - strength) * model.mask if 0 < strength < 1 else binary
