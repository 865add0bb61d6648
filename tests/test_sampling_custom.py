"""Sampling in parts (SamplerAdvanced, custom sampling, ModelSamplingDiscrete) against oracles.

Oracles: diffusers pipelines with the same tiny models and seeds (the SDXL base + refiner
hand-off, a pipeline given explicit sigmas, a v-prediction scheduler config), diffusers'
schedulers for each sigma-space stepping rule, and ComfyUI's schedule formulas written out here.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402

from graph.events import NodePreview, NodeProgress  # noqa: E402
from models import schedules as S  # noqa: E402
from tests.fixtures.models_root import SIZE  # noqa: E402
from tests.fixtures.tiny_models import SD_SCHEDULER_CONFIG  # noqa: E402
from tests.helpers import link  # noqa: E402
from tests.test_diffusion import PROMPT, as_uint8, assert_same, image_of, pipeline, run_graph  # noqa: E402

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------- graph builders


def base_nodes(ckpt: str = "tiny-sd", negative: str = "") -> dict[str, Any]:
    return {
        "ck": {"type": "CheckpointLoader", "inputs": {"ckpt_name": ckpt}},
        "pos": {"type": "CLIPTextEncode", "inputs": {"clip": link("ck", "clip"), "text": PROMPT}},
        "neg": {"type": "CLIPTextEncode", "inputs": {"clip": link("ck", "clip"), "text": negative}},
        "lat": {"type": "EmptyLatent", "inputs": {"width": SIZE, "height": SIZE, "vae": link("ck", "vae")}},
    }


def conditioned(model: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "model": model or link("ck", "model"),
        "positive": link("pos", "conditioning"),
        "negative": link("neg", "conditioning"),
    }


def advanced(latent: dict[str, str], **settings: Any) -> dict[str, Any]:
    inputs = {**conditioned(), "latent": latent, "seed": 42, "steps": 4, "cfg": 7.5, "sampler": "euler"}
    return {"type": "SamplerAdvanced", "inputs": {**inputs, **settings}}


def plain(latent: dict[str, str], **settings: Any) -> dict[str, Any]:
    inputs = {**conditioned(), "latent": latent, "seed": 42, "steps": 4, "cfg": 7.5, "sampler": "euler"}
    return {"type": "Sampler", "inputs": {**inputs, **settings}}


def decoded(nodes: dict[str, Any], latent: dict[str, str]) -> dict[str, Any]:
    nodes["d"] = {"type": "VAEDecode", "inputs": {"vae": link("ck", "vae"), "latent": latent}}
    nodes["show"] = {"type": "PreviewImage", "inputs": {"images": link("d", "image")}}
    return nodes


def run_targets(nodes: dict[str, Any], root: Any, manager: Any, targets: list[str], **kwargs: Any) -> Any:
    """Run only ``targets`` (the graph gets a decode and preview so that it validates)."""
    first = targets[0]
    decoded(nodes, link(first, "latent" if nodes[first]["type"] == "SamplerAdvanced" else "output"))
    return run_graph(nodes, root, manager, targets=targets, **kwargs)


def latent_of(result: Any, node_id: str, output: str = "latent") -> torch.Tensor:
    assert result.status == "done", result.error
    return result.outputs[node_id][output].samples


def custom_nodes(sampler: str = "euler", scheduler: str = "karras", steps: int = 4) -> dict[str, Any]:
    nodes = base_nodes()
    nodes["sel"] = {"type": "SamplerSelect", "inputs": {"sampler_name": sampler}}
    nodes["sch"] = {
        "type": "BasicScheduler",
        "inputs": {"model": link("ck", "model"), "scheduler": scheduler, "steps": steps, "denoise": 1.0},
    }
    nodes["sc"] = {
        "type": "SamplerCustom",
        "inputs": {
            **conditioned(),
            "add_noise": True,
            "noise_seed": 42,
            "cfg": 7.5,
            "sampler": link("sel", "sampler"),
            "sigmas": link("sch", "sigmas"),
            "latent": link("lat", "latent"),
        },
    }
    return nodes


# --------------------------------------------------------------------------- schedules: the formulas


def sd_levels() -> np.ndarray:
    """SD's 1000 noise levels from its scaled-linear betas, in float64 (written out here)."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    alphas = np.cumprod(1 - betas)
    return np.sqrt((1 - alphas) / alphas)


LEVELS = S.model_levels(dict(SD_SCHEDULER_CONFIG))


def test_model_levels_are_sds_published_range():
    assert np.allclose(LEVELS.sigmas.numpy(), sd_levels(), rtol=5e-5)  # diffusers: float32
    assert LEVELS.sigma_max == pytest.approx(14.6146, abs=1e-3)
    assert LEVELS.sigma_min == pytest.approx(0.0292, abs=1e-4)


def test_karras_and_exponential_match_diffusers_conversions():
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler.from_config(dict(SD_SCHEDULER_CONFIG))
    ends = torch.tensor([LEVELS.sigma_max, LEVELS.sigma_min])
    for steps in (1, 4, 13):
        theirs = scheduler._convert_to_karras(in_sigmas=ends, num_inference_steps=steps)
        assert np.allclose(S.karras(steps, LEVELS.sigma_min, LEVELS.sigma_max)[:-1], theirs, rtol=1e-5)
        theirs = scheduler._convert_to_exponential(in_sigmas=ends, num_inference_steps=steps)
        assert np.allclose(S.exponential(steps, LEVELS.sigma_min, LEVELS.sigma_max)[:-1], theirs, rtol=1e-5)
    assert S.karras(5, 0.1, 10.0, rho=3.0)[-1] == 0.0 and S.karras(5, 0.1, 10.0)[0] == pytest.approx(10.0)


def comfy_sigma(levels: np.ndarray, t: float) -> float:
    low, high = math.floor(t), math.ceil(t)
    w = t - low
    return math.exp((1 - w) * math.log(levels[low]) + w * math.log(levels[high]))


def test_named_schedules_follow_comfyuis_formulas():
    levels = sd_levels()
    steps = 6
    normal = [comfy_sigma(levels, t) for t in np.linspace(999, 0, steps)] + [0.0]
    sgm = [comfy_sigma(levels, t) for t in np.linspace(999, 0, steps + 1)[:-1]] + [0.0]
    simple = [levels[-(1 + int(i * 1000 / steps))] for i in range(steps)] + [0.0]
    ddim = ([0.0] + list(levels[1::166]))[::-1]
    for name, expected in (
        ("normal", normal),
        ("sgm_uniform", sgm),
        ("simple", simple),
        ("ddim_uniform", ddim),
    ):
        ours = S.model_schedule(LEVELS, name, steps)
        assert ours.dtype == torch.float32 and ours.ndim == 1
        assert np.allclose(ours.numpy(), expected, rtol=5e-5), name
    # denoise 0.5 keeps the last steps + 1 levels of a twice-as-long schedule
    half = S.basic_schedule(LEVELS, "normal", 3, 0.5)
    assert np.allclose(half, S.model_schedule(LEVELS, "normal", 6)[-4:])
    assert len(S.basic_schedule(LEVELS, "karras", 3, 0.0)) == 0


def test_beta_schedule_and_its_quantile_function():
    # closed forms: Beta(1, 1) is uniform, Beta(1/2, 1/2) the arcsine law
    q = np.linspace(0, 1, 11)
    assert np.allclose(S.beta_ppf(q, 1.0, 1.0), q, atol=1e-6)
    assert np.allclose(S.beta_ppf(q, 0.5, 0.5), np.sin(np.pi * q / 2) ** 2, atol=1e-6)
    # symmetric: ppf(q) = 1 - ppf(1 - q)
    assert np.allclose(S.beta_ppf(q, 0.6, 0.6), 1 - S.beta_ppf(1 - q, 0.6, 0.6), atol=1e-6)
    sigmas = S.model_schedule(LEVELS, "beta", 8)
    assert sigmas[0] == pytest.approx(LEVELS.sigma_max) and sigmas[-1] == 0
    assert bool((sigmas[1:] < sigmas[:-1]).all())


def test_sd_turbo_and_split():
    levels = sd_levels()
    turbo = S.sd_turbo_schedule(LEVELS, 3, 1.0)
    assert np.allclose(turbo.numpy(), [levels[999], levels[899], levels[799], 0.0], rtol=1e-5)
    assert np.allclose(S.sd_turbo_schedule(LEVELS, 2, 0.5)[0], levels[499], rtol=1e-5)
    high, low = S.split(turbo, 1)
    assert high.tolist() == turbo[:2].tolist() and low.tolist() == turbo[1:].tolist()


# --------------------------------------------------------------------------- stepping rules


def toy_denoiser(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """A smooth stand-in for a model: its clean estimate moves with x and the level."""
    return torch.tanh(x) * (0.6 + 0.3 / (1 + sigma)) + 0.1 * math.sin(sigma)


def sigma_of(scheduler: Any, x: torch.Tensor, t: Any, index: int) -> float:
    """The level a scheduler evaluates the model at."""
    if float(scheduler.init_noise_sigma) > 1.0:  # sigma space: read it off the input scaling
        ratio = float((x / scheduler.scale_model_input(x, t)).mean())
        return math.sqrt(ratio**2 - 1)
    if hasattr(scheduler, "sigmas"):  # DPM-Solver keeps its levels
        return float(scheduler.sigmas[index])
    alpha = float(scheduler.alphas_cumprod[int(t)])
    return math.sqrt((1 - alpha) / alpha)


def run_diffusers(scheduler: Any, steps: int, seed: int = 3) -> tuple[torch.Tensor, list[float]]:
    """A diffusers scheduler driven by :func:`toy_denoiser` (as epsilon), from fixed noise.

    Returns the result and the levels it passed through (each once, ending at 0)."""
    import inspect

    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    takes_generator = "generator" in inspect.signature(scheduler.step).parameters
    x = torch.randn(1, 4, 3, 3, generator=torch.Generator().manual_seed(0)) * float(
        scheduler.init_noise_sigma
    )
    variance_preserving = float(scheduler.init_noise_sigma) == 1.0
    levels: list[float] = []
    for index, t in enumerate(scheduler.timesteps):
        sigma = sigma_of(scheduler, x, t, index)
        x_k = x * math.sqrt(1 + sigma**2) if variance_preserving else x
        eps = (x_k - toy_denoiser(x_k, sigma)) / sigma
        kwargs = {"generator": generator} if takes_generator else {}
        x = scheduler.step(eps, t, x, **kwargs).prev_sample
        levels.append(sigma)
    return x, levels


def run_ours(
    name: str, sigmas: list[float], init_scale: float, seed: int = 3, draws: int = 1
) -> torch.Tensor:
    """Our stepping rule over ``sigmas``; ``draws`` noise tensors per use, the last one used
    (diffusers' KDPM2 ancestral draws at both of its stages and uses the second)."""
    from diffusers.utils.torch_utils import randn_tensor

    generator = torch.Generator().manual_seed(seed)

    def noise(x: torch.Tensor) -> torch.Tensor:
        return randn_tensor(x.shape, generator=generator)

    x = torch.randn(1, 4, 3, 3, generator=torch.Generator().manual_seed(0)) * init_scale
    stepper = S.KStepper(name, sigmas, toy_denoiser, noise)
    for i in range(len(sigmas) - 1):
        x = stepper.step(i, x)
    return x


def distinct(levels: list[float]) -> list[float]:
    """Each level once (two-stage schedulers visit each twice), ending with one 0."""
    out = [levels[0]]
    for level in levels[1:]:
        if not math.isclose(level, out[-1], rel_tol=1e-6):
            out.append(level)
    return [*out, 0.0]


@pytest.mark.parametrize(
    ("name", "scheduler_class", "options"),
    [
        ("euler", "EulerDiscreteScheduler", {}),
        ("ddim", "EulerDiscreteScheduler", {}),  # ComfyUI's ddim is Euler
        ("euler_ancestral", "EulerAncestralDiscreteScheduler", {}),
        ("heun", "HeunDiscreteScheduler", {}),
        ("dpm_2", "KDPM2DiscreteScheduler", {}),
        ("dpm_2_ancestral", "KDPM2AncestralDiscreteScheduler", {}),
        ("dpmpp_2m", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
        (
            "dpmpp_2m_sde",
            "DPMSolverMultistepScheduler",
            {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
        ),
        ("lcm", "LCMScheduler", {"timestep_scaling": 1e9}),  # no boundary blend: LCM's plain rule
        ("uni_pc", "UniPCMultistepScheduler", {"solver_order": 3, "solver_type": "bh2"}),
    ],
)
def test_stepping_rules_match_diffusers_schedulers(name, scheduler_class, options):
    import diffusers

    config = {**SD_SCHEDULER_CONFIG, "timestep_spacing": "trailing", **options}
    scheduler = getattr(diffusers, scheduler_class).from_config(config)
    theirs, visited = run_diffusers(scheduler, 5)
    if name in ("dpm_2", "dpm_2_ancestral"):  # their second stage runs at the log-midpoints
        visited = visited[::2]
    sigmas = distinct(visited)
    init_scale = float(scheduler.init_noise_sigma)
    if init_scale == 1.0:  # a variance-preserving start: the same noise in sigma space
        init_scale = math.sqrt(1 + sigmas[0] ** 2)
    ours = run_ours(name, sigmas, init_scale)
    assert torch.allclose(ours, theirs, atol=2e-5), float((ours - theirs).abs().max())


def lagrange_integral_by_quadrature(order: int, t: list[float], i: int, j: int) -> float:
    """k-diffusion's linear multistep coefficient, integrated numerically (the oracle for LMS)."""
    grid = np.linspace(t[i], t[i + 1], 20001)
    values = np.ones_like(grid)
    for k in range(order):
        if k != j:
            values *= (grid - t[i - k]) / (t[i - j] - t[i - k])
    return float(np.sum((values[1:] + values[:-1]) / 2 * np.diff(grid)))


def test_lms_matches_diffusers_lms_with_its_coefficients_integrated_here():

    sigmas = S.karras(6, 0.03, 14.6).tolist()
    for i in range(len(sigmas) - 1):
        for order in range(1, min(i + 1, 4) + 1):
            for j in range(order):
                ours = S.lms_coefficient(order, sigmas, i, j)
                assert ours == pytest.approx(lagrange_integral_by_quadrature(order, sigmas, i, j), abs=1e-6)
    # k-diffusion's LMS loop written out with those coefficients (diffusers' LMS needs scipy)
    x = torch.randn(1, 4, 3, 3, generator=torch.Generator().manual_seed(0)) * sigmas[0]
    derivatives: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        derivatives.append((x - toy_denoiser(x, sigmas[i])) / sigmas[i])
        order = min(i + 1, 4)
        coeffs = [lagrange_integral_by_quadrature(order, sigmas, i, j) for j in range(order)]
        x = x + sum(c * d for c, d in zip(coeffs, reversed(derivatives[-order:]), strict=True))
    ours = run_ours("lms", sigmas, sigmas[0])
    assert torch.allclose(ours, x, atol=1e-5), float((ours - x).abs().max())


# --------------------------------------------------------------------------- custom sampling, end to end


def test_custom_karras_euler_matches_a_pipeline_given_the_same_sigmas(models_root, manager):
    from diffusers import EulerDiscreteScheduler

    nodes = decoded(custom_nodes("euler", "karras", 4), link("sc", "output"))
    ours = image_of(run_graph(nodes, models_root, manager))
    levels = sd_levels()
    sigmas = [
        (levels[-1] ** (1 / 7) + r * (levels[0] ** (1 / 7) - levels[-1] ** (1 / 7))) ** 7
        for r in np.linspace(0, 1, 4)
    ] + [0.0]
    pipe = pipeline("StableDiffusionPipeline", models_root / "checkpoints" / "tiny-sd", "euler")
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    theirs = pipe(
        PROMPT,
        sigmas=sigmas,
        guidance_scale=7.5,
        height=SIZE,
        width=SIZE,
        generator=torch.Generator("cpu").manual_seed(42),
        output_type="np",
    ).images
    assert_same(ours, as_uint8(theirs))


def test_split_sigmas_then_two_advanced_runs_equal_one_run(models_root, manager):
    nodes = custom_nodes("heun", "normal", 4)
    nodes["noise"] = {"type": "RandomNoise", "inputs": {"noise_seed": 42}}
    nodes["none"] = {"type": "DisableNoise", "inputs": {}}
    nodes["guide"] = {"type": "CFGGuider", "inputs": {**conditioned(), "cfg": 7.5}}
    nodes["split"] = {"type": "SplitSigmas", "inputs": {"sigmas": link("sch", "sigmas"), "step": 2}}

    def custom(noise: str, sigmas: dict[str, str], latent: dict[str, str]) -> dict[str, Any]:
        inputs = {"noise": link(noise, "noise"), "guider": link("guide", "guider")}
        inputs.update(sampler=link("sel", "sampler"), sigmas=sigmas, latent=latent)
        return {"type": "SamplerCustomAdvanced", "inputs": inputs}

    nodes["first"] = custom("noise", link("split", "high_sigmas"), link("lat", "latent"))
    nodes["second"] = custom("none", link("split", "low_sigmas"), link("first", "output"))
    nodes["whole"] = custom("noise", link("sch", "sigmas"), link("lat", "latent"))
    result = run_targets(nodes, models_root, manager, ["first", "second", "whole"])
    whole = latent_of(result, "whole", "output")
    assert torch.allclose(latent_of(result, "second", "output"), whole, atol=1e-5)
    assert not torch.allclose(latent_of(result, "first", "output"), whole, atol=1e-2)
    # at the end the last denoised estimate is the output itself (the last step goes to sigma 0)
    assert torch.allclose(latent_of(result, "whole", "denoised_output"), whole, atol=1e-5)


def test_sampler_custom_equals_its_advanced_parts(models_root, manager):
    nodes = custom_nodes("dpmpp_2m", "exponential", 3)
    nodes["noise"] = {"type": "RandomNoise", "inputs": {"noise_seed": 42}}
    nodes["guide"] = {"type": "CFGGuider", "inputs": {**conditioned(), "cfg": 7.5}}
    nodes["adv"] = {
        "type": "SamplerCustomAdvanced",
        "inputs": {
            "noise": link("noise", "noise"),
            "guider": link("guide", "guider"),
            "sampler": link("sel", "sampler"),
            "sigmas": link("sch", "sigmas"),
            "latent": link("lat", "latent"),
        },
    }
    result = run_targets(nodes, models_root, manager, ["sc", "adv"])
    assert torch.equal(latent_of(result, "sc", "output"), latent_of(result, "adv", "output"))
    nodes["noise"] = {"type": "RandomNoise", "inputs": {"noise_seed": 43}}
    other = run_targets(nodes, models_root, manager, ["adv"])
    assert not torch.allclose(latent_of(other, "adv", "output"), latent_of(result, "adv", "output"))


@pytest.mark.parametrize("sampler", ["euler_ancestral", "dpm_2", "lms", "lcm", "uni_pc"])
def test_every_sampler_runs_and_reproduces(models_root, manager, sampler):
    nodes = decoded(custom_nodes(sampler, "simple", 3), link("sc", "output"))
    events: list = []
    first = run_targets(nodes, models_root, manager, ["sc"], listener=events.append)
    again = run_targets(nodes, models_root, manager, ["sc"])
    out = latent_of(first, "sc", "output")
    assert out.shape == (1, 4, SIZE // 8, SIZE // 8) and torch.isfinite(out).all()
    assert torch.equal(out, latent_of(again, "sc", "output"))
    steps = [(e.step, e.total) for e in events if isinstance(e, NodeProgress) and e.node_id == "sc"]
    assert steps == [(1, 3), (2, 3), (3, 3)]
    assert len([e for e in events if isinstance(e, NodePreview) and e.node_id == "sc"]) == 3


# --------------------------------------------------------------------------- SamplerAdvanced


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m_karras", "ddim"])
def test_full_window_equals_the_plain_sampler_bit_for_bit(models_root, manager, sampler):
    nodes = base_nodes()
    nodes["adv"] = advanced(link("lat", "latent"), sampler=sampler, end_at_step=10000)
    nodes["s"] = plain(link("lat", "latent"), sampler=sampler)
    result = run_targets(nodes, models_root, manager, ["adv", "s"])
    assert torch.equal(latent_of(result, "adv"), latent_of(result, "s"))


@pytest.mark.parametrize("sampler", ["euler", "ddim"])
def test_two_windows_with_leftover_noise_equal_one_run(models_root, manager, sampler):
    """Euler keeps sigma space; DDIM's latents cross the window edge converted to it and back."""
    nodes = base_nodes()
    nodes["a"] = advanced(
        link("lat", "latent"), sampler=sampler, end_at_step=2, return_with_leftover_noise=True
    )
    nodes["b"] = advanced(link("a", "latent"), sampler=sampler, start_at_step=2, add_noise=False)
    nodes["s"] = plain(link("lat", "latent"), sampler=sampler)
    result = run_targets(nodes, models_root, manager, ["b", "s"])
    assert torch.allclose(latent_of(result, "b"), latent_of(result, "s"), atol=1e-5)


def test_an_empty_window_returns_the_input_and_early_end_is_clean(models_root, manager):
    nodes = base_nodes()
    nodes["a"] = advanced(link("lat", "latent"), end_at_step=2, return_with_leftover_noise=True)
    nodes["same"] = advanced(link("a", "latent"), start_at_step=3, end_at_step=3)
    nodes["past"] = advanced(link("a", "latent"), start_at_step=7)
    nodes["clean"] = advanced(link("lat", "latent"), end_at_step=2)
    result = run_targets(nodes, models_root, manager, ["a", "same", "past", "clean"])
    noisy = latent_of(result, "a")
    assert torch.equal(latent_of(result, "same"), noisy) and torch.equal(latent_of(result, "past"), noisy)
    # ComfyUI's force_full_denoise: the window's last step goes straight to sigma 0, as a
    # pipeline given the schedule cut there with a final 0 does
    from diffusers import EulerDiscreteScheduler

    pipe = pipeline("StableDiffusionPipeline", models_root / "checkpoints" / "tiny-sd", "euler")
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.scheduler.set_timesteps(4)
    cut = [*pipe.scheduler.sigmas[:2].tolist(), 0.0]
    theirs = pipe(
        PROMPT,
        sigmas=cut,
        guidance_scale=7.5,
        height=SIZE,
        width=SIZE,
        generator=torch.Generator("cpu").manual_seed(42),
        output_type="latent",
    ).images
    assert torch.allclose(latent_of(result, "clean"), theirs, atol=1e-3)
    assert not torch.allclose(noisy, latent_of(result, "clean"), atol=0.1)


def test_windows_a_sampler_cannot_run_name_the_input(models_root, manager):
    nodes = base_nodes()
    nodes["a"] = advanced(link("lat", "latent"), sampler="pndm", start_at_step=2)
    result = run_targets(nodes, models_root, manager, ["a"])
    assert result.status == "failed"
    assert result.error.node_id == "a" and result.error.input == "sampler"
    assert "euler" in result.error.message


def test_sdxl_base_and_refiner_windows_equal_the_diffusers_hand_off(models_root, manager):
    """4 steps with SDXL's "leading" timesteps 751, 501, 251, 1: denoising_end = 0.5 puts the
    cutoff at timestep 500, so the base runs 751 and 501 (steps 0-1) and the refiner 251 and 1
    (steps 2-3): end_at_step = start_at_step = 2."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    nodes = base_nodes("tiny-sdxl", negative="blurry")
    nodes["base"] = advanced(link("lat", "latent"), end_at_step=2, return_with_leftover_noise=True)
    nodes["refine"] = advanced(link("base", "latent"), start_at_step=2, add_noise=False)
    result = run_targets(nodes, models_root, manager, ["base", "refine"])

    folder = models_root / "checkpoints" / "tiny-sdxl"
    base = pipeline("StableDiffusionXLPipeline", folder, "euler")
    assert base.scheduler.config.timestep_spacing == "leading"
    base.scheduler.set_timesteps(4)
    assert base.scheduler.timesteps.tolist() == [751, 501, 251, 1]
    common = {"negative_prompt": "blurry", "num_inference_steps": 4, "guidance_scale": 7.5}
    handed = base(
        PROMPT,
        **common,
        denoising_end=0.5,
        height=SIZE,
        width=SIZE,
        generator=torch.Generator("cpu").manual_seed(42),
        output_type="latent",
    ).images
    assert torch.allclose(latent_of(result, "base"), handed, atol=1e-5)
    refiner = StableDiffusionXLImg2ImgPipeline(**base.components)
    refiner.set_progress_bar_config(disable=True)
    theirs = refiner(PROMPT, **common, image=handed, denoising_start=0.5, output_type="latent").images
    assert torch.allclose(latent_of(result, "refine"), theirs, atol=1e-4)


# --------------------------------------------------------------------------- ModelSamplingDiscrete


def test_v_prediction_override_matches_a_v_prediction_pipeline(models_root, manager):
    from diffusers import EulerDiscreteScheduler

    nodes = base_nodes()
    nodes["ms"] = {
        "type": "ModelSamplingDiscrete",
        "inputs": {"model": link("ck", "model"), "sampling": "v_prediction", "zsnr": True},
    }
    nodes["s"] = plain(link("lat", "latent"))
    nodes["s"]["inputs"]["model"] = link("ms", "model")
    ours = image_of(run_graph(decoded(nodes, link("s", "latent")), models_root, manager))
    pipe = pipeline("StableDiffusionPipeline", models_root / "checkpoints" / "tiny-sd", "euler")
    config = {k: v for k, v in pipe.scheduler.config.items() if k != "_use_default_values"}
    config.update(prediction_type="v_prediction", rescale_betas_zero_snr=True)
    pipe.scheduler = EulerDiscreteScheduler.from_config(config)
    theirs = pipe(
        PROMPT,
        num_inference_steps=4,
        guidance_scale=7.5,
        height=SIZE,
        width=SIZE,
        generator=torch.Generator("cpu").manual_seed(42),
        output_type="np",
    ).images
    assert_same(ours, as_uint8(theirs))
    unchanged = image_of(
        run_graph(
            decoded(base_nodes() | {"s": plain(link("lat", "latent"))}, link("s", "latent")),
            models_root,
            manager,
        )
    )
    assert np.abs(unchanged.astype(int) - ours.astype(int)).max() > 2


def test_custom_sampling_uses_the_override_too(models_root, manager):
    from diffusers import EulerDiscreteScheduler

    nodes = custom_nodes("euler", "karras", 3)
    nodes["ms"] = {
        "type": "ModelSamplingDiscrete",
        "inputs": {"model": link("ck", "model"), "sampling": "v_prediction", "zsnr": False},
    }
    nodes["sc"]["inputs"]["model"] = link("ms", "model")
    nodes["sch"]["inputs"]["model"] = link("ms", "model")
    ours = image_of(run_graph(decoded(nodes, link("sc", "output")), models_root, manager))
    levels = sd_levels()
    sigmas = S.karras(3, float(levels[0]), float(levels[-1])).tolist()
    pipe = pipeline("StableDiffusionPipeline", models_root / "checkpoints" / "tiny-sd", "euler")
    config = {k: v for k, v in pipe.scheduler.config.items() if k != "_use_default_values"}
    pipe.scheduler = EulerDiscreteScheduler.from_config({**config, "prediction_type": "v_prediction"})
    theirs = pipe(
        PROMPT,
        sigmas=sigmas,
        guidance_scale=7.5,
        height=SIZE,
        width=SIZE,
        generator=torch.Generator("cpu").manual_seed(42),
        output_type="np",
    ).images
    assert_same(ours, as_uint8(theirs))


def test_model_sampling_records_overrides_and_nodes_are_declared():
    from models.values import CheckpointRef, ModelRef
    from nodes.sampling_custom import NODES, ModelSamplingDiscrete
    from tests.helpers import make_ctx

    ref = ModelRef(CheckpointRef("k", None, lambda: None, "sd1"))  # type: ignore[arg-type]
    node = ModelSamplingDiscrete()
    lcm = node.run(make_ctx(), ref, "lcm", True)["model"]
    assert dict(lcm.sampling)["original_inference_steps"] == 50
    eps = node.run(make_ctx(), lcm, "eps", False)["model"]
    assert dict(eps.sampling) == {"prediction_type": "epsilon", "rescale_betas_zero_snr": False}
    assert ref.sampling == ()  # the input is left alone
    for cls in NODES:
        assert cls.category.startswith("sampling") and len(cls.description) > 20, cls.__name__
    assert {"euler", "euler_ancestral", "heun", "dpm_2", "dpmpp_2m", "lms", "lcm"} <= set(S.K_SAMPLERS)
    assert {"normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform"} <= set(S.SCHEDULERS)


def test_bad_sigmas_and_ranges_name_the_input(models_root, manager):
    nodes = custom_nodes()
    nodes["k"] = {
        "type": "KarrasScheduler",
        "inputs": {"steps": 4, "sigma_max": 0.01, "sigma_min": 0.1, "rho": 7.0},
    }
    nodes["sc"]["inputs"]["sigmas"] = link("k", "sigmas")
    result = run_targets(nodes, models_root, manager, ["sc"])
    assert result.status == "failed" and result.error.node_id == "k" and result.error.input == "sigma_max"
    assert "sigma_min" in result.error.message


def test_overrides_survive_diffusers_default_bookkeeping():
    """A saved config that lacked a key lists it in ``_use_default_values``; from_config drops
    such keys, so an override must take the key off that list or it is silently lost."""
    from diffusers import DDIMScheduler, EulerDiscreteScheduler

    saved = {k: v for k, v in SD_SCHEDULER_CONFIG.items() if k != "prediction_type"}
    loaded = dict(DDIMScheduler.from_config(saved).config)
    assert "prediction_type" in loaded["_use_default_values"]
    naive = EulerDiscreteScheduler.from_config({**loaded, "prediction_type": "v_prediction"})
    assert naive.config.prediction_type == "epsilon"  # what the override must not suffer
    config = S.scheduler_config(loaded, (("prediction_type", "v_prediction"),))
    assert EulerDiscreteScheduler.from_config(config).config.prediction_type == "v_prediction"


def test_custom_sampling_keeps_the_unmasked_part(models_root, manager):
    nodes = custom_nodes("dpmpp_2m", "karras", 3)
    nodes["first"] = advanced(link("lat", "latent"))
    nodes["m"] = {"type": "LoadImage", "inputs": {"path": "mask.png"}}
    nodes["mm"] = {"type": "ImageToMask", "inputs": {"image": link("m", "image"), "channel": "red"}}
    nodes["nm"] = {
        "type": "SetLatentNoiseMask",
        "inputs": {"latent": link("first", "latent"), "mask": link("mm", "mask")},
    }
    nodes["sc"]["inputs"]["latent"] = link("nm", "latent")
    result = run_targets(nodes, models_root, manager, ["sc", "first"])
    before, after = latent_of(result, "first"), latent_of(result, "sc", "output")
    inside = torch.zeros_like(before, dtype=torch.bool)
    inside[..., 2:6, 2:6] = True  # mask.png is white on pixels 16-48 of 64: latents 2-6 of 8
    assert torch.equal(after[~inside], before[~inside])
    assert not torch.allclose(after[inside], before[inside], atol=1e-2)
