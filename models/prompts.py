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
"""

from __future__ import annotations

import re
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
    device: str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(hidden states (1, 77*k, dim), pooled (1, dim) or None) for one encoder.

    ``hidden_layer`` None takes the last hidden state (SD 1.x/2.x); -2 takes the
    penultimate one (SDXL).
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
