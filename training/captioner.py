"""Train a small BLIP captioner (``BlipForConditionalGeneration``) on toy-world pictures and captions,
and export it as a transformers folder the studio's CaptionerLoader and Captioner nodes run.

``python -m training.captioner --out runs/captioner --steps 13000 --batch 48 --threads 1`` trains (resuming
when ``runs/captioner`` holds a state; ``--max-minutes`` saves and stops; ``--measure`` prints the
parameters and seconds per step and exits), then exports to ``--export`` (default
``models/captioners/toy-blip``): safetensors weights, the processor (a BERT WordPiece tokenizer whose
vocabulary is the toy world's words, and a 32x32 BlipImageProcessor), a ``README.md`` model card and
``eval.json``, written beside the target and swapped in once evaluated through the studio's nodes.

``python -m training.captioner eval models/captioners/toy-blip --n 200 --split test`` scores a folder:
the share of shapes whose kind, color and position its captions of held-out pictures get right.

The model is trained with teacher forcing on ``toy_batch`` (the "train" split only: held-out
(kind, color, position) combinations never appear). Captions always name the background
(``--no-background``: never), so what the model writes is one fixed grammar :func:`toyworld.parse_caption`
reads back. The learning rate warms up, then follows a cosine down to ``--min-lr`` times itself at
``--steps`` (a resumed run given another ``--steps`` reshapes the rest of that curve).

A training aid, :class:`CellReader` (``--cell-weight``; not exported), reads each grid cell's kind of
shape straight from the vision tower. Without it the decoder learns, besides what it sees, that the
held-out combinations never occur, and on a held-out picture says the look-alike kind that fits a
trained combination (a circle becomes a square, a diamond a cross): about half the held-out shapes'
kinds come out wrong. With it the tower tells kinds apart early and clearly enough that the picture
outweighs that prior.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.paths import ModelPaths
from training.loop import cosine_lr, prepare, train
from training.run_folder import read_config, read_state, recent_loss, write_config
from training.script import (
    add_common_args,
    count_parameters,
    measure_step,
    model_config,
    settings,
    staging,
    swap_in,
)
from training.toy_data import toy_batch

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]")
"""BERT's special tokens, and BLIP's decoder start token [DEC] (its bos)."""
EXPORT = Path("models/captioners/toy-blip")
MAX_POSITIONS = 64  # text positions: a two-shape caption with its background takes at most 21 tokens
MAX_NEW_TOKENS = 40  # what the evaluation lets the model write
EVAL_SEED = 1234
#: Options about the export alone: not part of the run's config (a finished run may be exported anew).
EXPORT_OPTIONS = ("export", "eval")
METRICS = ("kind", "color", "position", "all", "count", "exact", "background", "readable")
#: The options that shape a run, in the order the model card's command gives them.
COMMAND_OPTIONS = (
    "steps",
    "batch",
    "lr",
    "warmup",
    "min_lr",
    "weight_decay",
    "seed",
    "size",
    "patch",
    "vision_hidden",
    "vision_layers",
    "vision_heads",
    "text_hidden",
    "text_layers",
    "text_heads",
    "cell_weight",
    "threads",
)


# --------------------------------------------------------------------------- model and processor


def vocabulary() -> list[str]:
    """The tokenizer's vocabulary: BERT's specials, then every word a toy-world caption can use."""
    from toyworld import caption_words

    return [*SPECIALS, *caption_words()]


def build_tokenizer() -> Any:
    """A BERT WordPiece tokenizer over :func:`vocabulary` (lower-casing, [DEC] as its bos token)."""
    from transformers import BertTokenizer

    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "vocab.txt").write_text("\n".join(vocabulary()) + "\n", encoding="utf-8")
        return BertTokenizer.from_pretrained(folder, bos_token="[DEC]", local_files_only=True)


def build_processor(tokenizer: Any, size: int = 32) -> Any:
    """A BlipProcessor whose pixel values are ``uint8 / 127.5 - 1``: exactly ``toy_batch``'s images."""
    from transformers import BlipImageProcessor, BlipProcessor

    images = BlipImageProcessor(
        size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    return BlipProcessor(image_processor=images, tokenizer=tokenizer)


def build_model(tokenizer: Any, args: argparse.Namespace) -> Any:
    """A BlipForConditionalGeneration: a ViT on ``size`` px pictures in ``patch`` px patches and a BERT
    decoder (self-attention, cross-attention to the picture, feed-forward) over the tokenizer's words."""
    from transformers import BlipConfig, BlipForConditionalGeneration

    vision = {
        "hidden_size": args.vision_hidden,
        "intermediate_size": 4 * args.vision_hidden,
        "num_hidden_layers": args.vision_layers,
        "num_attention_heads": args.vision_heads,
        "image_size": args.size,
        "patch_size": args.patch,
        "initializer_range": 0.02,
    }
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": args.text_hidden,
        "intermediate_size": 4 * args.text_hidden,
        "num_hidden_layers": args.text_layers,
        "num_attention_heads": args.text_heads,
        "max_position_embeddings": MAX_POSITIONS,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.sep_token_id,
        "sep_token_id": tokenizer.sep_token_id,
    }
    config = BlipConfig(
        vision_config=vision,
        text_config=text,
        projection_dim=args.text_hidden,
        image_text_hidden_size=args.text_hidden,
    )
    return BlipForConditionalGeneration(config)


class Tokens:
    """Captions -> (input ids starting with [DEC], attention mask), padded to the longest, cached."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.cache: dict[str, list[int]] = {}

    def __call__(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        for text in set(captions) - set(self.cache):
            ids = self.tokenizer(text).input_ids  # [CLS] words [SEP]
            if self.tokenizer.unk_token_id in ids:
                raise ValueError(f"the caption {text!r} holds words outside the vocabulary")
            self.cache[text] = [self.tokenizer.bos_token_id, *ids[1:]]
        rows = [self.cache[text] for text in captions]
        width = max(len(row) for row in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return ids, mask


class SavedOnce(torch.nn.Module):
    """The model as the run's training state holds it: BLIP ties its output layer to its word
    embeddings (weight and bias shared under two names each), which safetensors refuses to save twice,
    so each shared tensor is saved under its first name only and restored through it."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def aliases(self) -> set[str]:
        """The names of tensors already listed under an earlier name."""
        seen: set[int] = set()
        out = set()
        for name, tensor in self.model.state_dict().items():
            if tensor.data_ptr() in seen:
                out.add(name)
            seen.add(tensor.data_ptr())
        return out

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:  # type: ignore[override]
        aliases = self.aliases()
        return {k: v for k, v in self.model.state_dict().items() if k not in aliases}

    def load_state_dict(self, state: Any, strict: bool = True, assign: bool = False) -> Any:
        result = self.model.load_state_dict(state, strict=False, assign=assign)
        if strict and (set(result.missing_keys) != self.aliases() or result.unexpected_keys):
            raise RuntimeError(f"the saved captioner does not fit the model: {result}")
        return result


class CellReader(torch.nn.Module):
    """A training aid, not exported: reads what each of the 3x3 cells holds (nothing, or which kind of
    shape) from the vision tower's tokens, a direct lesson in telling kinds apart by sight."""

    def __init__(self, hidden: int, tokens: int) -> None:
        from toyworld import SHAPES

        super().__init__()
        self.norm = torch.nn.LayerNorm(hidden)
        self.linear = torch.nn.Linear(tokens * hidden, 9 * (len(SHAPES) + 1))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """(B, tokens, hidden) -> logits (B, 9, 1 + kinds)."""
        return self.linear(self.norm(states).flatten(1)).view(len(states), 9, -1)


def cell_targets(scenes: Sequence[Any]) -> torch.Tensor:
    """(B, 9) classes of the cells in reading order: 0 for an empty cell, 1 + the index of the kind."""
    from toyworld import SHAPES

    targets = torch.zeros((len(scenes), 9), dtype=torch.long)
    for i, scene in enumerate(scenes):
        for shape in scene.shapes:
            targets[i, 3 * shape.cell[0] + shape.cell[1]] = 1 + SHAPES.index(shape.kind)
    return targets


def caption_step(
    model: Any, tokens: Tokens, args: argparse.Namespace, device: torch.device, cells: CellReader | None
) -> Any:
    """The step function: the captions' cross-entropy under teacher forcing (plus ``cell_weight`` times
    the cell reader's cross-entropy), backward; returns the losses and the share of next words (and of
    cells) predicted right."""
    background_p = 1.0 if args.background else 0.0

    def step_fn(step: int) -> dict[str, float]:
        batch = toy_batch(step, args.batch, args.seed, args.size, background_p=background_p)
        ids, mask = (t.to(device) for t in tokens(batch.captions))
        labels = ids.masked_fill(mask == 0, -100)
        out = model(pixel_values=batch.images.to(device), input_ids=ids, attention_mask=mask, labels=labels)
        metrics: dict[str, float] = {"caption_loss": out.loss.item()}
        loss = out.loss
        if cells is not None:
            logits = cells(out.image_embeds)
            targets = cell_targets(batch.scenes).to(device)
            cell_loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
            loss = loss + args.cell_weight * cell_loss
            metrics["cell_loss"] = cell_loss.item()
            metrics["cell_acc"] = (logits.argmax(-1) == targets).float().mean().item()
        loss.backward()
        with torch.no_grad():
            target = labels[:, 1:]
            right = (out.logits[:, :-1].argmax(-1) == target)[target != -100]
        return {"loss": loss.item(), **metrics, "token_acc": right.float().mean().item()}

    return step_fn


# --------------------------------------------------------------------------- evaluation


def score_caption(scene: Any, text: str) -> dict[str, float]:
    """How right a caption is about a scene: the share of the scene's shapes whose kind, color,
    position (and all three) it names, whether it names as many shapes as there are (``count``),
    exactly the scene's shapes (``exact``), the right background when it names one, and whether it
    reads in full (``readable``). Each shape is matched to at most one named shape, as
    :func:`toyworld.score` matches detections (same cell first, then same kind and color)."""
    from toyworld import caption_background, parse_caption

    try:
        named = parse_caption(text)
        readable = True
    except ValueError:
        named, readable = parse_caption(text, strict=False), False
    wanted = list(scene.attributes)

    def affinity(i: int, j: int) -> int:
        (kind, color, cell), (k, c, p) = wanted[i], named[j]
        return 4 * (cell == p) + 2 * (kind == k) + (color == c)

    pairs = sorted(
        ((i, j) for i in range(len(wanted)) for j in range(len(named))), key=lambda p: (-affinity(*p), p)
    )
    match: dict[int, int] = {}
    for i, j in pairs:
        if i not in match and j not in match.values():
            match[i] = j
    right = {key: 0 for key in ("kind", "color", "position", "all")}
    for i, j in match.items():
        same = [a == b for a, b in zip(wanted[i], named[j], strict=True)]
        for key, ok in zip(("kind", "color", "position"), same, strict=True):
            right[key] += ok
        right["all"] += all(same)
    shares = {key: value / max(1, len(wanted)) for key, value in right.items()}
    background = caption_background(text)
    return {
        **shares,
        "count": float(len(named) == len(wanted)),
        "exact": float(sorted(named) == sorted(wanted)),
        "background": float(background is None or background == scene.background),
        "readable": float(readable),
    }


@contextlib.contextmanager
def studio_root(folder: Path) -> Iterator[tuple[ModelPaths, str]]:
    """A temporary model root whose ``captioners/`` links to ``folder``: yields the model paths
    of that root alone and the name the CaptionerLoader node knows the folder by there."""
    with tempfile.TemporaryDirectory(prefix="captioner-eval-") as root:
        name = f"eval-{Path(root).name}"
        (Path(root) / "captioners").mkdir()
        (Path(root) / "captioners" / name).symlink_to(Path(folder).resolve(), target_is_directory=True)
        yield ModelPaths((Path(root),)), name


def studio_captions(folder: Path, images: np.ndarray, max_new_tokens: int = MAX_NEW_TOKENS) -> list[str]:
    """Captions of ``images`` (uint8 (n, H, W, 3)) by the folder, through the studio's CaptionerLoader
    and Captioner nodes (greedy decoding on the CPU in float32), one per image."""
    from models.manager import ModelManager
    from models.services import Services
    from nodes.base import CancelToken, Context, RunSettings
    from nodes.vision import Captioner, CaptionerLoader

    manager = ModelManager(device="cpu", dtype=torch.float32)
    with studio_root(folder) as (paths, name):
        services = Services.sharing(manager, paths)

        def context(node_type: str) -> Context:
            return Context(
                node_id=node_type,
                node_type=node_type,
                run_id="captioner-eval",
                seed=0,
                settings=RunSettings(services=services),
                cancel_token=CancelToken(),
                emit=lambda event: None,
            )

        handle = CaptionerLoader().run(context("CaptionerLoader"), captioner_name=name)["captioner"]
        text = Captioner().run(
            context("Captioner"),
            captioner=handle,
            image=np.asarray(images, dtype=np.float32) / 255.0,
            prompt="",
            max_new_tokens=max_new_tokens,
            num_beams=1,
        )["text"]
    captions = str(text).split("\n")
    if len(captions) != len(images):
        raise RuntimeError(f"{len(images)} pictures gave {len(captions)} captions")
    return captions


def evaluate_captioner(
    folder: Path, n: int = 200, seed: int = EVAL_SEED, split: str = "test", size: int = 32
) -> dict[str, Any]:
    """Caption ``n`` toy-world pictures of ``split`` ("test": each holds a held-out combination) with
    the folder through the studio's nodes, and average :func:`score_caption` over them (shape shares
    per shape, the rest per caption). A few mistakes are kept as examples."""
    from toyworld import caption, dataset

    start = time.monotonic()
    data = dataset(n, seed=seed, size=size, split=split)
    captions = studio_captions(Path(folder), np.stack([image for image, _, _ in data]))
    scores = [score_caption(scene, text) for (_, _, scene), text in zip(data, captions, strict=True)]
    shapes = [len(scene.shapes) for _, _, scene in data]
    result: dict[str, Any] = {"split": split, "n": n, "seed": seed, "shapes": sum(shapes)}
    for key in METRICS:
        values = [s[key] for s in scores]
        weights = shapes if key in ("kind", "color", "position", "all") else None
        result[key] = round(float(np.average(values, weights=weights)), 4)
    result["mistakes"] = [
        {"expected": caption(scene, background=True), "got": text}
        for (_, _, scene), text, s in zip(data, captions, scores, strict=True)
        if s["exact"] < 1 or s["background"] < 1
    ][:5]
    result["seconds"] = round(time.monotonic() - start, 1)
    return result


# --------------------------------------------------------------------------- export


def command(config: dict[str, Any], export: Path | str) -> str:
    """The command line that reproduces the run (and its export)."""
    parts = ["python -m training.captioner", f"--out {config['out']}"]
    given = [key for key in COMMAND_OPTIONS if config.get(key) is not None]
    parts += [f"--{key.replace('_', '-')} {config[key]}" for key in given]
    parts.append("--background" if config["background"] else "--no-background")
    parts += [f"--export {export}", f"--eval {config['eval']}"]
    return " ".join(parts)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def model_card(model: Any, run: Path, config: dict[str, Any], info: dict[str, Any]) -> str:
    """The README.md of the exported folder: what the model is, how it was made and how right it is."""
    state = read_state(run)
    vision, text = model.config.vision_config, model.config.text_config
    loss = recent_loss(run)
    token_acc = recent_loss(run, key="token_acc")
    steps = state.step if state else 0
    minutes = state.elapsed / 60 if state else 0.0
    grid = config["size"] // config["patch"]
    lines = [
        "# toy-blip: a tiny BLIP captioner of the toy world",
        "",
        "A `BlipForConditionalGeneration` in the transformers layout, trained from scratch on the procedural",
        "toy world of this repository (`toyworld`): pictures of one or two colored shapes on a 3x3 grid.",
        'It writes captions such as "a red circle at the top left and a blue square in the center on a',
        'gray background", which `toyworld.parse_caption` reads back. It knows nothing but the toy world.',
        "",
        "## How it was made",
        "",
        '- **Data**: `toyworld.random_scene(split="train")` drawn afresh for every step from a generator',
        "  seeded by (seed, step, item) (`training.toy_data.toy_batch`): held-out (kind, color, position)",
        f"  combinations never appear. {config['size']} px pictures; the captions "
        + ("always name the background." if config["background"] else "never name the background."),
        f"- **Vision tower**: ViT on {config['size']}x{config['size']} pictures in {config['patch']} px "
        f"patches ({grid}x{grid} + 1 tokens), hidden size {vision.hidden_size}, "
        f"{vision.num_hidden_layers} layers, {vision.num_attention_heads} heads, "
        f"{count_parameters(model.vision_model):,} parameters.",
        f"- **Text decoder**: BERT with cross-attention, hidden size {text.hidden_size}, "
        f"{text.num_hidden_layers} layers, {text.num_attention_heads} heads, "
        f"{count_parameters(model.text_decoder):,} parameters; {text.max_position_embeddings} positions.",
        f"- **Tokenizer**: BERT WordPiece over the toy world's {text.vocab_size - len(SPECIALS)} words "
        f"(from `toyworld.caption_words()`) and the specials {' '.join(SPECIALS)} ([DEC] starts a "
        f"caption, [SEP] ends it). Images: BlipImageProcessor at {config['size']}x{config['size']}, "
        "mean 0.5, std 0.5.",
        f"- **Size**: {count_parameters(model):,} parameters, float32 safetensors; the folder holds "
        f"{info['bytes'] / 1e6:.2f} MB.",
        "- **Training**: teacher forcing, cross-entropy over the caption's words and [SEP]"
        + (
            f", plus {config['cell_weight']} times that of a cell reader (a linear layer on the vision "
            "tower's tokens naming each grid cell's kind of shape or nothing: a training aid, not "
            "exported, that makes the tower tell kinds apart well enough to name held-out combinations)"
            if config.get("cell_weight")
            else ""
        )
        + "; AdamW "
        f"(lr {config['lr']}, {config['warmup']} warm-up steps, then a cosine down to "
        f"{config['min_lr']} of it; weight decay {config['weight_decay']}), gradient clipping at 1, "
        f"batch {config['batch']}, seed {config['seed']}, {steps} steps "
        f"({state.status if state else 'new'}) in {minutes:.1f} minutes on {config['device']} with "
        f"{config['threads']} thread(s)"
        + (
            f"; over the last 100 steps mean loss {loss:.4f} and {token_acc:.1%} of next words right."
            if loss is not None and token_acc is not None
            else "."
        ),
        f"- Exported {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "## Using it",
        "",
        "In the studio: a CaptionerLoader node (put the folder in `models/captioners`) and a Captioner node.",
        "",
        "```python",
        "from transformers import BlipForConditionalGeneration, BlipProcessor",
        "processor = BlipProcessor.from_pretrained(FOLDER, local_files_only=True)",
        "model = BlipForConditionalGeneration.from_pretrained(FOLDER, local_files_only=True)",
        "inputs = processor(images=picture, return_tensors='pt')",
        "out = model.generate(**inputs, max_new_tokens=40, do_sample=False)",
        "text = processor.batch_decode(out, skip_special_tokens=True)[0]",
        "```",
        "",
    ]
    if info.get("eval"):
        lines += evaluation_lines(info["eval"])
    lines += [
        "## Reproducing it",
        "",
        "```bash",
        command(config, info["export"]),
        "```",
        "",
        "Training state, settings (`config.json`) and the loss per step (`log.jsonl`) stay in the run",
        "folder; rerunning the command resumes an unfinished run, or only exports a finished one.",
        "Measure a folder:",
        "",
        "```bash",
        f"python -m training.captioner eval {info['export']} --n {config['eval']} --split test",
        "```",
        "",
    ]
    return "\n".join(lines)


def evaluation_lines(results: dict[str, dict[str, Any]]) -> list[str]:
    """The model card's evaluation section."""
    first = next(iter(results.values()))
    lines = [
        "## Evaluation",
        "",
        f"{first['n']} pictures per split (`toyworld.dataset`, seed {first['seed']}) captioned through the",
        "studio's CaptionerLoader and Captioner nodes (greedy decoding), read back with",
        "`toyworld.parse_caption`: the share of shapes whose kind, color, position (and all three) the",
        "caption gets right, and of captions with the right number of shapes, exactly the right shapes,",
        "the right background and a grammar that reads in full. Every `test` picture holds a (kind,",
        "color, position) combination never seen in training.",
        "",
        "| split | " + " | ".join(METRICS) + " |",
        "|---|" + "---|" * len(METRICS),
    ]
    for split, result in results.items():
        lines.append(f"| {split} | " + " | ".join(f"{result[key]:.3f}" for key in METRICS) + " |")
    return [*lines, ""]


def export_captioner(model: Any, processor: Any, run: Path, out: Path, eval_n: int) -> Path:
    """Write the transformers folder, its model card and ``eval.json`` (``eval_n`` pictures per split
    captioned through the studio's nodes) beside ``out``, then swap it in."""
    run, out = Path(run), Path(out)
    config = {**read_config(run), "eval": eval_n}
    tmp = staging(out)
    model = model.to("cpu").eval()
    model.save_pretrained(str(tmp), safe_serialization=True)
    processor.save_pretrained(str(tmp))
    info: dict[str, Any] = {"export": str(out)}
    if eval_n:
        info["eval"] = {
            split: evaluate_captioner(tmp, eval_n, split=split, size=config["size"])
            for split in ("test", "train")
        }
        (tmp / "eval.json").write_text(json.dumps(info["eval"], indent=1))
    info["bytes"] = folder_bytes(tmp)
    (tmp / "README.md").write_text(model_card(model, run, config, info))
    return swap_in(tmp, out)


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.captioner", description=__doc__)
    add_common_args(parser, steps=13000, batch=48, lr=2e-3)
    parser.add_argument("--min-lr", type=float, default=0.05, help="final lr, as a share of --lr")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--patch", type=int, default=8, help="vision patch size in pixels")
    parser.add_argument("--vision-hidden", type=int, default=96)
    parser.add_argument("--vision-layers", type=int, default=3)
    parser.add_argument("--vision-heads", type=int, default=4)
    parser.add_argument("--text-hidden", type=int, default=96)
    parser.add_argument("--text-layers", type=int, default=2)
    parser.add_argument("--text-heads", type=int, default=4)
    parser.add_argument(
        "--cell-weight",
        type=float,
        default=2.0,
        help="weight of the training aid that reads each cell's kind from the vision tower (0: none)",
    )
    parser.add_argument(
        "--background",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="captions name the background (always, or with --no-background never)",
    )
    parser.add_argument("--export", type=Path, default=EXPORT, help="the transformers folder to write")
    parser.add_argument(
        "--eval", type=int, default=200, help="pictures per split to score the export on (0: none)"
    )
    return parser.parse_args(argv)


def parse_eval_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training.captioner eval", description="Score a captioner folder on toy pictures."
    )
    parser.add_argument("folder", type=Path, help="a transformers captioner folder")
    parser.add_argument("--n", type=int, default=200, help="pictures")
    parser.add_argument("--seed", type=int, default=EVAL_SEED)
    parser.add_argument("--split", choices=("test", "train"), default="test")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return parser.parse_args(argv)


def eval_main(argv: list[str]) -> int:
    args = parse_eval_args(argv)
    torch.set_num_threads(args.threads)
    result = evaluate_captioner(args.folder, args.n, args.seed, args.split, args.size)
    print(json.dumps(result, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["eval"]:
        return eval_main(argv[1:])
    args = parse_args(argv)
    device = prepare(args)
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, args).to(device).train()
    modules: dict[str, torch.nn.Module] = {"blip": SavedOnce(model)}
    cells = None
    if args.cell_weight:
        tokens = (args.size // args.patch) ** 2 + 1
        cells = modules["cells"] = CellReader(args.vision_hidden, tokens).to(device).train()
    params = [p for module in modules.values() for p in module.parameters()]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    step_fn = caption_step(model, Tokens(tokenizer), args, device, cells)
    if args.measure:
        seconds = measure_step(step_fn, optimizer)
        report = {
            "model": "blip-captioner",
            "parameters": count_parameters(model),
            "vision_parameters": count_parameters(model.vision_model),
            "text_parameters": count_parameters(model.text_decoder),
            "cell_reader_parameters": count_parameters(cells) if cells is not None else 0,
            "batch": args.batch,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "seconds_per_step": round(seconds, 4),
            "minutes_for_steps": round(seconds * args.steps / 60, 1),
        }
        print(json.dumps(report))
        return 0
    run = Path(args.out)
    config = {k: v for k, v in settings(args).items() if k not in EXPORT_OPTIONS}
    config["models"] = {"blip": model_config(model)}
    write_config(run, config, read_state(run) is not None)
    state = train(
        args, modules, optimizer, step_fn, lr_at=cosine_lr(args.lr, args.warmup, args.steps, args.min_lr)
    )
    folder = export_captioner(model, build_processor(tokenizer, args.size), run, args.export, args.eval)
    print(f"captioner ({state.status}, step {state.step}) exported to {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
