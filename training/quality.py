"""How good the bundled toy models are, measured the way a user meets them: each task is a workflow
run by the studio's executor with the shipped models, and the toy world's analyzer reads the pictures.

Every task draws its scenes from the held-out split (each holds a shape, color and position combination
never seen in training) with fixed seeds, so figures are repeatable. ``bench/toy_quality.py`` prints
them; the tests run small samples of the same tasks.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from toyworld import COLORS, SHAPES, Scene, caption, edges, edit, instructions, random_scene, render, score

SD = "toy-sd"
EDITOR = "toy-ip2p"
CONTROLNET = "toy-edges"
CAPTIONER = "toy-blip"
CLIP = "toy-clip"
SIZE = 32
STEPS = 20
CFG = 5.0
SAMPLER = "dpmpp_2m"


def link(node: str, output: str) -> dict[str, str]:
    return {"node": node, "output": output}


# --------------------------------------------------------------------------- running workflows


@dataclass
class Studio:
    """The studio's registry and executor over one set of services (model folders and one model
    manager), and an input folder for pictures."""

    models: Path | None = None  # the models folder to search; None: the repository's models/
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="toy-quality-")))

    def __post_init__(self) -> None:
        from graph.executor import Executor
        from models.paths import ModelPaths
        from models.services import Services
        from nodes.base import RunSettings
        from nodes.registry import default_registry

        self.services = Services(paths=ModelPaths((self.models,)) if self.models else ModelPaths())
        self.registry = default_registry(services=self.services)
        self.executor = Executor(self.registry)
        (self.folder / "input").mkdir(parents=True, exist_ok=True)
        self.settings = RunSettings(
            output_dir=self.folder / "output",
            input_dirs=(self.folder / "input",),
            services=self.services,
        )
        self._count = 0

    def put(self, picture: np.ndarray) -> str:
        """Save a uint8 picture (H, W, 3) or mask (H, W) into the input folder; its name for LoadImage."""
        from PIL import Image

        self._count += 1
        name = f"picture-{self._count}.png"
        Image.fromarray(np.asarray(picture, dtype=np.uint8)).save(self.folder / "input" / name)
        return name

    def run(self, nodes: dict[str, Any], seed: int = 0) -> dict[str, dict[str, Any]]:
        from graph.validate import validate

        checked = validate({"version": 1, "nodes": nodes}, self.registry)
        if not checked.ok:
            raise ValueError("; ".join(str(issue) for issue in checked.issues))
        result = self.executor.run(checked.workflow, settings=self.settings, seed=seed)
        if result.status != "done":
            raise RuntimeError(f"the workflow {result.status}: {result.error}")
        return result.outputs

    def picture(self, nodes: dict[str, Any], seed: int = 0, node: str = "show") -> np.ndarray:
        """The first image shown by the PreviewImage node ``node``, as uint8."""
        images = self.run(nodes, seed)[node]["images"]
        return (np.clip(images[0], 0, 1) * 255).round().astype(np.uint8)


# --------------------------------------------------------------------------- workflow builders


def sd_nodes(prompt: str, seed: int, negative: str = "", checkpoint: str = SD) -> dict[str, Any]:
    """Checkpoint, prompts and a sampler (its latent input left for the caller), decoded and shown."""
    return {
        "ck": {"type": "CheckpointLoader", "inputs": {"ckpt_name": checkpoint}},
        "pos": {"type": "CLIPTextEncode", "inputs": {"clip": link("ck", "clip"), "text": prompt}},
        "neg": {"type": "CLIPTextEncode", "inputs": {"clip": link("ck", "clip"), "text": negative}},
        "s": {
            "type": "Sampler",
            "inputs": {
                "model": link("ck", "model"),
                "positive": link("pos", "conditioning"),
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


def txt2img_nodes(prompt: str, seed: int, checkpoint: str = SD) -> dict[str, Any]:
    nodes = sd_nodes(prompt, seed, checkpoint=checkpoint)
    nodes["lat"] = {
        "type": "EmptyLatent",
        "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1, "vae": link("ck", "vae")},
    }
    return nodes


def controlnet_nodes(prompt: str, hint: str, seed: int) -> dict[str, Any]:
    nodes = txt2img_nodes(prompt, seed)
    nodes["hint"] = {"type": "LoadImage", "inputs": {"path": hint}}
    nodes["cn"] = {"type": "ControlNetLoader", "inputs": {"control_net_name": CONTROLNET}}
    nodes["control"] = {
        "type": "ControlNetApply",
        "inputs": {
            "conditioning": link("pos", "conditioning"),
            "control_net": link("cn", "control_net"),
            "image": link("hint", "image"),
            "strength": 1.0,
            "start": 0.0,
            "end": 1.0,
        },
    }
    nodes["s"]["inputs"]["positive"] = link("control", "conditioning")
    return nodes


def inpaint_nodes(prompt: str, picture: str, mask: str, seed: int) -> dict[str, Any]:
    """Redraw the masked region (latent noise mask), then paste it through the mask onto the original,
    so every pixel outside the mask is the original's."""
    nodes = sd_nodes(prompt, seed)
    nodes.update(
        {
            "img": {"type": "LoadImage", "inputs": {"path": picture}},
            "maskimg": {"type": "LoadImage", "inputs": {"path": mask}},
            "mask": {"type": "ImageToMask", "inputs": {"image": link("maskimg", "image"), "channel": "red"}},
            "enc": {"type": "VAEEncode", "inputs": {"vae": link("ck", "vae"), "image": link("img", "image")}},
            "lat": {
                "type": "SetLatentNoiseMask",
                "inputs": {"latent": link("enc", "latent"), "mask": link("mask", "mask")},
            },
            "paste": {
                "type": "ImageComposite",
                "inputs": {
                    "destination": link("img", "image"),
                    "source": link("d", "image"),
                    "x": 0,
                    "y": 0,
                    "mask": link("mask", "mask"),
                },
            },
        }
    )
    nodes["show"] = {"type": "PreviewImage", "inputs": {"images": link("paste", "image")}}
    return nodes


def colorize_nodes(prompt: str, picture: str, seed: int, denoise: float = 0.8) -> dict[str, Any]:
    """Grayscale image-to-image with the prompt, then the Colorize node: the original's luminance with the
    generated picture's colors."""
    nodes = sd_nodes(prompt, seed)
    nodes.update(
        {
            "img": {"type": "LoadImage", "inputs": {"path": picture}},
            "gray": {"type": "ImageGrayscale", "inputs": {"image": link("img", "image")}},
            "lat": {
                "type": "VAEEncode",
                "inputs": {"vae": link("ck", "vae"), "image": link("gray", "image")},
            },
            "color": {
                "type": "Colorize",
                "inputs": {
                    "grayscale": link("gray", "image"),
                    "colors": link("d", "image"),
                    "saturation": 1.0,
                },
            },
        }
    )
    nodes["s"]["inputs"]["denoise"] = denoise
    nodes["show"] = {"type": "PreviewImage", "inputs": {"images": link("color", "image")}}
    return nodes


def edit_nodes(instruction: str, picture: str, seed: int) -> dict[str, Any]:
    return {
        "ck": {"type": "CheckpointLoader", "inputs": {"ckpt_name": EDITOR}},
        "pos": {"type": "CLIPTextEncode", "inputs": {"clip": link("ck", "clip"), "text": instruction}},
        "neg": {"type": "CLIPTextEncode", "inputs": {"clip": link("ck", "clip"), "text": ""}},
        "img": {"type": "LoadImage", "inputs": {"path": picture}},
        "edit": {
            "type": "InstructPix2Pix",
            "inputs": {
                "model": link("ck", "model"),
                "positive": link("pos", "conditioning"),
                "negative": link("neg", "conditioning"),
                "vae": link("ck", "vae"),
                "image": link("img", "image"),
                "seed": seed,
                "steps": STEPS,
                "cfg": CFG,
                "image_cfg": 1.5,
                "sampler": SAMPLER,
            },
        },
        "d": {"type": "VAEDecode", "inputs": {"vae": link("ck", "vae"), "latent": link("edit", "latent")}},
        "show": {"type": "PreviewImage", "inputs": {"images": link("d", "image")}},
    }


def caption_nodes(picture: str) -> dict[str, Any]:
    return {
        "img": {"type": "LoadImage", "inputs": {"path": picture}},
        "cap": {"type": "CaptionerLoader", "inputs": {"captioner_name": CAPTIONER}},
        "caption": {
            "type": "Captioner",
            "inputs": {
                "captioner": link("cap", "captioner"),
                "image": link("img", "image"),
                "prompt": "",
                "max_new_tokens": 30,
                "num_beams": 1,
            },
        },
        "show": {"type": "ShowValue", "inputs": {"value": link("caption", "text")}},
    }


def clip_nodes(picture: str, text: str) -> dict[str, Any]:
    return {
        "img": {"type": "LoadImage", "inputs": {"path": picture}},
        "clip": {"type": "ClipLoader", "inputs": {"clip_name": CLIP}},
        "score": {
            "type": "CLIPScore",
            "inputs": {"clip": link("clip", "clip"), "image": link("img", "image"), "text": text},
        },
        "show": {"type": "ShowValue", "inputs": {"value": link("score", "similarity")}},
    }


# --------------------------------------------------------------------------- tasks


def held_out_scenes(n: int, seed: int, shapes: int | None = None) -> list[Scene]:
    return [
        random_scene(np.random.default_rng([seed, i]), size=SIZE, shapes=shapes, split="test")
        for i in range(n)
    ]


def mean(rows: list[dict[str, Any]], key: str) -> float:
    return round(float(np.mean([r[key] for r in rows])), 3) if rows else float("nan")


def attribute_scores(pairs: list[tuple[Scene, np.ndarray]]) -> dict[str, float]:
    """Share of expected shapes the analyzer reads right (kind, color, position, all three), and of
    pictures with exactly the expected shapes."""
    scores = [score(scene, picture) for scene, picture in pairs]
    return {
        "shape": mean(scores, "kind"),
        "color": mean(scores, "color"),
        "position": mean(scores, "position"),
        "all": mean(scores, "all"),
        "exact": mean(scores, "exact"),
        "count": mean(scores, "count"),
    }


def text_to_image(studio: Studio, n: int, seed: int = 1, checkpoint: str = SD) -> dict[str, Any]:
    """Pictures of held-out captions drawn by ``checkpoint``: how often the analyzer reads each shape as
    the caption says."""
    scenes = held_out_scenes(n, seed)
    pictures = [
        studio.picture(txt2img_nodes(caption(s), seed + i, checkpoint), seed + i)
        for i, s in enumerate(scenes)
    ]
    figures = attribute_scores(list(zip(scenes, pictures, strict=True)))
    return {
        "task": "text_to_image",
        "n": n,
        **({"checkpoint": checkpoint} if checkpoint != SD else {}),
        **figures,
    }


def captioning(studio: Studio, n: int, seed: int = 2) -> dict[str, Any]:
    """Captions of held-out pictures by the Captioner node, read back with the caption parser."""
    from training.captioner import score_caption

    rows = []
    for scene in held_out_scenes(n, seed):
        shown = studio.run(caption_nodes(studio.put(render(scene))))["show"]["text"]
        rows.append(score_caption(scene, shown.strip("'\"")))  # ShowValue shows the text's repr
    return {
        "task": "captioning",
        "n": n,
        "shape": mean(rows, "kind"),
        "color": mean(rows, "color"),
        "position": mean(rows, "position"),
        "count": mean(rows, "count"),
        "exact": mean(rows, "exact"),
    }


def controlnet(studio: Studio, n: int, seed: int = 3) -> dict[str, Any]:
    """Pictures from held-out outlines (and their captions): IoU of their outlines with the hint's."""
    from training.controlnet import edge_iou

    ious, pairs = [], []
    for i, scene in enumerate(held_out_scenes(n, seed)):
        hint = edges(scene)
        picture = studio.picture(controlnet_nodes(caption(scene), studio.put(hint), seed + i), seed + i)
        ious.append(edge_iou(picture, hint))
        pairs.append((scene, picture))
    return {
        "task": "controlnet",
        "n": n,
        "edge_iou": round(float(np.mean(ious)), 3),
        **attribute_scores(pairs),
    }


def cell_mask(scene: Scene, cell: tuple[int, int]) -> np.ndarray:
    """255 over the grid cell (the region a shape there may cover), 0 elsewhere."""
    size = scene.size
    out = np.zeros((size, size), dtype=np.uint8)
    r0, r1 = round(cell[0] * size / 3), round((cell[0] + 1) * size / 3)
    c0, c1 = round(cell[1] * size / 3), round((cell[1] + 1) * size / 3)
    out[r0:r1, c0:c1] = 255
    return out


def inpainting(studio: Studio, n: int, seed: int = 4) -> dict[str, Any]:
    """Replace one shape of a two-shape picture by another through a mask over its cell: pixels outside
    the mask must not change, and the analyzer must read the prompt's new shape in the cell."""
    rows, changed = [], []
    for i, scene in enumerate(held_out_scenes(n, seed, shapes=2)):
        rng = np.random.default_rng([seed, i, 1])
        index = int(rng.integers(2))
        old = scene.shapes[index]
        kind = [k for k in SHAPES if k != old.kind][int(rng.integers(len(SHAPES) - 1))]
        color = [c for c in COLORS if c != old.color][int(rng.integers(len(COLORS) - 1))]
        wanted = replace(
            scene, shapes=tuple(replace(old, kind=kind, color=color) if s is old else s for s in scene.shapes)
        )
        mask = cell_mask(scene, old.cell)
        original = render(scene)
        picture = studio.picture(
            inpaint_nodes(caption(wanted), studio.put(original), studio.put(mask), seed + i), seed + i
        )
        outside = mask == 0
        changed.append(int(np.abs(picture.astype(int) - original.astype(int))[outside].max()))
        new = next(r for r in score(wanted, picture)["shapes"] if tuple(r["cell"]) == old.cell)
        rows.append(new)
    return {
        "task": "inpainting",
        "n": n,
        "outside_max_change": max(changed),
        "shape": mean(rows, "kind"),
        "color": mean(rows, "color"),
        "all": mean(rows, "all"),
    }


def colorization(studio: Studio, n: int, seed: int = 5) -> dict[str, Any]:
    """Grayscale held-out pictures colored back with their captions as prompts: the share of shapes
    whose hue (the analyzer's color) comes back right."""
    pairs = []
    for i, scene in enumerate(held_out_scenes(n, seed)):
        picture = studio.picture(
            colorize_nodes(caption(scene), studio.put(render(scene)), seed + i), seed + i
        )
        pairs.append((scene, picture))
    scores = attribute_scores(pairs)
    return {"task": "colorization", "n": n, "hue": scores["color"], "shape": scores["shape"]}


def editing(studio: Studio, n: int, seed: int = 6, image_cfg: float = 2.5) -> dict[str, Any]:
    """Instruction edits (half recolors, half moves) whose result is a held-out scene, read by the
    analyzer against the edited scene: how often the named shape comes out as asked (``*_target``),
    how often the other shapes stay as they were (``*_kept``), and whole pictures right (``*_exact``)."""
    results: dict[str, list[tuple[float, float | None, float]]] = {"color": [], "move": []}
    i = 0
    while min(len(v) for v in results.values()) < (n + 1) // 2:
        rng = np.random.default_rng([seed, i])
        scene = random_scene(rng, size=SIZE, split="train")
        for kind, pool in results.items():
            found = (
                instructions(scene, rng, 1, kinds=(kind,), split="test") if len(pool) < (n + 1) // 2 else []
            )
            if found:
                nodes = edit_nodes(found[0], studio.put(render(scene)), seed + i)
                nodes["edit"]["inputs"]["image_cfg"] = image_cfg
                wanted = edit(scene, found[0])
                rows = score(wanted, studio.picture(nodes, seed + i))
                target = set(wanted.shapes) - set(scene.shapes)
                per_shape = dict(
                    zip(sorted(wanted.shapes, key=lambda s: s.cell), rows["shapes"], strict=True)
                )
                others = [row["all"] for shape, row in per_shape.items() if shape not in target]
                pool.append(
                    (
                        float(all(per_shape[shape]["all"] for shape in target)),
                        float(np.mean(others)) if others else None,
                        float(rows["exact"]),
                    )
                )
        i += 1
    out: dict[str, Any] = {
        "task": "editing",
        "n": sum(len(v) for v in results.values()),
        "image_cfg": image_cfg,
    }
    for kind, pool in results.items():
        kept = [k for _, k, _ in pool if k is not None]
        out[f"{kind}_target"] = round(float(np.mean([t for t, _, _ in pool])), 3)
        out[f"{kind}_kept"] = round(float(np.mean(kept)), 3) if kept else float("nan")
        out[f"{kind}_exact"] = round(float(np.mean([e for _, _, e in pool])), 3)
    return out


def clip_scoring(studio: Studio, n: int, seed: int = 7) -> dict[str, Any]:
    """CLIPScore of held-out pictures against their caption and against the caption with one shape's
    color, kind or position changed: how often the picture's own caption scores higher."""
    from training.clip import altered

    wins = []
    for i, scene in enumerate(held_out_scenes(n, seed)):
        picture = studio.put(render(scene))
        own, other = (
            float(studio.run(clip_nodes(picture, caption(s)))["show"]["text"])
            for s in (scene, altered(scene, np.random.default_rng([seed, i, 1])))
        )
        wins.append(own > other)
    return {"task": "clip_scoring", "n": n, "own_caption_wins": round(float(np.mean(wins)), 3)}


TASKS: dict[str, Callable[[Studio, int], dict[str, Any]]] = {
    "text_to_image": text_to_image,
    "captioning": captioning,
    "controlnet": controlnet,
    "inpainting": inpainting,
    "colorization": colorization,
    "editing": editing,
    "clip_scoring": clip_scoring,
}

#: The goals of each figure (issue 6): task -> {figure: minimum} (LIMITS: {figure: maximum}).
GOALS: dict[str, dict[str, float]] = {
    "text_to_image": {"color": 0.9, "shape": 0.8, "position": 0.8},
    "captioning": {"shape": 0.9, "color": 0.9, "position": 0.9},
    "controlnet": {"edge_iou": 0.5},
    "inpainting": {"all": 0.5},
    "colorization": {"hue": 0.8},
}
LIMITS: dict[str, dict[str, float]] = {"inpainting": {"outside_max_change": 0}}


def goals_met(task: str, figures: dict[str, Any]) -> bool:
    return all(figures[k] >= v for k, v in GOALS.get(task, {}).items()) and all(
        figures[k] <= v for k, v in LIMITS.get(task, {}).items()
    )
