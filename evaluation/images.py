"""Folders of pictures and the prompts they were made from.

A prompt comes from a prompts file (``--prompts``) or, where none is given, from a caption of the
same stem beside the picture (``cat1.png`` and ``cat1.txt``, as training datasets hold them), else
from the workflow a studio PNG carries in its text chunks (its first non-empty multiline text
input, as the history shows it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class EvaluationInputError(Exception):
    """A folder, file or option the evaluation cannot use, said in plain words."""


@dataclass
class ImageSet:
    """Pictures (uint8, H x W x 3) by file name, with the prompts known for them."""

    names: list[str]
    pixels: list[np.ndarray]
    prompts: dict[str, str] = field(default_factory=dict)
    source: str = ""

    def __len__(self) -> int:
        return len(self.names)


def load_folder(folder: Path, *, read_prompts: bool = True) -> ImageSet:
    """Every picture directly in ``folder`` (sorted by name), as RGB uint8; when ``read_prompts``,
    each one's caption (a same-stem ``.txt`` beside it) or else the prompt its studio PNG carries."""
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationInputError(f"{folder} is not a folder of pictures")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise EvaluationInputError(f"{folder} holds no pictures ({', '.join(IMAGE_SUFFIXES)})")
    names, pixels, prompts = [], [], {}
    registry = None
    for path in files:
        try:
            with Image.open(path) as image:
                pixels.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
        except (OSError, ValueError) as exc:
            raise EvaluationInputError(f"cannot read the picture {path.name}: {exc}") from None
        names.append(path.name)
        caption = path.with_suffix(".txt")
        if read_prompts and caption.is_file():
            try:
                text = caption.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise EvaluationInputError(f"cannot read the caption {caption.name}: {exc}") from None
            if text:
                prompts[path.name] = text
                continue
        if read_prompts and path.suffix.lower() == ".png":
            if registry is None:
                from nodes.registry import default_registry

                registry = default_registry()
            prompt = png_prompt(path.read_bytes(), path.name, registry)
            if prompt:
                prompts[path.name] = prompt
    return ImageSet(names, pixels, prompts, str(folder))


def from_arrays(pixels: list[np.ndarray], prompts: Mapping[int, str] | None = None) -> ImageSet:
    """An ImageSet of in-memory pictures named ``0``, ``1``, ... (uint8 or floats in 0..1)."""
    names = [str(i) for i in range(len(pixels))]
    arrays = [as_uint8(p) for p in pixels]
    texts = {str(i): text for i, text in (prompts or {}).items()}
    return ImageSet(names, arrays, texts, "memory")


def as_uint8(picture: np.ndarray) -> np.ndarray:
    """A picture as RGB uint8 H x W x 3 (floats are taken to be 0..1; gray is repeated)."""
    array = np.asarray(picture)
    if array.dtype != np.uint8:
        array = (np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise EvaluationInputError(f"a picture of shape {array.shape} is not H x W x channels")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


def png_prompt(raw: bytes, shown: str, registry: Any = None) -> str | None:
    """The prompt of the workflow a studio PNG carries, or None (``registry``: the node types
    that say which inputs are prompts; the built-in ones by default)."""
    from graph.workflow import PNG_WORKFLOW_KEY, UnreadableFile, png_texts
    from nodes.registry import default_registry
    from server.summaries import workflow_labels

    try:
        text = png_texts(raw, shown, {PNG_WORKFLOW_KEY}).get(PNG_WORKFLOW_KEY)
    except UnreadableFile:
        return None
    if not text:
        return None
    return workflow_labels(text, registry or default_registry()).get("prompt") or None


def read_prompts(path: Path, images: ImageSet) -> dict[str, str]:
    """Prompts for ``images`` from a file: a JSON object {file name: prompt}, or text with one
    prompt per line (one line: the prompt of every picture; otherwise one line per picture, in
    name order), or lines ``file name<TAB>prompt`` (as ``python -m toyworld sample`` writes its
    captions.txt)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvaluationInputError(f"cannot read the prompts file {path}: {exc}") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise EvaluationInputError(f"{path.name} is not JSON: {exc}") from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise EvaluationInputError(f"{path.name} must hold an object {{file name: prompt}}")
        unknown = sorted(set(data) - set(images.names))
        if unknown:
            raise EvaluationInputError(
                f"{path.name} names pictures that are not there: {', '.join(unknown[:5])}"
            )
        return dict(data)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines and all("\t" in line for line in lines):
        named = dict(line.split("\t", 1) for line in lines)
        unknown = sorted(set(named) - set(images.names))
        if unknown:
            raise EvaluationInputError(
                f"{path.name} names pictures that are not there: {', '.join(unknown[:5])} "
                "(its lines are 'file name<TAB>prompt')"
            )
        return {name: prompt.strip() for name, prompt in named.items()}
    if len(lines) == 1:
        return dict.fromkeys(images.names, lines[0])
    if len(lines) != len(images):
        raise EvaluationInputError(
            f"{path.name} has {len(lines)} prompts for {len(images)} pictures: give one line, "
            "one line per picture (in name order), or a JSON object {file name: prompt}"
        )
    return dict(zip(images.names, lines, strict=True))
