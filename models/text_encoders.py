"""Standalone text encoder files (CLIPLoader, DualCLIPLoader, TripleCLIPLoader).

ComfyUI users keep these in ``models/clip`` or ``models/text_encoders`` as ``.safetensors``
with transformers' keys, with or without a ``text_model.`` prefix (or a checkpoint's
``cond_stage_model.transformer.`` one). The model's shape is read from the weights; the
number of attention heads, which weights do not show, is CLIP's (64 numbers per head),
unless a transformers ``CLIPTextConfig`` sits next to the file as ``<file stem>.json``.
A transformers folder (``config.json`` of a ``clip_text_model``) loads too. The tokenizer
is CLIP's, built offline (:mod:`models.tokenizer`). Pickle files are refused unless allowed.

SD3 and Flux (issue 11) use up to three encoders, each in its own file:

- CLIP-L (``clip_l.safetensors``) and CLIP-G (``clip_g.safetensors``): transformers' CLIP text model
  keys plus ``text_projection.weight`` (SD3 pools through it; a file without it gets the identity,
  as ComfyUI does). Told apart by width (768 / 1280; for other widths the narrower one is CLIP-L).
  CLIP-L uses quick-GELU, CLIP-G (OpenCLIP bigG) GELU.
- T5-XXL (``t5xxl_fp16.safetensors``, ``t5xxl_fp8_e4m3fn.safetensors``): ``T5EncoderModel`` keys
  (``encoder.block.N.layer...``, ``shared.weight``). Its config is read from the weights: d_model and
  the vocabulary from ``shared``, d_ff from ``wi_0`` (gated GELU, T5 v1.1), the heads and buckets
  from the relative attention bias, d_kv from the query's width. An fp8 file stays in fp8 in memory
  and is upcast layer by layer when it runs. Its tokenizer is T5's (:func:`models.tokenizer.t5_tokenizer`).

:func:`load_encoder_files` returns a Checkpoint holding only encoders and tokenizers, in the family's
order (SD3: clip_l, clip_g, t5; Flux: clip_l, t5; SDXL: clip_l, clip_g), with the role of each in
``extra["encoders"]`` (a missing encoder is simply not there: SD3 gives zeros in its place).
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
TYPES: dict[str, str] = {"stable_diffusion": "sd1", "sd3": "sd3"}
#: DualCLIPLoader's types (TripleCLIPLoader is always "sd3"), and their families.
DUAL_TYPES: dict[str, str] = {"sdxl": "sdxl", "sd3": "sd3", "flux": "flux"}
#: The encoders each family uses, in the order of ``Checkpoint.text_encoders``.
FAMILY_ROLES: dict[str, tuple[str, ...]] = {
    "sd3": ("clip_l", "clip_g", "t5"),
    "flux": ("clip_l", "t5"),
    "sdxl": ("clip_l", "clip_g"),
}
#: Published widths of the CLIP text models.
CLIP_WIDTHS: dict[int, str] = {768: "clip_l", 1280: "clip_g"}
T5_QUERY = "encoder.block.0.layer.0.SelfAttention.q.weight"
_T5_BLOCK = re.compile(r"^encoder\.block\.(\d+)\.")
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
    if TYPES[kind] != "sd1":  # one of SD3's encoders alone (the others give zeros)
        return load_encoder_files([path], TYPES[kind], device=device, dtype=dtype, allow_pickle=allow_pickle)
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


# --------------------------------------------------------------------------- SD3 / Flux / SDXL encoders


def role_of(state: dict[str, Any], name: str = "it") -> str | None:
    """The encoder a file holds: "t5" for a T5, "clip_l" / "clip_g" for a CLIP of a published width,
    None for a CLIP of another width (the caller orders by width); a CheckpointError when neither."""
    if any(k.endswith(T5_QUERY) for k in state):
        return "t5"
    widths = [int(v.shape[1]) for k, v in state.items() if k.endswith(TOKEN_EMBEDDING)]
    if len(widths) != 1:
        from models.dit_files import describe_keys

        raise CheckpointError(
            f"{name} is neither a CLIP nor a T5 text encoder (its keys begin {describe_keys(state)})"
        )
    return CLIP_WIDTHS.get(widths[0])


def clip_width(state: dict[str, Any]) -> int:
    return next(int(v.shape[1]) for k, v in state.items() if k.endswith(TOKEN_EMBEDDING))


def assign_roles(states: list[dict[str, Any]], family: str, names: list[str]) -> list[str]:
    """The role of each file's encoder: T5 by its keys, CLIPs by width (768: L, 1280: G; other
    widths: the narrower is L). Two files of one role, or a role the family does not use, are refused."""
    roles: list[str | None] = [role_of(s, n) for s, n in zip(states, names, strict=True)]
    unknown = [i for i, r in enumerate(roles) if r is None]
    if unknown:
        free = [r for r in ("clip_l", "clip_g") if r in FAMILY_ROLES[family] and r not in roles]
        for index, role in zip(sorted(unknown, key=lambda i: clip_width(states[i])), free, strict=False):
            roles[index] = role
    wanted = FAMILY_ROLES[family]
    for index, role in enumerate(roles):
        if role is None or role not in wanted:
            what = "a CLIP text encoder" if role != "t5" else "a T5 encoder"
            raise CheckpointError(
                f"{names[index]} is {what} ({role or 'one CLIP too many'}), which a {family} model does not "
                f"use: it takes {', '.join(wanted)}"
            )
        if roles.count(role) > 1:
            raise CheckpointError(f"{', '.join(names)} hold two {role} encoders; give each encoder once")
    return [r for r in roles if r is not None]


def clip_state(state: dict[str, Any], with_projection: bool) -> dict[str, Any]:
    """A CLIP text model's tensors under transformers 5's keys: ``embeddings.*``... for
    CLIPTextModel; ``text_model.*`` plus ``text_projection.weight`` for the model with projection
    (the identity when the file has none, as ComfyUI does)."""
    import torch

    text = text_model_keys(state)
    if not with_projection:
        return text
    out = {"text_model." + k: v for k, v in text.items()}
    projection = [v for k, v in state.items() if k.endswith("text_projection.weight")]
    if not projection:  # OpenCLIP keeps it as "text_projection", transposed
        projection = [v.T for k, v in state.items() if k.endswith("text_projection")]
    width = int(text[TOKEN_EMBEDDING].shape[1])
    out["text_projection.weight"] = projection[0] if projection else torch.eye(width)
    return out


def clip_config(state: dict[str, Any], role: str) -> Any:
    """A CLIPTextConfig for an SD3 / Flux / SDXL encoder: the shapes of ``state`` (text-model keys),
    CLIP-L's quick-GELU or CLIP-G's GELU, 64 numbers per head."""
    from transformers import CLIPTextConfig

    vocab, width = (int(n) for n in state[TOKEN_EMBEDDING].shape)
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
        hidden_act="gelu" if role == "clip_g" else "quick_gelu",
        layer_norm_eps=1e-5,
        projection_dim=width,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=1,
    )


def t5_state(state: dict[str, Any]) -> dict[str, Any]:
    """A T5 encoder's tensors under ``T5EncoderModel``'s keys (a file's prefix cut; the embedding
    under both of its names)."""
    prefixes = [k[: -len(T5_QUERY)] for k in state if k.endswith(T5_QUERY)]
    if len(prefixes) != 1:
        raise ValueError(f"it holds {'no' if not prefixes else 'several'} T5 encoders ({T5_QUERY})")
    prefix = prefixes[0]
    out = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    out = {k: v for k, v in out.items() if k == "shared.weight" or k.startswith("encoder.")}
    embedding = out.get("shared.weight", out.get("encoder.embed_tokens.weight"))
    if embedding is None:
        raise ValueError("it lacks the token embedding (shared.weight)")
    out["shared.weight"] = out["encoder.embed_tokens.weight"] = embedding
    return out


def t5_config(state: dict[str, Any]) -> Any:
    """A T5Config of the shapes in ``state`` (T5EncoderModel keys): T5 v1.1's gated GELU."""
    from transformers import T5Config

    vocab, d_model = (int(n) for n in state["shared.weight"].shape)
    buckets, heads = (
        int(n) for n in state["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].shape
    )
    inner = int(state[T5_QUERY].shape[0])
    gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in state
    d_ff = state["encoder.block.0.layer.1.DenseReluDense." + ("wi_0" if gated else "wi") + ".weight"].shape[0]
    layers = 1 + max(int(m.group(1)) for k in state if (m := _T5_BLOCK.match(k)))
    return T5Config(
        vocab_size=vocab,
        d_model=d_model,
        d_kv=inner // heads,
        d_ff=int(d_ff),
        num_layers=layers,
        num_heads=heads,
        relative_attention_num_buckets=buckets,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu" if gated else "relu",
        layer_norm_epsilon=1e-6,
        is_encoder_decoder=False,
        use_cache=False,
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=1,
    )


def _fp8_share(state: dict[str, Any]) -> Any:
    """The fp8 dtype most of a file's matrices are stored in, or None."""
    import torch

    fp8 = (torch.float8_e4m3fn, torch.float8_e5m2)
    dtypes = [v.dtype for v in state.values() if v.dim() >= 2]
    if dtypes and sum(d in fp8 for d in dtypes) * 2 >= len(dtypes):
        return max(fp8, key=lambda d: sum(x == d for x in dtypes))
    return None


def _build(cls: Any, config: Any, weights: dict[str, Any], dtype: Any, name: str, storage: Any = None) -> Any:
    """A transformers model of ``config`` holding exactly ``weights`` (built on the meta device;
    CLIP's position ids, a buffer files do not carry, made afresh). With ``storage`` (fp8), its
    linear layers keep their weights in it and are upcast to ``dtype`` when they run."""
    import torch

    with torch.device("meta"):
        model = cls(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    wrong = sorted(k for k in set(expected) & set(weights) if expected[k].shape != weights[k].shape)
    if missing or wrong:
        shown = (missing or wrong)[0]
        raise CheckpointError(
            f"{name} {'lacks' if missing else 'has a wrong shape for'} {shown} ({len(missing)} missing, "
            f"{len(wrong)} misshapen): it is not a whole {cls.__name__}"
        )
    model.load_state_dict({k: weights[k].to(dtype) for k in expected}, strict=True, assign=True)
    for buffer_name, buffer in list(model.named_buffers()):
        if buffer.is_meta and buffer_name.endswith("position_ids"):
            owner, _, attr = buffer_name.rpartition(".")
            positions = torch.arange(buffer.shape[-1]).expand(tuple(buffer.shape))
            model.get_submodule(owner).register_buffer(attr, positions, persistent=False)
    stuck = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if stuck:
        raise CheckpointError(f"{name}: {stuck[0]} was not loaded")
    if storage is not None:
        from diffusers.hooks import apply_layerwise_casting

        # T5's feed-forward casts its input to its output projection's dtype (which must not be
        # fp8), and overflows in float16 there: ``wo`` stays in the compute dtype (float32 for float16)
        apply_layerwise_casting(model, storage, dtype, skip_modules_pattern=("wo", "norm"))
        if dtype == torch.float16 and cls.__name__ == "T5EncoderModel":
            for block in model.encoder.block:
                block.layer[-1].DenseReluDense.wo.float()
    elif dtype == torch.float16 and cls.__name__ == "T5EncoderModel":
        for block in model.encoder.block:
            block.layer[-1].DenseReluDense.wo.float()
    return model.eval().requires_grad_(False)


def encoder_from_state(state: dict[str, Any], role: str, family: str, dtype: Any, name: str) -> Any:
    """The text encoder of ``role`` ("clip_l", "clip_g", "t5") from a file's tensors (any prefix),
    as ``family`` uses it: SD3's CLIPs with their projection, Flux's and SDXL's CLIP-L without."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, T5EncoderModel

    storage = _fp8_share(state)
    try:
        if role == "t5":
            weights = t5_state(state)
            return _build(T5EncoderModel, t5_config(weights), weights, dtype, name, storage)
        projected = family == "sd3" or role == "clip_g"
        weights = clip_state(state, projected)
        config = clip_config(text_model_keys(state), role)
        cls = CLIPTextModelWithProjection if projected else CLIPTextModel
        return _build(cls, config, weights, dtype, name, storage)
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"cannot load {name} as a {role} text encoder: {exc}") from None


def tokenizer_for(role: str) -> Any:
    """The tokenizer of an encoder role, built offline: CLIP-L's pads with its end token, CLIP-G's
    with "!" (as SD3's and SDXL's second tokenizers do), T5's from :func:`models.tokenizer.t5_tokenizer`."""
    from models.tokenizer import clip_tokenizer, t5_tokenizer

    if role == "t5":
        return t5_tokenizer()
    return clip_tokenizer("!" if role == "clip_g" else "<|endoftext|>")


def load_encoder_files(
    paths: list[Path],
    family: str,
    *,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    allow_pickle: bool = False,
) -> Checkpoint:
    """A :class:`Checkpoint` holding only the text encoders in ``paths`` (one, two or three files of
    CLIP-L, CLIP-G, T5-XXL) for ``family`` ("sd3", "flux", "sdxl"), ordered as the family uses them,
    with their roles in ``extra["encoders"]``."""
    import torch

    if family not in FAMILY_ROLES:
        raise CheckpointError(
            f"text encoders for {family!r} are not supported; choose one of {', '.join(FAMILY_ROLES)}"
        )
    dtype = dtype or torch.float32
    states = []
    for path in paths:
        check_weights_file(Path(path), allow_pickle)
        try:
            states.append(load_state_dict(Path(path), allow_pickle=allow_pickle))
        except (OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"cannot read {Path(path).name}: {plain_load_error(exc)}") from None
    names = [Path(p).name for p in paths]
    roles = assign_roles(states, family, names)
    by_role = dict(zip(roles, zip(states, names, strict=True), strict=True))
    order = [r for r in FAMILY_ROLES[family] if r in by_role]
    encoders = [encoder_from_state(by_role[r][0], r, family, dtype, by_role[r][1]).to(device) for r in order]
    return Checkpoint(
        family=family,
        unet=None,
        vae=None,
        text_encoders=encoders,
        tokenizers=[tokenizer_for(r) for r in order],
        scheduler_config={},
        source="+".join(str(p) for p in paths),
        extra={"encoders": tuple(order)},
    )
