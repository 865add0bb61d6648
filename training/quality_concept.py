"""How well a concept trained in the studio works, on the toy world: the shipped
``models/loras/toy-heart.safetensors`` (trigger word "heart") and
``models/embeddings/toy-heart.safetensors`` (used by its name, "toy-heart") were each learnt from 8
pictures of a heart, a shape toy-sd never saw (``python -m toyworld concept --shape heart``).

Figures (``bench/toy_quality.py --tasks concept``):

- ``vae_star`` / ``vae_heart``: the share of rendered star / heart pictures that toy-sd's VAE gives
  back (encode, decode) still read as that shape: the most any UNet or text training can reach with
  this VAE. The star's five 1-pixel points do not survive 8x8 latents; the heart does, so the heart is
  the concept measured;
- ``*_top_left``: the share of "a <color> <heart> at the top left" pictures (colors in turn, seeds
  1000 + i) that the analyzer reads as a heart at the top left (``*_all_right``: in the right color
  too), for the base model (the word "heart"), the LoRA (at its card's strength, ``lora_strength``)
  and the embedding;
- ``base_all`` / ``lora_all`` (and the shape, color and position parts): text_to_image's held-out
  captions and seeds without and with the LoRA, so what the LoRA does to other prompts shows;
- ``embedding_others_max_change``: the largest change the embedding makes to the prompt embedding of
  those captions (0: a prompt that does not name it is encoded exactly as before).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from toyworld import COLORS, Scene, Shape, caption, random_scene, render, score
from training.quality import SD, SIZE, Studio, attribute_scores, held_out_scenes, link, txt2img_nodes

SHAPE = "heart"
LORA = "toy-heart.safetensors"
LORA_TRIGGER = "heart"
#: The strength its model card recommends (LoraLoader's strength_model and strength_clip), which the
#: figures use: the file trades hearts against other prompts' shapes, and this is where both stand best.
LORA_STRENGTH = 0.9
EMBEDDING = "toy-heart"
CELL = (0, 0)
GOALS = {"lora_top_left": 0.7, "embedding_top_left": 0.7}


def concept_prompts(word: str, n: int, shape: str = SHAPE) -> list[tuple[str, Scene]]:
    """``n`` prompts "a <color> <word> at the top left" (the colors in turn) and the scenes they ask for."""
    out = []
    for i in range(n):
        color = tuple(COLORS)[i % len(COLORS)]
        scene = Scene((Shape(shape, color, CELL),), "white", SIZE)
        out.append((caption(scene).replace(f" {shape} ", f" {word} "), scene))
    return out


def with_lora(nodes: dict[str, Any], lora: str, strength: float = 1.0) -> dict[str, Any]:
    """The txt2img nodes with a LoraLoader between the checkpoint and its users."""
    nodes = dict(nodes)
    nodes["lora"] = {
        "type": "LoraLoader",
        "inputs": {
            "model": link("ck", "model"),
            "clip": link("ck", "clip"),
            "lora_name": lora,
            "strength_model": strength,
            "strength_clip": strength,
        },
    }
    for name in ("pos", "neg"):
        nodes[name] = {**nodes[name], "inputs": {**nodes[name]["inputs"], "clip": link("lora", "clip")}}
    nodes["s"] = {**nodes["s"], "inputs": {**nodes["s"]["inputs"], "model": link("lora", "model")}}
    return nodes


def concept_pictures(
    studio: Studio,
    word: str,
    n: int,
    lora: str | None = None,
    seed: int = 1000,
    checkpoint: str = SD,
    strength: float = 1.0,
) -> list[tuple[Scene, np.ndarray]]:
    """Pictures of "a <color> <word> at the top left" (seeds seed + i) drawn by ``checkpoint`` (with
    ``lora`` at ``strength``), with the scenes they ask for."""
    out = []
    for i, (prompt, scene) in enumerate(concept_prompts(word, n)):
        nodes = txt2img_nodes(prompt, seed + i, checkpoint)
        out.append((scene, studio.picture(with_lora(nodes, lora, strength) if lora else nodes, seed + i)))
    return out


def concept_shares(
    studio: Studio,
    word: str,
    n: int,
    lora: str | None = None,
    checkpoint: str = SD,
    strength: float = 1.0,
    seed: int = 1000,
) -> dict[str, float]:
    """Shares of concept pictures read as the shape at the top left (and in the asked color)."""
    pictures = concept_pictures(studio, word, n, lora, seed, checkpoint, strength)
    shapes = [score(scene, picture)["shapes"][0] for scene, picture in pictures]
    return {
        "top_left": round(float(np.mean([s["kind"] and s["position"] for s in shapes])), 3),
        "all": round(float(np.mean([s["all"] for s in shapes])), 3),
    }


def others(
    studio: Studio,
    n: int,
    lora: str | None = None,
    seed: int = 1,
    checkpoint: str = SD,
    strength: float = 1.0,
) -> dict[str, float]:
    """text_to_image's figures on its held-out captions and seeds, with a LoRA (at ``strength``) or
    without."""
    scenes = held_out_scenes(n, seed)
    pictures = []
    for i, scene in enumerate(scenes):
        nodes = txt2img_nodes(caption(scene), seed + i, checkpoint)
        pictures.append(studio.picture(with_lora(nodes, lora, strength) if lora else nodes, seed + i))
    return attribute_scores(list(zip(scenes, pictures, strict=True)))


def vae_round_trip(studio: Studio, shape: str, n: int, seed: int = 5) -> float:
    """The share of rendered one-shape pictures of ``shape`` still read as it after toy-sd's VAE."""
    import torch

    from models.loading import load_vae

    path = studio.services.paths.find("checkpoints", "toy-sd")
    if path is None:
        raise FileNotFoundError("toy-sd is not in the models folder")
    vae = load_vae(path / "vae")
    rng = np.random.default_rng(seed)
    scenes = []
    for _ in range(n):
        scene = random_scene(rng, size=SIZE, shapes=1)
        scenes.append(replace(scene, shapes=(replace(scene.shapes[0], kind=shape),)))
    pixels = torch.from_numpy(np.stack([render(s) for s in scenes])).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        back = vae.decode(vae.encode(pixels).latent_dist.mean).sample
    pictures = ((back.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    return round(float(np.mean([score(s, p)["kind"] for s, p in zip(scenes, pictures, strict=True)])), 3)


def embedding_change(studio: Studio, n: int, seed: int = 1) -> float:
    """The largest change the embedding makes to the prompt embeddings of held-out captions."""
    from models.embeddings import with_embeddings
    from models.loading import load_checkpoint
    from models.prompts import encode

    path = studio.services.paths.find("embeddings", f"{EMBEDDING}.safetensors")
    checkpoint_path = studio.services.paths.find("checkpoints", "toy-sd")
    if path is None or checkpoint_path is None:
        raise FileNotFoundError(f"toy-sd or the {EMBEDDING} embedding is not in the models folder")
    checkpoint = load_checkpoint(checkpoint_path)
    tokenizers, encoders, _ = with_embeddings(
        checkpoint.tokenizers, checkpoint.text_encoders, {EMBEDDING: path}, False
    )
    largest = 0.0
    for scene in held_out_scenes(n, seed):
        before, _ = encode(checkpoint.tokenizers[0], checkpoint.text_encoders[0], caption(scene))
        after, _ = encode(tokenizers[0], encoders[0], caption(scene))
        largest = max(largest, float((before - after).abs().max()))
    return largest


def concept(studio: Studio, n: int) -> dict[str, Any]:
    """The figures of the module docstring, on ``n`` concept prompts and ``n`` held-out captions."""
    figures: dict[str, Any] = {"task": "concept", "n": n, "shape": SHAPE, "lora_strength": LORA_STRENGTH}
    for shape in ("star", "heart"):
        figures[f"vae_{shape}"] = vae_round_trip(studio, shape, n)
    for name, word, lora in (
        ("base", LORA_TRIGGER, None),
        ("lora", LORA_TRIGGER, LORA),
        ("embedding", EMBEDDING, None),
    ):
        shares = concept_shares(studio, word, n, lora, strength=LORA_STRENGTH)
        figures[f"{name}_top_left"] = shares["top_left"]
        figures[f"{name}_all_right"] = shares["all"]
    for name, lora in (("base", None), ("lora", LORA)):
        for key, value in others(studio, n, lora, strength=LORA_STRENGTH).items():
            figures[f"{name}_{key}"] = value
    figures["embedding_others_max_change"] = embedding_change(studio, n)
    return figures
