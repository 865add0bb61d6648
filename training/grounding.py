"""Token grounding for training: a loss that ties chosen words of the prompt to the picture's places
through the UNet's own cross-attention, as TokenCompose (Wang et al., CVPR 2024) does with
segmentation masks. The toy world knows every shape's mask, so each shape's color and kind words can be
told where their shape is.

For each cross-attention layer the probabilities of a grounded token, averaged over heads, form a map
over the layer's grid; the loss is ``(1 - share of the map inside the token's mask) ** 2`` averaged
over layers and grounded tokens (the mask max-pooled to the layer's grid, so a cell the shape touches
counts as inside). It is added to the denoising loss with a weight (``--ground W`` in
:mod:`training.sd` and :mod:`training.ip2p`).

:class:`RecordingCrossAttention` computes cross-attention explicitly
(:func:`models.explicit_attention.explicit_attention`, as diffusers' ``AttnProcessor`` does) and keeps its
probabilities (with their gradient) for the loss; self-attention keeps its processor.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.explicit_attention import explicit_attention

_PIECES = re.compile(r"\w+|[^\w\s]")


class RecordingCrossAttention:
    """A cross-attention layer's processor that computes attention explicitly and, while its store is
    recording, appends the probabilities (B x heads, cells, tokens) to the store's maps."""

    def __init__(self, store: AttentionStore) -> None:
        self.store = store

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        maps = self.store.maps

        def keep(probs: torch.Tensor) -> torch.Tensor:
            if maps is not None:
                maps.append(probs)
            return probs

        return explicit_attention(attn, hidden_states, encoder_hidden_states, attention_mask, temb, keep)


class AttentionStore:
    """The cross-attention maps of the UNet's last forward pass (while recording)."""

    def __init__(self) -> None:
        self.maps: list[torch.Tensor] | None = None

    def start(self) -> None:
        self.maps = []

    def take(self) -> list[torch.Tensor]:
        maps, self.maps = self.maps or [], None
        return maps


def record_cross_attention(unet: Any) -> AttentionStore:
    """Give every cross-attention layer (``attn2``) of ``unet`` a recording processor; returns the store
    its maps go to (nothing is recorded until ``store.start()``)."""
    store = AttentionStore()
    processors = {
        name: (RecordingCrossAttention(store) if name.endswith("attn2.processor") else processor)
        for name, processor in getattr(unet, "attn_processors", {}).items()
    }
    if not any(isinstance(p, RecordingCrossAttention) for p in processors.values()):
        raise ValueError("this UNet has no cross-attention layers (attn2) to ground")
    unet.set_attn_processor(processors)
    return store


def token_maps(probs: torch.Tensor, batch: int) -> torch.Tensor:
    """A recorded layer's probabilities (B x heads, cells, T) as each token's map averaged over heads:
    (B, T, cells)."""
    rows, cells, tokens = probs.shape
    return probs.reshape(batch, rows // batch, cells, tokens).mean(1).transpose(1, 2)


def masks_at(targets: torch.Tensor, cells: int) -> torch.Tensor:
    """Masks (B, T, H, W) max-pooled to a layer's grid of ``cells`` (same aspect): (B, T, cells); a cell
    that the mask touches is inside."""
    height, width = targets.shape[-2:]
    scale = (cells / (height * width)) ** 0.5
    grid = (round(height * scale), round(width * scale))
    if grid[0] * grid[1] != cells:
        raise ValueError(f"a {cells}-cell attention map does not fit {height}x{width} masks")
    return F.adaptive_max_pool2d(targets, grid).flatten(2)


def inside_shares(maps: Sequence[torch.Tensor], targets: torch.Tensor) -> list[torch.Tensor]:
    """For each recorded layer, each token's share of its attention (over the layer's cells) inside its
    mask: (B, T) per layer."""
    shares = []
    for probs in maps:
        attention = token_maps(probs, targets.shape[0])
        masks = masks_at(targets.to(probs.dtype), probs.shape[1])
        shares.append((attention * masks).sum(-1) / attention.sum(-1).clamp_min(1e-8))
    return shares


def grounding_loss(
    maps: Sequence[torch.Tensor], targets: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """TokenCompose's token loss over recorded ``maps`` ((B x heads, h x w, T) each): ``targets`` (B, T,
    H, W) holds each token's mask (0/1, any resolution that the layers' grids divide) and ``weights``
    (B, T) which tokens are grounded (0 elsewhere). Zero when no token is grounded."""
    if not maps:
        raise ValueError("no cross-attention maps were recorded")
    weights = weights.to(maps[0].dtype)
    total = weights.sum()
    if float(total) == 0.0:
        return maps[0].sum() * 0.0
    losses = [(((1.0 - inside) ** 2) * weights).sum() / total for inside in inside_shares(maps, targets)]
    return torch.stack(losses).mean()


def word_token_positions(words: Sequence[str], token_count: Callable[[str], int]) -> list[list[int]]:
    """For each word piece of a prompt (as ``pieces`` splits it), the positions of its tokens in the
    tokenized prompt (position 0 is the start token). CLIP's tokenizer splits words and punctuation
    before its byte-pair merges, so a prompt's tokens are its pieces' tokens in order."""
    positions, at = [], 1
    for word in words:
        count = token_count(word)
        positions.append(list(range(at, at + count)))
        at += count
    return positions


def pieces(text: str) -> list[str]:
    """A prompt's words and punctuation marks, lower-cased, as CLIP's tokenizer splits them."""
    return _PIECES.findall(text.lower())


class TokenCounter:
    """Tokens per word piece under a CLIP tokenizer, cached."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.cache: dict[str, int] = {}

    def __call__(self, word: str) -> int:
        if word not in self.cache:
            self.cache[word] = len(self.tokenizer(word, add_special_tokens=False).input_ids)
        return self.cache[word]


def caption_groundings(
    scene: Any,
    text: str,
    count: Callable[[str], int],
    limit: int = 77,
    attributes: Sequence[str] = ("color", "kind"),
) -> list[tuple[int, int]]:
    """(token position, shape index in ``scene.shapes``) for each shape's color and kind words (or the
    ``attributes`` chosen of those) in its caption ``text`` (as :func:`toyworld.caption` writes it:
    shapes in reading order of their cells); positions past ``limit`` - 1 are dropped. An empty caption
    grounds nothing."""
    words = pieces(text)
    if not words:
        return []
    positions = word_token_positions(words, count)
    order = sorted(range(len(scene.shapes)), key=lambda i: scene.shapes[i].cell)
    out, cursor = [], 0
    for index in order:
        shape = scene.shapes[index]
        for attribute in ("color", "kind"):
            word = getattr(shape, attribute)
            try:
                cursor = words.index(word, cursor)
            except ValueError as error:
                raise ValueError(f"caption {text!r} does not name the {shape.color} {shape.kind}") from error
            if attribute in attributes:
                out.extend((p, index) for p in positions[cursor] if p < limit - 1)
            cursor += 1
    return out


def scene_targets(
    scenes: Sequence[Any], captions: Sequence[str], count: Callable[[str], int], tokens: int = 77
) -> tuple[torch.Tensor, torch.Tensor]:
    """(targets (B, tokens, H, W), weights (B, tokens)) grounding each caption's color and kind words
    to their shape's mask (``toyworld.mask``, coverage >= 0.5)."""
    from toyworld import mask

    size = scenes[0].size
    targets = np.zeros((len(scenes), tokens, size, size), dtype=np.float32)
    weights = np.zeros((len(scenes), tokens), dtype=np.float32)
    for b, (scene, text) in enumerate(zip(scenes, captions, strict=True)):
        masks: dict[int, np.ndarray] = {}
        for position, index in caption_groundings(scene, text, count, tokens):
            if index not in masks:
                masks[index] = mask(scene, index) > 0
            targets[b, position] = masks[index]
            weights[b, position] = 1.0
    return torch.from_numpy(targets), torch.from_numpy(weights)


def instruction_groundings(text: str, count: Callable[[str], int]) -> list[int]:
    """Token positions of the words of an edit instruction that name what changes: the shape it refers
    to ("the red circle", "the circle at the top left": every word after "the") and, for a recolor, the
    new color. Empty for an empty or unreadable instruction."""
    from toyworld.world import _COLOR_RE, _MOVE_RE

    normal = " ".join(text.strip().lower().rstrip(".").split())
    match = _MOVE_RE.match(normal) or _COLOR_RE.match(normal)
    if not match:
        return []
    words = pieces(normal)
    positions = word_token_positions(words, count)
    ref_words = len(pieces(match["ref"]))
    start = words.index("the") + 1
    chosen = list(range(start, start + ref_words))
    if "color" in match.groupdict():
        chosen.append(len(words) - 1)
    return [p for w in chosen for p in positions[w]]
