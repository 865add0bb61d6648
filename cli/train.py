"""``app.py train-lora`` and ``app.py train-embedding``: teach a model a concept from a folder of
pictures with captions (training/concept; docs/training.md).

The result goes into the models folder (``models/loras/NAME.safetensors`` or
``models/embeddings/NAME.safetensors``; ``--out FILE`` elsewhere) with its loss curve beside it
(``NAME.loss.png``). Ctrl-C saves what was learnt so far and stops; a second Ctrl-C aborts.
Exit codes: 0 trained (or stopped and saved), 2 a request that cannot be trained (one line says why).
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
from pathlib import Path
from typing import Any, TextIO

EXIT_OK = 0
EXIT_INVALID = 2
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")


def add_train_parsers(commands: Any) -> None:
    """Add ``train-lora`` and ``train-embedding`` to app.py's subcommands."""
    lora = commands.add_parser(
        "train-lora",
        help="train a LoRA (DreamBooth-style) from pictures with captions",
        description="Train a LoRA on a model's UNet attention (and optionally its text encoder) from a "
        "folder of pictures with same-stem .txt captions; LoraLoader uses the result at once.",
    )
    embedding = commands.add_parser(
        "train-embedding",
        help="train a textual-inversion embedding from pictures with captions",
        description="Learn a new word's embedding (textual inversion) from a folder of pictures with "
        "same-stem .txt captions that use the word; prompts use it by the file's name "
        "(NAME or embedding:NAME).",
    )
    for parser in (lora, embedding):
        _common_args(parser)
    lora.add_argument("--rank", type=int, default=4, help="LoRA rank (default: 4)")
    lora.add_argument(
        "--targets",
        choices=("attention", "all", "cross"),
        default="attention",
        help="the UNet layers that learn: attention projections (default); all: also the ResNet "
        "convolutions and feed-forward layers (better for a new look, a bigger file); cross: only the "
        "cross-attention's key and value projections, which read the prompt (Custom Diffusion)",
    )
    lora.add_argument(
        "--train-text-encoder", action="store_true", help="also put LoRA layers on the text encoder"
    )
    lora.add_argument(
        "--protect",
        type=Path,
        default=None,
        metavar="FILE",
        help="prompts to leave as they are, one per line (with --targets cross): the LoRA learns only "
        "where their text states do not reach; the empty prompt is always kept (docs/training.md)",
    )
    lora.add_argument(
        "--protect-share",
        type=float,
        default=0.999,
        help="the share of the protected prompts' text-state energy the LoRA may not read (default 0.999)",
    )
    lora.add_argument(
        "--pivotal",
        action="store_true",
        help="pivotal tuning: the trigger word (--token, a new word) also gets learnt rows of its own, "
        "bundled into the LoRA file (as A1111 does); prompts that say TOKEN through the LoRA's text "
        "encoder use them",
    )
    lora.add_argument(
        "--embedding-out",
        type=Path,
        default=None,
        help="with --pivotal: also write the rows to this embedding file (for tools that read no bundled "
        "embeddings, e.g. ComfyUI: models/embeddings/TOKEN.safetensors)",
    )
    lora.add_argument(
        "--token-lr", type=float, default=5e-3, help="with --pivotal: the rows' learning rate (default: 5e-3)"
    )
    for parser in (lora, embedding):
        parser.add_argument(
            "--init-word", default="", help="a word whose embedding starts the new one (default: the mean)"
        )
        parser.add_argument("--vectors", type=int, default=1, help="vectors per token (default: 1)")


def _common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", required=True, help="a checkpoint name in models/checkpoints, or a path (SD 1.x/2.x)"
    )
    parser.add_argument(
        "--images", required=True, type=Path, help="folder of png/jpg/webp pictures, captions in NAME.txt"
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--name", help="write models/loras|embeddings/NAME.safetensors")
    where.add_argument("--out", type=Path, help="write this .safetensors file instead")
    parser.add_argument(
        "--token",
        default="",
        help="the concept's word in captions (default: NAME); pictures without a caption get "
        "'a photo of TOKEN'",
    )
    parser.add_argument("--steps", type=int, default=500, help="optimisation steps (default: 500)")
    parser.add_argument(
        "--lr", type=float, default=None, help="learning rate (default: 1e-3 LoRA, 5e-3 embedding)"
    )
    parser.add_argument("--batch", type=int, default=4, help="pictures per step (default: 4)")
    parser.add_argument("--resolution", type=int, default=None, help="picture side (default: the model's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--snr-gamma", type=float, default=None, help="min-SNR-gamma loss weighting, e.g. 5 (default: off)"
    )
    parser.add_argument(
        "--shift",
        type=int,
        default=0,
        help="also show each picture moved by up to this many pixels (default: 0, off)",
    )
    parser.add_argument(
        "--timestep-bias",
        choices=("none", "earlier", "later"),
        default="none",
        help="draw the least noisy (earlier: fine detail) or noisiest (later: layout) quarter of "
        "the timesteps 3x as often (default: none, uniform)",
    )
    prior = parser.add_argument_group("prior preservation (DreamBooth)")
    prior.add_argument(
        "--prior-preservation", action="store_true", help="also learn to keep drawing the class as before"
    )
    prior.add_argument("--class-prompt", default="", help="the class, e.g. 'a photo of a dog'")
    prior.add_argument(
        "--class-images",
        type=Path,
        default=None,
        help="class pictures (missing ones are drawn and saved here)",
    )
    prior.add_argument("--num-class-images", type=int, default=8)
    prior.add_argument("--prior-weight", type=float, default=1.0, help="weight of the prior loss")
    prior.add_argument(
        "--prior-target",
        choices=("noise", "base"),
        default="noise",
        help="what class pictures are held to: the added noise (DreamBooth, default) or the base "
        "model's own prediction (a distillation: the same aim, less noisy)",
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when there is one)")
    parser.add_argument("--max-minutes", type=float, default=None, help="save and stop after this long")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def models_file(args: argparse.Namespace, folder: str, stem: str) -> Path:
    """STEM.safetensors in the first models folder's ``folder`` (loras or embeddings)."""
    from cli.services import services_from_args
    from models.paths import KIND_FOLDERS

    root = services_from_args(args).paths.roots[0]
    return root / KIND_FOLDERS[folder][0] / f"{stem}.safetensors"


def output_path(args: argparse.Namespace, kind: str) -> Path:
    """``--out``, or NAME.safetensors in the first models folder's loras/ or embeddings/."""
    if args.out is not None:
        return Path(args.out)
    return models_file(args, "loras" if kind == "lora" else "embeddings", args.name)


def checkpoint_path(args: argparse.Namespace) -> Path:
    given = Path(args.checkpoint).expanduser()
    if given.exists():
        return given
    from cli.services import services_from_args

    found = services_from_args(args).paths.find("checkpoints", args.checkpoint)
    if found is None:
        from training.concept import ConceptError

        raise ConceptError(f"no checkpoint {args.checkpoint!r}: give a name in models/checkpoints or a path")
    return found


def config_from_args(args: argparse.Namespace) -> Any:
    from training.concept import ConceptConfig, ConceptError

    kind = "lora" if args.command == "train-lora" else "embedding"
    if args.name is not None and not NAME_RE.match(args.name):
        raise ConceptError(
            f"the name {args.name!r} must be lower-case letters, digits, '-', '_' or '.' (prompts use it)"
        )
    out = output_path(args, kind)
    token = args.token or (args.name if args.name else out.stem)
    extra: dict[str, Any] = {}
    if kind == "lora":
        extra = {"rank": args.rank, "train_text_encoder": args.train_text_encoder, "targets": args.targets}
        if args.pivotal:
            extra |= {
                "pivotal": True,
                "init_word": args.init_word,
                "vectors": args.vectors,
                "token_learning_rate": args.token_lr,
                "embedding_out": args.embedding_out,
            }
        if args.protect is not None:
            from training.concept.protect import read_prompts

            extra |= {"protect": read_prompts(args.protect), "protect_share": args.protect_share}
    else:
        extra = {"init_word": args.init_word, "vectors": args.vectors}
    return ConceptConfig(
        kind=kind,
        checkpoint=checkpoint_path(args),
        images=args.images,
        out=out,
        token=token,
        steps=args.steps,
        learning_rate=args.lr,
        batch=args.batch,
        prior_preservation=args.prior_preservation,
        class_prompt=args.class_prompt,
        class_images=args.class_images,
        num_class_images=args.num_class_images,
        prior_weight=args.prior_weight,
        prior_target=args.prior_target,
        resolution=args.resolution,
        snr_gamma=args.snr_gamma,
        shift=args.shift,
        timestep_bias=args.timestep_bias,
        seed=args.seed,
        threads=args.threads,
        max_minutes=args.max_minutes,
        device=args.device,
        allow_pickle=bool(getattr(args, "allow_pickle", False)),
        **extra,
    )


class Progress:
    """A one-line progress bar with the loss on a terminal (a line every 10% otherwise)."""

    def __init__(self, stream: TextIO, quiet: bool) -> None:
        self.stream, self.quiet = stream, quiet
        self.tty = stream.isatty()
        self.recent: list[float] = []

    def __call__(self, report: Any) -> None:
        self.recent = (self.recent + [report.loss])[-20:]
        if self.quiet:
            return
        every = max(1, report.steps // 10)
        if not self.tty and report.step % every and report.step != report.steps:
            return
        done = report.step / report.steps
        bar = "#" * int(30 * done) + "-" * (30 - int(30 * done))
        mean = sum(self.recent) / len(self.recent)
        rate = report.seconds / report.step
        text = f"[{bar}] {report.step}/{report.steps} loss {mean:.4f} {rate:.2f} s/step"
        self.stream.write(("\r" + text) if self.tty else text + "\n")
        self.stream.flush()

    def end(self) -> None:
        if self.tty and not self.quiet:
            self.stream.write("\n")


class StopOnInterrupt:
    """The first Ctrl-C asks the trainer to save and stop; a second one aborts."""

    def __init__(self) -> None:
        self.asked = False

    def __enter__(self) -> StopOnInterrupt:
        self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.asked:
            raise KeyboardInterrupt
        self.asked = True
        print("\nstopping: saving what was learnt so far (Ctrl-C again to abort)", file=sys.stderr)

    def __call__(self) -> bool:
        return self.asked

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self.previous)


def train_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    from diffusers.utils import logging as diffusers_logging

    from training.concept import ConceptError, loss_plot, train_concept

    diffusers_logging.disable_progress_bar()  # the loading bars would break our one progress line

    try:
        config = config_from_args(args)
        progress = Progress(sys.stderr, args.quiet)
        with StopOnInterrupt() as stop:
            result = train_concept(config, on_step=progress, should_stop=stop)
        progress.end()
    except ConceptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    from PIL import Image

    plot = result.path.with_name(result.path.stem + ".loss.png")
    Image.fromarray(loss_plot(result.losses, f"{config.kind} {result.path.stem}")).save(plot)
    how = "stopped early, saved" if result.stopped else "trained"
    use = (
        f"LoraLoader lora_name {result.path.name!r}, trigger word {config.token!r}"
        if config.kind == "lora"
        else f"write {result.path.stem} (or embedding:{result.path.stem}) in a prompt"
    )
    if config.pivotal:
        use += f" (it teaches prompts the word {config.token!r} itself"
        use += f"; its rows also in {result.embedding_path})" if result.embedding_path is not None else ")"
    last = sum(result.losses[-20:]) / max(1, len(result.losses[-20:]))
    print(
        f"{how}: {result.steps_done} steps in {result.seconds:.0f} s, loss {last:.4f}; wrote {result.path} "
        f"and {plot.name}; use: {use}",
        file=out,
    )
    return EXIT_OK
