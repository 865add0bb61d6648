"""Prompts to conditioning for the DiT families: SD3 / SD3.5 (CLIP-L, CLIP-G, T5) and Flux.1
(CLIP-L, T5), as ``StableDiffusion3Pipeline.encode_prompt`` and ``FluxPipeline.encode_prompt``.

- SD3: CLIP-L's and CLIP-G's penultimate hidden states, joined along the feature axis, then
  (with T5) zero-padded to T5's width and followed by T5's 256 tokens. Without a T5 the joint
  sequence is the 77 CLIP tokens only (ComfyUI's rule; the pipeline would append 256 zero
  tokens): the sampler zero-pads them to the transformer's width. Pooled: both CLIPs' projected
  pooled vectors, joined.
- Flux: T5's 512 tokens; pooled: CLIP-L's pooled output (before any projection).

Weights ``(word:1.2)`` and prompts over 75 tokens work for the CLIP hidden states as for SD
(:func:`models.prompts.encode`). T5 and the pooled vectors read the prompt with the weight syntax
removed (a plain prompt is encoded exactly as the pipelines encode it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: T5 token counts of the pipelines' defaults (``max_sequence_length``).
SD3_T5_TOKENS = 256
FLUX_T5_TOKENS = 512
#: The text encoders each family takes, by role, in the order a diffusers folder holds them.
ROLES: dict[str, tuple[str, ...]] = {"sd3": ("clip_l", "clip_g", "t5"), "flux": ("clip_l", "t5")}


class PromptError(ValueError):
    """A text encoder set that cannot encode a prompt for this family, said plainly."""


def is_t5(encoder: Any) -> bool:
    return "T5" in type(encoder).__name__


def encoder_roles(family: str, encoders: Sequence[Any], roles: Sequence[str] | None = None) -> list[str]:
    """The role ("clip_l", "clip_g", "t5") of each text encoder: ``roles`` when given (a loader's
    ``Checkpoint.extra["encoders"]``), else T5 by its class and the CLIPs in the family's order."""
    if roles is not None:
        if len(roles) != len(encoders):
            raise PromptError(f"{len(encoders)} text encoders but {len(roles)} roles ({', '.join(roles)})")
        return list(roles)
    clip_roles = iter(r for r in ROLES[family] if r != "t5")
    found = []
    for encoder in encoders:
        found.append("t5" if is_t5(encoder) else next(clip_roles, "clip"))
    return found


def plain_text(prompt: str) -> str:
    """The prompt without weight syntax (``(red:1.3) cube`` -> ``red cube``); a plain prompt as is."""
    from models.prompts import is_plain, parse_weights

    pieces = parse_weights(prompt)
    return prompt if is_plain(pieces) else "".join(p.text for p in pieces)


def t5_hidden(tokenizer: Any, encoder: Any, prompt: str, tokens: int, device: str) -> torch.Tensor:
    """T5's last hidden state (1, tokens, d_model) for the prompt padded or cut to ``tokens``."""
    import torch

    ids = tokenizer(
        plain_text(prompt),
        padding="max_length",
        max_length=tokens,
        truncation=True,
        add_special_tokens=True,
        return_tensors="pt",
    ).input_ids
    with torch.no_grad():
        hidden = encoder(ids.to(device))[0]
    return hidden.to("cpu", torch.float32)


def clip_pooled(tokenizer: Any, encoder: Any, prompt: str, device: str) -> torch.Tensor:
    """CLIP's pooled output (the end token's final state, not projected), as Flux uses it."""
    import torch

    ids = tokenizer(
        plain_text(prompt),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    text_model = getattr(encoder, "text_model", encoder)  # a CLIPTextModelWithProjection's inner model
    with torch.no_grad():
        pooled = text_model(ids.to(device), output_hidden_states=False).pooler_output
    return pooled.to("cpu", torch.float32)


def _clip_parts(
    parts: Mapping[str, tuple[Any, Any, str]], layer: int | None, device: str
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(hidden states, projected pooled vectors) of CLIP-L then CLIP-G, with the same number of
    75-token chunks (the shorter padded with empty-prompt chunks, as for SDXL)."""
    import torch

    from models.prompts import encode, layer_choice

    hidden_layer, norm = layer_choice("sdxl", layer)  # penultimate without the final norm by default
    hidden, pooled = [], []
    for role in ("clip_l", "clip_g"):
        if role not in parts:
            continue
        tokenizer, encoder, text = parts[role]
        states, vector = encode(
            tokenizer, encoder, text, hidden_layer=hidden_layer, final_norm=norm, device=device
        )
        if vector is None:
            raise PromptError(f"the {role} text encoder has no projection: SD3 needs CLIP models with one")
        hidden.append(states)
        pooled.append(vector)
    longest = max((h.shape[1] for h in hidden), default=0)
    for index, (role, states) in enumerate(
        zip([r for r in ("clip_l", "clip_g") if r in parts], hidden, strict=True)
    ):
        if states.shape[1] < longest:
            tokenizer, encoder, _ = parts[role]
            empty, _ = encode(
                tokenizer, encoder, "", hidden_layer=hidden_layer, final_norm=norm, device=device
            )
            hidden[index] = torch.cat(
                [states, *([empty] * ((longest - states.shape[1]) // empty.shape[1]))], 1
            )
    return hidden, pooled


def encode_sd3(
    parts: Mapping[str, tuple[Any, Any, str]],
    *,
    layer: int | None = None,
    device: str = "cpu",
    t5_tokens: int = SD3_T5_TOKENS,
    widths: Mapping[str, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SD3's (joint sequence, pooled) from ``parts``: role -> (tokenizer, encoder, text).

    A role left out of ``parts`` (CLIPTextEncodeSD3 with ``empty_padding`` "none" and an empty
    text) contributes zeros of its width (``widths``, read from the encoders), as ComfyUI does.
    """
    import torch
    import torch.nn.functional as F

    widths = dict(widths or {})
    clip_roles = [r for r in ("clip_l", "clip_g") if r in parts]
    hidden, pooled = _clip_parts(parts, layer, device)
    features: torch.Tensor | None = None
    if hidden:
        chunks = []
        for role in ("clip_l", "clip_g"):
            if role in clip_roles:
                chunks.append(hidden[clip_roles.index(role)])
            elif role in widths:
                chunks.append(torch.zeros(1, hidden[0].shape[1], widths[role]))
        features = torch.cat(chunks, dim=-1)
    vectors = []
    for role in ("clip_l", "clip_g"):
        if role in clip_roles:
            vectors.append(pooled[clip_roles.index(role)])
        elif role in widths:
            vectors.append(torch.zeros(1, widths.get(f"{role}_pooled", widths[role])))
    vector = torch.cat(vectors, dim=-1) if vectors else torch.zeros(1, 0)
    if "t5" not in parts:
        if features is None:
            width = sum(widths.get(r, 0) for r in ("clip_l", "clip_g"))
            features = torch.zeros(1, 77, width)
        return features, vector
    tokenizer, encoder, text = parts["t5"]
    t5 = t5_hidden(tokenizer, encoder, text, t5_tokens, device)
    if features is None:
        return t5, vector
    if features.shape[-1] > t5.shape[-1]:
        raise PromptError(
            f"the CLIP features ({features.shape[-1]} wide) are wider than T5's ({t5.shape[-1]}): "
            "these text encoders do not belong together"
        )
    features = F.pad(features, (0, t5.shape[-1] - features.shape[-1]))
    return torch.cat([features, t5], dim=-2), vector


def encode_flux(
    parts: Mapping[str, tuple[Any, Any, str]], *, device: str = "cpu", t5_tokens: int = FLUX_T5_TOKENS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flux's (T5 sequence, CLIP-L pooled) from ``parts``: role -> (tokenizer, encoder, text)."""
    missing = [role for role in ("clip_l", "t5") if role not in parts]
    if missing:
        raise PromptError(f"Flux needs a CLIP-L and a T5 text encoder; this CLIP lacks {', '.join(missing)}")
    tokenizer, encoder, text = parts["t5"]
    embeds = t5_hidden(tokenizer, encoder, text, t5_tokens, device)
    tokenizer, encoder, text = parts["clip_l"]
    return embeds, clip_pooled(tokenizer, encoder, text, device)


def encoder_widths(parts: Mapping[str, tuple[Any, Any, str]]) -> dict[str, int]:
    """Hidden and projection widths of each CLIP role present (for zeros in place of a left-out one)."""
    widths: dict[str, int] = {}
    for role, (_, encoder, _) in parts.items():
        config = encoder.config
        widths[role] = int(getattr(config, "hidden_size", 0) or 0)
        widths[f"{role}_pooled"] = int(getattr(config, "projection_dim", widths[role]) or widths[role])
    return widths


def encode_dit(
    family: str,
    tokenizers: Sequence[Any],
    encoders: Sequence[Any],
    texts: Sequence[str | None],
    *,
    layer: int | None = None,
    device: str = "cpu",
    roles: Sequence[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeds, pooled) for an SD3 or Flux CLIP: ``texts[i]`` for encoder ``i`` (None: leave that
    encoder out, as CLIPTextEncodeSD3's ``empty_padding`` "none" does for an empty text)."""
    if family not in ROLES:
        raise PromptError(f"{family} is not a DiT family ({', '.join(ROLES)})")
    if len(tokenizers) != len(encoders):
        raise PromptError(f"{len(encoders)} text encoders but {len(tokenizers)} tokenizers")
    named = encoder_roles(family, encoders, roles)
    everything = {
        role: (tokenizer, encoder, "")
        for role, tokenizer, encoder in zip(named, tokenizers, encoders, strict=True)
    }
    parts = {
        role: (tokenizer, encoder, text)
        for role, tokenizer, encoder, text in zip(named, tokenizers, encoders, texts, strict=True)
        if text is not None
    }
    if family == "flux":
        return encode_flux(parts, device=device)
    return encode_sd3(parts, layer=layer, device=device, widths=encoder_widths(everything))
