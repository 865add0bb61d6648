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

Options for a longer, cheaper run: ``--init FOLDER`` starts from an exported editor's UNet (to train one
further); ``--pool N`` draws the items from a fixed pool of N edits whose VAE latents are computed once
(saved in the run folder as ``pool.safetensors``; the frozen VAE otherwise costs a third of each step);
``--edit-weight W`` weighs the loss (1 + W) on the latent cells the edit changes (and their neighbours),
where all the instruction's work is, against the rest that is only copied from the source.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from training.frozen import DEFAULT_SD, FrozenSD, load_frozen_sd, to_tensor
from training.grounding import (
    AttentionStore,
    TokenCounter,
    grounding_loss,
    instruction_groundings,
    record_cross_attention,
)
from training.loop import cosine_lr, prepare, train, warmup_lr
from training.run_folder import read_config, read_state, recent_loss, write_config
from training.script import (
    add_common_args,
    count_parameters,
    halve_weights,
    link_shared,
    measure_step,
    model_config,
    settings,
    staging,
    swap_in,
)
from training.seeding import step_generator

DEFAULT_EXPORT = Path("models/checkpoints/toy-ip2p")
DROP = 0.05  # share of items without the instruction, without the source, and without both
INIT_CARD = "init-README.md"  # the card of the editor a run started from, kept in the run folder
POOL_STEP = 1 << 40  # the "step" whose items make up the pool (training steps never reach it)
CHANGED = 0.02  # a pixel differs between source and edit when a channel moves by more than this in [-1, 1]


def edit_item(
    seed: int, step: int, index: int, size: int, shapes: int | None = None
) -> tuple[np.ndarray, str, np.ndarray]:
    """(source picture, instruction, edited picture) of item ``index`` of step ``step``: both scenes
    from the training split only, of ``shapes`` shapes (1 or 2 at random when None)."""
    from toyworld import edit, instructions, random_scene, render

    rng = np.random.default_rng([seed, step, index])
    while True:
        scene = random_scene(rng, size=size, shapes=shapes, split="train")
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


def changed_cells(source: torch.Tensor, target: torch.Tensor, latent_size: int) -> torch.Tensor:
    """(B, 1, h, w) 0/1 map of the latent cells where two picture batches in [-1, 1] differ, grown by
    one cell (the VAE spreads a change a little)."""
    differs = ((source - target).abs().amax(dim=1, keepdim=True) > CHANGED).float()
    cells = F.adaptive_max_pool2d(differs, latent_size)
    return F.max_pool2d(cells, 3, stride=1, padding=1)


@dataclass
class EditPool:
    """A fixed pool of edits with their VAE latents computed once: the source's latent mode and the
    edit's latent posterior (mean, std; unscaled), the instruction and the changed cells."""

    source: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    changed: torch.Tensor
    texts: list[str]

    def in_layout(self) -> EditPool:
        """The pool with its latents channels-last, as the VAE hands them over on a CPU, and its map
        of changed cells plain: a pool read back from its file then computes, step for step, exactly as
        the one built (a different memory layout changes the UNet's results in rounding)."""
        last = torch.channels_last
        return EditPool(
            self.source.contiguous(memory_format=last),
            self.mean.contiguous(memory_format=last),
            self.std.contiguous(memory_format=last),
            self.changed.contiguous(),
            self.texts,
        )

    def save(self, path: Path) -> None:
        tensors = {"source": self.source, "mean": self.mean, "std": self.std, "changed": self.changed}
        save_file(
            {k: v.cpu().contiguous() for k, v in tensors.items()},
            str(path),
            metadata={"texts": json.dumps(self.texts)},
        )

    @classmethod
    def load(cls, path: Path, device: torch.device) -> EditPool:
        from safetensors import safe_open

        from models.safety import load_state_dict

        tensors = load_state_dict(path, device=str(device))
        with safe_open(str(path), framework="pt") as handle:
            texts = json.loads((handle.metadata() or {})["texts"])
        return cls(tensors["source"], tensors["mean"], tensors["std"], tensors["changed"], texts).in_layout()


@torch.no_grad()
def build_pool(
    sd: FrozenSD,
    n: int,
    seed: int,
    size: int,
    device: torch.device,
    chunk: int = 64,
    shapes: int | None = None,
) -> EditPool:
    """``n`` edits (item i is ``edit_item(seed, POOL_STEP, i, size, shapes)``) encoded by the frozen VAE."""
    parts: dict[str, list[torch.Tensor]] = {"source": [], "mean": [], "std": [], "changed": []}
    texts: list[str] = []
    for start in range(0, n, chunk):
        items = [edit_item(seed, POOL_STEP, i, size, shapes) for i in range(start, min(n, start + chunk))]
        source = to_tensor([s for s, _, _ in items]).to(device)
        target = to_tensor([t for _, _, t in items]).to(device)
        posterior = sd.vae.encode(target).latent_dist
        parts["source"].append(sd.vae.encode(source).latent_dist.mode())
        parts["mean"].append(posterior.mean)
        parts["std"].append(posterior.std)
        parts["changed"].append(changed_cells(source, target, posterior.mean.shape[-1]))
        texts.extend(text for _, text, _ in items)
    return EditPool(**{k: torch.cat(v) for k, v in parts.items()}, texts=texts).in_layout()


def pool_for(run: Path, sd: FrozenSD, args: argparse.Namespace, device: torch.device) -> EditPool:
    """The run's pool: read from ``run/pool.safetensors``, or built (deterministically) and saved there."""
    path = Path(run) / "pool.safetensors"
    if path.is_file():
        return EditPool.load(path, device)
    start = time.monotonic()
    pool = build_pool(sd, args.pool, args.seed, args.size, device, shapes=args.shapes)
    path.parent.mkdir(parents=True, exist_ok=True)
    pool.save(path)
    print(f"built a pool of {args.pool} edits in {time.monotonic() - start:.0f} s", flush=True)
    return pool


def instruction_targets(
    texts: list[str], changed: torch.Tensor, count: TokenCounter, tokens: int = 77
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grounding targets for a batch of instructions: the words naming what changes (the shape referred
    to, the new color; :func:`training.grounding.instruction_groundings`) are tied to the latent cells
    the edit changes (``changed``, (B, 1, h, w))."""
    batch, _, height, width = changed.shape
    weights = torch.zeros(batch, tokens, device=changed.device)
    for b, text in enumerate(texts):
        for position in instruction_groundings(text, count):
            if position < tokens - 1:
                weights[b, position] = 1.0
    targets = changed.expand(batch, tokens, height, width) * weights[:, :, None, None]
    return targets, weights


def ip2p_step(
    editor: Any,
    sd: FrozenSD,
    args: argparse.Namespace,
    device: torch.device,
    pool: EditPool | None = None,
    store: AttentionStore | None = None,
) -> Any:
    """The step function. With a ``store`` (the editor's recorded cross-attention) the loss adds
    ``args.ground`` x the grounding loss of the instruction's words to the changed cells."""
    text_cache: dict[str, torch.Tensor] = {}  # the frozen text encoder's states of each instruction
    count = TokenCounter(sd.tokens.tokenizer)

    def text_states(texts: list[str]) -> torch.Tensor:
        missing = sorted({t for t in texts if t not in text_cache})
        if missing:
            text_cache.update(zip(missing, sd.text_states(missing, device), strict=True))
        return torch.stack([text_cache[t] for t in texts])

    def step_fn(step: int) -> dict[str, float]:
        generator = step_generator(args.seed, step, device)
        if pool is None:
            items = [edit_item(args.seed, step, i, args.size, args.shapes) for i in range(args.batch)]
            source = to_tensor([s for s, _, _ in items]).to(device)
            target = to_tensor([t for _, _, t in items]).to(device)
            texts = [text for _, text, _ in items]
        else:
            chosen = torch.from_numpy(
                np.random.default_rng([args.seed, step, 1 << 21]).integers(len(pool.texts), size=args.batch)
            ).to(device)
            texts = [pool.texts[i] for i in chosen.tolist()]
        drop = np.random.default_rng([args.seed, step, 1 << 20]).random(args.batch)
        texts = [("" if d < 2 * DROP else t) for t, d in zip(texts, drop, strict=True)]  # [0, 0.1)
        keep_source = torch.tensor(~((drop >= DROP) & (drop < 3 * DROP)), device=device)  # drop [.05, .15)
        if pool is None:
            latents = sd.latents(target, generator)
            with torch.no_grad():
                source_latents = sd.vae.encode(source).latent_dist.mode()
            states = sd.text_states(texts, device)
        else:
            mean, std = pool.mean[chosen], pool.std[chosen]
            noise = torch.randn(mean.shape, generator=generator, device=device)
            latents = (mean + std * noise) * sd.factor
            source_latents = pool.source[chosen]
            states = text_states(texts)
        source_latents = source_latents * keep_source[:, None, None, None]
        noisy, noise, timesteps = sd.noised(latents, generator)
        if store is not None:
            store.start()
        prediction = editor(torch.cat([noisy, source_latents], dim=1), timesteps, states).sample
        changed = None
        if args.edit_weight or store is not None:
            changed = (
                pool.changed[chosen] if pool is not None else changed_cells(source, target, noise.shape[-1])
            )
        if args.edit_weight:
            weight = 1.0 + args.edit_weight * changed
            loss = ((prediction - noise) ** 2 * weight).mean() / weight.mean()
        else:
            loss = F.mse_loss(prediction, noise)
        metrics = {"denoise": loss.item()}
        if store is not None:
            targets, weights = instruction_targets(texts, changed, count, states.shape[1])
            ground = grounding_loss(store.take(), targets, weights)
            loss = loss + args.ground * ground
            metrics["ground"] = ground.item()
        loss.backward()
        return {"loss": loss.item(), **metrics}

    return step_fn


def lr_schedule(args: argparse.Namespace) -> Any:
    """Warm-up then constant, or (``--decay-to``) warm-up then a cosine down to ``decay_to * lr`` at
    ``--decay-steps`` (default ``--steps``), constant after: a function of the step alone, so a resumed
    run follows the same schedule, and a run stopped early is reproduced by ``--steps`` at its stop."""
    if args.decay_to is None:
        return warmup_lr(args.lr, args.warmup)
    total = getattr(args, "decay_steps", None) or args.steps
    return cosine_lr(args.lr, args.warmup, total, args.decay_to)


def init_from(editor: Any, folder: Path) -> None:
    """Load an exported editor's UNet weights (``folder/unet``, float16 or float32) into ``editor``."""
    from models.safety import load_state_dict

    path = Path(folder) / "unet" / "diffusion_pytorch_model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} holds no exported editor UNet ({path} is missing)")
    weights = load_state_dict(path)
    channels = weights["conv_in.weight"].shape[1] if "conv_in.weight" in weights else None
    if channels != editor.config.in_channels:
        raise ValueError(
            f"{folder} is not an editor like this one: its UNet takes {channels} input channels, not "
            f"{editor.config.in_channels} (the picture's latents and the source's)"
        )
    editor.load_state_dict({k: v.float() for k, v in weights.items()})


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


def reproduce_commands(run: Path, config: dict[str, Any]) -> list[str]:
    """The commands that made the run's editor: those of the editor it started from (``--init``: read
    from the copy of that editor's card kept in the run folder), then this run's with every setting."""
    earlier: list[str] = []
    card = run / INIT_CARD
    if config.get("init") and card.is_file():
        blocks = card.read_text().split("```")
        if len(blocks) >= 3:
            earlier = [line for line in blocks[1].splitlines()[1:] if line.strip()]
    state = read_state(run)
    steps = state.step if state else 0
    command = (
        f"python -m training.ip2p --out {config['out']} --sd {config['sd']} --steps {steps} "
        f"--batch {config['batch']} --lr {config['lr']} --warmup {config['warmup']} --seed {config['seed']}"
    )
    if config.get("init"):
        command += f" --init {config['init']}"
    if config.get("pool"):
        command += f" --pool {config['pool']}"
    if config.get("edit_weight"):
        command += f" --edit-weight {config['edit_weight']}"
    if config.get("shapes"):
        command += f" --shapes {config['shapes']}"
    if config.get("ground"):
        command += f" --ground {config['ground']}"
    if config.get("decay_to") is not None:
        command += (
            f" --decay-to {config['decay_to']} --decay-steps {config.get('decay_steps') or config['steps']}"
        )
    return [*earlier, command + f" --threads {config['threads']} --export models/checkpoints/toy-ip2p"]


def model_card(editor: Any, run: Path) -> str:
    config = read_config(run)
    state = read_state(run)
    loss = recent_loss(run)
    data = (
        f"- Data: toy-world training scenes ({config['shapes'] if config.get('shapes') else '1 or 2'} shapes)"
        " and one valid instruction each (recolor or one-cell move) whose result is also a training scene;"
        " the pair rendered. Held-out combinations never appear."
    )
    if config.get("pool"):
        data += (
            f" Drawn from a fixed pool of {config['pool']:,} such edits whose VAE latents were computed once"
            " (`--pool`)."
        )
    training = (
        f"- Training: epsilon MSE, AdamW lr {config['lr']} ({config['warmup']} warm-up steps"
        + (
            f", then a cosine down to {config['decay_to']} of it at step"
            f" {config.get('decay_steps') or config['steps']}"
            if config.get("decay_to") is not None
            else ""
        )
        + f"), batch {config['batch']}, seed {config['seed']}"
        + (
            f"; the loss weighted {1 + config['edit_weight']:g}x on the latent cells the edit changes (and"
            " their neighbours)"
            if config.get("edit_weight")
            else ""
        )
        + (
            f"; plus {config['ground']} x a grounding loss (`training.grounding`) tying the instruction's"
            " words that name what changes (the shape referred to, the new color) to the changed latent"
            " cells through the UNet's cross-attention"
            if config.get("ground")
            else ""
        )
        + f"; {DROP:.0%} of items without the instruction, {DROP:.0%} without the source and {DROP:.0%}"
        f" without both; {state.step if state else 0} steps in {(state.elapsed if state else 0) / 60:.1f}"
        f" minutes on {config['device']}"
        + (f"; mean loss over the last 100 steps {loss:.4f}." if loss is not None else ".")
    )
    lines = [
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
    ]
    if config.get("init"):
        lines.append(
            f"- Trained further from the UNet of the editor before it (`{config['init']}`, made by the first"
            " command below)."
        )
    lines += [
        data,
        training,
        f"- Exported {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "## Reproducing it",
        "",
        "```bash",
        *reproduce_commands(run, config),
        "```",
        "",
        "Its quality is measured by `python bench/toy_quality.py --tasks editing`.",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.ip2p", description=__doc__)
    add_common_args(parser, steps=2000, batch=32, lr=5e-4)
    parser.add_argument("--sd", type=Path, default=DEFAULT_SD, help="the exported toy SD folder")
    parser.add_argument("--export", type=Path, default=None, help="write the pipeline folder here at the end")
    parser.add_argument(
        "--decay-to",
        type=float,
        default=None,
        help="cosine-decay the learning rate after warm-up to this share of it at --steps",
    )
    parser.add_argument(
        "--decay-steps", type=int, default=None, help="the step the cosine ends at (default: --steps)"
    )
    parser.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start from this exported editor's UNet",
    )
    parser.add_argument(
        "--pool",
        type=int,
        default=None,
        help="draw items from this many pre-encoded edits (default: fresh ones)",
    )
    parser.add_argument(
        "--edit-weight",
        type=float,
        default=None,
        help="extra loss weight where the edit changes (default: none)",
    )
    parser.add_argument(
        "--shapes",
        type=int,
        choices=(1, 2),
        default=None,
        help="scenes of this many shapes only (default: 1 or 2 at random); 2 makes every instruction"
        " name one shape of two, so that only the named one may change",
    )
    parser.add_argument(
        "--ground",
        type=float,
        default=None,
        help="weight of a grounding loss tying the words that name what changes to the changed cells"
        " through the editor's cross-attention (training.grounding; default: none)",
    )
    # The new options default to None, as they read in the settings of runs saved before they existed,
    # so that such runs still resume.
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = prepare(args)
    sd = load_frozen_sd(args.sd, device)
    editor = build_editor_unet(sd.unet)
    if args.init:
        init_from(editor, args.init)
    editor = editor.to(device).train()
    optimizer = torch.optim.AdamW(editor.parameters(), lr=args.lr, weight_decay=0.0)
    run = Path(args.out)
    if args.measure:  # a small pool will do to time a step
        pool = (
            build_pool(sd, 2 * args.batch, args.seed, args.size, device, shapes=args.shapes)
            if args.pool
            else None
        )
        store = record_cross_attention(editor) if args.ground else None
        seconds = measure_step(ip2p_step(editor, sd, args, device, pool, store), optimizer)
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
    write_config(
        run, {**settings(args), "models": {"unet": model_config(editor)}}, read_state(run) is not None
    )
    if args.init and (Path(args.init) / "README.md").is_file() and not (run / INIT_CARD).is_file():
        shutil.copyfile(Path(args.init) / "README.md", run / INIT_CARD)  # for this run's card
    pool = pool_for(run, sd, args, device) if args.pool else None
    store = record_cross_attention(editor) if args.ground else None
    step_fn = ip2p_step(editor, sd, args, device, pool, store)
    state = train(args, {"unet": editor}, optimizer, step_fn, lr_at=lr_schedule(args))
    print(f"editor ({state.status}, step {state.step}) in {run}")
    if args.export:
        print(f"exported {export(editor, sd, run, args.export)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
