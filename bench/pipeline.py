"""Text-to-image through our graph against the diffusers pipeline: wall-time ratio and equality.

    .venv/bin/python bench/pipeline.py [--runs 5] [--steps 20] [--full sd15|sdxl]

Both run the same model, prompt, seed, sampler and steps, alternating, after a warm-up
of each; the figure is the ratio of median wall times (graph / pipeline; goal: at most
1.03) and whether the images are equal to uint8 rounding. The graph run includes what a
user's run does besides sampling (planning, signatures, events, decoding); the cache is
cleared before each run, the model stays loaded in the manager, as in the studio.

On CPU it uses a tiny random model saved in the real diffusers format. With ``--full``
(meant for a GPU) it builds a full-size SD1.5 or SDXL UNet from the shipped config
folders with random weights (speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def emit(**figure: Any) -> None:
    print(json.dumps(figure), flush=True)


def build_model(root: Path, full: str | None) -> tuple[str, int]:
    """A checkpoint folder under ``root/checkpoints``; returns its name and the image size."""
    from tests.fixtures.tiny_models import save_tiny_sd_folder

    if not full:
        save_tiny_sd_folder(root / "checkpoints" / "bench-tiny")
        return "bench-tiny", 64
    import torch
    from diffusers import (
        AutoencoderKL,
        DiffusionPipeline,
        EulerDiscreteScheduler,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from models.tokenizer import clip_tokenizer

    configs = REPO / "models" / "configs" / full
    torch.manual_seed(0)
    parts: dict[str, Any] = {
        "unet": UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(configs / "unet")),
        "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(configs / "vae")),
        "text_encoder": CLIPTextModel(
            CLIPTextConfig.from_json_file(configs / "text_encoder" / "config.json")
        ),
        "tokenizer": clip_tokenizer(),
        "scheduler": EulerDiscreteScheduler.from_config(
            json.loads((configs / "scheduler" / "scheduler_config.json").read_text())
        ),
    }
    if full == "sdxl":
        parts["text_encoder_2"] = CLIPTextModelWithProjection(
            CLIPTextConfig.from_json_file(configs / "text_encoder_2" / "config.json")
        )
        parts["tokenizer_2"] = clip_tokenizer("!")
        from diffusers import StableDiffusionXLPipeline

        pipe: Any = StableDiffusionXLPipeline(**parts)
    else:
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline(
            **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
    assert isinstance(pipe, DiffusionPipeline)
    pipe.save_pretrained(root / "checkpoints" / f"bench-{full}", safe_serialization=True)
    return f"bench-{full}", 1024 if full == "sdxl" else 512


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--full", choices=("sd15", "sdxl"), default=None)
    args = parser.parse_args()

    import numpy as np
    import torch
    from diffusers import DiffusionPipeline

    from graph.executor import Executor
    from graph.validate import validate
    from models.manager import ModelManager
    from models.paths import ModelPaths
    from models.sampling import make_scheduler
    from models.services import Services
    from nodes.base import RunSettings
    from nodes.registry import default_registry

    root = Path(tempfile.mkdtemp(prefix="bench-models-"))
    name, size = build_model(root, args.full)
    manager = ModelManager()
    services = Services.sharing(manager, ModelPaths.with_roots([root]))
    device, dtype = manager.device, manager.dtype
    prompt, seed, sampler = "a red circle at the top left", 1234, "euler"
    workflow = json.loads((REPO / "workflows" / "txt2img.json").read_text())
    nodes = workflow["nodes"]
    nodes["ck"]["inputs"]["ckpt_name"] = name
    nodes["pos"]["inputs"]["text"] = prompt
    nodes["neg"]["inputs"]["text"] = ""
    nodes["lat"]["inputs"].update(width=size, height=size)
    nodes["s"]["inputs"].update(seed=seed, steps=args.steps, sampler=sampler, cfg=7.5)
    nodes["save"] = {"type": "PreviewImage", "inputs": {"images": {"node": "d", "output": "image"}}}
    registry = default_registry(services=services)
    checked = validate(workflow, registry)
    assert checked.ok, [str(i) for i in checked.issues]
    executor = Executor(registry)
    settings = RunSettings(services=services, output_dir=root / "out")

    pipe = DiffusionPipeline.from_pretrained(
        str(root / "checkpoints" / name), local_files_only=True, dtype=dtype
    ).to(device)
    pipe.scheduler = make_scheduler(sampler, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def ours() -> np.ndarray:
        executor.cache.clear()
        result = executor.run(checked.workflow, settings=settings)
        assert result.status == "done", result.error
        return result.outputs["save"]["images"]

    def theirs() -> np.ndarray:
        return pipe(
            prompt,
            num_inference_steps=args.steps,
            guidance_scale=7.5,
            height=size,
            width=size,
            generator=torch.Generator("cpu").manual_seed(seed),
            output_type="np",
        ).images

    def timed(fn: Any) -> tuple[float, np.ndarray]:
        sync()
        start = time.perf_counter()
        image = fn()
        sync()
        return time.perf_counter() - start, image

    for _ in range(2):  # warm-up of each
        ours(), theirs()
    graph_times, pipe_times = [], []
    image_ours = image_theirs = None
    for _ in range(args.runs):
        seconds, image_ours = timed(ours)
        graph_times.append(seconds)
        seconds, image_theirs = timed(theirs)
        pipe_times.append(seconds)
    a = (np.clip(image_ours, 0, 1) * 255).round().astype(int)
    b = (np.clip(image_theirs, 0, 1) * 255).round().astype(int)
    graph_ms, pipe_ms = statistics.median(graph_times) * 1e3, statistics.median(pipe_times) * 1e3
    emit(
        bench="pipeline",
        model=name,
        device=device,
        dtype=str(dtype).removeprefix("torch."),
        size=size,
        steps=args.steps,
        runs=args.runs,
        sampler=sampler,
        graph_ms_median=round(graph_ms, 2),
        pipeline_ms_median=round(pipe_ms, 2),
        ratio=round(graph_ms / pipe_ms, 4),
        goal_ratio=1.03,
        images_equal_to_uint8_rounding=bool(np.abs(a - b).max() <= 1),
        max_uint8_difference=int(np.abs(a - b).max()),
        torch=torch.__version__,
    )


if __name__ == "__main__":
    main()
