"""DreamBooth's class pictures for prior preservation: taken from ``class_images`` when it holds
enough, else drawn by the base model itself from the class prompt (and saved into that folder, with
their prompts as captions, when one was given, so the next run reuses them).

``class_prompt`` may hold several prompts separated by ``|``: pictures are drawn with each in turn,
so the prior can cover everything the model should keep drawing (e.g. several kinds of subject), not
one class alone. A class picture's caption is its same-stem ``.txt`` file when there is one, else the
(first) class prompt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from training.concept.config import ConceptConfig
from training.concept.data import SUFFIXES, Example, caption_of, fit

#: How class pictures are drawn: few steps suffice for the class prior; cfg as SD users use it.
CLASS_STEPS = 20
CLASS_CFG = 5.0


def class_prompts(config: ConceptConfig) -> list[str]:
    return [p.strip() for p in config.class_prompt.split("|") if p.strip()]


def class_examples(config: ConceptConfig, checkpoint: Any, resolution: int, device: str) -> list[Example]:
    """``num_class_images`` class pictures with their captions."""
    prompts = class_prompts(config)
    folder = Path(config.class_images) if config.class_images is not None else None
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES) if folder else []
    found = found[: config.num_class_images]
    examples = [Example(fit(p, resolution), caption_of(p, prompts[0]), p.name) for p in found]
    missing = config.num_class_images - len(examples)
    if missing > 0:
        wanted = [prompts[(len(examples) + i) % len(prompts)] for i in range(missing)]
        drawn = draw(checkpoint, wanted, resolution, config.seed, len(examples))
        for index, (picture, prompt) in enumerate(zip(drawn, wanted, strict=True)):
            name = f"class-{config.seed}-{len(found) + index:04d}.png"
            if folder is not None:
                from PIL import Image

                Image.fromarray(picture).save(folder / name)
                (folder / name).with_suffix(".txt").write_text(prompt + "\n", encoding="utf-8")
            pixels = np.ascontiguousarray(picture.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0)
            examples.append(Example(pixels, prompt, name))
    return examples


def draw(checkpoint: Any, prompts: list[str], resolution: int, seed: int, start: int = 0) -> list[np.ndarray]:
    """uint8 (H, W, 3) pictures of each prompt by the base model (seeds seed * 1000 + start + i)."""
    import torch
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=checkpoint.vae,
        text_encoder=checkpoint.text_encoders[0],
        tokenizer=checkpoint.tokenizers[0],
        unet=checkpoint.unet,
        scheduler=DPMSolverMultistepScheduler.from_config(checkpoint.scheduler_config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    out = []
    for index, prompt in enumerate(prompts):
        generator = torch.Generator().manual_seed(seed * 1000 + start + index)
        with torch.no_grad():
            image = pipe(
                prompt,
                height=resolution,
                width=resolution,
                num_inference_steps=CLASS_STEPS,
                guidance_scale=CLASS_CFG,
                generator=generator,
                output_type="np",
            ).images[0]
        out.append((np.clip(image, 0, 1) * 255).round().astype(np.uint8))
    return out
