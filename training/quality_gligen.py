"""GLIGEN boxes against regional prompting on held-out two-object toy scenes (bench/toy_quality.py's
``gligen`` and ``regions`` tasks).

Both draw the same held-out two-shape scenes with the same seeds, with toy-sd (DPM++ 2M, cfg 5,
20 steps), and the analyzer reads each expected shape's kind, color and cell:

- ``gligen``: one prompt naming the shapes without their places ("a red circle and a blue square"),
  and a GLIGENTextBoxApply per shape ("a red circle" in its grid cell, ``beta`` 1.0 as in
  workflows/gligen.json and ComfyUI) with the bundled toy-gligen adapter: only the boxes can put the
  shapes in their cells. The task also draws the ``regions`` pictures of the same scenes and seeds,
  so its ``*_vs_regions`` figures (GLIGEN's minus regions') compare the two within one run.
- ``regions``: the studio's regional prompting (workflows/regional-prompt.json): each shape's own
  phrase with its place ("a red circle at the top left") limited to its cell by ConditioningRegion,
  the regions combined. The ``gligen`` task also draws them with the boxes' own words, the phrase
  without its place (``regions_same_words``): toy-sd reads place words better than any box or mask,
  and only the regions get them otherwise.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from toyworld import Scene, caption
from toyworld.world import article, join_phrases
from training.quality import CFG, SAMPLER, SD, SIZE, STEPS, Studio, attribute_scores, held_out_scenes, link

GLIGEN = "toy-gligen.safetensors"
#: The share of the steps with the boxes on: 1.0, every step, as ComfyUI and workflows/gligen.json
#: (the pipeline's default scheduled sampling is 0.3, the ``gligen_beta0.3`` variant).
BETA = 1.0
#: The figures of :func:`gligen` also given as GLIGEN's minus regions' (``position_vs_regions``...).
COMPARED = ("shape", "color", "position", "all", "count")


def phrase(shape: Any) -> str:
    """``"a red circle"``: what goes in a shape's box."""
    return f"{article(shape.color)} {shape.color} {shape.kind}"


def cell_box(shape: Any, size: int = SIZE) -> tuple[int, int, int, int]:
    """(x, y, width, height) in whole pixels of the shape's grid cell."""
    row, col = shape.cell
    x0, x1 = round(col * size / 3), round((col + 1) * size / 3)
    y0, y1 = round(row * size / 3), round((row + 1) * size / 3)
    return x0, y0, x1 - x0, y1 - y0


def placeless_prompt(scene: Scene) -> str:
    """The scene's shapes without their places: "a red circle and a blue square"."""
    return join_phrases([phrase(s) for s in sorted(scene.shapes, key=lambda s: s.cell)])


def base_nodes(prompt: str, positive: dict[str, str], seed: int, checkpoint: str = SD) -> dict[str, Any]:
    return {
        "ck": {"type": "CheckpointLoader", "inputs": {"ckpt_name": checkpoint}},
        "pos": {"type": "CLIPTextEncode", "inputs": {"clip": link("ck", "clip"), "text": prompt}},
        "neg": {"type": "CLIPTextEncode", "inputs": {"clip": link("ck", "clip"), "text": ""}},
        "lat": {
            "type": "EmptyLatent",
            "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1, "vae": link("ck", "vae")},
        },
        "s": {
            "type": "Sampler",
            "inputs": {
                "model": link("ck", "model"),
                "positive": positive,
                "negative": link("neg", "conditioning"),
                "latent": link("lat", "latent"),
                "seed": seed,
                "steps": STEPS,
                "cfg": CFG,
                "sampler": SAMPLER,
                "denoise": 1.0,
            },
        },
        "d": {"type": "VAEDecode", "inputs": {"vae": link("ck", "vae"), "latent": link("s", "latent")}},
        "show": {"type": "PreviewImage", "inputs": {"images": link("d", "image")}},
    }


def gligen_nodes(
    scene: Scene,
    seed: int,
    prompt: str | None = None,
    beta: float = BETA,
    checkpoint: str = SD,
    adapter: str = GLIGEN,
) -> dict[str, Any]:
    """The scene's shapes as GLIGEN boxes (their cells) on a prompt (``placeless_prompt`` by default),
    drawn by ``checkpoint`` with the GLIGEN file ``adapter``."""
    positive = link("pos", "conditioning")
    boxes: dict[str, Any] = {"gl": {"type": "GLIGENLoader", "inputs": {"gligen_name": adapter}}}
    for index, shape in enumerate(sorted(scene.shapes, key=lambda s: s.cell)):
        x, y, width, height = cell_box(shape, scene.size)
        boxes[f"box{index}"] = {
            "type": "GLIGENTextBoxApply",
            "inputs": {
                "conditioning_to": positive,
                "clip": link("ck", "clip"),
                "gligen_textbox_model": link("gl", "gligen"),
                "text": phrase(shape),
                "width": width,
                "height": height,
                "x": x,
                "y": y,
                "beta": beta,
            },
        }
        positive = link(f"box{index}", "conditioning")
    text = placeless_prompt(scene) if prompt is None else prompt
    return {**base_nodes(text, positive, seed, checkpoint), **boxes}


def region_nodes(scene: Scene, seed: int, checkpoint: str = SD, places: bool = True) -> dict[str, Any]:
    """The scene's shapes as regional prompts: each shape's phrase with its place (``places``; else the
    phrase alone, "a red circle", the words GLIGEN's boxes get), in its cell."""
    shapes = sorted(scene.shapes, key=lambda s: s.cell)
    regions: dict[str, Any] = {}
    combined: dict[str, str] | None = None
    for index, shape in enumerate(shapes):
        row, col = shape.cell
        regions[f"text{index}"] = {
            "type": "CLIPTextEncode",
            "inputs": {"clip": link("ck", "clip"), "text": shape.phrase() if places else phrase(shape)},
        }
        regions[f"region{index}"] = {
            "type": "ConditioningRegion",
            "inputs": {
                "conditioning": link(f"text{index}", "conditioning"),
                "x": col / 3,
                "y": row / 3,
                "width": 1 / 3,
                "height": 1 / 3,
                "strength": 1.0,
            },
        }
        here = link(f"region{index}", "conditioning")
        if combined is not None:
            regions[f"both{index}"] = {
                "type": "ConditioningCombine",
                "inputs": {"conditioning_a": combined, "conditioning_b": here},
            }
            here = link(f"both{index}", "conditioning")
        combined = here
    assert combined is not None
    nodes = {**base_nodes("", combined, seed, checkpoint), **regions}
    del nodes["pos"]
    return nodes


def _measure(studio: Studio, task: str, n: int, seed: int, build: Any) -> dict[str, Any]:
    scenes = held_out_scenes(n, seed, shapes=2)
    pictures = [studio.picture(build(s, seed + i), seed + i) for i, s in enumerate(scenes)]
    return {"task": task, "n": n, **attribute_scores(list(zip(scenes, pictures, strict=True)))}


def gligen(
    studio: Studio, n: int, seed: int = 11, checkpoint: str = SD, adapter: str = GLIGEN
) -> dict[str, Any]:
    """Held-out two-shape scenes from GLIGEN boxes (beta 1.0) and a prompt without places, with
    regional prompting's figures on the same scenes and seeds (``regions_*``) and the differences
    (``*_vs_regions``, positive where the boxes do better); all drawn by ``checkpoint``.

    Regions get each phrase *with its place* ("a red circle at the top left"), words toy-sd reads
    better than any box or mask, which the boxes' prompt does not have. So the same comparison is also
    made with the regions given the very words the boxes get ("a red circle" in its cell):
    ``regions_same_words_*`` and ``*_vs_regions_same_words``."""
    boxes = _measure(studio, "gligen", n, seed, partial(gligen_nodes, checkpoint=checkpoint, adapter=adapter))
    boxes.update({"checkpoint": checkpoint, "adapter": adapter})
    for name, places in (("regions", True), ("regions_same_words", False)):
        baseline = _measure(
            studio, name, n, seed, partial(region_nodes, checkpoint=checkpoint, places=places)
        )
        boxes.update({f"{name}_{k}": baseline[k] for k in COMPARED})
        boxes.update({f"{k}_vs_{name}": round(boxes[k] - baseline[k], 4) for k in COMPARED})
    return boxes


def regions(studio: Studio, n: int, seed: int = 11, checkpoint: str = SD) -> dict[str, Any]:
    """The same scenes and seeds from regional prompts (each phrase with its place, in its cell)."""
    return _measure(studio, "regions", n, seed, partial(region_nodes, checkpoint=checkpoint))


def no_boxes_nodes(scene: Scene, seed: int, checkpoint: str = SD, adapter: str = GLIGEN) -> dict[str, Any]:
    """The placeless prompt alone: what the boxes have to beat."""
    nodes = gligen_nodes(scene, seed, checkpoint=checkpoint)
    nodes["s"]["inputs"]["positive"] = link("pos", "conditioning")
    return {k: v for k, v in nodes.items() if not k.startswith(("box", "gl"))}


def places_nodes(scene: Scene, seed: int, checkpoint: str = SD, adapter: str = GLIGEN) -> dict[str, Any]:
    """The scene's own caption, places named ("a red circle at the top left and ..."), no boxes."""
    nodes = no_boxes_nodes(scene, seed, checkpoint=checkpoint)
    nodes["pos"]["inputs"]["text"] = caption(scene)
    return nodes


#: The variants ``python -m training.quality_gligen`` measures beside the two tasks: each builds a
#: scene's workflow from (scene, seed, checkpoint=..., adapter=...).
VARIANTS: dict[str, Any] = {
    "gligen_beta0.3": partial(gligen_nodes, beta=0.3),
    "gligen_beta0.5": partial(gligen_nodes, beta=0.5),
    "gligen_beta1.0": partial(gligen_nodes, beta=1.0),
    "gligen_empty_beta1.0": lambda s, seed, **kw: gligen_nodes(s, seed, prompt="", beta=1.0, **kw),
    "gligen_places_beta0.3": lambda s, seed, **kw: gligen_nodes(s, seed, prompt=caption(s), beta=0.3, **kw),
    "gligen_places_beta1.0": lambda s, seed, **kw: gligen_nodes(s, seed, prompt=caption(s), beta=1.0, **kw),
    "places": lambda s, seed, **kw: places_nodes(s, seed, **kw),
    "no_boxes": no_boxes_nodes,
    "regions": lambda s, seed, adapter=GLIGEN, **kw: region_nodes(s, seed, **kw),
    "regions_same_words": lambda s, seed, adapter=GLIGEN, **kw: region_nodes(s, seed, places=False, **kw),
}


def main(argv: list[str] | None = None) -> int:
    """``python -m training.quality_gligen [--n 100] [--variants a,b] [--models DIR] [--checkpoint NAME]
    [--adapter FILE]``: one JSON line per variant, on the scenes and seeds of the ``gligen`` and
    ``regions`` tasks (``--models``: another models folder, e.g. a candidate adapter in DIR/gligen beside
    a link to the checkpoints; ``--checkpoint`` draws with another checkpoint, ``--adapter`` names
    another GLIGEN file)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m training.quality_gligen", description=main.__doc__)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=", ".join(VARIANTS))
    parser.add_argument("--models", type=Path, default=None, help="the models folder (default: models/)")
    parser.add_argument("--checkpoint", default=SD, help="the checkpoint that draws")
    parser.add_argument("--adapter", default=GLIGEN, help="the GLIGEN file (models/gligen)")
    args = parser.parse_args(argv)
    studio = Studio(models=args.models)
    for name in args.variants.split(","):
        build = partial(VARIANTS[name], checkpoint=args.checkpoint, adapter=args.adapter)
        figures = _measure(studio, name, args.n, 11, build)
        print(json.dumps({**figures, "checkpoint": args.checkpoint, "adapter": args.adapter}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
