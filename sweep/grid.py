"""The X/Y contact sheet of a sweep over one or two inputs: ``DIR/grid.png``.

Rows are the values of the sweep's first axis and columns those of its second (a sweep over one
axis gives one row, its values as columns); each cell shows the item's first picture, scaled up
(nearest neighbour) to at least :data:`MIN_CELL` pixels so small pictures stay readable. A cell
whose item failed is a grey tile saying "failed", one not run yet a lighter tile saying "not run".
With several seeds there is one sheet per seed, ``grid-seed<N>.png``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from sweep.plan import Plan

#: The smallest side (pixels) a picture is scaled up to in its cell.
MIN_CELL = 128
#: Sheets larger than this are not drawn (the sweep says so instead).
MAX_CELLS = 1024
MAX_SHEETS = 256
FONT_SIZE = 14
TITLE_SIZE = 16
GAP = 4
PAD = 8
#: The most lines a label takes; longer ones end in an ellipsis.
MAX_LABEL_LINES = 4
#: The widest the row labels' column gets (pixels).
MAX_ROW_LABEL_WIDTH = 220

BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
FAILED_TILE = (150, 150, 150)
NOT_RUN_TILE = (215, 215, 215)


@dataclass
class Sheet:
    """One contact sheet: axis names and labels, and what each cell shows.

    ``cells`` maps (row, column) to a picture file, or to a word for a tile without one
    ("failed", "not run"); a cell left out shows "not run".
    """

    title: str
    row_name: str
    row_labels: list[str]
    column_name: str
    column_labels: list[str]
    cells: dict[tuple[int, int], Path | str] = field(default_factory=dict)


def sheet_name(seed: int | None, sheets: int) -> str:
    """``grid.png`` for a single sheet, ``grid-seed<N>.png`` when there is one per seed."""
    return "grid.png" if sheets == 1 or seed is None else f"grid-seed{seed}.png"


def plan_sheets(plan: Plan, latest: Mapping[str, Mapping[str, Any]], out_dir: Path) -> dict[str, Sheet]:
    """The sheets of ``plan`` by file name, filled from each item's latest manifest record.

    Empty when the sweep has no axis or more than two, or is too large to draw.
    """
    axes = plan.axes
    if not 1 <= len(axes) <= 2:
        return {}
    rows, columns = (axes[0], axes[1]) if len(axes) == 2 else (None, axes[0])
    seeds: list[int | None] = list(plan.seed_list()) if plan.seeded else [None]
    cells = len(rows.points if rows else [0]) * len(columns.points)
    if cells > MAX_CELLS or len(seeds) > MAX_SHEETS:
        return {}
    sheets: dict[int | None, Sheet] = {}
    for seed in seeds:
        title = f"seed {seed}" if seed is not None else "the workflow's seeds"
        sheets[seed] = Sheet(
            title=title,
            row_name=rows.name if rows else "",
            row_labels=list(rows.labels) if rows else [""],
            column_name=columns.name,
            column_labels=list(columns.labels),
        )
    for item in plan.items():
        at = (item.coords[0], item.coords[1]) if rows else (0, item.coords[0])
        record = latest.get(item.key)
        sheets[item.seed].cells[at] = _cell(record, out_dir)
    return {sheet_name(seed, len(sheets)): sheet for seed, sheet in sheets.items()}


def _cell(record: Mapping[str, Any] | None, out_dir: Path) -> Path | str:
    if record is None or record.get("status") not in ("done", "failed"):
        return "not run"
    if record["status"] != "done":
        return "failed"
    for file in record.get("files") or []:
        if isinstance(file, str) and file.lower().endswith(".png"):
            return out_dir / file
    return "no picture"


def write_sheets(sheets: Mapping[str, Sheet], out_dir: Path) -> list[Path]:
    """Draw each sheet into ``out_dir``; returns the files written."""
    written = []
    for name, sheet in sheets.items():
        path = out_dir / name
        draw_sheet(sheet).save(path, format="PNG")
        written.append(path)
    return written


# --- drawing ------------------------------------------------------------------------------------


def draw_sheet(sheet: Sheet) -> Image.Image:
    """The sheet as one RGB picture, labels drawn with Pillow's own font."""
    font, title_font = _font(FONT_SIZE), _font(TITLE_SIZE)
    pictures = {at: _load(value) for at, value in sheet.cells.items() if isinstance(value, Path)}
    scaled = {at: _scale_up(pic) for at, pic in pictures.items() if pic is not None}
    cell_w = max([MIN_CELL, *(p.width for p in scaled.values())])
    cell_h = max([MIN_CELL, *(p.height for p in scaled.values())])
    n_rows, n_cols = len(sheet.row_labels), len(sheet.column_labels)

    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = _line_height(font)
    row_lines = [_wrap(measure, label, font, MAX_ROW_LABEL_WIDTH) for label in sheet.row_labels]
    row_name_lines = _wrap(measure, sheet.row_name, font, MAX_ROW_LABEL_WIDTH) if sheet.row_name else []
    widest = max(
        [0, *(_width(measure, line, font) for lines in [*row_lines, row_name_lines] for line in lines)]
    )
    left = widest + 2 * PAD if any(sheet.row_labels) or sheet.row_name else PAD
    column_lines = [_wrap(measure, label, font, cell_w) for label in sheet.column_labels]
    header_h = max(1, *(len(lines) for lines in column_lines)) * line_h + PAD
    title = f"{sheet.title}    columns: {sheet.column_name}"
    if sheet.row_name:
        title += f"    rows: {sheet.row_name}"
    title_h = _line_height(title_font) + 2 * PAD
    top = title_h + header_h

    width = max(left + n_cols * (cell_w + GAP) + PAD, _width(measure, title, title_font) + 2 * PAD)
    height = top + n_rows * (cell_h + GAP) + PAD
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text((PAD, PAD), title, font=title_font, fill=INK)
    for col, lines in enumerate(column_lines):
        x = left + col * (cell_w + GAP)
        y = title_h + header_h - PAD - len(lines) * line_h
        for line in lines:
            draw.text((x + (cell_w - _width(draw, line, font)) // 2, y), line, font=font, fill=INK)
            y += line_h
    if row_name_lines:
        for n, line in enumerate(row_name_lines):
            draw.text((PAD, title_h + n * line_h), line, font=font, fill=INK)
    for row, lines in enumerate(row_lines):
        y = top + row * (cell_h + GAP) + (cell_h - len(lines) * line_h) // 2
        for line in lines:
            draw.text((PAD, y), line, font=font, fill=INK)
            y += line_h
    for row in range(n_rows):
        for col in range(n_cols):
            x, y = left + col * (cell_w + GAP), top + row * (cell_h + GAP)
            picture = scaled.get((row, col))
            if picture is not None:
                canvas.paste(picture, (x + (cell_w - picture.width) // 2, y + (cell_h - picture.height) // 2))
                continue
            value = sheet.cells.get((row, col), "not run")
            word = value if isinstance(value, str) else "missing"
            draw.rectangle(
                (x, y, x + cell_w - 1, y + cell_h - 1),
                fill=NOT_RUN_TILE if word == "not run" else FAILED_TILE,
            )
            draw.text(
                (x + (cell_w - _width(draw, word, font)) // 2, y + (cell_h - line_h) // 2),
                word,
                font=font,
                fill=INK,
            )
    return canvas


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # a Pillow without FreeType: its small bitmap font
        return ImageFont.load_default()


def _load(path: Path) -> Image.Image | None:
    try:
        with Image.open(path) as picture:
            return picture.convert("RGB")
    except (OSError, ValueError):
        return None


def _scale_up(picture: Image.Image) -> Image.Image:
    """``picture`` scaled by a whole factor (nearest) until its longer side is at least MIN_CELL."""
    factor = max(1, math.ceil(MIN_CELL / max(picture.width, picture.height, 1)))
    if factor == 1:
        return picture
    return picture.resize((picture.width * factor, picture.height * factor), Image.Resampling.NEAREST)


def _line_height(font: Any) -> int:
    box = font.getbbox("Hgy")
    return int(box[3]) + 3


def _width(draw: ImageDraw.ImageDraw, text: str, font: Any) -> int:
    return int(draw.textlength(text, font=font))


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> list[str]:
    """``text`` broken into lines at most ``width`` pixels wide, MAX_LABEL_LINES at most."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if _width(draw, candidate, font) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        while _width(draw, word, font) > width and len(word) > 1:  # a word wider than the cell
            cut = _fit(draw, word, font, width)
            lines.append(word[:cut])
            word = word[cut:]
        current = word
    if current:
        lines.append(current)
    if len(lines) > MAX_LABEL_LINES:
        lines = lines[:MAX_LABEL_LINES]
        last = lines[-1]
        while last and _width(draw, last + "…", font) > width:
            last = last[:-1]
        lines[-1] = last + "…"
    return lines or [""]


def _fit(draw: ImageDraw.ImageDraw, word: str, font: Any, width: int) -> int:
    cut = len(word)
    while cut > 1 and _width(draw, word[:cut], font) > width:
        cut -= 1
    return cut
