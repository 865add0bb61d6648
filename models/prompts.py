"""Prompts to CLIP embeddings: weighting ``(word:1.3)``, embeddings by name, long prompts.

Syntax (as in the A1111 and ComfyUI studios): ``(text:1.3)`` weights text by 1.3,
``(text)`` by 1.1, ``[text]`` by 1/1.1; brackets nest and multiply; ``\\(`` is a
literal bracket. A prompt without weights and within 75 tokens is encoded exactly as
the diffusers pipelines encode it. Weighted tokens scale their hidden states, and the
whole is rescaled to keep the original mean (the A1111 method). Prompts longer than 75
tokens are split into chunks of 75, each encoded with its own start and end token, and
concatenated.

Textual-inversion embeddings are used by name: the loader adds their tokens to the
tokenizer and their vectors to the text encoder (:func:`add_embedding`).

Which layer's hidden states become the conditioning is ComfyUI's CLIPSetLastLayer number
(:func:`layer_choice`): -1 the last layer, -2 the one before, and so on; each family keeps
its own rule for the final layer norm (SD1/SD2 apply it, as diffusers' ``clip_skip`` does;
SDXL does not, as its pipeline does not).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

_TOKEN = re.compile(
    r"\\\(|\\\)|\\\[|\\\]|\\\\|\(|\)|\[|\]|:\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*\)|[^\\()\[\]:]+|:"
)
UP = 1.1


@dataclass(frozen=True)
class Piece:
    text: str
    weight: float


def parse_weights(prompt: str) -> list[Piece]:
    """Split a prompt into pieces of text with their weights."""
    pieces: list[Piece] = []
    stack: list[tuple[str, int]] = []  # ("(" or "[", index into pieces where it opened)

    def scale(start: int, factor: float) -> None:
        for i in range(start, len(pieces)):
            pieces[i] = Piece(pieces[i].text, pieces[i].weight * factor)

    for match in _TOKEN.finditer(prompt):
        token = match.group(0)
        if token in ("\\(", "\\)", "\\[", "\\]", "\\\\"):
            pieces.append(Piece(token[1], 1.0))
        elif token == "(" or token == "[":
            stack.append((token, len(pieces)))
        elif match.group(1) is not None and stack and stack[-1][0] == "(":
            _, start = stack.pop()
            scale(start, float(match.group(1)))
        elif token == ")" and stack and stack[-1][0] == "(":
            _, start = stack.pop()
            scale(start, UP)
        elif token == "]" and stack and stack[-1][0] == "[":
            _, start = stack.pop()
            scale(start, 1 / UP)
        else:
            pieces.append(Piece(token, 1.0))
    for bracket, start in reversed(stack):  # unclosed brackets still weigh
        scale(start, UP if bracket == "(" else 1 / UP)
    merged: list[Piece] = []
    for piece in pieces:
        if merged and merged[-1].weight == piece.weight:
            merged[-1] = Piece(merged[-1].text + piece.text, piece.weight)
        elif piece.text:
            merged.append(piece)
    return merged


def is_plain(pieces: list[Piece]) -> bool:
    return all(p.weight == 1.0 for p in pieces)


def weighted_tokens(tokenizer: Any, pieces: list[Piece]) -> tuple[list[int], list[float]]:
    ids: list[int] = []
    weights: list[float] = []
    for piece in pieces:
        piece_ids = tokenizer(piece.text, add_special_tokens=False).input_ids
        ids += piece_ids
        weights += [piece.weight] * len(piece_ids)
    return ids, weights


def encode(
    tokenizer: Any,
    encoder: Any,
    prompt: str,
    *,
    hidden_layer: int | None = None,
    final_norm: bool = False,
    device: str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(hidden states (1, 77*k, dim), pooled (1, dim) or None) for one encoder.

    ``hidden_layer`` None takes the last hidden state (SD 1.x/2.x); -2 takes the
    penultimate one (SDXL); ``final_norm`` passes a chosen layer through the encoder's final
    layer norm (clip skip on SD 1.x/2.x). The pooled embedding is always the last layer's.
    """
    import torch

    length = tokenizer.model_max_length
    pieces = parse_weights(prompt)
    ids, weights = weighted_tokens(tokenizer, pieces)
    chunk = length - 2
    if is_plain(pieces) and len(ids) <= chunk:
        # exactly what the diffusers pipelines do
        inputs = tokenizer(
            prompt, padding="max_length", max_length=length, truncation=True, return_tensors="pt"
        )
        batches = [inputs.input_ids]
        weight_rows = [None]
    else:
        batches, weight_rows = [], []
        for start in range(0, max(len(ids), 1), chunk):
            part, part_weights = ids[start : start + chunk], weights[start : start + chunk]
            pad = length - 2 - len(part)
            row = [tokenizer.bos_token_id, *part, tokenizer.eos_token_id] + [tokenizer.pad_token_id] * pad
            batches.append(torch.tensor([row]))
            weight_rows.append(torch.tensor([1.0, *part_weights, 1.0] + [1.0] * pad))
    hidden_parts = []
    pooled = None
    with torch.no_grad():
        for row, row_weights in zip(batches, weight_rows, strict=True):
            out = encoder(row.to(device), output_hidden_states=hidden_layer is not None)
            hidden = out.hidden_states[hidden_layer] if hidden_layer is not None else out[0]
            if hidden_layer is not None and final_norm:
                hidden = final_layer_norm(encoder)(hidden)
            if pooled is None:
                pooled = getattr(out, "text_embeds", None)
            if row_weights is not None and not bool((row_weights == 1.0).all()):
                w = row_weights.to(hidden.device, hidden.dtype)[None, :, None]
                before = hidden.mean()
                hidden = hidden * w
                hidden = hidden * (before / hidden.mean())
            hidden_parts.append(hidden)
    embeds = torch.cat(hidden_parts, dim=1).to("cpu", torch.float32)
    return embeds, pooled.to("cpu", torch.float32) if pooled is not None else None


def add_embedding(tokenizer: Any, encoder: Any, name: str, vectors: torch.Tensor) -> list[str]:
    """Teach ``tokenizer`` and ``encoder`` a textual-inversion embedding called ``name``.

    Multi-vector embeddings become tokens ``name``, ``name_1``, ...; the prompt uses
    ``name`` and the tokenizer expands it. Returns the tokens added.
    """
    import torch

    vectors = vectors.reshape(-1, vectors.shape[-1])
    tokens = [name] + [f"{name}_{i}" for i in range(1, vectors.shape[0])]
    new = [t for t in tokens if t not in tokenizer.get_vocab()]
    tokenizer.add_tokens(new)
    encoder.resize_token_embeddings(len(tokenizer))
    table = encoder.get_input_embeddings().weight
    with torch.no_grad():
        for token, vector in zip(tokens, vectors, strict=True):
            table[tokenizer.convert_tokens_to_ids(token)] = vector.to(table.device, table.dtype)
    return tokens


class LayerError(ValueError):
    """A CLIPSetLastLayer number the text encoder cannot give."""


def final_layer_norm(encoder: Any) -> Any:
    """The final layer norm of a transformers CLIP text model (with or without projection)."""
    inner = getattr(encoder, "text_model", encoder)
    return inner.final_layer_norm


def layer_choice(family: str, layer: int | None) -> tuple[int | None, bool]:
    """(index into ``hidden_states`` or None for the last hidden state, whether to apply the
    final layer norm) for CLIPSetLastLayer's ``layer`` (None: the family's default).

    - sd1 (and text encoder files): -1 is the last hidden state; -n is ``hidden_states[-n]``
      through the final norm, which is diffusers' ``clip_skip=n-1``.
    - sdxl: -n is ``hidden_states[-n]`` without the norm (the default is -2), which is diffusers'
      ``clip_skip=n-2``; it applies to both encoders, as ComfyUI's does.
    - sd2: diffusers-format SD2 encoders lack OpenCLIP's last layer (SD2 uses the one before),
      so ComfyUI's -2 (its default) is this model's last hidden state and -n is
      ``hidden_states[-(n-1)]`` with the norm; -1 (the dropped layer) gives the default too.
    """
    if family == "sdxl":
        return (-2 if layer is None else layer), False
    if family == "sd2":
        layer = None if layer is None or layer >= -2 else layer + 1
    if layer is None or layer == -1:
        return None, False
    return layer, True


def check_layer(family: str, layer: int | None, encoders: Sequence[Any]) -> None:
    """Raise :class:`LayerError` when ``layer`` is deeper than a text encoder has layers."""
    index, _ = layer_choice(family, layer)
    if index is None or layer is None:
        return
    # SD3/Flux: the layer choice applies to the CLIP encoders only, never to T5 (as in ComfyUI)
    clips = [e for e in encoders if str(getattr(e.config, "model_type", "")).startswith("clip")]
    depth = min(int(e.config.num_hidden_layers) for e in clips or encoders)
    if -index > depth:
        shift = 1 if family == "sd2" else 0
        raise LayerError(
            f"{layer} asks for a layer this text encoder does not have: it has {depth + shift} "
            f"layers, so choose between -1 and -{depth + shift}"
        )


def encode_texts(
    family: str,
    tokenizers: Sequence[Any],
    encoders: Sequence[Any],
    texts: Sequence[str],
    *,
    layer: int | None = None,
    device: str = "cpu",
    roles: Sequence[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(embeds, pooled) of a model's text encoders, ``texts[i]`` for encoder ``i``.

    SDXL's encoders' hidden states are joined along the vector axis (CLIP-L's then CLIP-G's),
    the pooled embedding is CLIP-G's; when one text needs more chunks of 75 tokens than the
    other, the shorter is padded with chunks of the empty prompt, as ComfyUI pads its tokens.
    SD3 and Flux (CLIP-L, CLIP-G, T5 by ``roles``) follow their pipelines: :mod:`models.dit_prompts`.
    Other families use their one encoder.
    """
    import torch

    if family in ("sd3", "flux"):
        from models.dit_prompts import encode_dit

        clips = [e for e in encoders if "T5" not in type(e).__name__]
        check_layer("sdxl", layer, clips)
        return encode_dit(family, tokenizers, encoders, texts, layer=layer, device=device, roles=roles)
    check_layer(family, layer, encoders)
    hidden_layer, norm = layer_choice(family, layer)
    if family != "sdxl":
        embeds, _ = encode(
            tokenizers[0], encoders[0], texts[0], hidden_layer=hidden_layer, final_norm=norm, device=device
        )
        return embeds, None
    parts, pooled = [], None
    for tokenizer, encoder, text in zip(tokenizers, encoders, texts, strict=True):
        hidden, pooled_part = encode(
            tokenizer, encoder, text, hidden_layer=hidden_layer, final_norm=norm, device=device
        )
        parts.append(hidden)
        pooled = pooled_part if pooled_part is not None else pooled
    longest = max(p.shape[1] for p in parts)
    for index, hidden in enumerate(parts):
        if hidden.shape[1] < longest:
            empty, _ = encode(
                tokenizers[index],
                encoders[index],
                "",
                hidden_layer=hidden_layer,
                final_norm=norm,
                device=device,
            )
            chunks = (longest - hidden.shape[1]) // empty.shape[1]
            parts[index] = torch.cat([hidden, *([empty] * chunks)], dim=1)
    return torch.cat(parts, dim=-1), pooled
