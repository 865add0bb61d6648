"""Attend-and-Excite: make every subject of a prompt show up, by strengthening the words' attention
during the first denoising steps (models/attend_excite.py does the work while sampling).

The node encodes the prompt itself (exactly as CLIPTextEncode does) so that the subject words are found
among *that* prompt's tokens; its conditioning goes to the sampler's positive input and its MODEL to the
sampler's model input. Any sampler node that takes a MODEL runs it (KSampler, KSamplerAdvanced, the
custom samplers) on SD 1.x and 2.x models.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodes import types as T
from nodes.base import Context, Input, Node, NodeInputError, Output, RunSettings
from nodes.support import checkpoint_for, embeddings_fingerprint, encode_prompt, prompt_encoders

#: The UNet families Attend-and-Excite runs on.
FAMILIES = ("sd1", "sd2")


class AttendAndExcite(Node):
    display_name = "Attend and Excite"
    category = "sampling/guidance"
    description = (
        "Make sure every subject of the prompt appears ('a cat and a frog' with both): during the first "
        "steps the picture is nudged until each subject word gets a strong attention peak. Connect the "
        "conditioning to the sampler's positive input and the model to its model input."
    )
    inputs = (
        Input("model", T.MODEL),
        Input("clip", T.CLIP),
        Input("text", T.STRING, default="", multiline=True, description="The prompt (positive)."),
        Input(
            "subjects",
            T.STRING,
            default="",
            description="Subject words of the prompt, comma-separated ('circle, square'), or token "
            "positions (1 is the first word).",
        ),
        Input(
            "max_iter_to_alter",
            T.INT,
            default=25,
            min=0,
            max=10000,
            step=1,
            description="How many of the first steps are nudged.",
        ),
        Input(
            "scale_factor",
            T.FLOAT,
            default=20.0,
            min=0.0,
            max=10000.0,
            step=0.5,
            description="Size of each nudge (times sqrt of 1 falling to 0.5 over the steps).",
        ),
        Input(
            "thresholds",
            T.STRING,
            default="0: 0.05, 10: 0.5, 20: 0.8",
            description="At these steps, nudge again until each subject's attention peak reaches the "
            "value (at most 20 times); empty: never.",
        ),
        Input(
            "attention_res",
            T.INT,
            default=0,
            min=0,
            max=1024,
            step=1,
            description="Height of the attention maps read: 0 picks it (16 for SD at 512 px, 8 for the "
            "toy model's 32 px pictures).",
        ),
    )
    outputs = (Output("model", T.MODEL), Output("conditioning", T.CONDITIONING))

    def fingerprint(self, inputs: Mapping[str, Any], settings: RunSettings) -> str | None:
        return embeddings_fingerprint(inputs, ("text",), settings)  # the embeddings the text names

    def run(
        self,
        ctx: Context,
        model: Any,
        clip: Any,
        text: str,
        subjects: str,
        max_iter_to_alter: int,
        scale_factor: float,
        thresholds: str,
        attention_res: int,
    ) -> dict[str, Any]:
        from models.attend_excite import PROMPT_TOKENS, ExciteSettings, find_subjects, parse_thresholds
        from models.prompts import parse_weights, weighted_tokens

        family = checkpoint_for(model, ctx).family
        if family not in FAMILIES:
            raise NodeInputError(
                "model", f"is a {family} model: Attend-and-Excite works with SD 1.x and 2.x models"
            )
        try:
            steps = parse_thresholds(thresholds)
        except ValueError as exc:
            raise NodeInputError("thresholds", str(exc)) from None
        _, tokenizers, _, (expanded,) = prompt_encoders(ctx, clip, [text], "text")
        tokenizer = tokenizers[0]
        ids, _ = weighted_tokens(tokenizer, parse_weights(expanded))
        if len(ids) > tokenizer.model_max_length - 2:
            raise NodeInputError(
                "text",
                f"has {len(ids)} tokens: Attend-and-Excite reads one chunk of "
                f"{tokenizer.model_max_length - 2}; shorten the prompt",
            )
        try:
            indices = find_subjects(tokenizer, ids, subjects)
        except ValueError as exc:
            raise NodeInputError("subjects", str(exc)) from None
        cond = encode_prompt(ctx, clip, text)
        cond = cond.with_(extra={**cond.extra, PROMPT_TOKENS: tuple(ids)})
        excite = ExciteSettings(
            indices=indices,
            prompt_ids=tuple(ids),
            max_iter_to_alter=int(max_iter_to_alter),
            scale_factor=float(scale_factor),
            thresholds=steps,
            attention_res=int(attention_res),
        )
        return {"model": model.with_(attend_excite=excite), "conditioning": (cond,)}


NODES = (AttendAndExcite,)
