"""Custom sampling: noise schedules (SIGMAS), stepping rules (SAMPLER), NOISE and GUIDER values.

This is ComfyUI's custom-sampling model, rebuilt on the studio's loop. A schedule is a 1-D
float32 tensor of noise levels ``sigma`` (highest first, ending at 0 when it runs to the end)
in the "sigma space" of k-diffusion: a noisy latent is ``x0 + sigma * noise``. A model's
levels come from its scheduler config (``alphas_cumprod``), so ModelSamplingDiscrete's
overrides (v-prediction, zero terminal SNR) change them as they should.

The stepping rules (:data:`K_SAMPLERS`) are the small sigma-space solvers of k-diffusion,
written from their published update rules; each is tested against the diffusers scheduler
that implements the same method (Euler, Euler ancestral, Heun, KDPM2, DPM-Solver++ 2M, LCM)
or against its defining property (LMS integrates polynomials exactly).

Flow-matching models (SD3, Flux: ComfyUI's CONST models) have levels in [0, 1]
(:class:`FlowLevels`): a noisy latent is ``(1 - sigma) * x0 + sigma * noise``. The ODE solvers
step them unchanged (their derivative ``(x - x0) / sigma`` is the model's velocity); the rules
that add noise take ComfyUI's flow variants (``KStepper(..., flow=True)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from models.values import Cond, ModelRef

#: ComfyUI sampler names that SamplerSelect offers (ComfyUI's "ddim" is Euler on its schedule).
K_SAMPLERS: tuple[str, ...] = (
    "euler",
    "euler_ancestral",
    "heun",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "ddim",
    "lcm",
    "uni_pc",
)

#: ComfyUI scheduler names that BasicScheduler offers.
SCHEDULERS: tuple[str, ...] = (
    "normal",
    "karras",
    "exponential",
    "sgm_uniform",
    "simple",
    "ddim_uniform",
    "beta",
)

#: ModelSamplingDiscrete's choices -> scheduler config overrides.
SAMPLING_TYPES: dict[str, tuple[tuple[str, Any], ...]] = {
    "eps": (("prediction_type", "epsilon"),),
    "v_prediction": (("prediction_type", "v_prediction"),),
    # an LCM-distilled model: LCMScheduler's settings (50 original steps, boundary scaling 10)
    "lcm": (("prediction_type", "epsilon"), ("original_inference_steps", 50), ("timestep_scaling", 10.0)),
    "x0": (("prediction_type", "sample"),),
}


@dataclass(frozen=True)
class SamplerSpec:
    """SAMPLER: which stepping rule to use (one of :data:`K_SAMPLERS`)."""

    name: str


@dataclass(frozen=True)
class NoiseSpec:
    """NOISE: the starting noise, drawn on a CPU generator from ``seed``; ``None`` adds none."""

    seed: int | None


@dataclass(frozen=True, eq=False)
class GuiderSpec:
    """GUIDER: a model with its prompts and classifier-free guidance scale.

    DualCFGGuider adds a ``middle`` prompt between the two, its own scale ``middle_cfg`` (from the
    negative towards the middle) and ``nested``, its style; ``cfg`` then scales from the middle
    towards the positive (:mod:`models.dual_cfg`). ``middle`` None: ordinary guidance.
    """

    model: ModelRef
    positive: tuple[Cond, ...]
    negative: tuple[Cond, ...]
    cfg: float
    middle: tuple[Cond, ...] | None = None
    middle_cfg: float = 1.0
    nested: bool = False


def scheduler_config(base: dict[str, Any], sampling: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    """A checkpoint's scheduler config with a MODEL's ModelSamplingDiscrete overrides applied.

    diffusers' ``from_config`` drops every key listed in ``_use_default_values`` (keys the saved
    config lacked), so an override must also leave that list, or it would be silently ignored.
    """
    overrides = dict(sampling)
    config = {**base, **overrides}
    if "_use_default_values" in base:
        config["_use_default_values"] = [k for k in base["_use_default_values"] if k not in overrides]
    return config


# --------------------------------------------------------------------------- a model's noise levels


@dataclass(frozen=True, eq=False)
class ModelLevels:
    """A discrete-time model's noise levels: ``sigmas[t]`` for each training timestep ``t``."""

    sigmas: torch.Tensor  # float32, ascending with t

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def sigma(self, t: float) -> float:
        """The level at a (fractional) timestep, interpolated in log sigma."""
        log_sigmas = self.sigmas.double().log()
        t = min(max(float(t), 0.0), len(self.sigmas) - 1.0)
        low, high = math.floor(t), math.ceil(t)
        weight = t - low
        return math.exp((1 - weight) * float(log_sigmas[low]) + weight * float(log_sigmas[high]))

    def nearest_timestep(self, sigma: float) -> int:
        """The training timestep whose level is nearest in log sigma."""
        log_sigmas = self.sigmas.double().log()
        return int((math.log(sigma) - log_sigmas).abs().argmin())

    def timestep(self, sigma: torch.Tensor | float) -> float:
        """The fractional timestep of a level (log-sigma interpolation, as diffusers' Euler)."""
        import numpy as np

        log_sigmas = self.sigmas.double().log().numpy()
        return float(np.interp(math.log(max(float(sigma), 1e-10)), log_sigmas, np.arange(len(log_sigmas))))

    def schedule_time(self, sigma: float) -> float:
        """ComfyUI's ``model_sampling.timestep``, the axis "normal" spaces its steps along:
        the nearest training timestep."""
        return float(self.nearest_timestep(sigma))


#: Table sizes of ComfyUI's flow samplings: ModelSamplingDiscreteFlow (SD3, Flux schnell) and
#: ModelSamplingFlux (Flux dev, and any model after the ModelSamplingFlux node).
FLOW_TABLE = 1000
FLUX_TABLE = 10000


def time_shift(shift: float, t: float) -> float:
    """A flow model's level at time ``t`` in [0, 1]: ``shift * t / (1 + (shift - 1) * t)``
    (ComfyUI's time_snr_shift; Flux's ``exp(mu) / (exp(mu) + 1 / t - 1)`` is this with
    ``shift = exp(mu)``)."""
    if shift == 1.0:
        return t
    return shift * t / (1 + (shift - 1) * t)


@dataclass(frozen=True, eq=False)
class FlowLevels:
    """A flow-matching model's noise levels, as ComfyUI's ModelSamplingDiscreteFlow and
    ModelSamplingFlux hold them: ``sigma(t) = time_shift(shift, t / multiplier)`` over a table of
    ``count`` times ``1/count ... 1``. ``multiplier`` is ComfyUI's timestep per unit of time
    (1000 for SD3, 1 for Flux), the axis the "normal" schedule spaces its steps along."""

    shift: float
    count: int = FLOW_TABLE
    multiplier: float = 1000.0

    @cached_property
    def sigmas(self) -> torch.Tensor:
        """The table, ascending: float32 as ComfyUI keeps it."""
        import torch

        times = torch.arange(1, self.count + 1, dtype=torch.float64) / self.count
        if self.shift != 1.0:
            times = self.shift * times / (1 + (self.shift - 1) * times)
        return times.float()

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def sigma(self, t: float) -> float:
        return time_shift(self.shift, float(t) / self.multiplier)

    def schedule_time(self, sigma: float) -> float:
        """ComfyUI's ``timestep(sigma) = sigma * multiplier`` (which ``sigma`` shifts once more)."""
        return float(sigma) * self.multiplier

    def timestep(self, sigma: torch.Tensor | float) -> float:
        """The transformer's timestep for a level, as the diffusers pipelines give it: sigma * 1000."""
        return float(sigma) * 1000.0

    def percent_to_sigma(self, percent: float) -> float:
        """The level ``percent`` of the way into sampling (ComfyUI's percent_to_sigma)."""
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        return time_shift(self.shift, 1.0 - percent)


def flow_levels(config: dict[str, Any], family: str) -> FlowLevels:
    """ComfyUI's levels for an SD3 or Flux model with this FlowMatchEulerDiscreteScheduler config.

    - SD3: ModelSamplingDiscreteFlow with the config's ``shift`` (ModelSamplingSD3 overrides it).
    - Flux dev (``use_dynamic_shifting``): ModelSamplingFlux at its fixed default ``mu`` of
      ``max_shift`` (1.15): ComfyUI does not follow the resolution unless ModelSamplingFlux says so,
      and a schedule is made before the latent is known.
    - Flux schnell (no shift): ModelSamplingDiscreteFlow, 1000 levels, no shift.
    - Flux after ModelSamplingFlux (a fixed ``shift`` = exp(mu)): ModelSamplingFlux's 10000 levels.
    """
    if family == "sd3":
        return FlowLevels(float(config.get("shift", 1.0)), FLOW_TABLE, 1000.0)
    if config.get("use_dynamic_shifting"):
        return FlowLevels(math.exp(float(config.get("max_shift", 1.15))), FLUX_TABLE, 1.0)
    shift = float(config.get("shift", 1.0))
    return FlowLevels(shift, FLOW_TABLE if shift == 1.0 else FLUX_TABLE, 1.0)


#: The model families whose levels are flow matching's.
FLOW_FAMILIES = ("sd3", "flux")


def model_levels(config: dict[str, Any], family: str | None = None) -> ModelLevels | FlowLevels:
    """The noise levels of a scheduler config (beta schedule, zero terminal SNR and all); for
    the flow families (SD3, Flux), :func:`flow_levels`."""
    import diffusers

    if family in FLOW_FAMILIES:
        return flow_levels(config, family)
    scheduler = diffusers.EulerDiscreteScheduler.from_config(config)
    alphas = scheduler.alphas_cumprod.double()
    return ModelLevels((((1 - alphas) / alphas) ** 0.5).float())


def offset_first_sigma(sigmas: list[float], levels: FlowLevels) -> list[float]:
    """ComfyUI's offset_first_sigma_for_snr: a flow schedule starting at 1 (where the log-SNR
    is infinite) starts instead at the level 0.01 % of the way in, for the SDE solvers."""
    if len(sigmas) > 1 and sigmas[0] >= 1.0:
        return [levels.percent_to_sigma(1e-4), *sigmas[1:]]
    return list(sigmas)


# --------------------------------------------------------------------------- schedules (SIGMAS)


def _append_zero(values: list[float] | torch.Tensor) -> torch.Tensor:
    import torch

    tensor = torch.as_tensor(values, dtype=torch.float32).flatten()
    return torch.cat([tensor, tensor.new_zeros(1)])


def karras(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022): levels evenly spaced in sigma ** (1 / rho)."""
    import torch

    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    low, high = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _append_zero((high + ramp * (low - high)) ** rho)


def exponential(steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Levels evenly spaced in log sigma."""
    import torch

    return _append_zero(
        torch.linspace(math.log(sigma_max), math.log(sigma_min), steps, dtype=torch.float64).exp()
    )


def _normal(levels: ModelLevels | FlowLevels, steps: int, sgm: bool = False) -> torch.Tensor:
    import torch

    start = levels.schedule_time(levels.sigma_max)
    end = levels.schedule_time(levels.sigma_min)
    append_zero = True
    if sgm:
        timesteps = torch.linspace(start, end, steps + 1)[:-1]
    else:
        if math.isclose(levels.sigma(end), 0.0, abs_tol=1e-5):
            steps, append_zero = steps + 1, False
        timesteps = torch.linspace(start, end, steps)
    values = [levels.sigma(float(t)) for t in timesteps]
    return _append_zero(values) if append_zero else torch.tensor(values, dtype=torch.float32)


def _simple(levels: ModelLevels | FlowLevels, steps: int) -> torch.Tensor:
    stride = len(levels.sigmas) / steps
    return _append_zero([float(levels.sigmas[-(1 + int(i * stride))]) for i in range(steps)])


def _ddim_uniform(levels: ModelLevels | FlowLevels, steps: int) -> torch.Tensor:
    import torch

    values: list[float] = [0.0]
    if math.isclose(float(levels.sigmas[1]), 0.0, abs_tol=1e-5):
        steps, values = steps + 1, []
    stride = max(len(levels.sigmas) // steps, 1)
    values += [float(s) for s in levels.sigmas[1::stride]]
    return torch.tensor(values[::-1], dtype=torch.float32)


def beta_ppf(q: Any, a: float, b: float) -> Any:
    """The Beta(a, b) distribution's quantile function, by inverting its numerically integrated CDF.

    (scipy is not a dependency.) The density is integrated on a grid fine near both ends,
    where Beta(0.6, 0.6) is steep; accurate to about 1e-7, ample for rounding to a timestep.
    """
    import numpy as np

    # u in (0, 1) mapped by x = u^k-like stretch: integrate in the variable theta, x = sin^2(theta)
    theta = np.linspace(0.0, math.pi / 2, 200_001)
    x = np.sin(theta) ** 2
    # dx = 2 sin cos dtheta; density x^(a-1) (1-x)^(b-1): the product is smooth for a, b > 0.5
    integrand = 2 * np.sin(theta) ** (2 * a - 1) * np.cos(theta) ** (2 * b - 1)
    cdf = np.concatenate([[0.0], np.cumsum((integrand[1:] + integrand[:-1]) / 2 * np.diff(theta))])
    cdf /= cdf[-1]
    return np.interp(q, cdf, x)


def _beta(
    levels: ModelLevels | FlowLevels, steps: int, alpha: float = 0.6, beta: float = 0.6
) -> torch.Tensor:
    import numpy as np

    last = len(levels.sigmas) - 1
    quantiles = 1 - np.linspace(0, 1, steps, endpoint=False)
    timesteps = np.rint(beta_ppf(quantiles, alpha, beta) * last)
    values: list[float] = []
    previous = -1.0
    for t in timesteps:
        if t != previous:
            values.append(float(levels.sigmas[int(t)]))
        previous = t
    return _append_zero(values)


def model_schedule(levels: ModelLevels | FlowLevels, scheduler: str, steps: int) -> torch.Tensor:
    """ComfyUI's named schedules over a model's levels (``steps`` + 1 values, ending at 0)."""
    if scheduler == "normal":
        return _normal(levels, steps)
    if scheduler == "sgm_uniform":
        return _normal(levels, steps, sgm=True)
    if scheduler == "karras":
        return karras(steps, levels.sigma_min, levels.sigma_max)
    if scheduler == "exponential":
        return exponential(steps, levels.sigma_min, levels.sigma_max)
    if scheduler == "simple":
        return _simple(levels, steps)
    if scheduler == "ddim_uniform":
        return _ddim_uniform(levels, steps)
    if scheduler == "beta":
        return _beta(levels, steps)
    raise ValueError(f"unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}")


def basic_schedule(
    levels: ModelLevels | FlowLevels, scheduler: str, steps: int, denoise: float
) -> torch.Tensor:
    """BasicScheduler: the last ``steps`` levels of a ``steps / denoise`` schedule."""
    import torch

    if denoise <= 0.0:
        return torch.zeros(0, dtype=torch.float32)
    total = steps if denoise >= 1.0 else int(steps / denoise)
    return model_schedule(levels, scheduler, total)[-(steps + 1) :].contiguous()


def sd_turbo_schedule(levels: ModelLevels, steps: int, denoise: float) -> torch.Tensor:
    """SD-Turbo's levels: timesteps 999, 899, ..., 99, starting later when ``denoise`` < 1."""
    first = 10 - int(10 * denoise)
    timesteps = [999 - 100 * i for i in range(10)][first : first + steps]
    return _append_zero([float(levels.sigmas[t]) for t in timesteps])


def split(sigmas: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SplitSigmas: levels up to and including ``step``, and from ``step`` on (they share one)."""
    return sigmas[: step + 1].clone(), sigmas[step:].clone()


# --------------------------------------------------------------------------- stepping rules

#: D(x, sigma) -> the model's estimate of the clean latent.
Denoiser = Callable[["torch.Tensor", float], "torch.Tensor"]
#: Draws standard normal noise shaped like a tensor (from the run's CPU generator).
NoiseSource = Callable[["torch.Tensor"], "torch.Tensor"]


def ancestral_levels(sigma: float, sigma_next: float) -> tuple[float, float]:
    """(sigma_down, sigma_up): step deterministically to sigma_down, then add sigma_up of noise."""
    if sigma_next == 0:
        return 0.0, 0.0
    up = min(sigma_next, math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    return math.sqrt(sigma_next**2 - up**2), up


def flow_ancestral_levels(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float, float]:
    """A flow model's ancestral step (ComfyUI's RF rule): (sigma_down, renoise, fade). Step to
    sigma_down, scale by fade = (1 - sigma_next) / (1 - sigma_down), add renoise of fresh noise:
    the result is at sigma_next with the right mix of signal and noise."""
    down = sigma_next * (1 + (sigma_next / sigma - 1) * eta)
    fade = (1 - sigma_next) / (1 - down)
    renoise = math.sqrt(max(sigma_next**2 - down**2 * fade**2, 0.0))
    return down, renoise, fade


def lms_coefficient(order: int, sigmas: list[float], i: int, j: int) -> float:
    """The weight of the derivative ``j`` steps back in a linear multistep step from ``i`` to ``i+1``:
    the integral of its Lagrange basis polynomial over [sigma_i, sigma_i+1] (exact, via numpy)."""
    import numpy as np

    nodes = [sigmas[i - k] for k in range(order)]
    basis = np.poly1d([1.0])
    for k in range(order):
        if k != j:
            basis = basis * np.poly1d([1.0, -nodes[k]]) / (nodes[j] - nodes[k])
    integral = basis.integ()
    return float(integral(sigmas[i + 1]) - integral(sigmas[i]))


class KStepper:
    """One sigma-space solver run over a schedule; ``step(i, x)`` goes from sigmas[i] to sigmas[i+1].

    Multistep rules (LMS, DPM++ 2M) keep their history here, so a new stepper starts afresh,
    as ComfyUI's do when a schedule is split across two sampler nodes.

    ``flow``: the latents are a flow model's, ``(1 - sigma) * x0 + sigma * noise`` with sigma in
    [0, 1]; the rules that add noise then use ComfyUI's flow (CONST) variants: the RF ancestral
    steps, LCM's re-noising and DPM++ 2M SDE in flow's log-SNR.
    """

    def __init__(
        self, name: str, sigmas: list[float], denoise: Denoiser, noise: NoiseSource, flow: bool = False
    ) -> None:
        if name not in K_SAMPLERS:
            raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(K_SAMPLERS)}")
        self.name, self.sigmas, self.denoise, self.noise = name, sigmas, denoise, noise
        self.flow = flow
        self.history: list[torch.Tensor] = []
        self.denoised: torch.Tensor | None = None
        self.solver: Any = None  # uni_pc: diffusers' UniPC, given these levels

    def _d(self, x: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
        denoised = self.denoise(x, sigma)
        return denoised, (x - denoised) / sigma

    def step(self, i: int, x: torch.Tensor) -> torch.Tensor:
        sigma, sigma_next = self.sigmas[i], self.sigmas[i + 1]
        if sigma <= 0:  # already clean: nothing left to take away
            return x
        rule = getattr(self, "_" + ("euler" if self.name == "ddim" else self.name))
        return rule(i, x, sigma, sigma_next)

    def _euler(self, i: int, x: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
        self.denoised, d = self._d(x, sigma)
        return x + d * (sigma_next - sigma)

    def _euler_ancestral(self, i: int, x: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
        self.denoised, d = self._d(x, sigma)
        if self.flow:  # ComfyUI's sample_euler_ancestral_RF
            if sigma_next == 0:
                return self.denoised
            down, renoise, fade = flow_ancestral_levels(sigma, sigma_next)
            ratio = down / sigma
            x = ratio * x + (1 - ratio) * self.denoised
            return fade * x + self.noise(x) * renoise
        down, up = ancestral_levels(sigma, sigma_next)
        x = x + d * (down - sigma)
        return x + self.noise(x) * up if sigma_next > 0 else x

    def _heun(self, i: int, x: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
        self.denoised, d = self._d(x, sigma)
        if sigma_next == 0:
            return x + d * (sigma_next - sigma)
        guess = x + d * (sigma_next - sigma)
        _, d_next = self._d(guess, sigma_next)
        return x + (d + d_next) / 2 * (sigma_next - sigma)

    def _midpoint(self, x: torch.Tensor, d: torch.Tensor, sigma: float, target: float) -> torch.Tensor:
        """DPM-Solver-2's step: the derivative at the log-midpoint carries x from sigma to target."""
        middle = math.exp((math.log(sigma) + math.log(target)) / 2)
        half = x + d * (middle - sigma)
        _, d_middle = self._d(half, middle)
        return x + d_middle * (target - sigma)

    def _dpm_2(self, i: int, x: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
        self.denoised, d = self._d(x, sigma)
        if sigma_next == 0:
            return x + d * (sigma_next - sigma)
        return self._midpoint(x, d, sigma, sigma_next)

    def _dpm_2_ancestral(self, i: int, x: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
        self.denoised, d = self._d(x, sigma)
        if self.flow:  # ComfyUI's sample_dpm_2_ancestral_RF
            down, renoise, fade = flow_ancestral_levels(sigma, sigma_next) if sigma_next else (0.0, 0.0, 1.0)
        else:
            (down, renoise), fade = ancestral_levels(sigma, sigma_next), 1.0
        if down == 0:
            return x + d * (down - sigma)
        x = self._midpoint(x, d, sigma, down)
        return fade * x + self.noise(x) * renoise

    def _lms(self, i: int, x: torch.Tensor, sigma: float, sigma_next: float, order: int = 4) -> torch.Tensor:
        self.denoised, d = self._d(x, sigma)
        self.history = [d, *self.history][:order]
        # the history restarts with the stepper: step i of this stepper is its len(history)-th
        start = i - len(self.history) + 1
        local = self.sigmas[start : i + 2]
        position = len(self.history) - 1
        weights = [lms_coefficient(len(self.history), local, position, j) for j in range(len(self.history))]
        return x + sum(w * h for w, h in zip(weights, self.history, strict=True))

    def _dpmpp_2m(self, i: int, x: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
        denoised = self.denoise(x, sigma)
        previous, self.denoised = self.denoised, denoised
        if sigma_next == 0:
            return denoised
        h = math.log(sigma) - math.log(sigma_next)  # step in lambda = -log sigma
        if previous is not None and i > 0:
            r = (math.log(self.sigmas[i - 1]) - math.log(sigma)) / h
            denoised = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * previous
        return (sigma_next / sigma) * x - math.expm1(-h) * denoised

    def _half_log_snr(self, sigma: float) -> float:
        """log(alpha / sigma): ``-log sigma``, or ``log((1 - sigma) / sigma)`` for a flow model."""
        return math.log((1 - sigma) / sigma) if self.flow else -math.log(sigma)

    def _dpmpp_2m_sde(self, i: int, x: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
        """DPM-Solver++(2M) SDE (eta 1, midpoint): the 2M step with half its way made by fresh noise.

        ComfyUI draws this noise from a Brownian tree; over the disjoint intervals of one run its
        increments are independent standard normals, which is what is drawn here. In flow's
        log-SNR the clean estimate is weighted by ``alpha = 1 - sigma_next`` (1 otherwise);
        a flow schedule must not start at 1 (see :func:`offset_first_sigma`).
        """
        denoised = self.denoise(x, sigma)
        previous, self.denoised = self.denoised, denoised
        if sigma_next == 0:
            return denoised
        h = self._half_log_snr(sigma_next) - self._half_log_snr(sigma)
        alpha = 1 - sigma_next if self.flow else 1.0
        fade = -math.expm1(-2 * h)  # 1 - exp(-2h)
        out = (sigma_next / sigma) * math.exp(-h) * x + alpha * fade * denoised
        if previous is not None and i > 0:
            r = (self._half_log_snr(sigma) - self._half_log_snr(self.sigmas[i - 1])) / h
            out = out + 0.5 * alpha * fade / r * (denoised - previous)
        return out + self.noise(x) * sigma_next * math.sqrt(fade)

    def _lcm(self, i: int, x: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
        self.denoised = self.denoise(x, sigma)
        if sigma_next == 0:
            return self.denoised
        if self.flow:  # the model's own noising (ComfyUI's noise_scaling)
            return (1 - sigma_next) * self.denoised + self.noise(x) * sigma_next
        return self.denoised + self.noise(x) * sigma_next

    def _uni_pc(self, i: int, x: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
        """UniPC (bh2, up to third order; diffusers' bh1 fails on a final level of 0) by diffusers' solver,
        given these levels: it works in the variance-preserving space, so x is converted there
        and back, and it is handed the clean estimate (prediction type "sample")."""
        import torch

        if self.solver is None:
            from diffusers import UniPCMultistepScheduler

            solver = UniPCMultistepScheduler(solver_order=3, solver_type="bh2", prediction_type="sample")
            steps = len(self.sigmas) - 1
            solver.set_timesteps(steps)  # sizes its history
            solver.sigmas = torch.tensor(self.sigmas, dtype=torch.float32)
            solver.timesteps = torch.arange(steps)  # only the step index is looked at
            solver.num_inference_steps = steps
            solver.set_begin_index(0)
            self.solver = solver
        self.denoised = self.denoise(x, sigma)
        inside = x / (1 + sigma**2) ** 0.5
        out = self.solver.step(self.denoised, i, inside, return_dict=True).prev_sample
        return out * (1 + sigma_next**2) ** 0.5
