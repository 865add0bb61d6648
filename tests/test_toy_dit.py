"""The bundled toy DiT (models/checkpoints/toy-sd3, an SD3-style MMDiT trained by training/dit.py): it
ships as a real SD3 diffusers folder within the toy models' size budget, loads offline through the
studio's loader, was trained on exactly the conditioning the studio's SD3 prompt encoder makes, and its
training is deterministic and resumable.

How well it draws is measured by ``bench/toy_quality.py --tasks text_to_image_dit`` (figures in its
model card and docs/toy-models.md); tests/test_examples.py runs its example workflow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"
FOLDER = MODELS / "checkpoints" / "toy-sd3"
TOY_SD = MODELS / "checkpoints" / "toy-sd"
#: All bundled toy models together (issue 11: at most 60 MB).
BUDGET = 60 * 1000 * 1000
PROMPTS = ["a red circle at the top left and a blue square in the center", ""]


def toy_folders() -> list[Path]:
    return sorted(p for p in MODELS.glob("*/toy-*") if p.is_dir() and not p.is_symlink())


def bytes_on_disk(folder: Path) -> int:
    """The bytes of the folder's files, not counting links (a linked file ships once, in its folder)."""
    total = 0
    for root, dirs, files in os.walk(folder):  # does not descend into linked folders
        for name in files:
            path = Path(root) / name
            if not path.is_symlink():
                total += path.stat().st_size
        dirs[:] = [d for d in dirs if not (Path(root) / d).is_symlink()]
    return total


@pytest.fixture(scope="module")
def checkpoint():
    from models.loading import load_checkpoint

    return load_checkpoint(FOLDER)


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_the_toy_dit_is_an_sd3_folder_without_t5():
    index = json.loads((FOLDER / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusion3Pipeline"
    assert index["transformer"] == ["diffusers", "SD3Transformer2DModel"]
    assert index["text_encoder"] == index["text_encoder_2"] == ["transformers", "CLIPTextModelWithProjection"]
    assert index["text_encoder_3"] == index["tokenizer_3"] == [None, None]
    assert index["scheduler"] == ["diffusers", "FlowMatchEulerDiscreteScheduler"]
    files = [f for f in FOLDER.rglob("*") if f.is_file()]
    assert not [f for f in files if f.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")], "pickle files"
    card = (FOLDER / "README.md").read_text()
    assert "How it was made" in card
    assert "python -m training.dit " in card and "python -m training.export_dit " in card


def test_all_toy_models_fit_the_budget():
    sizes = {str(f.relative_to(MODELS)): bytes_on_disk(f) for f in toy_folders()}
    assert "checkpoints/toy-sd3" in sizes
    assert sum(sizes.values()) <= BUDGET, sizes


def test_the_studio_loads_it_offline_as_sd3(checkpoint):
    from diffusers import SD3Transformer2DModel

    assert checkpoint.family == "sd3"
    assert isinstance(checkpoint.unet, SD3Transformer2DModel)
    assert len(checkpoint.text_encoders) == len(checkpoint.tokenizers) == 2
    assert tuple(checkpoint.extra["encoders"]) == ("clip_l", "clip_g")
    assert checkpoint.vae.config.latent_channels == checkpoint.unet.config.in_channels == 4


def test_it_was_trained_on_the_conditioning_the_studio_makes(checkpoint):
    """The studio's SD3 prompt encoder (no T5: 77 CLIP tokens, CLIP-L ‖ CLIP-G) on the exported folder
    gives what training.dit computed from the toy SD's text encoder."""
    from models.dit_prompts import encode_dit
    from training.dit import FrozenText, load_frozen_parts

    _, text_encoder = load_frozen_parts(TOY_SD, torch.device("cpu"))
    trained = FrozenText(text_encoder, torch.device("cpu"))
    for prompt in PROMPTS:
        embeds, pooled = encode_dit(
            "sd3",
            checkpoint.tokenizers,
            checkpoint.text_encoders,
            [prompt, prompt],
            roles=checkpoint.extra["encoders"],
        )
        want_embeds, want_pooled = trained([prompt])
        assert embeds.shape == (1, 77, checkpoint.unet.config.joint_attention_dim)
        torch.testing.assert_close(embeds, want_embeds, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(pooled, want_pooled, rtol=1e-4, atol=1e-4)


def train_tiny(out: Path, steps: int) -> None:
    from training.dit import main

    args = ["--out", str(out), "--sd", str(TOY_SD), "--steps", str(steps), "--batch", "2"]
    args += ["--hidden", "32", "--layers", "1", "--head-dim", "16", "--warmup", "1", "--ema", "0.9"]
    args += ["--threads", "1", "--save-every", "1"]
    assert main(args) == 0


@pytest.mark.slow  # about 15 s (most of it loading), more on a busy machine
def test_training_is_deterministic_and_resumes(tmp_path, keep_threads):
    from safetensors.torch import load_file

    from training.run_folder import read_log, read_state

    train_tiny(tmp_path / "straight", 2)
    train_tiny(tmp_path / "resumed", 1)
    assert read_state(tmp_path / "resumed").step == 1
    train_tiny(tmp_path / "resumed", 2)
    assert read_state(tmp_path / "resumed").status == "done"
    for name in ("transformer", "ema_transformer"):
        straight = load_file(str(tmp_path / "straight" / "state" / f"{name}.safetensors"))
        resumed = load_file(str(tmp_path / "resumed" / "state" / f"{name}.safetensors"))
        assert straight.keys() == resumed.keys()
        assert all(torch.equal(straight[k], resumed[k]) for k in straight), name
    losses = [r["loss"] for r in read_log(tmp_path / "straight")]
    assert losses == [r["loss"] for r in read_log(tmp_path / "resumed")] and len(losses) == 2


def test_the_example_workflow_draws_what_the_sd3_pipeline_draws(tmp_path):
    """The studio's example (workflows/txt2img-sd3.json, a few steps) against StableDiffusion3Pipeline
    on the same folder, prompt, seed and steps, given the studio's prompt rule (no zero T5 block)."""
    import importlib.util

    import numpy as np

    from training.export_dit import load_pipeline, prompt_embeds
    from training.quality import Studio

    spec = importlib.util.spec_from_file_location("toy_quality", REPO / "bench" / "toy_quality.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    nodes = bench.dit_nodes(PROMPTS[0], 7)
    nodes["s"]["inputs"]["steps"] = 4
    ours = Studio(folder=tmp_path).picture(nodes, 7)
    pipe = load_pipeline(FOLDER)
    embeds, pooled = prompt_embeds(pipe, [PROMPTS[0]])
    empty, empty_pooled = prompt_embeds(pipe, [""])
    out = pipe(
        prompt_embeds=embeds,
        pooled_prompt_embeds=pooled,
        negative_prompt_embeds=empty,
        negative_pooled_prompt_embeds=empty_pooled,
        height=32,
        width=32,
        num_inference_steps=4,
        guidance_scale=nodes["s"]["inputs"]["cfg"],
        generator=torch.Generator("cpu").manual_seed(7),
        output_type="np",
    ).images[0]
    theirs = (np.clip(out, 0, 1) * 255).round().astype(np.uint8)
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1
