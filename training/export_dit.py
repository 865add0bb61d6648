"""Export a trained toy DiT (:mod:`training.dit`) as a diffusers StableDiffusion3Pipeline folder, with a
model card, and check that the studio loads it.

``python -m training.export_dit --dit runs/dit --out models/checkpoints/toy-sd3 [--eval 100]
[--shifts 1,2,3]``

The folder holds the transformer (the EMA copy when the run kept one), the toy SD's VAE (its weights,
with ``shift_factor`` 0 in its config, which the SD3 pipeline reads), the toy SD's CLIP text encoder as
both ``text_encoder`` and ``text_encoder_2`` (``CLIPTextModelWithProjection`` with an identity
projection: pooled = the encoder's pooled output, as it was trained on), CLIP's tokenizer for both, no
T5 (``text_encoder_3`` / ``tokenizer_3`` null), and a FlowMatchEulerDiscreteScheduler with the shift
that sampled best on training captions (``--shifts`` lists the candidates; the first is used without
``--eval``). When ``--out`` sits beside the toy SD folder, the tokenizers link to the toy SD's and
``text_encoder_2`` to ``text_encoder`` (as toy-ip2p links), so the weights ship once. Weights are float16.
The export is written beside ``--out`` and swapped in only once :func:`models.loading.load_checkpoint`
has loaded it back as an SD3 model.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.cards import load_trained, same_weights, score_table, shown, split_scores, weights_line
from training.run_folder import CONFIG, read_state, recent_loss
from training.script import count_parameters, halve_weights, staging, swap_in

EVAL_STEPS = 20
EVAL_CFG = 5.0


def trained_transformer(run: Path, use_ema: bool = True) -> tuple[Any, dict[str, Any]]:
    """(transformer, run config) rebuilt from the run's config and latest state."""
    from diffusers import SD3Transformer2DModel

    run = Path(run)
    config = json.loads((run / CONFIG).read_text())
    transformer = SD3Transformer2DModel.from_config(config["models"]["transformer"])
    load_trained(run, config, {"transformer": transformer}, use_ema)
    return transformer, config


def with_projection(sd: Path) -> Any:
    """The toy SD's CLIPTextModel as a CLIPTextModelWithProjection whose projection is the identity
    (projection_dim = hidden size), so its ``text_embeds`` are the pooled output the DiT trained on."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    plain = CLIPTextModel.from_pretrained(sd, subfolder="text_encoder", local_files_only=True)
    config = CLIPTextConfig.from_dict({**plain.config.to_dict(), "projection_dim": plain.config.hidden_size})
    model = CLIPTextModelWithProjection(config)
    model.text_model.load_state_dict(plain.state_dict())
    with torch.no_grad():
        model.text_projection.weight.copy_(torch.eye(config.hidden_size))
    return model.eval()


def frozen_vae(sd: Path) -> Any:
    """The toy SD's VAE with ``shift_factor`` 0 (SD3's pipeline adds it when decoding; None would fail)."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(sd, subfolder="vae", local_files_only=True)
    vae.register_to_config(shift_factor=0.0)
    return vae.eval()


#: The parts an exported folder leaves out (null in model_index.json); diffusers wants them named.
ABSENT = ("text_encoder_3", "tokenizer_3", "image_encoder", "feature_extractor")


def load_pipeline(folder: Path) -> Any:
    """The exported folder as a float32 StableDiffusion3Pipeline (its weights are stored as float16)."""
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline.from_pretrained(
        str(folder), dtype=torch.float32, local_files_only=True, **dict.fromkeys(ABSENT)
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def make_pipeline(transformer: Any, sd: Path, shift: float) -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    from models.tokenizer import clip_tokenizer

    text_encoder = with_projection(sd)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift),
        vae=frozen_vae(sd),
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(),
        text_encoder_2=text_encoder,
        tokenizer_2=clip_tokenizer(),
        text_encoder_3=None,
        tokenizer_3=None,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def prompt_embeds(pipe: Any, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(joint sequence, pooled) as the studio encodes an SD3 prompt without T5 (ComfyUI's rule): the
    pipeline's own CLIP-L and CLIP-G encodings, joined on features and zero-padded to the transformer's
    width, WITHOUT the block of zero T5 tokens the pipeline would append."""
    import torch.nn.functional as F

    hidden_l, pooled_l = pipe._get_clip_prompt_embeds(prompts, clip_model_index=0)
    hidden_g, pooled_g = pipe._get_clip_prompt_embeds(prompts, clip_model_index=1)
    hidden = torch.cat([hidden_l, hidden_g], dim=-1)
    hidden = F.pad(hidden, (0, pipe.transformer.config.joint_attention_dim - hidden.shape[-1]))
    return hidden, torch.cat([pooled_l, pooled_g], dim=-1)


@torch.no_grad()
def generate(
    pipe: Any, prompts: list[str], seed: int, steps: int = EVAL_STEPS, cfg: float = EVAL_CFG, size: int = 32
) -> list[np.ndarray]:
    """uint8 pictures for ``prompts`` (empty negative prompt), 16 at a time, seeded per chunk."""
    images: list[np.ndarray] = []
    for i in range(0, len(prompts), 16):
        chunk = prompts[i : i + 16]
        embeds, pooled = prompt_embeds(pipe, chunk)
        empty, empty_pooled = prompt_embeds(pipe, [""] * len(chunk))
        out = pipe(
            prompt_embeds=embeds,
            pooled_prompt_embeds=pooled,
            negative_prompt_embeds=empty,
            negative_pooled_prompt_embeds=empty_pooled,
            height=size,
            width=size,
            num_inference_steps=steps,
            guidance_scale=cfg,
            generator=torch.Generator("cpu").manual_seed(seed + i),
            output_type="np",
        ).images
        images.extend((np.clip(out, 0, 1) * 255).round().astype(np.uint8))
    return images


def evaluate(pipe: Any, n: int, splits: tuple[str, ...] = ("train", "test"), seed: int = 1234) -> dict:
    """Pictures for captions of ``n`` scenes of each split, scored by the toy world's analyzer."""
    shift = float(pipe.scheduler.config.shift)
    results: dict[str, Any] = {"n": n, "steps": EVAL_STEPS, "cfg": EVAL_CFG, "seed": seed, "shift": shift}
    return {**results, **split_scores(n, seed, lambda prompts, s: generate(pipe, prompts, s), splits)}


def pick_shift(pipe: Any, shifts: list[float], n: int) -> tuple[float, list[dict[str, Any]]]:
    """The shift whose pictures of training captions the analyzer reads best (share of shapes entirely
    right); held-out captions are not used to choose."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    trials = []
    for shift in shifts:
        pipe.scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
        trials.append(evaluate(pipe, n, splits=("train",), seed=4321))
        print(json.dumps({"shift": shift, **trials[-1]["train"]}), flush=True)
    best = max(trials, key=lambda t: (t["train"]["all"], t["train"]["exact"]))
    return float(best["shift"]), trials


def link_shared(folder: Path, sd: Path) -> bool:
    """Replace the copies of the toy SD's tokenizer (both) and of ``text_encoder`` (as
    ``text_encoder_2``) by relative links, when the toy SD sits beside the export. True if linked."""
    if Path(sd).resolve().parent != Path(folder).resolve().parent:
        return False
    for name in ("tokenizer", "tokenizer_2"):
        shutil.rmtree(folder / name)
        os.symlink(Path("..") / Path(sd).name / "tokenizer", folder / name)
    shutil.rmtree(folder / "text_encoder_2")
    os.symlink("text_encoder", folder / "text_encoder_2")
    return True


def check_loads(folder: Path, transformer: Any) -> None:
    """Load the folder through the studio's loader: an SD3 checkpoint whose transformer holds our
    weights (as the float16 the folder stores them in) and two CLIPs, no T5."""
    from models.loading import load_checkpoint

    checkpoint = load_checkpoint(folder)
    if checkpoint.family != "sd3":
        raise RuntimeError(f"{folder} loads as {checkpoint.family}, not sd3")
    if not same_weights(transformer, checkpoint.unet):
        raise RuntimeError(f"{folder} does not load back as the trained transformer")
    if len(checkpoint.text_encoders) != 2:
        raise RuntimeError(f"{folder} loads {len(checkpoint.text_encoders)} text encoders, not 2")


def model_card(config: dict[str, Any], transformer: Any, pipe: Any, run: Path, info: dict[str, Any]) -> str:
    state = read_state(run)
    steps_done = state.step if state else 0
    tc = transformer.config
    te = pipe.text_encoder.config
    loss = recent_loss(run)
    latent = config["size"] // pipe.vae_scale_factor
    shift = info["shift"]
    lines = [
        "# toy-sd3: a tiny SD3-style MMDiT of the toy world",
        "",
        "A text-to-image model in the diffusers `StableDiffusion3Pipeline` layout (SD3 family, no T5),",
        "trained from scratch with flow matching on the procedural toy world of this repository",
        "(`toyworld`): 32 px pictures of one or two colored shapes on a 3x3 grid, with captions such as",
        '"a red circle at the top left and a blue square in the center". It exists so that the studio\'s',
        "SD3 path (loader, prompt encoding, flow sampler, nodes) draws meaningful pictures offline and in",
        "tests; it knows nothing but the toy world.",
        "",
        "## How it was made",
        "",
        '- **Data**: `toyworld.random_scene(split="train")` drawn afresh for every step from a generator',
        "  seeded by (seed, step, item): held-out (shape, color, position) combinations never appear.",
        f"  {config['size']} px pictures; captions name the background with probability "
        f"{config['background_p']};",
        f'  {config["drop"]:.0%} of captions are dropped to "" for classifier-free guidance.',
        f"- **VAE**: the toy SD's AutoencoderKL (`{shown(config['sd'])}/vae`), frozen: "
        f"{count_parameters(pipe.vae):,} parameters, {pipe.vae.config.latent_channels} latent channels, "
        f"latents {latent}x{latent}, scaling factor {float(pipe.vae.config.scaling_factor):.4f}, "
        "shift factor 0.",
        f"- **Text encoders**: the toy SD's CLIP text encoder (hidden size {te.hidden_size}, "
        f"{te.num_hidden_layers} layers, CLIP's real tokenizer, 77 tokens), frozen, as both CLIP-L "
        "(`text_encoder`) and CLIP-G (`text_encoder_2`, a link to the same files): "
        "`CLIPTextModelWithProjection` with an identity `text_projection`. No T5.",
        "- **Text conditioning** (exactly what the studio's SD3 prompt encoder gives without T5, ComfyUI's",
        "  rule): the joint sequence is the 77 tokens' penultimate hidden states of CLIP-L and CLIP-G",
        f"  joined on features ({2 * te.hidden_size} wide, the transformer's `joint_attention_dim`), with",
        "  NO block of zero T5 tokens (StableDiffusion3Pipeline called with a prompt string appends 77; pass",
        "  `prompt_embeds` instead, as below); pooled = the two pooled projections joined "
        f"({tc.pooled_projection_dim}).",
        f"- **Transformer**: SD3Transformer2DModel, {tc.num_layers} joint blocks, width "
        f"{tc.num_attention_heads * tc.attention_head_dim} ({tc.num_attention_heads} heads of "
        f"{tc.attention_head_dim}), patch size {tc.patch_size} on the {latent}x{latent}x"
        f"{tc.in_channels} latents ({latent * latent} image tokens + 77 text tokens = "
        f"{latent * latent + 77} per sequence), {count_parameters(transformer):,} parameters.",
        "- **Training**: flow matching as SD3: x_t = (1 - t) x0 + t noise, target noise - x0, t "
        f"{config['timesteps']} (mean 0, std 1 in logit space), model timestep t x 1000; MSE loss; AdamW "
        f"(lr {config['lr']}, {config['warmup']} warm-up steps, weight decay {config['weight_decay']}), "
        f"gradient clipping at 1, batch {config['batch']}, seed {config['seed']}, {steps_done} steps "
        f"({state.status if state else 'new'}) in {state.elapsed / 60 if state else 0:.1f} minutes on "
        f"{config['device']} ({config['threads']} threads, a machine shared with other jobs); "
        + (f"mean loss over the last 100 steps {loss:.4f}." if loss is not None else "no loss logged."),
        weights_line(config),
        "",
        "## Using it",
        "",
        f"Sampler in the folder: FlowMatchEulerDiscreteScheduler, shift {shift}. Pictures are "
        f"{config['size']}x{config['size']}; in the studio, `workflows/txt2img-sd3.json`",
        "(EmptySD3LatentImage takes its channels and scale from the connected VAE).",
        "",
        "```python",
        "import torch",
        "from diffusers import StableDiffusion3Pipeline",
        "from training.export_dit import prompt_embeds",
        "",
        "pipe = StableDiffusion3Pipeline.from_pretrained(",
        "    FOLDER, dtype=torch.float32, local_files_only=True, text_encoder_3=None, tokenizer_3=None",
        ")",
        'embeds, pooled = prompt_embeds(pipe, ["a red circle at the top left"])',
        'empty, empty_pooled = prompt_embeds(pipe, [""])',
        "image = pipe(",
        "    prompt_embeds=embeds,",
        "    pooled_prompt_embeds=pooled,",
        "    negative_prompt_embeds=empty,",
        "    negative_pooled_prompt_embeds=empty_pooled,",
        f"    height={config['size']},",
        f"    width={config['size']},",
        f"    num_inference_steps={EVAL_STEPS},",
        f"    guidance_scale={EVAL_CFG},",
        ").images[0]",
        "```",
        "",
    ]
    if info.get("shifts"):
        lines += [
            "## Choosing the shift",
            "",
            f"Pictures of {info['shifts'][0]['n']} training captions ({EVAL_STEPS} steps, guidance "
            f"{EVAL_CFG}, seed {info['shifts'][0]['seed']}) per shift; the best share of shapes entirely",
            "right was kept (held-out captions were not used to choose).",
            "",
            "| shift | kind | color | position | all | exact |",
            "|---|---|---|---|---|---|",
        ]
        for t in info["shifts"]:
            cells = [str(t["train"][k]) for k in ("kind", "color", "position", "all", "exact")]
            lines.append(f"| {t['shift']} | " + " | ".join(cells) + " |")
        lines.append("")
    if info.get("eval"):
        ev = info["eval"]
        lines += [
            "## Evaluation",
            "",
            f"{ev['n']} pictures per split ({ev['steps']} steps, guidance {ev['cfg']}, shift {ev['shift']}, "
            f"seed {ev['seed']}) by StableDiffusion3Pipeline with the prompt embeddings above, scored by",
            "`toyworld.score`: the share of shapes whose kind, color, position (and all three) the analyzer",
            "reads as the caption says, of pictures entirely right (`exact`) and with the right number of",
            "shapes. `test` captions hold combinations never seen in training. The studio's own figures",
            "(the example workflow through the nodes) are in `docs/toy-models.md`",
            "(`bench/toy_quality.py --tasks text_to_image_dit`).",
            "",
            *score_table(ev),
        ]
    shifts = ",".join(str(t["shift"]) for t in info.get("shifts", [])) or str(shift)
    lines += [
        "## Reproducing it",
        "",
        "The toy SD (`models/checkpoints/toy-sd`, see its card) comes first; then:",
        "",
        "```bash",
        f"OMP_WAIT_POLICY=PASSIVE python -m training.dit --out {shown(run)} --sd {shown(config['sd'])} "
        f"--steps {steps_done} --batch {config['batch']} --seed {config['seed']} "
        f"--hidden {tc.num_attention_heads * tc.attention_head_dim} --layers {tc.num_layers} "
        f"--head-dim {tc.attention_head_dim} --timesteps {config['timesteps']} --lr {config['lr']} "
        f"--warmup {config['warmup']} --ema {config['ema']} --drop {config['drop']} "
        f"--background-p {config['background_p']} --threads {config['threads']}",
        f"python -m training.export_dit --dit {shown(run)} --out models/checkpoints/toy-sd3 "
        f"--shifts {shifts}"
        + (f" --shift-n {info['shifts'][0]['n']}" if info.get("shifts") else "")
        + (f" --eval {info['eval']['n']}" if info.get("eval") else ""),
        "```",
        "",
        "`OMP_WAIT_POLICY=PASSIVE`: on a 2-core machine busy with other jobs, OpenMP threads that spin",
        "while waiting made a step 10x slower (measured 11.9 s against 1.1 s on one thread); passive",
        "waiting keeps two threads at least as fast as one. Training state, settings (`config.json`) and",
        "the loss per step (`log.jsonl`) stay in the run folder.",
        "",
    ]
    return "\n".join(lines)


def export_dit(
    run: Path,
    out: Path,
    *,
    use_ema: bool = True,
    shifts: list[float] | None = None,
    eval_n: int = 0,
    shift_n: int = 50,
    sd: Path | None = None,
) -> Path:
    """Write the diffusers folder and its model card to ``out`` (replacing it), checked by loading."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    run, out = Path(run), Path(out)
    transformer, config = trained_transformer(run, use_ema)
    sd = Path(sd or config["sd"])
    shifts = shifts or [1.0]
    pipe = make_pipeline(transformer, sd, shifts[0])
    info: dict[str, Any] = {"shift": shifts[0]}
    tmp = staging(out)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    halve_weights(tmp)
    if eval_n:  # what ships: the folder's float16 weights, computed in float32
        shipped = load_pipeline(tmp)
        if len(shifts) > 1:
            info["shift"], info["shifts"] = pick_shift(shipped, shifts, shift_n)
        shipped.scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=info["shift"])
        shipped.scheduler.save_pretrained(str(tmp / "scheduler"))
        info["eval"] = evaluate(shipped, eval_n)
    link_shared(tmp, sd)
    (tmp / "README.md").write_text(model_card(config, transformer, pipe, run, info))
    if info.get("eval"):
        (tmp / "eval.json").write_text(json.dumps({**info["eval"], "shifts": info.get("shifts")}, indent=1))
    check_loads(tmp, transformer)
    return swap_in(tmp, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.export_dit", description=__doc__)
    parser.add_argument("--dit", type=Path, required=True, help="the DiT run folder (training.dit --out)")
    parser.add_argument("--out", type=Path, required=True, help="e.g. models/checkpoints/toy-sd3")
    parser.add_argument("--raw", action="store_true", help="export the raw weights, not the EMA copy")
    parser.add_argument(
        "--shifts", default="1.0", help="sampling shifts to try (comma-separated; chosen with --eval)"
    )
    parser.add_argument("--eval", type=int, default=0, help="score N generated pictures per split")
    parser.add_argument("--shift-n", type=int, default=50, help="training captions per shift tried")
    parser.add_argument("--sd", type=Path, default=None, help="the toy SD folder (default: the run's)")
    args = parser.parse_args(argv)
    shifts = [float(s) for s in args.shifts.split(",") if s.strip()]
    folder = export_dit(
        args.dit,
        args.out,
        use_ema=not args.raw,
        shifts=shifts,
        eval_n=args.eval,
        shift_n=args.shift_n,
        sd=args.sd,
    )
    print(f"exported {folder} (loads with models.loading.load_checkpoint as sd3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
