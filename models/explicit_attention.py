"""Attention computed explicitly, as diffusers' ``AttnProcessor`` does, so that a processor can read or
change the attention probabilities on the way: prompt-to-prompt edits them, Attend-and-Excite and
token-grounding training record them. One function, so the three agree with diffusers and each other."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: Given a layer's probabilities (batch x heads, query cells, key tokens), the ones to use (the same
#: tensor to only read them).
ProbsHook = Callable[["torch.Tensor"], "torch.Tensor"]


def explicit_attention(
    attn: Any,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    temb: torch.Tensor | None = None,
    probs_hook: ProbsHook | None = None,
) -> torch.Tensor:
    """The layer ``attn``'s output for ``hidden_states`` (self-attention when ``encoder_hidden_states`` is
    None), with ``probs_hook`` applied to its probabilities before they weigh the values."""
    import torch

    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    input_ndim = hidden_states.ndim
    if input_ndim == 4:
        batch, channels, height, width = hidden_states.shape
        hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
    batch = hidden_states.shape[0]
    tokens = hidden_states.shape[1] if encoder_hidden_states is None else encoder_hidden_states.shape[1]
    attention_mask = attn.prepare_attention_mask(attention_mask, tokens, batch)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    query = attn.to_q(hidden_states)
    if encoder_hidden_states is None:
        encoder_hidden_states = hidden_states
    elif attn.norm_cross:
        encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
    key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
    value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
    probs = attn.get_attention_scores(attn.head_to_batch_dim(query), key, attention_mask)
    if probs_hook is not None:
        probs = probs_hook(probs)
    hidden_states = attn.batch_to_head_dim(torch.bmm(probs, value))
    hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
    if input_ndim == 4:
        hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channels, height, width)
    if attn.residual_connection:
        hidden_states = hidden_states + residual
    return hidden_states / attn.rescale_output_factor
