"""Textual inversion's new tokens: added to the tokenizer, given rows in the text encoder's embedding
table, and the only vectors that learn (:class:`NewRows`: the table stays frozen, so every other row
stays exactly as it was)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

from training.concept.config import ConceptError


class NewRows(torch.nn.Module):
    """The text encoder's token embedding with the new tokens' rows taken from ``vectors``, the only
    thing that learns: the table itself stays frozen, so every other row is exactly as it was."""

    def __init__(self, table: torch.nn.Embedding, ids: list[int], start: torch.Tensor) -> None:
        super().__init__()
        self.table = table
        self.register_buffer("ids", torch.tensor(ids, dtype=torch.long), persistent=False)
        self.vectors = torch.nn.Parameter(start.detach().clone().float().repeat(len(ids), 1))

    @property
    def weight(self) -> torch.Tensor:  # what callers of get_input_embeddings().weight expect
        return self.table.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = self.table(input_ids)
        match = input_ids[..., None] == self.ids  # (..., k)
        if not bool(match.any()):
            return out
        chosen = match.float() @ self.vectors.to(out.dtype)  # the new rows where they are used
        return torch.where(match.any(-1, keepdim=True), chosen, out)


@dataclass
class NewTokens:
    tokens: list[str]  # token, token_1, ... as models.prompts.add_embedding names them
    rows: NewRows

    @property
    def expansion(self) -> str:
        return " ".join(self.tokens)

    def vectors(self) -> torch.Tensor:
        return self.rows.vectors.detach().float().cpu().clone()

    def write_back(self, encoder: Any) -> None:
        """Put the learnt vectors into the table and the plain table back into the encoder."""
        with torch.no_grad():
            self.rows.table.weight[self.rows.ids] = self.rows.vectors.to(self.rows.table.weight.dtype)
        encoder.set_input_embeddings(self.rows.table)


def check_token(tokenizer: Any, token: str, vectors: int) -> list[str]:
    """The tokens to add; ConceptError when the token is a word the tokenizer already has."""
    tokens = [token] + [f"{token}_{i}" for i in range(1, vectors)]
    vocabulary = tokenizer.get_vocab()
    for name in tokens:
        if name in vocabulary or f"{name}</w>" in vocabulary:
            raise ConceptError(
                f"{name!r} is already a word of this model's tokenizer: choose a new token such as <{name}>"
            )
    if token != token.lower():
        raise ConceptError(f"the token {token!r} must be lower case (the tokenizer lower-cases prompts)")
    return tokens


def add_tokens(tokenizer: Any, encoder: Any, token: str, vectors: int, init_word: str) -> NewTokens:
    """Add the tokens, started from ``init_word``'s embedding (one token) or the vocabulary's mean."""
    tokens = check_token(tokenizer, token, vectors)
    table = encoder.get_input_embeddings().weight
    if init_word:
        init_ids = tokenizer(init_word, add_special_tokens=False).input_ids
        if len(init_ids) != 1:
            raise ConceptError(
                f"the init word {init_word!r} is {len(init_ids)} tokens for this tokenizer: "
                "choose one word it knows"
            )
        start = table[init_ids[0]].detach().clone()
    else:
        start = table.detach().mean(dim=0)
    tokenizer.add_tokens(tokens)
    encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    table = encoder.get_input_embeddings()
    table.weight.requires_grad_(False)
    ids = list(tokenizer.convert_tokens_to_ids(tokens))
    with torch.no_grad():
        table.weight[ids] = start.to(table.weight.dtype)
    rows = NewRows(table, ids, start)
    encoder.set_input_embeddings(rows)
    return NewTokens(tokens, rows)


def _token_pattern(token: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w<>-]){re.escape(token)}(?![\w<>-])")


def names_token(caption: str, token: str) -> bool:
    """Whether the caption holds ``token`` as a word of its own."""
    return _token_pattern(token).search(caption) is not None


def expand_token(caption: str, token: str, expansion: str) -> str:
    """The caption with each whole-word ``token`` replaced by the new tokens."""
    return _token_pattern(token).sub(expansion, caption)
