"""Command line: ``python -m toyworld sample --n 16 --size 64 --out DIR`` writes a contact sheet and captions;
``python -m toyworld eval --n 1000 --size 32`` measures the analyzer on generated pictures."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from toyworld.analyzer import analyze, describe, score
from toyworld.world import dataset, edges


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
    args = parser.parse_args(argv)

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
