"""Training a concept as a job: TrainLoRA and TrainEmbedding.

Each node trains from a dataset in the input folder (``datasets/<name>/``: pictures with
same-stem ``.txt`` captions, uploaded by the studio's Train panel or copied there) on an SD 1.x /
2.x checkpoint, through training/concept (the same trainer as ``python app.py train-lora`` and
``train-embedding``), and writes a new file into the models folder: ``models/loras/NAME.safetensors``
(LoraLoader lists it at once) or ``models/embeddings/NAME.safetensors`` (prompts use it as
``embedding:NAME``). A file is never overwritten: a name that is taken is an error on ``name``.

While it trains the node reports each step with its loss (the studio's progress bar and time
left; the ``metrics`` of its ``node_progress`` events) and, every few seconds, a picture of the loss
so far (a live plot in the node and the Train panel). Cancel stops it after the step it is on; what
was learnt so far is saved, as the trainer does on Ctrl-C, and the run ends as cancelled. In a
worker process the node has ``cancel_grace`` (300 s) beyond the worker's usual grace to finish its
step and save, enough for a full-size SD step on a CPU; only a node still busy after that has its
worker stopped.
``max_minutes`` ends it early the same way but as a finished run. The outputs are the new file's
name, the final loss plot (a PreviewImage shows it), the mean loss of the last steps and the steps
done.

A training is never answered from the cache: it runs each time it is asked (and a second run with
the same name then fails, the name being taken, instead of pretending to have trained again).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.services import Services
from nodes import types as T
from nodes.base import Cancelled, Context, Input, Node, NodeInputError, Output, RunSettings
from nodes.support import SEED, find_model, model_input

#: Seconds between two loss plots sent while training (drawing one takes about 0.1 s).
PLOT_EVERY = 2.0
#: A new file's name: letters, digits, ``_ . -`` (what prompts read as an embedding's name).
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: Steps whose mean loss the ``loss`` output gives.
LAST_STEPS = 20


class _NeverCached(Exception):
    """Raised by a training node's fingerprint: the executor then never caches it (see graph/executor.py)."""


def _dataset_input() -> Input:
    return Input(
        "dataset",
        T.STRING,
        default="",
        accepts="constant",
        dataset_folder=True,
        description=(
            "A folder of pictures with .txt captions in the input folder's datasets/ "
            "(upload one in the Train panel)."
        ),
    )


def _common_inputs(learning_rate: float) -> tuple[Input, ...]:
    return (
        model_input(
            "ckpt_name", "checkpoints", "The SD 1.x or 2.x checkpoint to train on (models/checkpoints)."
        ),
        _dataset_input(),
        Input(
            "name",
            T.STRING,
            default="my-concept",
            accepts="constant",
            description="The new file's name (letters, digits, _ . -); a name that is taken is refused.",
        ),
        Input(
            "token",
            T.STRING,
            default="<concept>",
            accepts="constant",
            description="The concept's word in the captions (a picture without one: 'a photo of TOKEN').",
        ),
        Input("steps", T.INT, default=500, min=1, max=100000, description="Optimisation steps."),
        Input(
            "learning_rate",
            T.FLOAT,
            default=learning_rate,
            min=1e-7,
            max=1.0,
            step=0.0001,
            description="AdamW's learning rate.",
        ),
        Input("batch", T.INT, default=4, min=1, max=64, description="Pictures per step."),
        Input(
            "resolution",
            T.INT,
            default=0,
            min=0,
            max=2048,
            step=8,
            description="Training size in pixels, a multiple of 8; 0: the model's own.",
        ),
        SEED,
        Input(
            "max_minutes",
            T.FLOAT,
            default=0.0,
            min=0.0,
            max=10080.0,
            step=1.0,
            description="Stop and save after this many minutes; 0: no limit.",
        ),
    )


_PRIOR_INPUTS = (
    Input(
        "prior_preservation",
        T.BOOLEAN,
        default=False,
        description="DreamBooth's prior loss: also learn the class from class pictures the model draws.",
    ),
    Input(
        "class_prompt",
        T.STRING,
        default="",
        accepts="constant",
        description="The class the concept belongs to, for prior preservation (e.g. 'a photo of a dog').",
    ),
    Input("num_class_images", T.INT, default=8, min=1, max=1000, description="Class pictures to draw."),
    Input(
        "prior_weight",
        T.FLOAT,
        default=1.0,
        min=0.0,
        max=100.0,
        step=0.1,
        description="Weight of the prior loss.",
    ),
)


#: A new word's rows: an embedding's, or a LoRA's trigger word with pivotal tuning.
_WORD_INPUTS = (
    Input(
        "init_word",
        T.STRING,
        default="",
        accepts="constant",
        description="A word the new one starts from (e.g. 'star'); empty: the vocabulary's mean.",
    ),
    Input("vectors", T.INT, default=1, min=1, max=16, description="Vectors the new word takes."),
)

#: How each step's loss is weighed and what the pictures are seen as (a LoRA's; the CLI's too).
_LOSS_INPUTS = (
    Input(
        "snr_gamma",
        T.FLOAT,
        default=0.0,
        min=0.0,
        max=100.0,
        step=0.5,
        description="Min-SNR-gamma loss weighting (e.g. 5): noisy steps count less; 0: off.",
    ),
    Input(
        "shift",
        T.INT,
        default=0,
        min=0,
        max=64,
        description="Also show the pictures moved by up to this many pixels (0: as they are).",
    ),
    Input(
        "timestep_bias",
        T.STRING,
        default="none",
        choices=("none", "earlier", "later"),
        accepts="constant",
        description="Train more often at the noisier (earlier) or the cleaner (later) steps.",
    ),
)


def dataset_folder(settings: RunSettings, name: str) -> Path:
    """The dataset ``name`` (``datasets/<name>`` in the first input folder that has it), checked
    like any input file (no absolute paths in the studio, no ``..``, no links leading out)."""
    name = str(name or "").strip()
    if not name:
        raise NodeInputError(
            "dataset", "no dataset given: upload pictures in the Train panel, then choose them"
        )
    if "/" in name or "\\" in name or name.startswith(".") or Path(name).is_absolute():
        raise NodeInputError(
            "dataset",
            f"{name[:80]!r} is not a dataset name: give the name of a folder in the input folder's datasets/",
        )
    for folder in settings.input_dirs:
        root = Path(folder) / "datasets"
        candidate = root / name
        if candidate.is_dir():
            if not candidate.resolve().is_relative_to(Path(folder).resolve()):
                raise NodeInputError(
                    "dataset", f"dataset {name!r} leads outside the input folder; make it a real folder"
                )
            return candidate.resolve()
    where = ", ".join(str(Path(d) / "datasets") for d in settings.input_dirs)
    raise NodeInputError("dataset", f"there is no dataset {name!r} in {where}; upload it in the Train panel")


def output_path(services: Services, kind: str, name: str) -> Path:
    """Where a new ``kind`` file (``loras`` or ``embeddings``) named ``name`` goes: the first
    model folder of that kind; a NodeInputError on ``name`` when it is unusable or taken."""
    stem = str(name or "").strip().removesuffix(".safetensors")
    if not _NAME.match(stem) or ".." in stem:
        raise NodeInputError(
            "name", f"{stem[:80]!r} cannot name a file: use letters, digits, '_', '.' or '-' (at most 64)"
        )
    file_name = f"{stem}.safetensors"
    taken = [
        services.paths.find(kind, f"{stem}{suffix}") for suffix in (".safetensors", ".pt", ".bin", ".ckpt")
    ]
    found = next((path for path in taken if path is not None), None)
    if found is not None:
        raise NodeInputError(
            "name",
            f"models/{kind} already has {found.name!r}; choose another name (files are never overwritten)",
        )
    folders = services.paths.folders(kind)
    folder = folders[0] if folders else services.paths.roots[0] / kind
    return folder / file_name


def as_image(picture: np.ndarray) -> np.ndarray:
    """An (H, W, 3) uint8 picture as an IMAGE (a batch of one, float32 in [0, 1])."""
    return (picture.astype(np.float32) / 255.0)[None]


def plot_title(kind: str, step: int, steps: int, losses: Sequence[float], note: str = "") -> str:
    """The loss plot's title: the kind, the step, the latest loss (mean of the last steps)."""
    recent = losses[-LAST_STEPS:]
    loss = f" · loss {sum(recent) / len(recent):.4f}" if recent else ""
    return f"{kind}: step {step}/{steps}{loss}{note}"


class _TrainConcept(Node):
    """What both training nodes share: inputs, checks, the progress and plots, the outputs."""

    category = "training"
    output_node = True
    #: finishing a step and saving what was learnt can take a while on a CPU with a full-size model
    cancel_grace = 300.0
    kind = "lora"
    folder_kind = "loras"

    def fingerprint(self, inputs: Mapping[str, Any], settings: RunSettings) -> str | None:
        # Never cached: a training makes a new file each time it is asked (see the module's doc).
        raise _NeverCached()

    def train(self, ctx: Context, ckpt_name: str, dataset: str, name: str, **fields: Any) -> dict[str, Any]:
        from training.concept import ConceptConfig, ConceptError, StepReport, loss_plot, train_concept
        from training.concept.config import check_checkpoint
        from training.concept.data import check_pictures

        checkpoint = find_model(ctx, "checkpoints", "ckpt_name", ckpt_name)
        services = ctx.services
        try:
            check_checkpoint(checkpoint, services.allow_pickle)
        except ConceptError as exc:
            raise NodeInputError(
                "ckpt_name", f"{exc} (training works on SD 1.x and 2.x models: not SD3, Flux or SDXL)"
            ) from None
        images = dataset_folder(ctx.settings, dataset)
        try:
            check_pictures(images)
        except ConceptError as exc:
            raise NodeInputError("dataset", str(exc)) from None
        out = output_path(services, self.folder_kind, name)
        token = str(fields.pop("token")).strip()
        if not token or any(c.isspace() for c in token):
            raise NodeInputError("token", f"the token must be one word without spaces, not {token!r}")
        resolution = int(fields.pop("resolution")) or None
        if resolution is not None and resolution % 8:
            raise NodeInputError(
                "resolution", f"give a multiple of 8 (or 0 for the model's size), not {resolution}"
            )
        max_minutes = float(fields.pop("max_minutes")) or None
        if fields.get("prior_preservation") and not str(fields.get("class_prompt", "")).strip():
            raise NodeInputError(
                "class_prompt", "prior preservation needs a class prompt, e.g. 'a photo of a dog'"
            )
        config = ConceptConfig(
            kind=self.kind,  # type: ignore[arg-type]
            checkpoint=checkpoint,
            images=images,
            out=out,
            token=token,
            resolution=resolution,
            max_minutes=max_minutes,
            device=services.device,
            allow_pickle=services.allow_pickle,
            **fields,
        )
        losses: list[float] = []
        last_plot = [time.monotonic()]
        kind = "LoRA" if self.kind == "lora" else "embedding"

        def on_step(report: StepReport) -> None:
            losses.append(report.loss)
            # without the cancel check (Context.progress would raise Cancelled inside the trainer):
            # on a cancel, the trainer sees should_stop() after this step and saves what it has
            ctx.report_progress(report.step, report.steps, {"loss": report.loss})
            if ctx.cancel_token.cancelled:
                return
            if time.monotonic() - last_plot[0] >= PLOT_EVERY:
                last_plot[0] = time.monotonic()
                ctx.preview(as_image(loss_plot(losses, plot_title(kind, report.step, report.steps, losses))))

        try:
            result = train_concept(config, on_step=on_step, should_stop=lambda: ctx.cancel_token.cancelled)
        except ConceptError as exc:
            raise ValueError(str(exc)) from None
        cancelled = result.stopped and ctx.cancel_token.cancelled
        note = " · stopped" if result.stopped else ""
        final = as_image(
            loss_plot(result.losses, plot_title(kind, result.steps_done, config.steps, result.losses, note))
        )
        ctx.preview(final)
        if cancelled:
            raise Cancelled()
        recent = result.losses[-LAST_STEPS:]
        loss = float(sum(recent) / len(recent)) if recent else float("nan")
        return {"name": result.path.name, "loss_plot": final, "loss": loss, "steps_done": result.steps_done}


_OUTPUTS = (
    Output("name", T.STRING, "The new file's name in its models folder."),
    Output("loss_plot", T.IMAGE, "The loss per step, as a picture."),
    Output("loss", T.FLOAT, f"The mean loss of the last {LAST_STEPS} steps."),
    Output("steps_done", T.INT, "Steps trained (fewer than asked when max_minutes ended it)."),
)


class TrainLoRA(_TrainConcept):
    display_name = "Train LoRA"
    description = (
        "Train a LoRA (DreamBooth-style) on an SD 1.x/2.x checkpoint from a dataset of captioned pictures; "
        "writes models/loras/NAME.safetensors for LoraLoader."
    )
    kind = "lora"
    folder_kind = "loras"
    inputs = (
        *_common_inputs(1e-3),
        Input("rank", T.INT, default=4, min=1, max=256, description="The LoRA's rank (its size)."),
        Input(
            "targets",
            T.STRING,
            default="attention",
            choices=("attention", "all", "cross"),
            accepts="constant",
            description="The UNet layers that learn: attention only, or all (also the ResNet convolutions "
            "and feed-forward layers: better for a new shape or look, a bigger file), or cross (only the "
            "cross-attention's key and value projections, which read the prompt: Custom Diffusion).",
        ),
        Input(
            "train_text_encoder",
            T.BOOLEAN,
            default=False,
            description="Also train LoRA layers in the text encoder.",
        ),
        *_PRIOR_INPUTS,
        Input(
            "prior_target",
            T.STRING,
            default="noise",
            choices=("noise", "base"),
            accepts="constant",
            description="What class pictures are held to: the added noise (DreamBooth) or the base "
            "model's own prediction (less noisy).",
        ),
        Input(
            "pivotal",
            T.BOOLEAN,
            default=False,
            description="Pivotal tuning: the token, a new word, also learns rows of its own (from "
            "init_word, vectors), bundled into the LoRA file: prompts that say it through the LoRA use them.",
        ),
        *_WORD_INPUTS,
        Input(
            "token_learning_rate",
            T.FLOAT,
            default=5e-3,
            min=1e-7,
            max=1.0,
            step=1e-4,
            description="With pivotal: the new word's rows' learning rate.",
        ),
        Input(
            "protect_prompts",
            T.STRING,
            default="",
            multiline=True,
            accepts="constant",
            description="With targets cross: prompts to leave as they are, one per line; the LoRA then "
            "learns only where their words do not reach (the empty prompt is always kept). Empty: off.",
        ),
        Input(
            "protect_share",
            T.FLOAT,
            default=0.999,
            min=0.5,
            max=0.99999,
            step=0.0001,
            description="With protected prompts: the share of their text states' energy the LoRA may not "
            "read (higher: they change less, the concept learns less).",
        ),
        *_LOSS_INPUTS,
    )
    outputs = _OUTPUTS

    def run(
        self,
        ctx: Context,
        ckpt_name: str,
        dataset: str,
        name: str,
        token: str,
        steps: int,
        learning_rate: float,
        batch: int,
        resolution: int,
        seed: int,
        max_minutes: float,
        rank: int,
        targets: str,
        train_text_encoder: bool,
        prior_preservation: bool,
        class_prompt: str,
        num_class_images: int,
        prior_weight: float,
        prior_target: str,
        pivotal: bool,
        init_word: str,
        vectors: int,
        token_learning_rate: float,
        protect_prompts: str,
        protect_share: float,
        snr_gamma: float,
        shift: int,
        timestep_bias: str,
    ) -> dict[str, Any]:
        from training.concept.protect import prompt_lines

        return self.train(
            ctx,
            ckpt_name,
            dataset,
            name,
            token=token,
            steps=steps,
            learning_rate=learning_rate,
            batch=batch,
            resolution=resolution,
            seed=seed,
            max_minutes=max_minutes,
            rank=rank,
            targets=targets,
            train_text_encoder=train_text_encoder,
            prior_preservation=prior_preservation,
            class_prompt=class_prompt,
            num_class_images=num_class_images,
            prior_weight=prior_weight,
            prior_target=prior_target,
            pivotal=pivotal,
            init_word=str(init_word).strip(),
            vectors=vectors,
            token_learning_rate=token_learning_rate,
            protect=prompt_lines(str(protect_prompts)),
            protect_share=protect_share,
            snr_gamma=float(snr_gamma) or None,
            shift=shift,
            timestep_bias=timestep_bias,
        )


class TrainEmbedding(_TrainConcept):
    display_name = "Train Embedding"
    description = (
        "Train a textual-inversion embedding (a new word) on an SD 1.x/2.x checkpoint from a dataset of "
        "captioned pictures; writes models/embeddings/NAME.safetensors, used in prompts as embedding:NAME."
    )
    kind = "embedding"
    folder_kind = "embeddings"
    inputs = (
        *_common_inputs(5e-3),
        *_WORD_INPUTS,
    )
    outputs = _OUTPUTS

    def run(
        self,
        ctx: Context,
        ckpt_name: str,
        dataset: str,
        name: str,
        token: str,
        steps: int,
        learning_rate: float,
        batch: int,
        resolution: int,
        seed: int,
        max_minutes: float,
        init_word: str,
        vectors: int,
    ) -> dict[str, Any]:
        return self.train(
            ctx,
            ckpt_name,
            dataset,
            name,
            token=token,
            steps=steps,
            learning_rate=learning_rate,
            batch=batch,
            resolution=resolution,
            seed=seed,
            max_minutes=max_minutes,
            init_word=str(init_word).strip(),
            vectors=vectors,
        )


NODES = (TrainLoRA, TrainEmbedding)
