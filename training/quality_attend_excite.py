"""Attend-and-Excite on the toy world: how often both objects of a two-object prompt appear, with and
without it, on the same held-out scenes and seeds.

    .venv/bin/python bench/toy_quality.py --tasks attend_excite --n 100

The scenes are ``training.quality.held_out_scenes(n, seed, shapes=2)``: two shapes in distinct cells,
at least one of them a (shape, color, position) combination held out of training. Each scene is drawn
from two prompts:

- ``positions``: its caption, "a red circle at the top left and a blue square in the center";
- ``bare``: the same shapes without position words, "a red circle and a blue square" (the toy model was
  trained on captions that always place every shape, so this is where it is on unfamiliar ground).

Each prompt is drawn by toy-sd (DPM++ 2M, cfg 5, 20 steps; the text_to_image task's settings) with the
plain KSampler and with AttendAndExcite before it (the subjects are the shape words, by token position,
so two shapes of one kind are both excited), same seed. A picture has **both objects** when, for each of
the prompt's two shapes, the analyzer (``toyworld.analyze``) reads a shape of that kind and that color,
two distinct detections for the two (a one-to-one matching; positions are not asked for).
``--checkpoint`` draws with another checkpoint (toy-sd-grounded, say) and ``--subjects colors_and_kinds``
excites each shape's color word as well as its kind. For the
``positions`` prompts the line also gives ``placed``: both objects found with kind, color *and* cell as
the caption says (``toyworld.score``'s "exact" without the count).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from training.quality import CFG, SAMPLER, SD, SIZE, STEPS, Studio, held_out_scenes, link, txt2img_nodes

#: The AttendAndExcite settings measured (the node's defaults but where the toy model asked otherwise;
#: see docs/attend-and-excite.md).
TOY_SETTINGS: dict[str, Any] = {
    "max_iter_to_alter": 25,
    "scale_factor": 20.0,
    "thresholds": "0: 0.05, 10: 0.5, 20: 0.8",
}


def bare_prompt(scene: Any) -> str:
    """The scene's shapes in reading order without position words: "a red circle and a blue square"."""
    from toyworld import caption

    return caption(scene, positions=False)


def subject_positions(tokenizer: Any, prompt: str, words: Sequence[str]) -> str:
    """The token positions (1 = first word) of ``words`` (each found after the one before; every token of
    a word that is several, as "cyan"), as the AttendAndExcite node takes them ("3, 9")."""
    ids = tokenizer(prompt, add_special_tokens=False).input_ids
    positions, start = [], 0
    for word in words:
        tokens = tokenizer(word, add_special_tokens=False).input_ids
        at = next(i for i in range(start, len(ids)) if ids[i : i + len(tokens)] == tokens)
        positions.extend(range(at + 1, at + 1 + len(tokens)))
        start = at + len(tokens)
    return ", ".join(str(p) for p in positions)


#: Which words of each shape are excited: its kind (the pipeline's usage: the nouns), or its color too.
SUBJECTS: dict[str, tuple[str, ...]] = {"kinds": ("kind",), "colors_and_kinds": ("color", "kind")}


def caption_of(scene: Any) -> str:
    from toyworld import caption

    return caption(scene)


#: The prompts measured: name -> (prompt of a scene, shapes per scene).
VARIANTS: dict[str, tuple[Any, int]] = {
    "positions": (caption_of, 2),
    "bare": (bare_prompt, 2),
    "three": (caption_of, 3),
}


def excite_nodes(
    prompt: str, seed: int, subjects: str, settings: dict[str, Any], checkpoint: str = SD
) -> dict[str, Any]:
    """``txt2img_nodes`` with AttendAndExcite between the checkpoint and the sampler."""
    nodes = txt2img_nodes(prompt, seed, checkpoint)
    nodes["ae"] = {
        "type": "AttendAndExcite",
        "inputs": {
            "model": link("ck", "model"),
            "clip": link("ck", "clip"),
            "text": prompt,
            "subjects": subjects,
            **settings,
        },
    }
    nodes["s"]["inputs"]["model"] = link("ae", "model")
    nodes["s"]["inputs"]["positive"] = link("ae", "conditioning")
    return nodes


def all_present(scene: Any, picture: np.ndarray) -> bool:
    """Whether the analyzer reads each of the scene's shapes (kind and color) as distinct detections."""
    from toyworld import analyze

    try:
        found = [(d.kind, d.color) for d in analyze(picture).shapes]
    except ValueError:  # a picture the analyzer cannot read (e.g. a blown-up one): nothing found
        return False
    wanted = [(s.kind, s.color) for s in scene.shapes]
    if len(found) < len(wanted):
        return False
    return any(
        all(found[j] == w for j, w in zip(chosen, wanted, strict=True))
        for chosen in itertools.permutations(range(len(found)), len(wanted))
    )


def drawn(scene: Any, picture: np.ndarray) -> bool:
    """Whether the analyzer reads at least as many shapes as the scene has (whatever their kind and color):
    no object left out."""
    from toyworld import analyze

    try:
        return len(analyze(picture).shapes) >= len(scene.shapes)
    except ValueError:
        return False


def placed(scene: Any, picture: np.ndarray) -> bool:
    """Whether every shape is read with the caption's kind, color and cell."""
    from toyworld import score

    try:
        return all(row["all"] for row in score(scene, picture)["shapes"])
    except ValueError:
        return False


def attend_excite(
    studio: Studio,
    n: int,
    seed: int = 8,
    settings: dict[str, Any] | None = None,
    save: str | None = None,
    variants: Sequence[str] = ("positions", "bare", "three"),
    checkpoint: str = SD,
    subjects_of: str = "kinds",
) -> dict[str, Any]:
    """Both objects present, without and with Attend-and-Excite, for captions with and without positions,
    drawn by ``checkpoint``. ``save``: a path prefix for a contact sheet of the first pictures (plain
    above, excited below)."""
    from transformers import CLIPTokenizer

    settings = {**TOY_SETTINGS, **(settings or {})}
    tokenizer = CLIPTokenizer.from_pretrained(
        str(studio.services.paths.find("checkpoints", checkpoint) / "tokenizer")
    )
    figures: dict[str, Any] = {
        "task": "attend_excite",
        "n": n,
        "checkpoint": checkpoint,
        "subjects": subjects_of,
    }
    for name in variants:
        prompt_of, shapes = VARIANTS[name]
        plain_rows, excited_rows, sheet = [], [], []
        for i, scene in enumerate(held_out_scenes(n, seed, shapes=shapes)):
            prompt = prompt_of(scene)
            words = [
                getattr(s, attribute)
                for s in sorted(scene.shapes, key=lambda s: s.cell)
                for attribute in SUBJECTS[subjects_of]
            ]
            subjects = subject_positions(tokenizer, prompt, words)
            plain = studio.picture(txt2img_nodes(prompt, seed + i, checkpoint), seed + i)
            excited = studio.picture(excite_nodes(prompt, seed + i, subjects, settings, checkpoint), seed + i)
            plain_rows.append((all_present(scene, plain), placed(scene, plain), drawn(scene, plain)))
            excited_rows.append((all_present(scene, excited), placed(scene, excited), drawn(scene, excited)))
            if len(sheet) < 16:
                sheet.append((plain, excited))
        for index, figure in ((0, "present"), (1, "placed"), (2, "drawn")):
            if figure == "placed" and prompt_of is bare_prompt:
                continue  # no positions asked for
            figures[f"{name}_{figure}_plain"] = round(float(np.mean([r[index] for r in plain_rows])), 3)
            figures[f"{name}_{figure}_excited"] = round(float(np.mean([r[index] for r in excited_rows])), 3)
        if save:
            _contact_sheet(sheet, f"{save}-{name}.png")
    figures["settings"] = {**settings, "sampler": SAMPLER, "cfg": CFG, "steps": STEPS, "size": SIZE}
    return figures


def _contact_sheet(pairs: list[tuple[np.ndarray, np.ndarray]], path: str) -> None:
    from PIL import Image

    top = np.concatenate([p for p, _ in pairs], axis=1)
    bottom = np.concatenate([e for _, e in pairs], axis=1)
    sheet = np.concatenate([top, bottom], axis=0)
    Image.fromarray(sheet).resize((sheet.shape[1] * 3, sheet.shape[0] * 3), Image.NEAREST).save(path)


def main(argv: list[str] | None = None) -> int:
    """Measure with other settings: ``python -m training.quality_attend_excite --n 30 --set
    scale_factor=40 --save /tmp/ae``; prints one JSON line."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--set", action="append", default=[], help="an AttendAndExcite input: name=value")
    parser.add_argument("--save", default=None, help="path prefix for contact sheets")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", default="positions,bare,three", help="which prompts (see VARIANTS)")
    parser.add_argument("--subjects", choices=sorted(SUBJECTS), default="kinds", help="which words to excite")
    parser.add_argument(
        "--checkpoint", default=SD, help="the checkpoint that draws (a models/checkpoints name)"
    )
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    settings: dict[str, Any] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        settings[key] = value if key in ("thresholds", "subjects") else json.loads(value)
    variants = args.variants.split(",")
    figures = attend_excite(
        Studio(), args.n, args.seed, settings, args.save, variants, args.checkpoint, args.subjects
    )
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
