"""Standalone text encoder files (CLIPLoader): a CLIP-L text model without its checkpoint.

ComfyUI users keep these in ``models/clip`` or ``models/text_encoders`` as ``.safetensors``
with transformers' keys, with or without a ``text_model.`` prefix (or a checkpoint's
``cond_stage_model.transformer.`` one). The model's shape is read from the weights; the
number of attention heads, which weights do not show, is CLIP's (64 numbers per head),
unless a transformers ``CLIPTextConfig`` sits next to the file as ``<file stem>.json``.
A transformers folder (``config.json`` of a ``clip_text_model``) loads too. The tokenizer
is CLIP's, built offline (:mod:`models.tokenizer`). Pickle files are refused unless allowed.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.loading import Checkpoint, CheckpointError
from models.safety import check_weights_file, check_weights_folder, load_state_dict, plain_load_error

if TYPE_CHECKING:
    import torch

#: ComfyUI's CLIPLoader types the studio loads, and the family each one encodes as.
TYPES: dict[str, str] = {"stable_diffusion": "sd1"}
TOKEN_EMBEDDING = "embeddings.token_embedding.weight"
#: OpenCLIP widths (ViT-H, ViT-bigG): these belong to SD2 and SDXL checkpoints, which load whole.
OPENCLIP_WIDTHS = (1024, 1280)
_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.")


def load_text_encoder(
    path: Path,
    kind: str = "stable_diffusion",
    *,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    allow_pickle: bool = False,
) -> Checkpoint:
    """A :class:`Checkpoint` holding only a text encoder and its tokenizer (no UNet, no VAE)."""
    import torch

    from models.tokenizer import clip_tokenizer

    if kind not in TYPES:
        raise CheckpointError(f"type {kind!r} is not supported; choose one of {', '.join(TYPES)}")
    path = Path(path)
    dtype = dtype or torch.float32
    encoder = _load_folder(path, allow_pickle) if path.is_dir() else _load_file(path, allow_pickle)
    encoder = encoder.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return Checkpoint(
        family=TYPES[kind],
        unet=None,
        vae=None,
        text_encoders=[encoder],
        tokenizers=[clip_tokenizer("<|endoftext|>")],
        scheduler_config={},
        source=str(path),
    )


def _load_file(path: Path, allow_pickle: bool) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    check_weights_file(path, allow_pickle)
    try:
        state = text_model_keys(load_state_dict(path, allow_pickle=allow_pickle))
        sidecar = path.with_name(path.stem + ".json")
        config = (
            CLIPTextConfig.from_json_file(str(sidecar)) if sidecar.is_file() else config_from_weights(state)
        )
        model = CLIPTextModel(config)
    except (OSError, ValueError, KeyError, RuntimeError, pickle.UnpicklingError) as exc:
        raise CheckpointError(f"cannot load {path.name} as a text encoder: {plain_load_error(exc)}") from None
    missing, _ = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise CheckpointError(f"{path.name} is not a whole CLIP text encoder: it lacks {shown}")
    return model


def _load_folder(path: Path, allow_pickle: bool) -> Any:
    from transformers import CLIPTextModel

    config_file = path / "config.json"
    try:
        model_type = json.loads(config_file.read_text()).get("model_type") if config_file.is_file() else None
    except (OSError, json.JSONDecodeError):
        model_type = None
    if model_type != "clip_text_model":
        raise CheckpointError(
            f"{path.name} is not a CLIP text encoder (a .safetensors file, or a transformers folder "
            "of a clip_text_model)"
        )
    try:
        use_safetensors = check_weights_folder(path, allow_pickle)
        return CLIPTextModel.from_pretrained(
            str(path), local_files_only=True, use_safetensors=use_safetensors
        )
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError) as exc:
        raise CheckpointError(f"cannot load the text encoder {path.name}: {plain_load_error(exc)}") from None


def text_model_keys(state: dict[str, Any]) -> dict[str, Any]:
    """The tensors of a CLIP text model under transformers 5's keys (``embeddings.``,
    ``encoder.``, ``final_layer_norm.``): whatever prefix the file puts before them is cut,
    other tensors (a projection, a logit scale) are left out."""
    prefixes = [k[: -len(TOKEN_EMBEDDING)] for k in state if k.endswith(TOKEN_EMBEDDING)]
    if len(prefixes) != 1:
        found = "no" if not prefixes else "several"
        raise ValueError(f"it holds {found} CLIP token embedding ({TOKEN_EMBEDDING})")
    prefix = prefixes[0]
    keys = ("embeddings.", "encoder.", "final_layer_norm.")
    out = {}
    for key, value in state.items():
        if key.startswith(prefix) and key[len(prefix) :].startswith(keys):
            out[key[len(prefix) :]] = value
    return out


def config_from_weights(state: dict[str, Any]) -> Any:
    """A CLIPTextConfig of the shapes in ``state`` (OpenAI CLIP's conventions for the rest)."""
    from transformers import CLIPTextConfig

    vocab, width = (int(n) for n in state[TOKEN_EMBEDDING].shape)
    if width in OPENCLIP_WIDTHS:
        raise ValueError(
            f"its text model is {width} wide, an OpenCLIP encoder of an SD 2.x or SDXL checkpoint; "
            "CLIPLoader loads CLIP-L (SD 1.x) encoders: load the whole checkpoint instead"
        )
    layers = 1 + max((int(m.group(1)) for k in state if (m := _LAYER.match(k))), default=-1)
    if layers == 0:
        raise ValueError("it holds no encoder layers")
    return CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=width,
        intermediate_size=int(state["encoder.layers.0.mlp.fc1.weight"].shape[0]),
        num_hidden_layers=layers,
        num_attention_heads=max(1, width // 64),
        max_position_embeddings=int(state["embeddings.position_embedding.weight"].shape[0]),
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=1,
    )
