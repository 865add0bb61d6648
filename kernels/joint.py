"""Joint-attention processors for the DiT models (SD3 / SD3.5, Flux) that run our Triton kernel.

The MMDiT transformers attend over one sequence made of two streams: image tokens and text
tokens, each projected by its own weights, concatenated, attended together, and split back.
diffusers 0.42 does this in two processors, and this module holds our copy of each:

- ``TritonJointAttnProcessor``: diffusers' ``JointAttnProcessor2_0`` (SD3, SD3.5). Image
  stream first, then text; SD3.5's qk-norm (``attn.norm_q`` / ``norm_k`` and the text
  stream's ``norm_added_q`` / ``norm_added_k``) and its dual-attention layers (``attn2``:
  image tokens only, ``encoder_hidden_states`` None) go through the same code. Like the
  stock processor it ignores ``attention_mask`` (SD3 never passes one).
- ``TritonFluxAttnProcessor``: diffusers' ``FluxAttnProcessor`` (Flux.1 dev and schnell).
  Text stream first, then image; rotary embeddings applied to q and k after the concat; the
  double-stream blocks pass ``encoder_hidden_states``, the single-stream blocks pass one
  already-joined sequence and get the attention output back without an output projection.
  Fused QKV projections (``attn.fuse_projections()``) are read as the stock processor
  reads them.

Each does exactly what the stock processor does, step for step, and swaps only the attention
call: ``kernels.attention.attention`` when ``kernel_preferred`` says so (no mask, no
autograd, a supported dtype and head dimension on a device the kernel runs on), otherwise
the call the stock processor makes. So with SDPA chosen they compute the stock result, and
``install_attention(model, "sdpa")`` can put the stock classes back (``STOCK_CLASS``).

The Flux processor keeps diffusers' attention-backend hooks: ``model.set_attention_backend``
sets ``_attention_backend`` and context parallelism sets ``_parallel_config`` on every
processor, ours included; with either set it leaves the call to diffusers' dispatcher (the
kernel knows nothing of sequences sharded across devices).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.attention_processor import Attention, JointAttnProcessor2_0
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux import FluxAttention, FluxAttnProcessor

from kernels.attention import attention, kernel_preferred


def attend_heads_first(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v for (batch, heads, seq, head_dim) inputs: the kernel or SDPA.

    SDPA is called exactly as ``JointAttnProcessor2_0`` calls it. The kernel's output is a
    (batch, heads, seq, head_dim) view of a (batch, seq, heads, head_dim) buffer, so the
    caller's ``transpose(1, 2).reshape(...)`` back to tokens is free.
    """
    if kernel_preferred(query, key, value):
        return attention(query, key, value)
    return F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)


class TritonJointAttnProcessor:
    """diffusers' ``JointAttnProcessor2_0`` (SD3, SD3.5) with the attention call on our kernel."""

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        residual = hidden_states
        batch_size = hidden_states.shape[0]

        # Image stream.
        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        # Text stream, appended after the image tokens (joint blocks only; not SD3.5's attn2).
        if encoder_hidden_states is not None:
            text_query = attn.add_q_proj(encoder_hidden_states)
            text_key = attn.add_k_proj(encoder_hidden_states)
            text_value = attn.add_v_proj(encoder_hidden_states)
            text_query = text_query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
            text_key = text_key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
            text_value = text_value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
            if attn.norm_added_q is not None:
                text_query = attn.norm_added_q(text_query)
            if attn.norm_added_k is not None:
                text_key = attn.norm_added_k(text_key)
            query = torch.cat([query, text_query], dim=2)
            key = torch.cat([key, text_key], dim=2)
            value = torch.cat([value, text_value], dim=2)

        hidden_states = attend_heads_first(query, key, value)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)

        if encoder_hidden_states is not None:
            image_tokens = residual.shape[1]
            hidden_states, encoder_hidden_states = (
                hidden_states[:, :image_tokens],
                hidden_states[:, image_tokens:],
            )
            if not attn.context_pre_only:
                encoder_hidden_states = attn.to_add_out(encoder_hidden_states)

        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if encoder_hidden_states is not None:
            return hidden_states, encoder_hidden_states
        return hidden_states


def flux_projections(
    attn: FluxAttention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None
) -> tuple[torch.Tensor, ...]:
    """q, k, v of the image stream and of the text stream (None when absent), fused or not.

    What diffusers' ``_get_qkv_projections`` in ``transformer_flux`` returns, written out here
    so a rename of that private helper cannot break the import of this module.
    """
    if attn.fused_projections:
        query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        text: tuple[Any, ...] = (None, None, None)
        if encoder_hidden_states is not None and hasattr(attn, "to_added_qkv"):
            text = tuple(attn.to_added_qkv(encoder_hidden_states).chunk(3, dim=-1))
        return query, key, value, *text
    query = attn.to_q(hidden_states)
    key = attn.to_k(hidden_states)
    value = attn.to_v(hidden_states)
    text = (None, None, None)
    if encoder_hidden_states is not None and attn.added_kv_proj_dim is not None:
        text = (
            attn.add_q_proj(encoder_hidden_states),
            attn.add_k_proj(encoder_hidden_states),
            attn.add_v_proj(encoder_hidden_states),
        )
    return query, key, value, *text


class TritonFluxAttnProcessor:
    """diffusers' ``FluxAttnProcessor`` (Flux.1) with the attention call on our kernel.

    Tensors here are (batch, seq, heads, head_dim), the layout diffusers' dispatcher takes;
    the kernel reads their ``transpose(1, 2)`` views in place.
    """

    _attention_backend: Any = None  # set by diffusers' ``model.set_attention_backend``
    _parallel_config: Any = None  # set by diffusers' context parallelism

    def use_kernel(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> bool:
        """Kernel for (batch, heads, seq, head_dim) views when no diffusers backend was chosen."""
        if self._attention_backend is not None or self._parallel_config is not None:
            return False
        return kernel_preferred(query, key, value, attention_mask)

    def __call__(
        self,
        attn: FluxAttention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        query, key, value, text_query, text_key, text_value = flux_projections(
            attn, hidden_states, encoder_hidden_states
        )
        query = attn.norm_q(query.unflatten(-1, (-1, attn.head_dim)))
        key = attn.norm_k(key.unflatten(-1, (-1, attn.head_dim)))
        value = value.unflatten(-1, (-1, attn.head_dim))

        # Double-stream blocks: text tokens first, then image tokens.
        if attn.added_kv_proj_dim is not None:
            text_query = attn.norm_added_q(text_query.unflatten(-1, (-1, attn.head_dim)))
            text_key = attn.norm_added_k(text_key.unflatten(-1, (-1, attn.head_dim)))
            text_value = text_value.unflatten(-1, (-1, attn.head_dim))
            query = torch.cat([text_query, query], dim=1)
            key = torch.cat([text_key, key], dim=1)
            value = torch.cat([text_value, value], dim=1)

        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)

        heads_first = (query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2))
        if self.use_kernel(*heads_first, attention_mask):
            # (batch, heads, seq, d) view of a (batch, seq, heads, d) buffer: back to tokens for free.
            hidden_states = attention(*heads_first).transpose(1, 2)
        else:
            hidden_states = dispatch_attention_fn(
                query,
                key,
                value,
                attn_mask=attention_mask,
                backend=self._attention_backend,
                parallel_config=self._parallel_config,
            )
        hidden_states = hidden_states.flatten(2, 3)
        hidden_states = hidden_states.to(query.dtype)

        if encoder_hidden_states is None:
            return hidden_states  # single-stream block: its caller projects the output
        text_tokens = encoder_hidden_states.shape[1]
        encoder_hidden_states, hidden_states = hidden_states.split_with_sizes(
            [text_tokens, hidden_states.shape[1] - text_tokens], dim=1
        )
        hidden_states = attn.to_out[0](hidden_states.contiguous())
        hidden_states = attn.to_out[1](hidden_states)
        encoder_hidden_states = attn.to_add_out(encoder_hidden_states.contiguous())
        return hidden_states, encoder_hidden_states


# Stock processor class -> ours, and ours -> the stock class to restore.
JOINT_PROCESSORS: dict[type, type] = {
    JointAttnProcessor2_0: TritonJointAttnProcessor,
    FluxAttnProcessor: TritonFluxAttnProcessor,
}
STOCK_CLASS: dict[type, type] = {ours: stock for stock, ours in JOINT_PROCESSORS.items()}
