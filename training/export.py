"""Export a trained toy SD as a diffusers StableDiffusionPipeline folder, with a model card, and check
that the studio loads it.

``python -m training.export --sd runs/sd --out models/checkpoints/toy-sd [--eval 64]``

The folder holds safetensors weights (the EMA copies when the run kept them), CLIP's tokenizer files,
a DPM++ 2M (or PNDM) scheduler config with SD's betas, no safety checker, and ``README.md`` saying how
the model was made (data, sizes, steps, seed, time, loss; with ``--eval N`` also how often the toy
world's analyzer reads N generated pictures as their captions say). The export is written beside
``--out`` and swapped in only once :func:`models.loading.load_checkpoint` has loaded it back.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.cards import load_trained, same_weights, score_table, shown, split_scores, weights_line
from training.run_folder import CONFIG, read_state, recent_loss
from training.script import count_parameters, halve_weights, link_shared, staging, swap_in
from training.sd import SD_SCHEDULER_CONFIG, load_vae

SCHEDULERS = {"dpmpp": "DPMSolverMultistepScheduler", "pndm": "PNDMScheduler"}


def trained_models(run: Path, use_ema: bool = True) -> tuple[Any, Any, dict[str, Any]]:
    """(unet, text_encoder, run config) rebuilt from the run's config and latest state."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    run = Path(run)
    config = json.loads((run / CONFIG).read_text())
    unet = UNet2DConditionModel.from_config(config["models"]["unet"])
    text_encoder = CLIPTextModel(CLIPTextConfig.from_dict(config["models"]["text_encoder"]))
    load_trained(run, config, {"unet": unet, "text_encoder": text_encoder}, use_ema)
    return unet.eval(), text_encoder.eval(), config


def make_pipeline(unet: Any, text_encoder: Any, vae: Any, scheduler: str = "dpmpp") -> Any:
    import diffusers
    from diffusers import StableDiffusionPipeline

    from models.tokenizer import clip_tokenizer

    sampler = getattr(diffusers, SCHEDULERS[scheduler]).from_config(SD_SCHEDULER_CONFIG)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(),
        unet=unet,
        scheduler=sampler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def evaluate(pipe: Any, n: int, seed: int = 1234, steps: int = 20, cfg: float = 5.0, size: int = 32) -> dict:
    """Generate ``n`` pictures for captions of each split's scenes and score them with the analyzer."""

    def draw(captions: list[str], seed: int) -> list[np.ndarray]:
        images = []
        for i in range(0, len(captions), 16):
            out = pipe(
                captions[i : i + 16],
                height=size,
                width=size,
                num_inference_steps=steps,
                guidance_scale=cfg,
                generator=torch.Generator("cpu").manual_seed(seed + i),
                output_type="np",
            ).images
            images.extend((np.clip(out, 0, 1) * 255).round().astype(np.uint8))
        return images

    splits = split_scores(n, seed, draw, ("train", "test"), size=size)
    return {"n": n, "steps": steps, "cfg": cfg, "seed": seed, **splits}


def vae_history(folder: Path) -> list[dict[str, Any]]:
    """The summaries of a VAE run and of the runs it started from (``--init``), oldest first."""
    chain: list[dict[str, Any]] = []
    path: Path | None = Path(folder)
    while path is not None and (path / "summary.json").is_file() and len(chain) < 10:
        summary = {**json.loads((path / "summary.json").read_text()), "run": str(path)}
        chain.append(summary)
        path = Path(summary["init"]) if summary.get("init") else None
    return chain[::-1]


def vae_stage(s: dict[str, Any]) -> str:
    what = "the decoder only" if s.get("decoder_only") else "encoder and decoder"
    start = f", starting from {shown(s['init'])}" if s.get("init") else ""
    reads = s.get("analyzer_test")
    read = (
        f"; the analyzer reads the held-out reconstructions' shapes {reads['kind']:.0%}, colors "
        f"{reads['color']:.0%} and positions {reads['position']:.0%} right"
        if reads
        else ""
    )
    return (
        f"{shown(s['run'])}: {s['steps']} steps of batch {s['batch']} on {what}{start} (L1 + L2 + "
        f"{s.get('edge_weight', 0)} x L1 of pixel differences + {s['kl_weight']} x KL; lr {s['lr']}, "
        f"seed {s['seed']}) in {s['seconds']:.0f} s; reconstruction PSNR {s['psnr_train']} dB (train), "
        f"{s['psnr_test']} dB (held-out scenes){read}."
    )


def vae_command(s: dict[str, Any]) -> str:
    command = (
        f"python -m training.vae --out {shown(s['run'])} --steps {s['steps']} --batch {s['batch']} "
        f"--seed {s['seed']} --channels {','.join(map(str, s['channels']))} --groups {s['norm_num_groups']} "
        f"--kl {s['kl_weight']} --edge {s.get('edge_weight', 0)} --lr {s['lr']} --warmup {s['warmup']}"
    )
    if s.get("init"):
        command += f" --init {shown(s['init'])}"
    return command + (" --decoder-only" if s.get("decoder_only") else "")


def evaluation_section(ev: dict[str, Any], *how: str) -> list[str]:
    """A card's evaluation: what was drawn, ``how`` it was scored (lines), and the table per split."""
    return [
        "## Evaluation",
        "",
        f"{ev['n']} pictures per split ({ev['steps']} steps, guidance {ev['cfg']}, seed {ev['seed']})",
        *how,
        "",
        *score_table(ev),
    ]


def model_card(config: dict[str, Any], unet: Any, text_encoder: Any, vae: Any, run: Path, info: dict) -> str:
    state = read_state(run)
    steps_done = state.step if state else 0
    tc = text_encoder.config
    loss = recent_loss(run)
    lines = [
        "# toy-sd: a tiny Stable-Diffusion-style model of the toy world",
        "",
        "A text-to-image model in the diffusers `StableDiffusionPipeline` layout (SD1.x family),",
        "trained from scratch on the procedural toy world of this repository (`toyworld`): pictures",
        'of one or two colored shapes on a 3x3 grid, with captions such as "a red circle at the top',
        "left and a blue square in the center\". It exists to make the studio's workflows produce",
        "meaningful pictures offline and in tests; it knows nothing but the toy world.",
        "",
        "## How it was made",
        "",
        '- **Data**: `toyworld.random_scene(split="train")` drawn afresh for every step from a',
        "  generator seeded by (seed, step, item): held-out (shape, color, position) combinations",
        f"  never appear. {config['size']} px pictures; captions name the background with probability",
        f'  {config["background_p"]}; {config["drop"]:.0%} of captions are dropped to "" for',
        "  classifier-free guidance.",
        f"- **VAE**: AutoencoderKL, {count_parameters(vae):,} parameters, channels "
        f"{list(vae.config.block_out_channels)}, 4 latent channels, latents "
        f"{config['size'] // 2 ** (len(vae.config.block_out_channels) - 1)}x"
        f"{config['size'] // 2 ** (len(vae.config.block_out_channels) - 1)}, scaling factor "
        f"{float(vae.config.scaling_factor):.4f}.",
    ]
    for stage in vae_history(Path(config["vae"])):
        lines.append(f"  {vae_stage(stage)}")
    lines += [
        f"- **Text encoder**: CLIPTextModel, hidden size {tc.hidden_size}, {tc.num_hidden_layers} layers, "
        f"{tc.num_attention_heads} heads, {count_parameters(text_encoder):,} parameters "
        f"({tc.vocab_size} x {tc.hidden_size} of them the token embedding); CLIP's real tokenizer, "
        f"{tc.max_position_embeddings} tokens.",
        f"- **UNet**: UNet2DConditionModel, channels {list(unet.config.block_out_channels)}, "
        f"{unet.config.layers_per_block} layer(s) per block, cross-attention at every resolution, "
        f"{count_parameters(unet):,} parameters, sample size {unet.config.sample_size}.",
        "- **Training**: text encoder and UNet jointly, epsilon prediction, DDPM noise schedule of SD "
        "(scaled_linear betas 0.00085 to 0.012, 1000 steps), MSE loss, AdamW "
        f"(lr {config['lr']}, {config['warmup']} warm-up steps, weight decay {config['weight_decay']}), "
        f"gradient clipping at 1, batch {config['batch']}, seed {config['seed']}, "
        f"{state.step if state else 0} steps ({state.status if state else 'new'}) "
        f"in {state.elapsed / 60 if state else 0:.1f} minutes on {config['device']}; "
        + (f"mean loss over the last 100 steps {loss:.4f}." if loss is not None else "no loss logged."),
        weights_line(config),
        "",
        "## Using it",
        "",
        f"Sampler in the folder: {info['scheduler']}. Pictures are {config['size']}x{config['size']}",
        "(the studio's EmptyLatent takes pixel sizes and divides by the VAE's scale).",
        "",
        "```python",
        "import torch",
        "from diffusers import StableDiffusionPipeline",
        "pipe = StableDiffusionPipeline.from_pretrained(",
        "    FOLDER, torch_dtype=torch.float32, local_files_only=True  # weights are stored as float16",
        ")",
        f'image = pipe("a red circle at the top left", height={config["size"]}, width={config["size"]}, '
        "num_inference_steps=20, guidance_scale=5).images[0]",
        "```",
        "",
    ]
    if info.get("eval"):
        lines += evaluation_section(
            info["eval"],
            "scored by `toyworld.score`: the share of shapes whose kind, color, position (and all",
            "three) the analyzer reads as the caption says, and of pictures entirely right (`exact`)",
            "and with the right number of shapes.",
            "`test` captions hold combinations never seen in training.",
        )
    lines += [
        "## Reproducing it",
        "",
        "```bash",
        *(vae_command(stage) for stage in vae_history(Path(config["vae"]))),
        f"python -m training.sd --out {shown(run)} --vae {shown(config['sd_vae'])} --steps {steps_done} "
        f"--batch {config['batch']} "
        f"--seed {config['seed']} --channels {','.join(map(str, unet.config.block_out_channels))} "
        f"--layers {unet.config.layers_per_block} --groups {unet.config.norm_num_groups} "
        f"--text-hidden {tc.hidden_size} --text-layers {tc.num_hidden_layers} "
        f"--text-heads {tc.num_attention_heads} --lr {config['lr']} --warmup {config['warmup']} "
        f"--ema {config['ema']} --drop {config['drop']} --background-p {config['background_p']}",
        f"python -m training.export --sd {shown(run)} --out models/checkpoints/toy-sd"
        + (f" --vae {shown(config['vae'])}" if config["vae"] != config["sd_vae"] else "")
        + (f" --eval {info['eval']['n']}" if info.get("eval") else ""),
        "```",
        "",
        "Training state, settings (`config.json`) and the loss per step (`log.jsonl`) stay in the",
        "run folders.",
        "",
    ]
    return "\n".join(lines)


def finetune_card(
    config: dict[str, Any], unet: Any, run: Path, info: dict, name: str, link_from: Path | None
) -> str:
    """The card of an SD fine-tuned from an exported one (``training.sd --init``): what it started from,
    what changed, how well it draws, and the commands that made it."""
    state = read_state(run)
    steps = state.step if state else 0
    init = shown(config["init"])
    ground = config.get("ground") or 0.0
    denoise, grounding = recent_loss(run, key="denoise"), recent_loss(run, key="ground")
    trained = (
        "the UNet only (the text encoder frozen)" if config.get("freeze_text") else "text encoder and UNet"
    )
    lines = [
        f"# {name}: {Path(config['init']).name} fine-tuned" + (" to ground its words" if ground else ""),
        "",
        f"The model of `{init}` (see its card for the VAE, the text encoder and the UNet's first training),",
        f"trained {steps} steps further on the same toy-world stream: {trained}."
        + (
            f' {config["bare_p"]:.0%} of its captions leave the places out ("a red circle and a blue'
            ' square"), so that the model itself chooses where each named shape goes.'
            if config.get("bare_p")
            else ""
        ),
    ]
    if ground:
        lines += [
            "Besides the denoising loss, a grounding loss (`training.grounding`, TokenCompose's token loss)",
            "ties each shape's color and kind words to the place of that shape through the UNet's own",
            "cross-attention: for every cross-attention layer, the share of the word's attention",
            "(averaged over heads) outside the cells its shape touches, squared, weighted by",
            f"{ground}. It exists so that a word has a place in the attention maps, which Attend-and-Excite",
            "and the other attention-steering methods read (docs/toy-models.md).",
        ]
    lines += [
        "",
        "## How it was made",
        "",
        f"- **Training**: epsilon prediction, SD's noise schedule, AdamW (lr {config['lr']}, "
        f"{config['warmup']} warm-up steps, weight decay {config['weight_decay']}), gradient clipping at 1, "
        f"batch {config['batch']}, seed {config['seed']}, {steps} steps ({state.status if state else 'new'}) "
        f"in {state.elapsed / 60 if state else 0:.1f} minutes on {config['device']}"
        + (f"; over the last 100 steps: denoising loss {denoise:.4f}" if denoise is not None else "")
        + (f", grounding loss {grounding:.4f}" if grounding is not None else "")
        + ".",
        f"- **UNet**: as `{init}`'s, {count_parameters(unet):,} parameters.",
        weights_line(config),
    ]
    if link_from is not None:
        lines.append(
            f"- **Shared parts**: the text encoder, tokenizer and VAE are links to `{Path(link_from).name}`'s"
            " where they are the same files."
        )
    lines += ["", "## Using it", "", "As `toy-sd`: 32 px pictures, 20 steps, guidance 5.", ""]
    if info.get("eval"):
        lines += evaluation_section(info["eval"], "scored by `toyworld.score`, as in toy-sd's card.")
    command = (
        f"python -m training.sd --out {shown(run)} --vae {shown(config['vae'])} --init {init} "
        f"--steps {steps} --batch {config['batch']} --lr {config['lr']} --warmup {config['warmup']} "
        f"--seed {config['seed']} --ema {config['ema']} --drop {config['drop']} "
        f"--background-p {config['background_p']}"
        + (" --freeze-text" if config.get("freeze_text") else "")
        + (f" --ground {ground}" if ground else "")
        + (f" --bare-p {config['bare_p']}" if config.get("bare_p") else "")
    )
    export = (
        f"python -m training.export --sd {shown(run)} --out models/checkpoints/{name}"
        + (f" --link-from {shown(link_from)}" if link_from is not None else "")
        + (f" --eval {info['eval']['n']}" if info.get("eval") else "")
    )
    lines += ["## Reproducing it", "", "```bash", command, export, "```", ""]
    return "\n".join(lines)


def check_loads(folder: Path, unet: Any) -> None:
    """Load the folder through the studio's loader and compare the UNet's weights with ours (as the
    float16 the folder stores them in)."""
    from models.loading import load_checkpoint

    checkpoint = load_checkpoint(folder)
    if not same_weights(unet, checkpoint.unet):
        raise RuntimeError(f"{folder} does not load back as the trained model")
    if checkpoint.family != "sd1":
        raise RuntimeError(f"{folder} loads as {checkpoint.family}, not sd1")


def export_sd(
    run: Path,
    out: Path,
    *,
    use_ema: bool = True,
    scheduler: str = "dpmpp",
    eval_n: int = 0,
    vae_run: Path | None = None,
    link_from: Path | None = None,
) -> Path:
    """Write the diffusers folder and its model card to ``out`` (replacing it), checked by loading.
    ``vae_run``: another VAE run than the one the SD trained with, whose encoder must be the same (a
    decoder fine-tuned with ``training.vae --decoder-only``). ``link_from``: an exported folder beside
    ``out`` whose text encoder, tokenizer and VAE the export links to where they are the same files."""
    run, out = Path(run), Path(out)
    unet, text_encoder, config = trained_models(run, use_ema)
    config["sd_vae"] = config["vae"]  # the VAE whose latents the SD learnt
    if vae_run is not None:
        config["vae"] = str(Path(vae_run).resolve())
    vae = load_vae(Path(config["vae"]), torch.device("cpu"))
    pipe = make_pipeline(unet, text_encoder, vae, scheduler)
    info: dict[str, Any] = {"scheduler": SCHEDULERS[scheduler]}
    tmp = staging(out)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    halve_weights(tmp)
    if eval_n:  # what ships: the folder's float16 weights, computed in float32
        from diffusers import StableDiffusionPipeline

        shipped = StableDiffusionPipeline.from_pretrained(
            str(tmp), torch_dtype=torch.float32, local_files_only=True
        )
        shipped.set_progress_bar_config(disable=True)
        info["eval"] = evaluate(shipped, eval_n, size=config["size"])
    if config.get("init"):
        card = finetune_card(config, unet, run, info, Path(out).name, link_from)
    else:
        card = model_card(config, unet, text_encoder, vae, run, info)
    (tmp / "README.md").write_text(card)
    if info.get("eval"):
        (tmp / "eval.json").write_text(json.dumps(info["eval"], indent=1))
    if link_from is not None:
        link_shared(tmp, Path(link_from))
    check_loads(tmp, unet)
    return swap_in(tmp, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.export", description=__doc__)
    parser.add_argument("--sd", type=Path, required=True, help="the SD run folder (training.sd --out)")
    parser.add_argument("--out", type=Path, required=True, help="e.g. models/checkpoints/toy-sd")
    parser.add_argument("--raw", action="store_true", help="export the raw weights, not the EMA copies")
    parser.add_argument("--scheduler", choices=sorted(SCHEDULERS), default="dpmpp")
    parser.add_argument("--eval", type=int, default=0, help="score N generated pictures per split")
    parser.add_argument(
        "--vae", type=Path, default=None, help="a VAE run with the same encoder (a fine-tuned decoder)"
    )
    parser.add_argument(
        "--link-from",
        type=Path,
        default=None,
        help="an exported folder beside --out (e.g. models/checkpoints/toy-sd) whose text encoder, "
        "tokenizer and VAE are linked to where the export's are the same files",
    )
    args = parser.parse_args(argv)
    folder = export_sd(
        args.sd,
        args.out,
        use_ema=not args.raw,
        scheduler=args.scheduler,
        eval_n=args.eval,
        vae_run=args.vae,
        link_from=args.link_from,
    )
    print(f"exported {folder} (loads with models.loading.load_checkpoint)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
