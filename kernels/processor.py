"""The diffusers attention processor that runs our Triton kernel, and how it is installed.

``install_attention(model, backend)`` walks a diffusers model (a UNet, a VAE, an SD3 or Flux
transformer, anything with diffusers attention layers) and sets our processors or
diffusers' stock SDPA ones on its attention layers; ``swap_attention`` does the same and
reports, per processor class, what it swapped and what it left alone. Backends:

- ``"auto"`` (the default): ``"triton"`` when Triton is installed and CUDA is present,
  otherwise ``"sdpa"``. Under ``TRITON_INTERPRET=1`` "auto" still means sdpa: the
  interpreter is for tests, never for real runs.
- ``"triton"``: our processor; falls back to ``"sdpa"`` (and says so in the return value and
  a warning) when the kernel cannot run on this machine.
- ``"sdpa"``: diffusers' stock processors.

The rule that keeps other processors working: ``install_attention`` replaces a layer's
processor only when its class is one it knows (``KNOWN_PROCESSORS``): diffusers' stock
``AttnProcessor`` and ``AttnProcessor2_0`` (UNets, VAEs; ours: ``TritonAttnProcessor``),
``JointAttnProcessor2_0`` (SD3 / SD3.5; ours: ``kernels.joint.TritonJointAttnProcessor``)
and ``FluxAttnProcessor`` (Flux; ours: ``kernels.joint.TritonFluxAttnProcessor``), and our
own classes, which "sdpa" turns back into the stock ones. Any other processor (prompt-to-prompt's
attention-map controllers, IP-Adapter, fused-QKV or added-KV processors, PAG, other models'
own processors) is left where it is, whether it was set before or after. A tool that needs
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
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

from kernels.attention import attention, interpreted, kernel_preferred, triton_available
from kernels.joint import JOINT_PROCESSORS, STOCK_CLASS

logger = logging.getLogger(__name__)

Backend = Literal["auto", "triton", "sdpa"]
BACKENDS: tuple[str, ...] = ("auto", "triton", "sdpa")


class TritonAttnProcessor:
    """``AttnProcessor2_0`` computing attention with ``kernels.attention.attention`` when it can."""

    def use_kernel(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> bool:
        return kernel_preferred(query, key, value, attention_mask)

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


KNOWN_PROCESSORS: tuple[type, ...] = (
    AttnProcessor,
    AttnProcessor2_0,
    TritonAttnProcessor,
    *JOINT_PROCESSORS,
    *STOCK_CLASS,
)
# diffusers' attention-backend hooks a processor may carry; kept across a swap.
_BACKEND_ATTRIBUTES = ("_attention_backend", "_parallel_config")


@dataclass
class AttentionSwap:
    """What ``swap_attention`` did to a model's attention layers.

    ``swapped`` counts layers by "Old -> New" processor class names; ``unchanged`` counts
    known layers already on the chosen backend; ``kept`` counts layers whose processor is not
    one of ``KNOWN_PROCESSORS`` (left alone), by class name.
    """

    backend: str
    swapped: Counter[str] = field(default_factory=Counter)
    unchanged: Counter[str] = field(default_factory=Counter)
    kept: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        def listed(counts: Counter[str]) -> str:
            return ", ".join(f"{n} x{c}" for n, c in sorted(counts.items())) or "none"

        return (
            f"attention {self.backend}: swapped {listed(self.swapped)}; "
            f"unchanged {listed(self.unchanged)}; custom kept {listed(self.kept)}"
        )


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


def _replacement(module: torch.nn.Module, current: Any, chosen: str, shared: dict[type, Any]) -> Any | None:
    """The processor a known layer should get for ``chosen``, or None when it already has it."""
    kind = type(current)
    if chosen == "triton":
        unet_stock = kind in (AttnProcessor, AttnProcessor2_0)
        target = TritonAttnProcessor if unet_stock else JOINT_PROCESSORS.get(kind)
        if target is None:
            return None  # already ours
    elif kind is TritonAttnProcessor:
        return _stock_processor(module)
    else:
        target = STOCK_CLASS.get(kind)
        if target is None:
            return None  # already stock
    carried = {a: vars(current)[a] for a in _BACKEND_ATTRIBUTES if a in vars(current)}
    if not carried:  # stateless: one instance serves every layer
        return shared.setdefault(target, target())
    processor = target()
    for name, value in carried.items():
        setattr(processor, name, value)
    return processor


def swap_attention(unet_or_model: torch.nn.Module, backend: str = "auto") -> AttentionSwap:
    """Set our attention processors (or diffusers' stock ones) on the model's attention layers.

    Only processors of the classes in ``KNOWN_PROCESSORS`` are replaced; see the module
    docstring for the rule. Returns what was done, layer counts by processor class.
    """
    report = AttentionSwap(resolve_backend(backend))
    shared: dict[type, Any] = {}
    for module in unet_or_model.modules():
        if not (hasattr(module, "set_processor") and hasattr(module, "processor")):
            continue
        current = module.processor
        name = type(current).__name__
        if type(current) not in KNOWN_PROCESSORS:
            report.kept[name] += 1
            continue
        new = _replacement(module, current, report.backend, shared)
        if new is None:
            report.unchanged[name] += 1
            continue
        module.set_processor(new)
        report.swapped[f"{name} -> {type(new).__name__}"] += 1
    logger.info(report.summary())
    return report


def install_attention(unet_or_model: torch.nn.Module, backend: str = "auto") -> str:
    """``swap_attention`` for callers that only need the backend installed: "triton" or "sdpa"."""
    return swap_attention(unet_or_model, backend).backend
