"""Train an InstructPix2Pix-style editor for the toy world: "make the circle blue", "move the square to
the right".

``python -m training.ip2p --out runs/ip2p --sd models/checkpoints/toy-sd --steps 2000`` (resumes when
``runs/ip2p`` holds a state; ``--max-minutes`` saves and stops; ``--measure`` prints seconds per step)
and ``--export models/checkpoints/toy-ip2p`` writes a ``StableDiffusionInstructPix2PixPipeline`` folder
with a model card. As in InstructPix2Pix, the UNet is the SD's with 4 more input channels (the source
picture's unscaled VAE latents, zero-initialised weights) and learns, with the text encoder and VAE
frozen (so the folder shares them with toy-sd), to denoise the edited picture given the source and the
instruction. Each training item is a toy-world training scene, one valid instruction whose result is
also a training scene, and the two rendered pictures; 5% of items drop the instruction, 5% the source
picture and 5% both, for the pipeline's two guidance scales.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from training.common import (
    add_common_args,
    count_parameters,
    halve_weights,
    measure_step,
    model_config,
    prepare,
    read_state,
    recent_loss,
    settings,
    staging,
    step_generator,
    swap_in,
    train,
    write_config,
)
from training.frozen import DEFAULT_SD, FrozenSD, load_frozen_sd, to_tensor

DEFAULT_EXPORT = Path("models/checkpoints/toy-ip2p")
DROP = 0.05  # share of items without the instruction, without the source, and without both


def edit_item(seed: int, step: int, index: int, size: int) -> tuple[np.ndarray, str, np.ndarray]:
    """(source picture, instruction, edited picture) of item ``index`` of step ``step``: both scenes
    from the training split only."""
    from toyworld import edit, instructions, random_scene, render

    rng = np.random.default_rng([seed, step, index])
    while True:
        scene = random_scene(rng, size=size, split="train")
        found = instructions(scene, rng, 1, split="train")
        if found:
            return render(scene), found[0], render(edit(scene, found[0]))


def build_editor_unet(unet: Any) -> Any:
    """The SD UNet with 8 input channels: the first 4 keep their weights, the source's 4 start at 0."""
    from diffusers import UNet2DConditionModel

    config = {**{k: v for k, v in unet.config.items() if not k.startswith("_")}, "in_channels": 8}
    editor = UNet2DConditionModel.from_config(config)
    weights = dict(unet.state_dict())
    conv = weights["conv_in.weight"]
    weights["conv_in.weight"] = torch.cat([conv, torch.zeros_like(conv)], dim=1)
    editor.load_state_dict(weights)
    return editor


def ip2p_step(editor: Any, sd: FrozenSD, args: argparse.Namespace, device: torch.device) -> Any:
    def step_fn(step: int) -> dict[str, float]:
        items = [edit_item(args.seed, step, i, args.size) for i in range(args.batch)]
        source = to_tensor([s for s, _, _ in items]).to(device)
        target = to_tensor([t for _, _, t in items]).to(device)
        texts = [text for _, text, _ in items]
        drop = np.random.default_rng([args.seed, step, 1 << 20]).random(args.batch)
        texts = [("" if d < 2 * DROP else t) for t, d in zip(texts, drop, strict=True)]  # [0, 0.1)
        keep_source = torch.tensor(~((drop >= DROP) & (drop < 3 * DROP)), device=device)  # drop [.05, .15)
        generator = step_generator(args.seed, step, device)
        latents = sd.latents(target, generator)
        with torch.no_grad():
            source_latents = sd.vae.encode(source).latent_dist.mode() * keep_source[:, None, None, None]
        noisy, noise, timesteps = sd.noised(latents, generator)
        states = sd.text_states(texts, device)
        prediction = editor(torch.cat([noisy, source_latents], dim=1), timesteps, states).sample
        loss = F.mse_loss(prediction, noise)
        loss.backward()
        return {"loss": loss.item()}

    return step_fn


SHARED = ("text_encoder", "tokenizer", "vae")


def same_file(a: Path, b: Path) -> bool:
    """Same bytes, or for JSON configs the same settings (the ``_name_or_path`` a config records of
    where its model was loaded from does not count)."""
    if a.suffix == ".json":
        first, second = (json.loads(path.read_text()) for path in (a, b))
        for config in (first, second):
            config.pop("_name_or_path", None)
        return first == second
    return filecmp.cmp(a, b, shallow=False)


def same_files(a: Path, b: Path) -> bool:
    """Whether two folders hold the same files with the same contents."""
    names = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    if names != sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()):
        return False
    return all(same_file(a / name, b / name) for name in names)


def link_shared(folder: Path, sd_folder: Path) -> list[str]:
    """Replace the parts of the export that are byte for byte the SD's (its frozen text encoder,
    tokenizer and VAE) by relative links into the SD's folder, when the two folders sit side by side,
    so the repository and a checkout hold them once. Returns the parts linked."""
    folder, sd_folder = Path(folder), Path(sd_folder)
    if folder.resolve().parent != sd_folder.resolve().parent:
        return []
    linked = []
    for part in SHARED:
        if (sd_folder / part).is_dir() and same_files(folder / part, sd_folder / part):
            shutil.rmtree(folder / part)
            (folder / part).symlink_to(Path("..") / sd_folder.name / part, target_is_directory=True)
            linked.append(part)
    return linked


def export(editor: Any, sd: FrozenSD, run: Path, out: Path) -> Path:
    """Write the InstructPix2Pix pipeline folder (the SD's text encoder, VAE and sampler settings with
    the trained UNet) and its model card to ``out``, swapped in once the studio's loader reads it back."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionInstructPix2PixPipeline

    from models.loading import load_checkpoint
    from models.tokenizer import clip_tokenizer

    out = Path(out)
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=sd.vae,
        text_encoder=sd.text_encoder,
        tokenizer=clip_tokenizer(),  # a fresh one: training's carries padding settings into its file
        unet=editor.to("cpu").eval(),
        scheduler=DPMSolverMultistepScheduler.from_pretrained(sd.folder, subfolder="scheduler"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    tmp = staging(out)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    halve_weights(tmp)
    link_shared(tmp, sd.folder)
    (tmp / "README.md").write_text(model_card(editor, run))
    loaded = load_checkpoint(tmp)
    if loaded.unet.config.in_channels != 8:
        raise RuntimeError(f"{tmp} does not load back as an 8-channel editor")
    return swap_in(tmp, out)


def model_card(editor: Any, run: Path) -> str:
    config = json.loads((run / "config.json").read_text())
    state = read_state(run)
    steps_done = state.step if state else 0
    loss = recent_loss(run)
    return "\n".join(
        [
            "# toy-ip2p: an InstructPix2Pix-style editor of the toy world",
            "",
            "A diffusers `StableDiffusionInstructPix2PixPipeline` folder: give it a toy-world picture and",
            'an instruction such as "make the circle blue" or "move the square to the right" (one cell up,',
            "down, left or right). It knows nothing but the toy world.",
            "",
            "## How it was made",
            "",
            f"- UNet: toy-sd's ({list(editor.config.block_out_channels)} channels) with 8 input channels,"
            f" {count_parameters(editor):,} parameters; the 4 channels of the source picture's VAE latents"
            " start at zero.",
            "- Text encoder, tokenizer and VAE: toy-sd's, frozen and unchanged (links to `../toy-sd`, so",
            "  they are stored once); weights stored as float16.",
            "- Data: toy-world training scenes and one valid instruction each (recolor or one-cell move)",
            "  whose result is also a training scene; the pair rendered. Held-out combinations never appear.",
            f"- Training: epsilon MSE, AdamW lr {config['lr']} ({config['warmup']} warm-up steps), batch"
            f" {config['batch']}, seed {config['seed']}; {DROP:.0%} of items without the instruction,"
            f" {DROP:.0%} without the source and {DROP:.0%} without both; {state.step if state else 0} steps"
            f" in {(state.elapsed if state else 0) / 60:.1f} minutes on {config['device']}"
            + (f"; mean loss over the last 100 steps {loss:.4f}." if loss is not None else "."),
            f"- Exported {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
            "",
            "## Reproducing it",
            "",
            "```bash",
            f"python -m training.ip2p --out runs/ip2p --sd {config['sd']} --steps {steps_done} "
            f"--batch {config['batch']} --lr {config['lr']} --seed {config['seed']} "
            "--export models/checkpoints/toy-ip2p",
            "```",
            "",
            "Its quality is measured by `python bench/toy_quality.py`.",
            "",
        ]
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.ip2p", description=__doc__)
    add_common_args(parser, steps=2000, batch=32, lr=5e-4)
    parser.add_argument("--sd", type=Path, default=DEFAULT_SD, help="the exported toy SD folder")
    parser.add_argument("--export", type=Path, default=None, help="write the pipeline folder here at the end")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = prepare(args)
    sd = load_frozen_sd(args.sd, device)
    editor = build_editor_unet(sd.unet).to(device).train()
    optimizer = torch.optim.AdamW(editor.parameters(), lr=args.lr, weight_decay=0.0)
    step_fn = ip2p_step(editor, sd, args, device)
    if args.measure:
        seconds = measure_step(step_fn, optimizer)
        print(
            json.dumps(
                {
                    "model": "ip2p",
                    "parameters": count_parameters(editor),
                    "seconds_per_step": round(seconds, 3),
                }
            )
        )
        return 0
    run = Path(args.out)
    write_config(
        run, {**settings(args), "models": {"unet": model_config(editor)}}, read_state(run) is not None
    )
    state = train(args, {"unet": editor}, optimizer, step_fn)
    print(f"editor ({state.status}, step {state.step}) in {run}")
    if args.export:
        print(f"exported {export(editor, sd, run, args.export)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
