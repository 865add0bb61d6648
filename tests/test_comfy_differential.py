"""DifferentialDiffusion against a hand-written denoising loop on a tiny UNet.

The hand loop is the inpainting loop of diffusers' pipelines (Euler, CFG, the known part noised
to the next level after each step) with ComfyUI's rule for the mask: at each step a place may
change when its soft mask value reaches the step's timestep as a fraction of the run's span.
"""

from __future__ import annotations

import math

import pytest
import torch

from models.sampling import DIFFERENTIAL, SampleJob, sample
from models.values import Cond, Latent, ModelRef
from tests.fixtures.tiny_models import SD_SCHEDULER_CONFIG, tiny_sd_unet

STEPS, CFG, SEED = 6, 5.0, 4


def soft_mask() -> torch.Tensor:
    """A left-to-right ramp from 0 to 1 over the 8x8 latent grid."""
    return torch.linspace(0.0, 1.0, 8).repeat(8, 1)[None, None]


def job(unet, extra: dict) -> SampleJob:
    torch.manual_seed(1)
    positive, negative = Cond(torch.randn(1, 77, 32)), Cond(torch.randn(1, 77, 32))
    init = torch.randn(1, 4, 8, 8)
    latent = Latent(init, noise_mask=soft_mask())
    return SampleJob(
        unet, SD_SCHEDULER_CONFIG, [positive], [negative], latent, SEED, STEPS, CFG, "euler", extra=extra
    )


def hand_loop(unet, the_job: SampleJob, strength: float) -> torch.Tensor:
    from diffusers import EulerDiscreteScheduler
    from diffusers.utils.torch_utils import randn_tensor

    scheduler = EulerDiscreteScheduler.from_config(SD_SCHEDULER_CONFIG)
    scheduler.set_timesteps(STEPS)
    init, soft = the_job.latent.samples, the_job.latent.noise_mask
    noise = randn_tensor(init.shape, generator=torch.Generator("cpu").manual_seed(SEED))
    x = noise * scheduler.init_noise_sigma
    embeds = torch.cat([the_job.negative[0].embeds, the_job.positive[0].embeds])
    alphas = scheduler.alphas_cumprod.double()
    table = ((1 - alphas) / alphas).sqrt()  # the model's noise level at each training timestep

    def nearest_timestep(sigma: float) -> int:
        return int((table.log() - math.log(sigma)).abs().argmin())

    first, lowest = nearest_timestep(float(scheduler.sigmas[0])), nearest_timestep(float(table[0]))
    for index, t in enumerate(scheduler.timesteps):
        model_input = scheduler.scale_model_input(x, t)
        with torch.no_grad():
            uncond, cond = unet(torch.cat([model_input] * 2), t, encoder_hidden_states=embeds).sample.chunk(2)
        x = scheduler.step(uncond + CFG * (cond - uncond), t, x).prev_sample
        threshold = (nearest_timestep(float(scheduler.sigmas[index])) - lowest) / (first - lowest)
        mask = (soft >= threshold).float()
        if strength < 1:
            mask = strength * mask + (1 - strength) * soft
        last = index + 1 == len(scheduler.timesteps)
        known = init if last else scheduler.add_noise(init, noise, scheduler.timesteps[index + 1 : index + 2])
        x = (1 - mask) * known + mask * x
    return x


@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_differential_diffusion_matches_a_hand_loop(strength):
    unet = tiny_sd_unet(seed=3)
    the_job = job(unet, {DIFFERENTIAL: strength})
    ours = sample(the_job)
    theirs = hand_loop(unet, the_job, strength)
    assert torch.allclose(ours, theirs, atol=1e-4), float((ours - theirs).abs().max())
    plain = sample(job(unet, {}))  # the soft mask alone blends by its value at every step
    assert not torch.allclose(ours, plain, atol=1e-3)
    # where the mask is 0 the picture is kept, where it is 1 it was repainted from the first step
    init = the_job.latent.samples
    assert torch.allclose(ours[..., 0], init[..., 0], atol=1e-5)


def test_differential_diffusion_node_marks_the_model():
    from nodes.diffusion import DifferentialDiffusion

    model = ModelRef(checkpoint=None)  # type: ignore[arg-type]
    out = DifferentialDiffusion().run(None, model, 0.7)["model"]  # type: ignore[arg-type]
    assert out.differential == 0.7 and model.differential is None


@pytest.mark.slow
def test_differential_diffusion_in_a_workflow(models_root, manager):
    import numpy as np
    from PIL import Image

    from tests.fixtures.models_root import SIZE
    from tests.helpers import link
    from tests.test_comfy_inpaint_range import inpaint_nodes
    from tests.test_diffusion import image_of, run_graph

    ramp = np.tile(np.linspace(0, 255, SIZE).round().astype(np.uint8), (SIZE, 1))
    Image.fromarray(ramp).save(models_root / "inputs" / "ramp.png")

    def pictures(mask_file: str) -> tuple[np.ndarray, np.ndarray]:
        nodes = inpaint_nodes("tiny-sd", 7, 8, True)
        nodes["m"]["inputs"]["path"] = mask_file
        plain = image_of(run_graph(nodes, models_root, manager))
        nodes["dd"] = {"type": "DifferentialDiffusion", "inputs": {"model": link("ck", "model")}}
        nodes["s"]["inputs"]["model"] = link("dd", "model")
        return plain, image_of(run_graph(nodes, models_root, manager))

    plain, differential = pictures("mask.png")
    assert np.array_equal(plain, differential)  # a 0/1 mask: every step keeps the same part
    plain, differential = pictures("ramp.png")
    assert not np.array_equal(plain, differential)  # a soft mask: the kept part shrinks step by step
