"""Editing: prompt-to-prompt (attention control) and colorization that keeps the luminance."""

from __future__ import annotations

from typing import Any

import numpy as np

from imaging.luma import luminance
from nodes import types as T
from nodes.base import Context, Input, Node, NodeInputError, Output
from nodes.image_inputs import as_image, check_same_size
from nodes.support import CFG, SEED, STEPS, checkpoint_for, manager_of, step_reporter

#: BT.601 chroma (YCbCr) matrices, full range.
_TO_CBCR = np.asarray([[-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=np.float32)


def recombine(luma: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    """RGB from BT.601 Y, Cb, Cr (each (b, h, w)).

    Where the colour would leave [0, 1], its chroma is scaled down (not clipped), so the
    luminance of the result is exactly ``luma``.
    """
    offsets = np.stack([1.402 * cr, -0.344136 * cb - 0.714136 * cr, 1.772 * cb], axis=-1)
    y = np.clip(luma, 0.0, 1.0)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        room = np.where(offsets > 0, (1.0 - y) / offsets, np.where(offsets < 0, -y / offsets, np.inf))
    scale = np.clip(room.min(axis=-1, keepdims=True), 0.0, 1.0)
    return np.clip(y + scale * offsets, 0.0, 1.0).astype(np.float32)


class Colorize(Node):
    category = "image/edit"
    description = (
        "Colour a grayscale photo: colours from a generated image, luminance kept from the original."
    )
    inputs = (
        Input("grayscale", T.IMAGE, description="The original (gray) photo; its luminance is kept."),
        Input("colors", T.IMAGE, description="A coloured version of it, e.g. from image-to-image."),
        Input("saturation", T.FLOAT, default=1.0, min=0.0, max=4.0, step=0.05),
    )
    outputs = (Output("image", T.IMAGE),)

    def run(
        self, ctx: Context, grayscale: np.ndarray, colors: np.ndarray, saturation: float
    ) -> dict[str, Any]:
        gray = as_image("grayscale", grayscale)
        colors = as_image("colors", colors)
        check_same_size("colors", gray, colors, "grayscale", "colors")
        if colors.shape[0] != gray.shape[0] and 1 not in (colors.shape[0], gray.shape[0]):
            raise NodeInputError("colors", "needs one image per grayscale image, or a single one")
        chroma = colors @ _TO_CBCR.T * saturation
        luma = np.broadcast_to(luminance(gray), chroma.shape[:-1])
        return {"image": recombine(luma, chroma[..., 0], chroma[..., 1])}


def parse_reweight(text: str) -> dict[str, float]:
    """``"red:2, circle:0.5"`` into {"red": 2.0, "circle": 0.5}."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        word, sep, number = part.rpartition(":")
        try:
            if not sep or not word.strip():
                raise ValueError
            weights[word.strip()] = float(number)
        except ValueError:
            raise NodeInputError(
                "reweight", f"{part!r}: write words with scales, like 'red:2, circle:0.5'"
            ) from None
    return weights


class PromptToPrompt(Node):
    category = "sampling/edit"
    description = "Make an image and an edit of it that keeps its layout: swap, add or reweight words."
    inputs = (
        Input("model", T.MODEL),
        Input("clip", T.CLIP),
        Input("latent", T.LATENT, description="An EmptyLatent: the size of the pictures."),
        Input("source_prompt", T.STRING, default="a red circle", multiline=True),
        Input("edited_prompt", T.STRING, default="a blue circle", multiline=True),
        Input("negative_prompt", T.STRING, default="", multiline=True),
        Input(
            "mode",
            T.STRING,
            default="replace",
            choices=("replace", "refine", "reweight"),
            accepts="constant",
            description="replace: swap words (same length); refine: add words; reweight: scale words.",
        ),
        Input(
            "reweight", T.STRING, default="", description="Words of the edited prompt with scales: 'red:2'."
        ),
        Input(
            "cross_replace",
            T.FLOAT,
            default=0.8,
            min=0.0,
            max=1.0,
            step=0.05,
            description="Fraction of the steps that share the words' attention maps.",
        ),
        Input(
            "self_replace",
            T.FLOAT,
            default=0.4,
            min=0.0,
            max=1.0,
            step=0.05,
            description="Fraction of the steps that share the layout (self-attention).",
        ),
        SEED,
        STEPS,
        CFG,
        Input("sampler", T.STRING, default="ddim", choices=("ddim", "euler", "dpmpp_2m", "pndm", "unipc")),
    )
    outputs = (Output("source", T.LATENT), Output("edited", T.LATENT))

    def run(
        self,
        ctx: Context,
        model: Any,
        clip: Any,
        latent: Any,
        source_prompt: str,
        edited_prompt: str,
        negative_prompt: str,
        mode: str,
        reweight: str,
        cross_replace: float,
        self_replace: float,
        seed: int,
        steps: int,
        cfg: float,
        sampler: str,
    ) -> dict[str, Any]:
        from models.p2p import Controller, EditError, P2PJob, plan_tokens, sample_p2p
        from models.prompts import encode
        from models.values import Cond, Latent

        checkpoint = checkpoint_for(model, ctx)
        text = checkpoint_for(clip, ctx)
        if checkpoint.family == "sdxl":
            raise NodeInputError("model", "prompt-to-prompt works with SD 1.x and 2.x models")
        weights = parse_reweight(reweight)
        if mode == "reweight" and not weights:
            raise NodeInputError("reweight", "name the words to reweight, like 'red:2'")
        tokenizer, encoder = text.tokenizers[0], text.text_encoders[0]
        try:
            plan = plan_tokens(tokenizer, source_prompt, edited_prompt, mode, weights)
        except EditError as exc:
            raise NodeInputError("edited_prompt", str(exc)) from None
        manager = manager_of(ctx)
        conds = [
            Cond(encode(tokenizer, encoder, p, device=manager.device)[0])
            for p in (source_prompt, edited_prompt, negative_prompt)
        ]
        controller = Controller(
            total_steps=steps, cross_steps=cross_replace, self_steps=self_replace, mode=mode, **plan
        )

        job = P2PJob(
            unet=checkpoint.unet,
            scheduler_config=checkpoint.scheduler_config,
            source=conds[0],
            target=conds[1],
            negative=conds[2],
            shape=(1, *latent.samples.shape[1:]),
            seed=seed,
            steps=steps,
            cfg=cfg,
            sampler=sampler,
            controller=controller,
            device=manager.device,
            dtype=manager.dtype,
            on_step=step_reporter(ctx),
        )
        both = sample_p2p(job, ctx.check_cancelled)
        return {"source": Latent(both[:1]), "edited": Latent(both[1:])}


NODES = (Colorize, PromptToPrompt)
