"""Train a toy CLIP (image and text towers) on toy-world pictures and captions, for the CLIPScore node.

``python -m training.clip --out runs/clip --steps 3000 --batch 64 --export models/clip/toy-clip``
(resumes when ``runs/clip`` holds a state; ``--max-minutes`` saves and stops; ``--measure`` prints the
seconds per step). The text tower uses CLIP's real tokenizer (77 tokens), the image tower sees 32 px
pictures in 8 px patches; both learn with CLIP's contrastive loss over the batch. The export is a
transformers ``CLIPModel`` folder with a ``CLIPProcessor`` (float16 weights) and a model card, whose
evaluation says how often a held-out picture's own caption scores above the same caption with one
shape's color, kind or position changed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.loop import prepare, train
from training.run_folder import read_config, read_state, recent_loss, write_config
from training.script import (
    add_common_args,
    count_parameters,
    halve_weights,
    measure_step,
    model_config,
    settings,
    staging,
    swap_in,
)
from training.sd import MAX_LENGTH, Tokens
from training.toy_data import toy_batch

DEFAULT_EXPORT = Path("models/clip/toy-clip")


def build_clip(hidden: int = 64, layers: int = 3, heads: int = 4, size: int = 32, patch: int = 8) -> Any:
    from transformers import CLIPConfig, CLIPModel

    vocab = 49408
    text = {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": 4 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "max_position_embeddings": MAX_LENGTH,
        "bos_token_id": vocab - 2,
        "eos_token_id": vocab - 1,
        "pad_token_id": vocab - 1,
    }
    vision = {
        "hidden_size": hidden,
        "intermediate_size": 4 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "image_size": size,
        "patch_size": patch,
    }
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=hidden))


def pixel_values(images: torch.Tensor) -> torch.Tensor:
    """Pictures in [-1, 1] normalized as CLIPImageProcessor normalizes 32 px pictures."""
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    return ((images + 1) / 2 - mean.to(images)) / std.to(images)


def clip_step(model: Any, tokens: Tokens, args: argparse.Namespace, device: torch.device) -> Any:
    def step_fn(step: int) -> dict[str, float]:
        batch = toy_batch(step, args.batch, args.seed, args.size, background_p=0.5)
        out = model(
            input_ids=tokens(batch.captions).to(device),
            pixel_values=pixel_values(batch.images.to(device)),
            return_loss=True,
        )
        out.loss.backward()
        return {"loss": out.loss.item(), "scale": float(model.logit_scale.exp())}

    return step_fn


# --------------------------------------------------------------------------- evaluation


def altered(scene: Any, rng: np.random.Generator) -> Any:
    """The scene with one shape's color, kind or position changed (to a free cell)."""
    from toyworld import COLORS, SHAPES

    index = int(rng.integers(len(scene.shapes)))
    shape = scene.shapes[index]
    what = ("color", "kind", "cell")[int(rng.integers(3))]
    if what == "color":
        new = replace(shape, color=str(rng.choice([c for c in COLORS if c != shape.color])))
    elif what == "kind":
        new = replace(shape, kind=str(rng.choice([k for k in SHAPES if k != shape.kind])))
    else:
        free = [(r, c) for r in range(3) for c in range(3) if scene.is_free((r, c))]
        new = replace(shape, cell=free[int(rng.integers(len(free)))])
    return replace(
        scene,
        shapes=tuple(sorted((*scene.shapes[:index], new, *scene.shapes[index + 1 :]), key=lambda s: s.cell)),
    )


@torch.no_grad()
def evaluate(folder: Path, n: int = 200, seed: int = 1234) -> dict[str, Any]:
    """On ``n`` held-out pictures: how often the picture's caption scores above an altered caption,
    with the exported folder's own processor (as the CLIPScore node uses it)."""
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    from toyworld import caption, random_scene, render

    model = CLIPModel.from_pretrained(str(folder), torch_dtype=torch.float32, local_files_only=True).eval()
    processor = CLIPProcessor.from_pretrained(str(folder), local_files_only=True)
    wins = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        scene = random_scene(rng, size=32, split="test")
        texts = [caption(scene), caption(altered(scene, rng))]
        inputs = processor(
            images=[Image.fromarray(render(scene))], text=texts, return_tensors="pt", padding=True
        )
        logits = model(**inputs).logits_per_image[0]
        wins.append(bool(logits[0] > logits[1]))
    return {"n": n, "seed": seed, "split": "test", "own_caption_wins": round(float(np.mean(wins)), 3)}


def export(model: Any, run: Path, out: Path, eval_n: int) -> Path:
    from transformers import CLIPImageProcessor, CLIPProcessor

    from models.tokenizer import clip_tokenizer

    out = Path(out)
    tmp = staging(out)
    model.to("cpu").eval().save_pretrained(str(tmp), safe_serialization=True)
    halve_weights(tmp)
    size = model.config.vision_config.image_size
    images = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    CLIPProcessor(image_processor=images, tokenizer=clip_tokenizer()).save_pretrained(str(tmp))
    result = evaluate(tmp, eval_n) if eval_n else None
    if result:
        (tmp / "eval.json").write_text(json.dumps(result, indent=1))
    (tmp / "README.md").write_text(model_card(model, run, result))
    return swap_in(tmp, out)


def model_card(model: Any, run: Path, result: dict[str, Any] | None) -> str:
    config = read_config(run)
    state = read_state(run)
    steps_done = state.step if state else 0
    loss = recent_loss(run)
    lines = [
        "# toy-clip: a CLIP of the toy world",
        "",
        "A transformers `CLIPModel` folder (with its `CLIPProcessor`) for the studio's CLIPScore node: how",
        'well a toy-world picture matches a caption such as "a red circle at the top left". It knows',
        "nothing but the toy world.",
        "",
        "## How it was made",
        "",
        f"- Towers: text (CLIP's real tokenizer, 77 tokens) and image (32 px, 8 px patches), each hidden size"
        f" {config['hidden']}, {config['layers']} layers; {count_parameters(model):,} parameters, stored as"
        " float16.",
        "- Data: toy-world training scenes only (held-out combinations never seen), captions naming the",
        "  background half the time.",
        f"- CLIP's contrastive loss, AdamW lr {config['lr']} ({config['warmup']} warm-up steps), batch"
        f" {config['batch']}, seed {config['seed']}: {state.step if state else 0} steps in"
        f" {(state.elapsed if state else 0) / 60:.1f} minutes on {config['device']}"
        + (f"; mean loss of the last 100 steps {loss:.3f}." if loss is not None else "."),
        f"- Exported {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
    ]
    if result:
        lines += [
            "## Evaluation",
            "",
            f"On {result['n']} held-out pictures (seed {result['seed']}), the picture's own caption scores",
            "above the same caption with one shape's color, kind or position changed in"
            f" {result['own_caption_wins']:.1%} of cases.",
            "",
        ]
    lines += [
        "## Reproducing it",
        "",
        "```bash",
        f"python -m training.clip --out runs/clip --steps {steps_done} --batch {config['batch']}"
        f" --lr {config['lr']} --seed {config['seed']} --hidden {config['hidden']}"
        f" --layers {config['layers']}"
        " --export models/clip/toy-clip",
        "```",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.clip", description=__doc__)
    add_common_args(parser, steps=3000, batch=64, lr=1e-3)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument(
        "--export", type=Path, default=None, help="write the CLIPModel folder here at the end"
    )
    parser.add_argument("--eval", type=int, default=200, help="held-out pictures to evaluate the export on")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = prepare(args)
    model = build_clip(args.hidden, args.layers, size=args.size).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    step_fn = clip_step(model, Tokens(), args, device)
    if args.measure:
        seconds = measure_step(step_fn, optimizer)
        print(
            json.dumps({"model": "clip", "parameters": count_parameters(model), "seconds_per_step": seconds})
        )
        return 0
    run = Path(args.out)
    config = {k: v for k, v in settings(args).items() if k not in ("export", "eval")}
    write_config(run, {**config, "models": {"clip": model_config(model)}}, read_state(run) is not None)
    state = train(args, {"clip": model}, optimizer, step_fn)
    print(f"CLIP ({state.status}, step {state.step}) in {run}")
    if args.export:
        print(f"exported {export(model, run, args.export, args.eval)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
