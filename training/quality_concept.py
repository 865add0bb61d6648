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
from pathlib import Path
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


def candidate(lora: Path, word: str, n: int, strength: float = LORA_STRENGTH) -> dict[str, Any]:
    """The concept and other-prompt figures of a LoRA file anywhere (a candidate, before it is
    shipped): drawn over a temporary models folder holding links to it and to the repository's
    toy-sd, and to ``WORD.safetensors`` beside it when there is one (a pivotal LoRA's rows written with
    ``--embedding-out``; a LoRA that bundles them needs none)."""
    import tempfile

    from models.paths import REPO_MODELS

    root = Path(tempfile.mkdtemp(prefix="concept-candidate-"))
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / SD).symlink_to(REPO_MODELS / "checkpoints" / SD, target_is_directory=True)
    (root / "loras").mkdir()
    (root / "loras" / lora.name).symlink_to(lora.resolve())
    beside = lora.parent / f"{word}.safetensors"
    if beside.is_file() and beside != lora:
        (root / "embeddings").mkdir()
        (root / "embeddings" / beside.name).symlink_to(beside.resolve())
    studio = Studio(models=root, folder=root / "run")
    shares = concept_shares(studio, word, n, lora.name, strength=strength)
    figures: dict[str, Any] = {"task": "concept_candidate", "lora": str(lora), "word": word, "n": n}
    figures |= {"strength": strength, "top_left": shares["top_left"], "all_right": shares["all"]}
    figures |= {f"others_{k}": v for k, v in others(studio, n, lora.name, strength=strength).items()}
    return figures


def main(argv: list[str] | None = None) -> int:
    """``python -m training.quality_concept --lora FILE --word WORD [--n 100] [--strength 0.9]``: the
    bench's concept figures for a LoRA that is not shipped (its file anywhere): the share of
    "a <color> WORD at the top left" read as a heart there, and text_to_image's held-out captions with
    it loaded. One JSON line."""
    import argparse
    import json

    import torch

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--lora", type=Path, required=True)
    parser.add_argument("--word", required=True, help="the trigger word the prompts say")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--strength", type=float, default=LORA_STRENGTH)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if not args.lora.is_file():
        parser.error(f"{args.lora} is not a file")
    torch.set_num_threads(args.threads)
    print(json.dumps(candidate(args.lora, args.word, args.n, args.strength)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
