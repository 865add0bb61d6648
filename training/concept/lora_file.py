"""LoRA layers for concept training (peft) and the file they are saved as.

The layers go on the UNet's attention projections (``to_q``, ``to_k``, ``to_v``, ``to_out.0``) and,
when asked, on the text encoder's (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``) through
``peft.inject_adapter_in_model`` (transformers' ``add_adapter`` needs a newer peft). The file uses
kohya's keys with an ``alpha`` per layer, the layout most tools read (the studio's LoraLoader,
diffusers' ``load_lora_weights``, A1111, ComfyUI): ``lora_unet_<module>.lora_down.weight``,
``.lora_up.weight``, ``.alpha``, and ``lora_te_text_model_<module>`` for the text encoder.
"""

from __future__ import annotations

from typing import Any

import torch

UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
#: ``targets="all"``: also the feed-forward, the transformer blocks' projections and the ResNet blocks'
#: convolutions (LoCon), which draw shapes: more to learn a new look with, in a bigger file.
UNET_TARGETS_ALL = (
    *UNET_TARGETS,
    "ff.net.0.proj",
    "ff.net.2",
    "proj_in",
    "proj_out",
    "conv1",
    "conv2",
    "time_emb_proj",
)
#: ``targets="cross"``: only the cross-attention's key and value projections, whose input is the prompt
#: (Custom Diffusion, Kumari et al. 2023): a prompt's words are all these layers change.
UNET_TARGETS_CROSS = ("attn2.to_k", "attn2.to_v")
#: The ``targets`` a LoRA can be trained on, by name.
UNET_TARGET_SETS = {"attention": UNET_TARGETS, "all": UNET_TARGETS_ALL, "cross": UNET_TARGETS_CROSS}
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


def add_lora(model: Any, targets: tuple[str, ...], rank: int) -> list[torch.nn.Parameter]:
    """Inject rank-``rank`` LoRA layers (alpha = rank, so the scale is 1; B starts at zero, so the
    model starts unchanged) and return the parameters to train."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=list(targets))
    inject_adapter_in_model(config, model)
    params = [p for name, p in model.named_parameters() if "lora_" in name]
    for param in params:
        param.requires_grad_(True)
    return params


def kohya_state(model: Any, prefix: str, rank: int) -> dict[str, torch.Tensor]:
    """The model's LoRA layers under kohya keys (``prefix``: ``lora_unet_`` or ``lora_te_text_model_``)."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(model)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not key.endswith(".lora_A.weight"):
            continue
        base = key.removesuffix(".lora_A.weight")
        name = prefix + base.removeprefix("text_model.").replace(".", "_")
        out[f"{name}.lora_down.weight"] = value.detach().float().cpu().contiguous()
        out[f"{name}.lora_up.weight"] = state[base + ".lora_B.weight"].detach().float().cpu().contiguous()
        out[f"{name}.alpha"] = torch.tensor(float(rank))
    return out


def lora_metadata(rank: int, family: str) -> dict[str, str]:
    """kohya's metadata keys that other tools show (network size, alpha, base model version)."""
    version = {"sd1": "sd_v1", "sd2": "sd_v2"}.get(family, family)
    return {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(float(rank)),
        "ss_base_model_version": version,
    }
