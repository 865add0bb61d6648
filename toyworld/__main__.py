"""Command line: ``python -m toyworld sample --n 16 --size 64 --out DIR`` writes a contact sheet and captions;
``python -m toyworld eval --n 1000 --size 32`` measures the analyzer on generated pictures;
``python -m toyworld concept --shape star --n 8 --out DIR`` writes pictures of a shape the bundled models
never saw, each with a same-stem ``.txt`` caption, as a data set for concept training;
``python -m toyworld captions --n 400 --out FILE`` writes captions of training-split scenes, one per line
(prompts a concept LoRA leaves alone: ``app.py train-lora --protect FILE``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from toyworld.analyzer import analyze, describe, score
from toyworld.world import COLORS, NEW_SHAPES, POSITIONS, dataset, edges


def contact_sheet(
    images: list[np.ndarray], captions: list[str], zoom: int = 4, columns: int = 4
) -> Image.Image:
    """Images enlarged ``zoom`` times (nearest neighbor) in a grid, each with its caption underneath."""
    font = ImageFont.load_default()
    size = images[0].shape[0] * zoom
    chars = max(12, size // 6)
    wrapped = [_wrap(c, chars) for c in captions]
    text_h = 12 * max(len(w) for w in wrapped) + 6
    rows = (len(images) + columns - 1) // columns
    pad = 6
    sheet = Image.new(
        "RGB", (columns * (size + pad) + pad, rows * (size + text_h + pad) + pad), (255, 255, 255)
    )
    draw = ImageDraw.Draw(sheet)
    for i, (image, lines) in enumerate(zip(images, wrapped, strict=True)):
        x = pad + (i % columns) * (size + pad)
        y = pad + (i // columns) * (size + text_h + pad)
        sheet.paste(Image.fromarray(image).resize((size, size), Image.Resampling.NEAREST), (x, y))
        for j, line in enumerate(lines):
            draw.text((x, y + size + 2 + 12 * j), line, fill=(0, 0, 0), font=font)
    return sheet


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def concept_scenes(shape: str, n: int, size: int = 32, seed: int = 0, avoid: str | None = None) -> list:
    """``n`` one-shape scenes of ``shape``: the colors in turn, the cells in a random order (each cell
    once per nine pictures, or per eight without the position ``avoid``), a random size, jitter and
    background each."""
    from dataclasses import replace

    from toyworld.world import random_scene

    order = [int(i) for i in np.random.default_rng([seed, 7919]).permutation(9)]
    if avoid is not None:
        order.remove(POSITIONS.index(avoid))
    scenes = []
    for i in range(n):
        scene = random_scene(np.random.default_rng([seed, 7919, i]), size=size, shapes=1)
        cell = (order[i % len(order)] // 3, order[i % len(order)] % 3)
        color = tuple(COLORS)[i % len(COLORS)]
        shape_of = replace(scene.shapes[0], kind=shape, color=color, cell=cell)
        scenes.append(replace(scene, shapes=(shape_of,)))
    return scenes


def write_captions(n: int, seed: int, out: Path) -> int:
    """Captions of ``n`` random training-split scenes (one or two shapes), one per line, into ``out``."""
    from toyworld.world import caption, random_scene

    rng = np.random.default_rng([seed, 7])
    lines = [caption(random_scene(rng, split="train")) for _ in range(n)]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    print(f"wrote {n} captions of training scenes to {out}")
    return 0


def write_concept(
    shape: str, n: int, size: int, seed: int, token: str, out: Path, avoid: str | None = None
) -> int:
    """Write ``NNNN.png`` and ``NNNN.txt`` (the caption, ``token`` naming the shape) and a sheet."""
    from toyworld.world import caption, render

    out.mkdir(parents=True, exist_ok=True)
    scenes = concept_scenes(shape, n, size, seed, avoid)
    images = [render(s) for s in scenes]
    captions = [caption(s).replace(f" {shape} ", f" {token} ") for s in scenes]
    for i, (image, text) in enumerate(zip(images, captions, strict=True)):
        Image.fromarray(image).save(out / f"{i:04d}.png")
        (out / f"{i:04d}.txt").write_text(text + "\n")
    (out / "preview").mkdir(exist_ok=True)  # a subfolder: trainers read only the folder's own pictures
    contact_sheet(images, captions, max(1, 192 // size)).save(out / "preview" / "sheet.png")
    print(f"wrote {n} pictures of a {shape} with captions (the shape called {token!r}) to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toyworld", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sample = sub.add_parser("sample", help="write a contact sheet, the images and their captions")
    sample.add_argument("--n", type=int, default=16)
    sample.add_argument("--size", type=int, default=64)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--zoom", type=int, default=0, help="enlargement in the sheet (default: to 192 px)")
    sample.add_argument("--out", type=Path, required=True)
    evaluate = sub.add_parser("eval", help="analyzer accuracy on generated pictures")
    evaluate.add_argument("--n", type=int, default=1000)
    evaluate.add_argument("--size", type=int, default=32)
    evaluate.add_argument("--seed", type=int, default=0)
    concept = sub.add_parser("concept", help="pictures of a new shape with captions, to train a concept on")
    concept.add_argument("--shape", choices=NEW_SHAPES, default=NEW_SHAPES[0])
    concept.add_argument("--n", type=int, default=8)
    concept.add_argument("--size", type=int, default=32)
    concept.add_argument("--seed", type=int, default=0)
    concept.add_argument("--token", default="", help="the captions' word for the shape (default: its name)")
    concept.add_argument(
        "--avoid", choices=POSITIONS, default=None, help="a position no picture uses (to test it unseen)"
    )
    concept.add_argument("--out", type=Path, required=True)
    captions = sub.add_parser("captions", help="captions of training-split scenes, one per line")
    captions.add_argument("--n", type=int, default=400)
    captions.add_argument("--seed", type=int, default=0)
    captions.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "captions":
        return write_captions(args.n, args.seed, args.out)
    if args.command == "concept":
        token = args.token or args.shape
        return write_concept(args.shape, args.n, args.size, args.seed, token, args.out, args.avoid)

    data = dataset(args.n, seed=args.seed, size=args.size)
    if args.command == "sample":
        args.out.mkdir(parents=True, exist_ok=True)
        zoom = args.zoom or max(1, 192 // args.size)
        images = [image for image, _, _ in data]
        captions = [text for _, text, _ in data]
        contact_sheet(images, captions, zoom).save(args.out / "sheet.png")
        contact_sheet([np.repeat(edges(s)[:, :, None], 3, axis=2) for _, _, s in data], captions, zoom).save(
            args.out / "edges.png"
        )
        read = [describe(analyze(image)) for image in images]
        contact_sheet(images, read, zoom).save(args.out / "analyzed.png")
        for i, image in enumerate(images):
            Image.fromarray(image).save(args.out / f"{i:04d}.png")
        (args.out / "captions.txt").write_text("".join(f"{i:04d}.png\t{c}\n" for i, c in enumerate(captions)))
        print(
            f"wrote {len(images)} images, sheet.png, edges.png, analyzed.png and captions.txt to {args.out}"
        )
        return 0

    start = time.perf_counter()
    totals = {"kind": 0.0, "color": 0.0, "position": 0.0, "background": 0.0, "count": 0.0, "exact": 0.0}
    shapes = 0
    for image, _, scene in data:
        result = score(scene, image)
        shapes += len(scene.shapes)
        for key in ("kind", "color", "position"):
            totals[key] += result[key] * len(scene.shapes)
        for key in ("background", "count", "exact"):
            totals[key] += float(result[key])
    figures = {
        k: round(v / (shapes if k in ("kind", "color", "position") else args.n), 4) for k, v in totals.items()
    }
    figures |= {"size": args.size, "images": args.n, "seconds": round(time.perf_counter() - start, 2)}
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
