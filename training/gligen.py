"""Train a GLIGEN text-box adapter for the toy SD: phrases ("a red circle") in boxes place the shapes.

``python -m training.gligen --out runs/gligen --sd models/checkpoints/toy-sd --steps 4000 --max-minutes 45
--export models/gligen/toy-gligen.safetensors`` (resumes when ``runs/gligen`` holds a state;
``--init-from RUN`` starts a second phase from another run's state, ``--init-adapter FILE`` from an
exported adapter's weights; ``--max-minutes`` saves and stops, Ctrl-C too; ``--measure`` prints the
parameters and seconds per step and exits).

Only the adapter learns: diffusers' GLIGEN position net (``GLIGENTextBoundingboxProjection``: each phrase's
pooled text embedding with the Fourier features of its box, through a 512-wide MLP) and one gated
self-attention fuser per transformer block (``GatedSelfAttentionDense``; diffusers starts its gates at 0,
here they start open, ``--gate-attn``: closed gates never opened in 1,044 steps), installed on toy-sd's
frozen UNet, with its frozen text encoder and VAE. Each training
scene's shapes are the boxes: the shape's own square (``toyworld.shape_box``) or its whole grid cell, half
and half, with the phrase "a red circle". So that the boxes, not the caption's position words, place the
shapes, ``--no-position`` of the captions name the shapes without places ("a red circle and a blue
square"); ``--drop`` of the items have neither caption nor boxes (masks 0: what classifier-free guidance's
unconditional half gets, as in the pipeline). The loss is the clean latents' error (the noise's MSE
weighted by (1 - a) / a, capped) at timesteps from ``--t-min``: where the shapes go is decided at high
noise, where the plain noise MSE of the SD's training is nearly blind (an adapter trained with it for
700 steps changed nothing).
The export is the original (ComfyUI) layout in float16: ``position_net.*`` and
``input_blocks.N.1.transformer_blocks.0.fuser.*``..., with a model card beside it.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from training.frozen import DEFAULT_SD, FrozenSD, load_frozen_sd
from training.loop import prepare, train
from training.run_folder import load_state, read_config, read_state, recent_loss, write_config
from training.script import add_common_args, count_parameters, measure_step, settings
from training.seeding import step_generator

DEFAULT_EXPORT = Path("models/gligen/toy-gligen.safetensors")
MAX_BOXES = 30


class GligenAdapter(torch.nn.Module):
    """The trained part: the position net and the fusers, in the order of ``paths`` (the UNet's
    transformer blocks)."""

    def __init__(self, unet: Any, phrase_width: int) -> None:
        from diffusers.models.attention import GatedSelfAttentionDense
        from diffusers.models.embeddings import GLIGENTextBoundingboxProjection

        from models.gligen import transformer_blocks

        super().__init__()
        width = int(unet.config.cross_attention_dim)
        self.position_net = GLIGENTextBoundingboxProjection(phrase_width, width, "text-only")
        blocks = transformer_blocks(unet)
        self.paths = sorted(blocks)
        self.fusers = torch.nn.ModuleList(
            GatedSelfAttentionDense(
                int(blocks[p].norm1.normalized_shape[0]),
                width,
                blocks[p].attn1.heads,
                blocks[p].attn1.inner_dim // blocks[p].attn1.heads,
            )
            for p in self.paths
        )

    def install(self, unet: Any) -> None:
        """Put the fusers in ``unet``'s blocks and the position net on ``unet`` (shared modules)."""
        from models.gligen import transformer_blocks

        blocks = transformer_blocks(unet)
        for path, fuser in zip(self.paths, self.fusers, strict=True):
            blocks[path].fuser = fuser
        unet.position_net = self.position_net

    def original_state(self, unet: Any) -> dict[str, torch.Tensor]:
        """The adapter's tensors in the original (LDM, ComfyUI) layout."""
        from models.gligen import to_original

        state = {f"position_net.{k}": v for k, v in self.position_net.state_dict().items()}
        for path, fuser in zip(self.paths, self.fusers, strict=True):
            state.update({f"{path}.fuser.{k}": v for k, v in fuser.state_dict().items()})
        return to_original(state, unet.config)


class Phrases:
    """Phrase -> the frozen text encoder's pooled embedding (the GLIGEN pipeline's), cached."""

    def __init__(self, sd: FrozenSD, device: torch.device) -> None:
        self.sd, self.device = sd, device
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, phrase: str) -> torch.Tensor:
        if phrase not in self.cache:
            from models.gligen import encode_phrases

            self.cache[phrase] = encode_phrases(
                self.sd.tokens.tokenizer, self.sd.text_encoder, [phrase], str(self.device)
            )[0].to(self.device)
        return self.cache[phrase]


def shape_phrase(shape: Any) -> str:
    """``"a red circle"``: what a box says."""
    from toyworld.world import article

    return f"{article(shape.color)} {shape.color} {shape.kind}"


def box_of(shape: Any, size: int, whole_cell: bool) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) fractions: the shape's square box, or its whole grid cell."""
    from toyworld.world import shape_box

    if whole_cell:
        row, col = shape.cell
        return (col / 3, row / 3, (col + 1) / 3, (row + 1) / 3)
    cx, cy, side = shape_box(shape, size)
    return ((cx - side / 2) / size, (cy - side / 2) / size, (cx + side / 2) / size, (cy + side / 2) / size)


def scene_caption(scene: Any, rng: np.random.Generator, no_position: float) -> str:
    """The scene's caption, without the place words with probability ``no_position``."""
    from toyworld import caption
    from toyworld.world import article, join_phrases

    background = bool(rng.random() < 0.5)
    if rng.random() >= no_position:
        return caption(scene, background=background)
    shapes = sorted(scene.shapes, key=lambda s: s.cell)
    text = join_phrases([shape_phrase(s) for s in shapes])
    if background:
        text += f" on {article(scene.background)} {scene.background} background"
    return text


def grounding_batch(
    scenes: list[Any],
    rng: np.random.Generator,
    phrases: Phrases,
    args: argparse.Namespace,
    device: torch.device,
) -> tuple[list[str], dict[str, torch.Tensor]]:
    """(captions, the ``gligen`` inputs) of a batch of scenes: boxes, phrase embeddings, masks."""
    n = len(scenes)
    width = int(phrases("a red circle").shape[-1])
    boxes = torch.zeros(n, MAX_BOXES, 4, device=device)
    embeds = torch.zeros(n, MAX_BOXES, width, device=device)
    masks = torch.zeros(n, MAX_BOXES, device=device)
    captions = []
    for row, scene in enumerate(scenes):
        if rng.random() < args.drop:
            captions.append("")
            continue
        boxes_only = getattr(args, "boxes_only", None)  # None in runs saved before the option existed
        if boxes_only and rng.random() < boxes_only:  # the phrases alone must say what each shape is
            captions.append("")
        else:
            captions.append(scene_caption(scene, rng, args.no_position))
        order = rng.permutation(len(scene.shapes))
        for slot, index in enumerate(order):
            shape = scene.shapes[int(index)]
            boxes[row, slot] = torch.tensor(box_of(shape, args.size, bool(rng.random() < args.cell_boxes)))
            embeds[row, slot] = phrases(shape_phrase(shape))
            masks[row, slot] = 1.0
    return captions, {"boxes": boxes, "positive_embeddings": embeds, "masks": masks}


class Pool:
    """A fixed pool of training scenes (``--pool``, item i drawn from (seed, i)) with their VAE
    posteriors, built once and kept in the run folder: rendering and encoding each step's pictures
    afresh cost a fifth of a step."""

    FILE = "pool.safetensors"

    def __init__(self, sd: FrozenSD, args: argparse.Namespace, device: torch.device) -> None:
        from safetensors.torch import load_file, save_file

        from toyworld import random_scene

        self.scenes = [
            random_scene(np.random.default_rng([args.seed, i, 7]), size=args.size, split="train")
            for i in range(args.pool)
        ]
        path = Path(args.out) / self.FILE
        if not path.is_file() or args.measure:
            self.mean, self.std = self.encode(sd, args.size, device)
            if args.measure:
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            tensors = {"mean": self.mean.cpu().contiguous(), "std": self.std.cpu().contiguous()}
            save_file(tensors, str(path))
        # a new run reads the pool back as a resumed one does, so both compute alike to the bit
        tensors = load_file(str(path))
        self.mean, self.std = tensors["mean"].to(device), tensors["std"].to(device)

    def encode(self, sd: FrozenSD, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The scenes' VAE posteriors: (means, stds) of their latents."""
        from toyworld import render
        from training.frozen import to_tensor

        means, stds = [], []
        with torch.no_grad():
            for start in range(0, len(self.scenes), 64):
                pictures = [render(s) for s in self.scenes[start : start + 64]]
                dist = sd.vae.encode(to_tensor(pictures).to(device)).latent_dist
                means.append(dist.mean)
                stds.append(dist.std)
        return torch.cat(means), torch.cat(stds)


def gligen_step(
    sd: FrozenSD,
    pool: Pool,
    phrases: Phrases,
    args: argparse.Namespace,
    device: torch.device,
    store: Any = None,
) -> Any:
    """The step function: a batch of pool scenes (latents drawn from their posteriors), captions and
    boxes as :func:`grounding_batch` makes them, epsilon MSE of the UNet with the adapter. With a
    ``store`` (the UNet's recorded cross-attention, :func:`training.grounding.record_cross_attention`)
    the loss adds ``args.ground`` x the grounding loss of the caption's color and kind words on their
    shapes: the UNet is frozen, so the adapter learns to steer the caption's words to its boxes."""
    from training.grounding import TokenCounter, grounding_loss, scene_targets

    count = TokenCounter(sd.tokens.tokenizer)

    def step_fn(step: int) -> dict[str, float]:
        rng = np.random.default_rng([args.seed, step, 2])
        index = rng.choice(len(pool.scenes), size=args.batch, replace=False)
        scenes = [pool.scenes[int(i)] for i in index]
        captions, gligen = grounding_batch(scenes, rng, phrases, args, device)
        generator = step_generator(args.seed, step, device)
        chosen = torch.from_numpy(index).to(device)
        draw = torch.randn(pool.mean[chosen].shape, generator=generator, device=device)
        latents = (pool.mean[chosen] + pool.std[chosen] * draw) * sd.factor
        noise = torch.randn(latents.shape, generator=generator, device=device)
        timesteps = torch.randint(args.t_min, 1000, (len(latents),), generator=generator, device=device)
        noisy = sd.scheduler.add_noise(latents, noise, timesteps)
        states = sd.text_states(captions, device)
        if store is not None:
            store.start()
        prediction = sd.unet(noisy, timesteps, states, cross_attention_kwargs={"gligen": gligen}).sample
        # the clean latents' error, (1 - a) / a times the noise's (capped): where the shapes go is
        # decided at high noise, where predicting the noise is easy and its plain MSE says little
        alpha = sd.scheduler.alphas_cumprod.to(device)[timesteps]
        weight = ((1 - alpha) / alpha).clamp(max=args.max_weight)
        loss = (weight * F.mse_loss(prediction, noise, reduction="none").mean(dim=(1, 2, 3))).mean()
        record = {"denoise": loss.item()}
        if store is not None:
            targets, weights = scene_targets(scenes, captions, count, int(states.shape[1]))
            ground = grounding_loss(store.take(), targets.to(device), weights.to(device))
            loss = loss + args.ground * ground
            record["ground"] = ground.item()
        loss.backward()
        record["loss"] = loss.item()
        if args.probe_every and step % args.probe_every == 0:
            # the same batch with every box masked out: the boxes help once this loss is the higher
            with torch.no_grad():
                blind = {**gligen, "masks": torch.zeros_like(gligen["masks"])}
                plain = sd.unet(noisy, timesteps, states, cross_attention_kwargs={"gligen": blind}).sample
                plain_loss = (weight * F.mse_loss(plain, noise, reduction="none").mean(dim=(1, 2, 3))).mean()
            record["loss_no_boxes"] = plain_loss.item()
            gates = [abs(f.alpha_attn.tanh().item()) for f in adapter_fusers(sd.unet)]
            record["gates"] = float(np.mean(gates))
        return record

    return step_fn


def adapter_fusers(unet: Any) -> list[Any]:
    """The fusers installed in ``unet``'s transformer blocks."""
    from models.gligen import transformer_blocks

    return [b.fuser for b in transformer_blocks(unet).values() if getattr(b, "fuser", None) is not None]


def open_gates(adapter: GligenAdapter, attn: float, dense: float, zero_out: bool = False) -> None:
    """Start the fusers' gates at ``alpha_attn = attn``, ``alpha_dense = dense`` (diffusers starts both
    at 0: then the attention gets no gradient until Adam has moved the gate by its noise, and a
    1,044-step run ended with every |tanh(alpha)| <= 0.06 and the boxes ignored)."""
    with torch.no_grad():
        for fuser in adapter.fusers:
            fuser.alpha_attn.fill_(attn)
            fuser.alpha_dense.fill_(dense)
            if zero_out:
                # open gates with zero outputs: the SD starts unchanged and every weight gets a
                # gradient (a random output closed the open gates instead of teaching them)
                fuser.attn.to_out[0].weight.zero_()
                fuser.attn.to_out[0].bias.zero_()
            if zero_out:
                fuser.ff.net[-1].weight.zero_()
                fuser.ff.net[-1].bias.zero_()


def init_phase(
    init_from: Path, run: Path, resuming: bool, modules: dict[str, torch.nn.Module], optimizer: Any
) -> dict[str, Any]:
    """A second phase: a new run starts from ``init_from``'s latest state (its modules and optimizer;
    the new run's own steps, seeds and schedule). Returns the config entries that say where it began
    (a resumed second phase keeps those it saved)."""
    if resuming:
        saved = read_config(run)
        return {k: saved[k] for k in ("init_step", "init_minutes")}
    state = load_state(Path(init_from), modules, optimizer)
    if state is None:
        raise FileNotFoundError(f"--init-from {init_from} holds no training state to start from")
    return {"init_step": state.step, "init_minutes": round(state.elapsed / 60, 2)}


def load_adapter(adapter: GligenAdapter, path: Path, unet: Any) -> None:
    """Give ``adapter`` the weights of an exported adapter file (read as the studio reads it, so a file
    made for another model is refused in the same words)."""
    from models.gligen import check_fits, load_gligen

    weights = load_gligen(Path(path), dtype=torch.float32)
    fusers = check_fits(weights, unet)
    with torch.no_grad():
        adapter.position_net.load_state_dict(weights.position_net)
        for block, fuser in zip(adapter.paths, adapter.fusers, strict=True):
            fuser.load_state_dict(fusers[block])


def lr_schedule(args: argparse.Namespace) -> Any:
    """Warm-up, then constant or (``--decay cosine``) cosine-decayed to 0 at ``--decay-steps`` (by
    default ``--steps``)."""
    import math

    if not args.decay:
        return None
    span = getattr(args, "decay_steps", None) or args.steps
    return lambda step: (
        args.lr
        * min(1.0, (step + 1) / max(1, args.warmup))
        * 0.5
        * (1 + math.cos(math.pi * min(step, span) / span))
    )


# --------------------------------------------------------------------------- export


def export(adapter: GligenAdapter, unet: Any, run: Path, out: Path) -> Path:
    """Write the adapter (original layout, float16) and its model card, once it loads back through
    the studio's reader as the trained adapter (to float16 rounding); its base is the run's ``--sd``."""
    from safetensors.torch import save_file

    from models.gligen import check_fits, load_gligen

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}")
    state = {
        k: v.detach().to("cpu", torch.float16).contiguous() for k, v in adapter.original_state(unet).items()
    }
    save_file(
        state, str(tmp), metadata={"format": "pt", "gligen": "text-box", "base": base_of(read_config(run))}
    )
    back = load_gligen(tmp, dtype=torch.float32)
    fusers = check_fits(back, unet)
    for path, fuser in zip(adapter.paths, adapter.fusers, strict=True):
        for key, value in fuser.state_dict().items():
            if not torch.allclose(fusers[path][key], value.cpu(), atol=1e-2, rtol=1e-2):
                raise RuntimeError(f"{tmp} does not load back as the trained adapter ({path} {key})")
    tmp.chmod(0o644)
    tmp.replace(out)
    out.with_suffix(".md").write_text(model_card(adapter, run, out))
    return out


def base_of(config: dict[str, Any]) -> str:
    """The name of the SD folder a run's adapter was trained on (its config's ``--sd``)."""
    return Path(config["sd"]).name


def run_command(config: dict[str, Any], steps: int, export_to: Path | None) -> str:
    """The command that makes (or resumes) the run of ``config`` to ``steps`` steps."""
    return (
        f"OMP_WAIT_POLICY=PASSIVE python -m training.gligen --out {config['out']} --sd {config['sd']}"
        f" --steps {steps} --batch {config['batch']} --lr {config['lr']} --warmup {config['warmup']}"
        f" --seed {config['seed']}"
        f" --pool {config['pool']} --ema {config['ema']} --no-position {config['no_position']}"
        f" --cell-boxes {config['cell_boxes']} --drop {config['drop']} --t-min {config['t_min']}"
        f" --max-weight {config['max_weight']} --gate-attn {config.get('gate_attn', 0.0)}"
        f" --gate-dense {config.get('gate_dense', 0.0)}{' --zero-out' if config.get('zero_out') else ''}"
        f" --probe-every {config.get('probe_every', 0)}"
        + (f" --init-from {config['init_from']}" if config.get("init_from") else "")
        + (f" --init-adapter {config['init_adapter']}" if config.get("init_adapter") else "")
        + (f" --decay {config['decay']}" if config.get("decay") else "")
        + (f" --decay-steps {config['decay_steps']}" if config.get("decay_steps") else "")
        + (f" --boxes-only {config['boxes_only']}" if config.get("boxes_only") else "")
        + (f" --ground {config['ground']}" if config.get("ground") else "")
        + " --threads 1"
        + (f" --export {export_to}" if export_to else "")
    )


def model_card(adapter: GligenAdapter, run: Path, out: Path) -> str:
    config = read_config(run)
    state = read_state(run)
    steps_done = state.step if state else 0
    loss = recent_loss(run)
    minutes = (state.elapsed if state else 0) / 60
    ending = f"; mean loss of the last 100 steps {loss:.4f}." if loss is not None else "."
    command = run_command(config, steps_done, out)
    first = ""
    if config.get("init_from"):
        # a second phase: the first run's command to the step it started from comes first
        init = read_config(Path(config["init_from"]))
        command = run_command(init, config["init_step"], None) + "\n" + command
        first = (
            f" It started from {config['init_from']} at step {config['init_step']}"
            f" ({config['init_minutes']:.1f} minutes): {config['init_step'] + steps_done} steps,"
            f" {config['init_minutes'] + minutes:.1f} minutes in all."
        )
    if config.get("init_adapter"):
        first += f" It started from the weights of the adapter file {Path(config['init_adapter']).name}."
    schedule = "constant" if not config.get("decay") else f"{config['decay']}-decayed to 0"
    base = base_of(config)
    grounding = (
        f"- A grounding loss ({config['ground']} x, `training.grounding`) tied the caption's color and kind\n"
        "  words to their shapes through the frozen UNet's cross-attention, so the adapter learns to steer\n"
        "  them to the boxes."
        if config.get("ground")
        else None
    )
    return "\n".join(
        [
            f"# {out.stem}: a GLIGEN text-box adapter for {base}",
            "",
            f"A GLIGEN adapter (text-box grounding) for the toy world's SD (`models/checkpoints/{base}`):",
            'give phrases such as "a red circle" with boxes (GLIGENTextBoxApply) and the SD draws them',
            "there. It knows nothing but the toy world.",
            "",
            "## What it is",
            "",
            f"- `{out.name}`: the original (ComfyUI) layout, float16: `position_net.*` (diffusers'",
            "  `GLIGENTextBoundingboxProjection`, text-only, 512 wide, 8 Fourier frequencies) and one",
            f"  gated self-attention fuser per transformer block ({len(adapter.fusers)}, under",
            "  `input_blocks.N.1.`, `middle_block.1.`, `output_blocks.N.1.` +",
            f"  `transformer_blocks.0.fuser.*`); {count_parameters(adapter):,} parameters. diffusers",
            f'  reads it too, as a gated UNet (`attention_type="gated"`) of {base}\'s weights and these.',
            "",
            "## How it was made",
            "",
            f"- Trained with {base}'s UNet, text encoder and VAE frozen, on a pool of "
            f"{config['pool']} toy-world",
            "  training scenes (held-out combinations never seen). Each shape is a box with the phrase",
            '  "a <color> <shape>"; the box is the shape\'s own square or its whole grid cell',
            f"  ({config['cell_boxes']:.0%} cells). {config['no_position']:.0%} of the captions name the "
            "shapes without",
            '  their places ("a red circle and a blue square"), so the boxes carry the places;',
            f"  {config['drop']:.0%} of the items have neither caption nor boxes (the unconditional half of",
            "  classifier-free guidance)"
            + (
                f"; {config['boxes_only']:.0%} of the others have boxes and an empty caption, so that the"
                " phrases alone say what each shape is."
                if config.get("boxes_only")
                else "."
            ),
            "- The clean latents' MSE (the noise's weighted by (1 - a) / a, capped at "
            f"{config['max_weight']}) at",
            f"  uniform timesteps from {config['t_min']}, AdamW lr {config['lr']} ({config['warmup']} "
            f"warm-up steps, then {schedule}), batch {config['batch']},",
            f"  seed {config['seed']}, EMA {config['ema']} (exported): {steps_done} steps in",
            f"  {minutes:.1f} minutes on {config['device']} ({config['threads']} thread){ending}{first}",
            *([grounding] if grounding else []),
            f"- Exported {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
            "",
            "## Reproducing it",
            "",
            "```bash",
            command,
            "```",
            "",
            "`python bench/toy_quality.py --tasks gligen` measures it against regional prompting in one run",
            "(docs/gligen.md, docs/toy-models.md).",
            "",
        ]
    )


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.gligen", description=__doc__)
    add_common_args(parser, steps=4000, batch=16, lr=1.5e-3)
    parser.add_argument("--sd", type=Path, default=DEFAULT_SD, help="the exported toy SD folder")
    parser.add_argument("--no-position", type=float, default=0.7, help="share of captions without places")
    parser.add_argument("--cell-boxes", type=float, default=0.5, help="share of boxes that are whole cells")
    parser.add_argument("--drop", type=float, default=0.1, help="share of items with no caption and no boxes")
    parser.add_argument(
        "--boxes-only",
        type=float,
        default=None,
        help="share of the items with boxes whose caption is empty (the phrases must carry each shape's"
        " kind and color; default: none)",
    )
    parser.add_argument(
        "--ground",
        type=float,
        default=0.0,
        help="weight of a grounding loss that ties the caption's color and kind words to their shapes "
        "through the frozen UNet's cross-attention (training.grounding; 0: none)",
    )
    parser.add_argument("--t-min", type=int, default=200, help="lowest training timestep")
    parser.add_argument(
        "--max-weight", type=float, default=20.0, help="cap of the loss weight (1 - a) / a at high noise"
    )
    parser.add_argument("--gate-attn", type=float, default=0.5, help="initial alpha_attn of the fusers")
    parser.add_argument("--gate-dense", type=float, default=0.0, help="initial alpha_dense of the fusers")
    parser.add_argument(
        "--zero-out", action="store_true", help="start the fusers' output layers at 0 (with open gates)"
    )
    parser.add_argument(
        "--probe-every", type=int, default=10, help="log the loss without boxes every N steps (0: never)"
    )
    parser.add_argument("--pool", type=int, default=4096, help="training scenes in the pool")
    parser.add_argument("--ema", type=float, default=0.995, help="EMA decay (0: none); the export takes it")
    parser.add_argument("--export", type=Path, default=None, help="write the adapter file here at the end")
    parser.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="a new run starts from this run's latest state (adapter, EMA, optimizer): a second phase",
    )
    parser.add_argument(
        "--init-adapter",
        type=Path,
        default=None,
        help="a new run starts from this exported adapter file (its weights only; a fresh optimizer)",
    )
    parser.add_argument(
        "--decay", choices=["cosine"], default=None, help="decay the lr to 0 at --steps (default: constant)"
    )
    parser.add_argument(
        "--decay-steps",
        type=int,
        default=None,
        help="the step where the decayed lr reaches 0 (default: --steps; a run stopped early and exported "
        "with --steps at the step it reached keeps its schedule with this)",
    )
    args = parser.parse_args(argv)
    if args.init_from and args.init_adapter:
        parser.error(
            "--init-from and --init-adapter both say where the run starts: give one (--init-from for a run "
            "folder's state, --init-adapter for an exported adapter file)"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = prepare(args)
    sd = load_frozen_sd(args.sd, device)
    phrases = Phrases(sd, device)
    width = int(phrases("a red circle").shape[-1])
    adapter = GligenAdapter(sd.unet, width).to(device).train()
    open_gates(adapter, args.gate_attn, args.gate_dense, args.zero_out)
    if args.init_adapter:
        load_adapter(adapter, args.init_adapter, sd.unet)
    adapter.install(sd.unet)
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=args.lr, weight_decay=0.0)
    pool = Pool(sd, args, device)
    store = None
    if args.ground:
        from training.grounding import record_cross_attention

        store = record_cross_attention(sd.unet)
    step_fn = gligen_step(sd, pool, phrases, args, device, store)
    if args.measure:
        seconds = measure_step(step_fn, optimizer)
        print(
            json.dumps(
                {
                    "model": "gligen",
                    "parameters": count_parameters(adapter),
                    "batch": args.batch,
                    "threads": torch.get_num_threads(),
                    "seconds_per_step": round(seconds, 3),
                }
            )
        )
        return 0
    modules: dict[str, torch.nn.Module] = {"adapter": adapter}
    ema: dict[str, tuple[str, float]] = {}
    if args.ema:
        modules["ema_adapter"] = copy.deepcopy(adapter).requires_grad_(False)
        ema["ema_adapter"] = ("adapter", args.ema)
    run = Path(args.out)
    config = {**settings(args), "export": str(args.export), "adapter": {"paths": adapter.paths}}
    resuming = read_state(run) is not None
    if args.init_from:
        config.update(init_phase(args.init_from, run, resuming, modules, optimizer))
    write_config(run, config, resuming)
    state = train(args, modules, optimizer, step_fn, ema=ema, lr_at=lr_schedule(args))
    print(f"GLIGEN ({state.status}, step {state.step}) in {run}")
    if args.export:
        final = modules.get("ema_adapter", adapter)
        print(f"exported {export(final, sd.unet, run, args.export)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
