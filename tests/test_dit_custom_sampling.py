"""Custom sampling (ComfyUI's Flux and SD3.5 templates) on the DiT families.

ComfyUI's own Flux and SD3 workflows wire RandomNoise, BasicGuider / CFGGuider, KSamplerSelect,
BasicScheduler (on the MODEL after ModelSamplingFlux / ModelSamplingSD3) and SamplerCustomAdvanced.
These tests hold that path to three oracles:

- the schedules: diffusers' FlowMatchEulerDiscreteScheduler and FluxPipeline's spacing where they
  coincide with ComfyUI's ("normal" on SD3, "simple" on Flux schnell), ComfyUI's written-out
  formulas elsewhere;
- the pictures: Euler over a schedule equals the KSampler (itself equal to the pipelines) where the
  levels are the same, and else StableDiffusion3Pipeline / FluxPipeline run with ``sigmas=`` set
  to the same levels (shift 1, so the pipeline does not shift them again), to uint8 rounding;
- the noise-adding rules: from a perfect denoiser's estimate each lands exactly on the flow path
  ``(1 - sigma) * x0 + sigma * noise`` with unit-variance noise (ComfyUI's RF rules).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402

from models import schedules as S  # noqa: E402
from models.manager import ModelManager  # noqa: E402
from tests.helpers import link  # noqa: E402
from tests.test_dit_sampling import (  # noqa: E402
    NEGATIVE,
    PROMPT,
    SIZE,
    assert_same,
    draw,
    graph,
    image_of,
    pipeline,
    run_graph,
)

STEPS = 4


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with a tiny SD3 and tiny Flux dev- and schnell-like diffusers folders."""
    from tests.fixtures.tiny_dit import save_tiny_flux_folder, save_tiny_sd3_folder

    root = tmp_path_factory.mktemp("dit-custom")
    save_tiny_sd3_folder(root / "checkpoints" / "tiny-sd3")
    save_tiny_flux_folder(root / "checkpoints" / "tiny-flux-dev", guidance=True)
    save_tiny_flux_folder(root / "checkpoints" / "tiny-flux-schnell", guidance=False)
    (root / "inputs").mkdir()
    return root


@pytest.fixture(scope="module")
def manager() -> ModelManager:
    return ModelManager(device="cpu")


def custom_graph(
    ckpt: str,
    *,
    scheduler: str = "simple",
    sampler: str = "euler",
    cfg: float | None = 4.5,
    steps: int = STEPS,
    model: dict | None = None,
    positive: dict | None = None,
    seed: int = 7,
) -> dict:
    """ComfyUI's template shape: RandomNoise, CFGGuider (or BasicGuider when ``cfg`` is None),
    KSamplerSelect, BasicScheduler on the MODEL, SamplerCustomAdvanced; the rest as in
    :func:`tests.test_dit_sampling.graph`."""
    nodes = graph(ckpt, steps=steps, seed=seed, model=model, positive=positive)
    sampler_node = nodes.pop("s")["inputs"]
    the_model, the_positive = sampler_node["model"], sampler_node["positive"]
    nodes["noise"] = {"type": "RandomNoise", "inputs": {"noise_seed": seed}}
    nodes["pick"] = {"type": "SamplerSelect", "inputs": {"sampler_name": sampler}}
    nodes["sched"] = {
        "type": "BasicScheduler",
        "inputs": {"model": the_model, "scheduler": scheduler, "steps": steps, "denoise": 1.0},
    }
    if cfg is None:
        nodes["guide"] = {"type": "BasicGuider", "inputs": {"model": the_model, "conditioning": the_positive}}
    else:
        nodes["guide"] = {
            "type": "CFGGuider",
            "inputs": {
                "model": the_model,
                "positive": the_positive,
                "negative": link("neg", "conditioning"),
                "cfg": cfg,
            },
        }
    nodes["s"] = {
        "type": "SamplerCustomAdvanced",
        "inputs": {
            "noise": link("noise", "noise"),
            "guider": link("guide", "guider"),
            "sampler": link("pick", "sampler"),
            "sigmas": link("sched", "sigmas"),
            "latent": link("lat", "latent"),
        },
    }
    nodes["d"]["inputs"]["latent"] = link("s", "output")
    return nodes


def flux_guidance(value: float) -> dict:
    return {
        "type": "FluxGuidance",
        "inputs": {"conditioning": link("pos", "conditioning"), "guidance": value},
    }


def flux_sampling(width: int = SIZE, height: int = SIZE) -> dict:
    return {
        "type": "ModelSamplingFlux",
        "inputs": {
            "model": link("ck", "model"),
            "max_shift": 1.15,
            "base_shift": 0.5,
            "width": width,
            "height": height,
        },
    }


def unshifted(config: Any) -> Any:
    """The pipeline's Euler scheduler that takes ``sigmas=`` as given (no shift of its own)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler.from_config(config, shift=1.0, use_dynamic_shifting=False)


def levels_of(
    ckpt: str, root: Path, family: str, scheduler: str = "simple", steps: int = STEPS
) -> list[float]:
    config = json.loads((root / "checkpoints" / ckpt / "scheduler" / "scheduler_config.json").read_text())
    schedule = S.basic_schedule(S.model_levels(config, family), scheduler, steps, 1.0)
    return [float(s) for s in schedule]


# --------------------------------------------------------------------------- the schedules


SD3_CONFIG = {"num_train_timesteps": 1000, "shift": 3.0}
FLUX_DEV_CONFIG = {
    "num_train_timesteps": 1000,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
}
SCHNELL_CONFIG = {"num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False}


def shifted(shift: float, t: float) -> float:
    return shift * t / (1 + (shift - 1) * t)


def test_simple_schedules_are_comfyuis_tables() -> None:
    """ComfyUI's "simple": every (table size / steps)-th level from the top of the model's table
    (1000 levels for SD3 and schnell, ModelSamplingFlux's 10000 for Flux dev, at mu 1.15)."""
    sd3 = S.basic_schedule(S.model_levels(SD3_CONFIG, "sd3"), "simple", 4, 1.0)
    assert np.allclose(sd3, [shifted(3.0, t) for t in (1, 0.75, 0.5, 0.25)] + [0.0], atol=1e-6)
    dev = S.basic_schedule(S.model_levels(FLUX_DEV_CONFIG, "flux"), "simple", 3, 1.0)
    times = [(10000 - int(i * 10000 / 3)) / 10000 for i in range(3)]
    assert np.allclose(dev, [shifted(math.exp(1.15), t) for t in times] + [0.0], atol=1e-6)
    # ModelSamplingFlux's fixed shift keeps its 10000 levels
    fixed = {**SCHNELL_CONFIG, "shift": math.exp(0.7)}
    assert S.model_levels(fixed, "flux").count == S.FLUX_TABLE
    assert S.model_levels(SCHNELL_CONFIG, "flux").count == S.FLOW_TABLE


def test_schedules_coincide_with_the_pipelines_where_comfyui_does() -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler

    for steps in (2, 4, 7):
        # SD3's "normal" is diffusers' own spacing (with its second shift at the low end)
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(SD3_CONFIG)
        scheduler.set_timesteps(steps)
        ours = S.basic_schedule(S.model_levels(SD3_CONFIG, "sd3"), "normal", steps, 1.0)
        assert np.allclose(ours, scheduler.sigmas, atol=1e-5)
        # schnell's "simple" is FluxPipeline's linspace(1, 1/steps)
        ours = S.basic_schedule(S.model_levels(SCHNELL_CONFIG, "flux"), "simple", steps, 1.0)
        assert np.allclose(ours[:-1], np.linspace(1.0, 1 / steps, steps), atol=1e-3)


@pytest.mark.parametrize("scheduler", S.SCHEDULERS)
@pytest.mark.parametrize("config", [SD3_CONFIG, FLUX_DEV_CONFIG, SCHNELL_CONFIG])
def test_every_schedule_of_a_flow_model_runs_from_at_most_1_down_to_0(scheduler: str, config: dict) -> None:
    family = "sd3" if config is SD3_CONFIG else "flux"
    sigmas = S.basic_schedule(S.model_levels(config, family), scheduler, 6, 1.0)
    assert len(sigmas) >= 6 and float(sigmas[-1]) == 0.0
    assert float(sigmas[0]) <= 1.0 + 1e-6 and bool((sigmas[1:] <= sigmas[:-1]).all())


# --------------------------------------------------------------------------- the noise-adding rules


@pytest.mark.parametrize("name", ["euler_ancestral", "dpm_2_ancestral", "lcm", "dpmpp_2m_sde"])
def test_noise_adding_rules_keep_a_flow_latent_on_the_flow_path(name: str) -> None:
    """With a denoiser that knows x0, one step from ``(1 - s) x0 + s n`` lands on
    ``(1 - s') x0 + a n + b z`` (z the fresh noise) with ``a^2 + b^2 = s'^2``: ComfyUI's RF rules.
    The sigma-space (SD) rules would keep x0 at weight 1 instead."""
    generator = torch.Generator().manual_seed(0)
    x0, n = (torch.randn(4096, generator=generator, dtype=torch.float64) for _ in range(2))
    drawn: list[torch.Tensor] = []

    def fresh(x: torch.Tensor) -> torch.Tensor:
        drawn.append(torch.randn(x.shape, generator=generator, dtype=x.dtype))
        return drawn[-1]

    sigmas = [0.8, 0.6, 0.3, 0.0]
    stepper = S.KStepper(name, sigmas, lambda x, sigma: x0, fresh, flow=True)
    x = (1 - sigmas[0]) * x0 + sigmas[0] * n
    for i in range(2):  # the second step runs with the multistep history
        x = stepper.step(i, x)
        s, z = sigmas[i + 1], drawn[-1]
        rest = (x - (1 - s) * x0).numpy()
        basis = np.stack([n.numpy(), z.numpy()], 1)
        (a, b), *_ = np.linalg.lstsq(basis, rest, rcond=None)
        assert np.allclose(basis @ [a, b], rest, atol=1e-9)
        assert a**2 + b**2 == pytest.approx(s**2, rel=1e-9)
        n = (a * n + b * z) / s  # the (unit) noise the latent now holds
    assert torch.allclose(stepper.step(2, x), x0)  # the last step to 0 gives the clean estimate


def test_sde_solvers_start_a_flow_schedule_just_below_1() -> None:
    """ComfyUI's offset_first_sigma_for_snr: flow's log-SNR is infinite at 1."""
    levels = S.FlowLevels(3.0)
    assert S.offset_first_sigma([1.0, 0.5, 0.0], levels) == [shifted(3.0, 1 - 1e-4), 0.5, 0.0]
    assert S.offset_first_sigma([0.9, 0.5, 0.0], levels) == [0.9, 0.5, 0.0]


def test_ode_rules_step_flow_latents_by_the_velocity() -> None:
    """Euler in sigma space is flow matching's Euler: x + (s' - s) * v with v = (x - x0) / s."""
    x0, x = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    stepper = S.KStepper("euler", [0.9, 0.5, 0.0], lambda x, s: x0, lambda x: x, flow=True)
    assert torch.allclose(stepper.step(0, x), x + (0.5 - 0.9) * (x - x0) / 0.9)


# --------------------------------------------------------------------------- pictures


@pytest.mark.slow
def test_sd3_custom_normal_euler_equals_the_ksampler(root: Path, manager: ModelManager) -> None:
    ours = image_of(run_graph(custom_graph("tiny-sd3", scheduler="normal"), root, manager))
    assert_same(ours, image_of(run_graph(graph("tiny-sd3", steps=STEPS), root, manager)))


@pytest.mark.slow
def test_sd3_custom_simple_matches_the_pipeline_over_the_same_levels(
    root: Path, manager: ModelManager
) -> None:
    ours = image_of(run_graph(custom_graph("tiny-sd3"), root, manager))
    sigmas = levels_of("tiny-sd3", root, "sd3")
    pipe = pipeline("StableDiffusion3Pipeline", root / "checkpoints" / "tiny-sd3", unshifted)
    theirs = draw(pipe, negative_prompt=NEGATIVE, guidance_scale=4.5, sigmas=sigmas[:-1])
    assert_same(ours, theirs)


@pytest.mark.slow
def test_flux_schnell_template_equals_the_ksampler(root: Path, manager: ModelManager) -> None:
    ours = image_of(run_graph(custom_graph("tiny-flux-schnell", cfg=None), root, manager))
    ksampler = image_of(run_graph(graph("tiny-flux-schnell", cfg=1.0, steps=STEPS), root, manager))
    assert_same(ours, ksampler)
    pipe = pipeline("FluxPipeline", root / "checkpoints" / "tiny-flux-schnell")
    assert_same(ours, draw(pipe, guidance_scale=0.0, num_inference_steps=STEPS))


@pytest.mark.slow
def test_flux_dev_template_with_flux_guidance(root: Path, manager: ModelManager) -> None:
    """Without ModelSamplingFlux the levels are ComfyUI's (mu 1.15): the pipeline over the same
    levels draws the same; with it, the KSampler with the same ModelSamplingFlux does."""
    ours = image_of(
        run_graph(custom_graph("tiny-flux-dev", cfg=None, positive=flux_guidance(6.0)), root, manager)
    )
    sigmas = levels_of("tiny-flux-dev", root, "flux")
    pipe = pipeline("FluxPipeline", root / "checkpoints" / "tiny-flux-dev", unshifted)
    assert_same(ours, draw(pipe, guidance_scale=6.0, sigmas=sigmas[:-1], num_inference_steps=STEPS))

    nodes = custom_graph("tiny-flux-dev", cfg=None, positive=flux_guidance(6.0), model=flux_sampling())
    fixed = image_of(run_graph(nodes, root, manager))
    ksampler = graph(
        "tiny-flux-dev", cfg=1.0, steps=STEPS, positive=flux_guidance(6.0), model=flux_sampling()
    )
    assert_same(fixed, image_of(run_graph(ksampler, root, manager)))


@pytest.mark.slow
def test_a_split_schedule_hands_over_like_one_run(root: Path) -> None:
    """SplitSigmas: the first part with noise, the second without (DisableNoise) from the first's
    output, is one run; the handed-over latent is ComfyUI's (divided by 1 - sigma)."""
    from models.loading import load_checkpoint
    from models.sampling import SampleJob, sample_custom
    from models.values import Cond, Latent

    checkpoint = load_checkpoint(root / "checkpoints" / "tiny-sd3")
    embeds, pooled = torch.randn(1, 77, 96), torch.randn(1, 96)

    def job(latent: torch.Tensor) -> SampleJob:
        return SampleJob(
            unet=checkpoint.unet,
            scheduler_config=checkpoint.scheduler_config,
            positive=[Cond(embeds, pooled=pooled)],
            negative=[Cond(embeds * 0, pooled=pooled * 0)],
            latent=Latent(latent),
            seed=3,
            steps=4,
            cfg=3.0,
            sampler="dpmpp_2m",
            family="sd3",
        )

    sigmas = S.basic_schedule(S.model_levels(checkpoint.scheduler_config, "sd3"), "simple", 4, 1.0)
    empty = torch.zeros(1, 4, 8, 8)
    whole = sample_custom(job(empty), "euler", sigmas, 5)
    high, low = S.split(sigmas, 2)
    first = sample_custom(job(empty), "euler", high, 5)
    second = sample_custom(job(first.samples), "euler", low, None)
    assert torch.allclose(whole.samples, second.samples, atol=1e-5)
    noisy = sample_custom(job(empty), "euler", high[:1], 5)  # nothing to run: the latent as is
    assert torch.equal(noisy.samples, empty)


@pytest.mark.slow
@pytest.mark.parametrize("sampler", S.K_SAMPLERS)
def test_every_sampler_runs_on_flux(root: Path, manager: ModelManager, sampler: str) -> None:
    result = run_graph(custom_graph("tiny-flux-schnell", cfg=None, sampler=sampler, steps=2), root, manager)
    picture = image_of(result)
    assert picture.shape == (1, SIZE, SIZE, 3) and picture.std() > 0


@pytest.mark.slow
def test_ksampler_heun_on_sd3_matches_the_pipeline_with_flow_heun(root: Path) -> None:
    """The KSampler's heun on a flow model is FlowMatchHeunDiscreteScheduler's method."""
    from diffusers import FlowMatchHeunDiscreteScheduler

    from models.sampling import SampleJob, sample
    from models.values import Cond, Latent

    pipe = pipeline(
        "StableDiffusion3Pipeline",
        root / "checkpoints" / "tiny-sd3",
        FlowMatchHeunDiscreteScheduler.from_config,
    )
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
        PROMPT, None, None, negative_prompt=NEGATIVE, do_classifier_free_guidance=True
    )
    generator = torch.Generator("cpu").manual_seed(7)
    theirs = pipe(
        prompt_embeds=embeds,
        negative_prompt_embeds=negative,
        pooled_prompt_embeds=pooled,
        negative_pooled_prompt_embeds=negative_pooled,
        num_inference_steps=STEPS,
        guidance_scale=4.5,
        height=SIZE,
        width=SIZE,
        generator=generator,
        output_type="latent",
    ).images
    job = SampleJob(
        unet=pipe.transformer,
        scheduler_config=dict(pipe.scheduler.config),
        positive=[Cond(embeds, pooled=pooled)],
        negative=[Cond(negative, pooled=negative_pooled)],
        latent=Latent(torch.zeros(1, 4, SIZE // 8, SIZE // 8)),
        seed=7,
        steps=STEPS,
        cfg=4.5,
        sampler="heun",
        family="sd3",
    )
    assert torch.allclose(sample(job), theirs, atol=1e-4)


# --------------------------------------------------------------------------- errors


@pytest.mark.slow
def test_levels_above_1_are_refused_for_flow_models(root: Path, manager: ModelManager) -> None:
    nodes = custom_graph("tiny-flux-schnell", cfg=None, steps=2)
    nodes["sched"] = {
        "type": "KarrasScheduler",
        "inputs": {"steps": 2, "sigma_max": 14.6, "sigma_min": 0.03, "rho": 7.0},
    }
    result = run_graph(nodes, root, manager)
    assert result.status == "failed" and result.error.input == "sigmas"
    assert "from 1 down to 0" in result.error.message and "BasicScheduler" in result.error.message
    nodes["sched"] = {
        "type": "SDTurboScheduler",
        "inputs": {"model": link("ck", "model"), "steps": 1, "denoise": 1.0},
    }
    result = run_graph(nodes, root, manager)
    assert (
        result.status == "failed"
        and result.error.input == "model"
        and "BasicScheduler" in result.error.message
    )


# --------------------------------------------------------------------------- ComfyUI's template

#: ComfyUI's Flux dev template in API format (flux_dev_example), written out by hand for the tiny
#: folder: a checkpoint in place of UNETLoader + DualCLIPLoader + VAELoader, 64 px, 4 steps.
FLUX_TEMPLATE: dict[str, Any] = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-flux-dev"}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["4", 1]}},
    "26": {"class_type": "FluxGuidance", "inputs": {"guidance": 3.5, "conditioning": ["6", 0]}},
    "30": {
        "class_type": "ModelSamplingFlux",
        "inputs": {"max_shift": 1.15, "base_shift": 0.5, "width": SIZE, "height": SIZE, "model": ["4", 0]},
    },
    "22": {"class_type": "BasicGuider", "inputs": {"model": ["30", 0], "conditioning": ["26", 0]}},
    "16": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
    "17": {
        "class_type": "BasicScheduler",
        "inputs": {"scheduler": "simple", "steps": STEPS, "denoise": 1.0, "model": ["30", 0]},
    },
    "25": {"class_type": "RandomNoise", "inputs": {"noise_seed": 7}},
    "27": {"class_type": "EmptySD3LatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1}},
    "13": {
        "class_type": "SamplerCustomAdvanced",
        "inputs": {
            "noise": ["25", 0],
            "guider": ["22", 0],
            "sampler": ["16", 0],
            "sigmas": ["17", 0],
            "latent_image": ["27", 0],
        },
    },
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["13", 0], "vae": ["4", 2]}},
    "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
}


@pytest.mark.slow
def test_comfyuis_flux_template_converts_and_runs(root: Path, manager: ModelManager) -> None:
    from comfy_import import convert, read_prompt

    conversion = convert(read_prompt(FLUX_TEMPLATE), "flux_dev.json")
    assert conversion.complete, conversion.not_converted
    nodes = conversion.workflow["nodes"]
    latent = nodes["27"]["inputs"]
    # the tiny VAE has 4 latent channels (a real Flux VAE has the 16 EmptySD3LatentImage makes)
    latent.setdefault("vae", link("4", "vae"))
    nodes["show"] = nodes.pop("9")
    ours = image_of(run_graph(nodes, root, manager))
    expected = custom_graph(
        "tiny-flux-dev", cfg=None, positive=flux_guidance(3.5), model=flux_sampling(), seed=7
    )
    assert_same(ours, image_of(run_graph(expected, root, manager)))


@pytest.mark.slow
def test_ksampler_advanced_hands_over_to_custom_sampling_as_comfyui_does(root: Path) -> None:
    """KSamplerAdvanced's leftover-noise latent (divided by 1 - sigma, as ComfyUI hands it on) taken
    up by SamplerCustom without noise over the remaining levels finishes the same picture as one
    KSampler run."""
    from models.flow_sampling import _set_timesteps, make_flow_scheduler
    from models.loading import load_checkpoint
    from models.sampling import SampleJob, sample, sample_custom
    from models.values import Cond, Latent

    checkpoint = load_checkpoint(root / "checkpoints" / "tiny-sd3")
    embeds, pooled = torch.randn(1, 77, 96), torch.randn(1, 96)

    def job(latent: torch.Tensor, **window: Any) -> SampleJob:
        return SampleJob(
            unet=checkpoint.unet,
            scheduler_config=checkpoint.scheduler_config,
            positive=[Cond(embeds, pooled=pooled)],
            negative=[Cond(embeds * 0, pooled=pooled * 0)],
            latent=Latent(latent),
            seed=3,
            steps=4,
            cfg=3.0,
            sampler="euler",
            family="sd3",
            **window,
        )

    empty = torch.zeros(1, 4, 8, 8)
    whole = sample(job(empty))
    handed = sample(job(empty, end_step=2, leftover_noise=True))
    scheduler, kwargs = make_flow_scheduler("euler", checkpoint.scheduler_config, "sd3", 64)
    _set_timesteps(scheduler, 4, "sd3", kwargs, "cpu")
    rest = scheduler.sigmas[2:].to(torch.float32)
    finished = sample_custom(job(handed), "euler", rest, None)
    assert torch.allclose(finished.samples, whole, atol=1e-4)
