"""The diffusers attention processor that runs our Triton kernel, and how it is installed.

``install_attention(model, backend)`` walks a diffusers model (a UNet, a VAE, anything with
diffusers ``Attention`` layers) and sets ``TritonAttnProcessor`` or diffusers' SDPA
processor on its attention layers. Backends:

- ``"auto"`` (the default): ``"triton"`` when Triton is installed and CUDA is present,
  otherwise ``"sdpa"``. Under ``TRITON_INTERPRET=1`` "auto" still means sdpa: the
  interpreter is for tests, never for real runs.
- ``"triton"``: our processor; falls back to ``"sdpa"`` (and says so in the return value and
  a warning) when the kernel cannot run on this machine.
- ``"sdpa"``: diffusers' stock processors.

The rule that keeps other processors working: ``install_attention`` replaces a layer's
processor only when its class is one it knows, diffusers' stock ``AttnProcessor`` and
``AttnProcessor2_0`` or our ``TritonAttnProcessor``. Any other processor (prompt-to-prompt's
attention-map controllers, IP-Adapter, fused-QKV or added-KV processors, newer models' own
processors) is left where it is, whether it was set before or after. A tool that needs
attention maps should save ``model.attn_processors``, set its own, and restore the saved dict
afterwards; that puts our processor back where it was.

``TritonAttnProcessor`` is diffusers' ``AttnProcessor2_0`` with the attention call swapped.
Per call it uses the kernel when the inputs allow (no mask, no autograd, a head dimension
from 16 to 256, fp16 or bf16 on CUDA; on the CPU only under the interpreter, in any
supported dtype) and ``F.scaled_dot_product_attention`` otherwise. Unlike
``AttnProcessor2_0`` it honours ``attn.scale`` on both paths (equal to SDPA's default for
every SD/SDXL layer).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

from kernels.attention import attention, interpreted, triton_available, unsupported_reason

logger = logging.getLogger(__name__)

Backend = Literal["auto", "triton", "sdpa"]
BACKENDS: tuple[str, ...] = ("auto", "triton", "sdpa")


class TritonAttnProcessor:
    """``AttnProcessor2_0`` computing attention with ``kernels.attention.attention`` when it can."""

    def use_kernel(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> bool:
        if attention_mask is not None:
            return False
        if query.dtype == torch.float32 and not interpreted():
            return False  # SDPA's fp32 paths beat IEEE fp32 dots on the GPU
        return unsupported_reason(query, key, value) is None

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)

        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)

        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )

        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])

        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)

        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        # Views, not copies: the kernel reads these strides as they are.
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)

        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        if self.use_kernel(query, key, value, attention_mask):
            hidden_states = attention(query, key, value, scale=attn.scale)
        else:
            hidden_states = F.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False, scale=attn.scale
            )

        # The kernel's output is laid out (batch, seq, heads, head_dim): this reshape is a view.
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)

        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)

        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


KNOWN_PROCESSORS: tuple[type, ...] = (AttnProcessor, AttnProcessor2_0, TritonAttnProcessor)


def resolve_backend(backend: str = "auto") -> str:
    """The backend ``install_attention`` would install here: "triton" or "sdpa"."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "sdpa":
        return "sdpa"
    kernel_runs = triton_available() and (torch.cuda.is_available() or interpreted())
    if backend == "auto":
        return "triton" if kernel_runs and torch.cuda.is_available() and not interpreted() else "sdpa"
    if not kernel_runs:
        reason = "Triton is not installed" if not triton_available() else "no CUDA device"
        logger.warning("attention backend 'triton' unavailable (%s); using sdpa", reason)
        return "sdpa"
    return "triton"


def _stock_processor(attn: torch.nn.Module) -> AttnProcessor | AttnProcessor2_0:
    """What diffusers itself would set on this layer."""
    return AttnProcessor2_0() if getattr(attn, "scale_qk", True) else AttnProcessor()


def install_attention(unet_or_model: torch.nn.Module, backend: str = "auto") -> str:
    """Set our attention processor (or SDPA's) on the model's attention layers.

    Only processors of the classes in ``KNOWN_PROCESSORS`` are replaced; see the module
    docstring for the rule. Returns the backend actually installed: "triton" or "sdpa".
    """
    chosen = resolve_backend(backend)
    ours = TritonAttnProcessor()
    replaced = kept = 0
    for module in unet_or_model.modules():
        if not (hasattr(module, "set_processor") and hasattr(module, "processor")):
            continue
        current = module.processor
        if type(current) not in KNOWN_PROCESSORS:
            kept += 1
            continue
        if chosen == "triton":
            module.set_processor(ours)
        elif isinstance(current, TritonAttnProcessor):
            module.set_processor(_stock_processor(module))
        replaced += 1
    logger.info("attention: %s on %d layers, %d custom processors kept", chosen, replaced, kept)
    return chosen
