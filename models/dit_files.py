"""SD3 / SD3.5 and Flux.1 single files: all-in-one checkpoints and transformer-only files.

The layouts these models are published in (and that ComfyUI users keep):

- SD3 / SD3.5 all-in-one (``sd3_medium_incl_clips_t5xxlfp16.safetensors``, ``sd3.5_medium.safetensors``):
  ``model.diffusion_model.joint_blocks.*`` (the MMDiT), ``first_stage_model.*`` (the 16-channel VAE)
  and, when included, ``text_encoders.clip_l.*``, ``text_encoders.clip_g.*``, ``text_encoders.t5xxl.*``.
- Flux all-in-one (``flux1-dev-fp8.safetensors`` as a checkpoint): ``model.diffusion_model.double_blocks.*``
  / ``single_blocks.*`` with ``first_stage_model.*`` and ``text_encoders.*``.
- Transformer-only files (``models/unet`` or ``models/diffusion_models``, loaded by UNETLoader):
  the same transformer keys without the prefix (``joint_blocks.*``; ``double_blocks.*``,
  ``single_blocks.*``, ``guidance_in.*`` for dev). Their VAE comes from VAELoader and their text
  encoders from DualCLIPLoader / TripleCLIPLoader (models/text_encoders.py).

The family and variant are read from the keys (diffusers' ``infer_diffusers_model_type`` for the
published shapes, the keys' structure for others) and mapped to a shipped config-only folder
(models/configs/sd3-medium, sd35-medium, sd35-large, flux-dev, flux-schnell). Shapes that differ
from that config (depth, width, channels, patch size, SD3.5's dual attention ...) are read from the
weights; what weights cannot say (SD3's attention head size without qk-norm, Flux's rotary axes)
comes from the config, or from a ``<file stem>.config`` folder next to the file (a config-only
pipeline folder, or just a transformer ``config.json``).

The transformer is built on the meta device from that config and given exactly the file's weights,
converted to diffusers' names (SD3: diffusers' own converter; Flux: :func:`flux_to_diffusers`, which
reads the width from the weights where diffusers' converter assumes 3072). fp8 files
(``float8_e4m3fn``) stay in fp8 in memory and are upcast layer by layer at compute time
(diffusers' layerwise casting); ``storage_dtype`` asks for that storage for any file.

Nothing here contacts a model hub; torch and diffusers are imported inside the functions.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from models.loading import CONFIGS, Checkpoint, CheckpointError, weight_mismatch

if TYPE_CHECKING:
    import torch

#: The prefix an all-in-one checkpoint gives the transformer's weights.
TRANSFORMER_PREFIX = "model.diffusion_model."
#: The prefixes of the VAE in an all-in-one checkpoint (ComfyUI's and Stability's, and "vae.").
VAE_PREFIXES = ("first_stage_model.", "vae.")
#: Text encoders in an all-in-one checkpoint, by role.
ENCODER_PREFIXES: dict[str, str] = {
    "clip_l": "text_encoders.clip_l.transformer.",
    "clip_g": "text_encoders.clip_g.transformer.",
    "t5": "text_encoders.t5xxl.transformer.",
}
#: The encoders each family uses, in the order of ``Checkpoint.text_encoders``.
FAMILY_ENCODERS: dict[str, tuple[str, ...]] = {"sd3": ("clip_l", "clip_g", "t5"), "flux": ("clip_l", "t5")}
#: diffusers' model type -> (family, shipped config folder).
VARIANTS: dict[str, tuple[str, str]] = {
    "sd3": ("sd3", "sd3-medium"),
    "sd35_medium": ("sd3", "sd35-medium"),
    "sd35_large": ("sd3", "sd35-large"),
    "flux-dev": ("flux", "flux-dev"),
    "flux-schnell": ("flux", "flux-schnell"),
}
#: Relatives of these families that diffusers recognises but the studio does not run.
NOT_SUPPORTED: dict[str, str] = {
    "flux-fill": "FLUX.1 Fill (inpainting with 384 input channels)",
    "flux-depth": "FLUX.1 Depth (depth-conditioned)",
    "flux-2-dev": "FLUX.2",
    "flux-3-image": "a FLUX image model of a later generation",
    "flux-3-image-distilled": "a FLUX image model of a later generation",
    "chroma": "Chroma (a Flux derivative without the modulation layers)",
}
#: ComfyUI's weight_dtype choices (UNETLoader) -> storage dtype name (None: the file's own / the studio's).
WEIGHT_DTYPES: dict[str, str | None] = {
    "default": None,
    "fp8_e4m3fn": "float8_e4m3fn",
    "fp8_e4m3fn_fast": "float8_e4m3fn",
    "fp8_e5m2": "float8_e5m2",
}

_SD3_MARK = re.compile(r"^(?:model\.diffusion_model\.)?joint_blocks\.\d+\.")
_FLUX_MARK = re.compile(r"^(?:model\.diffusion_model\.)?double_blocks\.\d+\.")
_INDEX = re.compile(r"^(joint_blocks|double_blocks|single_blocks)\.(\d+)\.")


@dataclass(frozen=True)
class DitKind:
    """What a file's keys say: the family, the shipped config folder and how it was told."""

    family: str  # "sd3" | "flux"
    variant: str  # models/configs folder name
    found: str  # diffusers' model type, or "keys" when only the structure told


@dataclass
class DitParts:
    """A file's tensors split by part (keys without the part's prefix)."""

    transformer: dict[str, Any]
    vae: dict[str, Any] = field(default_factory=dict)
    encoders: dict[str, dict[str, Any]] = field(default_factory=dict)


def is_dit(state: dict[str, Any]) -> bool:
    """Whether a state dict holds an SD3 (MMDiT) or Flux transformer, with or without the prefix."""
    return any(_SD3_MARK.match(k) or _FLUX_MARK.match(k) for k in state)


def describe_keys(state: dict[str, Any], count: int = 3) -> str:
    """The first keys of a file, for error messages that say what was found."""
    keys = sorted(state)[:count]
    more = f" and {len(state) - count} more" if len(state) > count else ""
    return ", ".join(keys) + more if keys else "no tensors"


def detect(state: dict[str, Any], name: str = "this file") -> DitKind:
    """The family and variant of an SD3 / Flux state dict, or a :class:`CheckpointError` naming
    what was found."""
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    try:
        found = str(infer_diffusers_model_type(state))
    except (KeyError, IndexError, AttributeError, RuntimeError):
        found = "unknown"
    if found in VARIANTS:
        family, variant = VARIANTS[found]
        return DitKind(family, variant, found)
    if found in NOT_SUPPORTED:
        raise CheckpointError(
            f"{name} is {NOT_SUPPORTED[found]} ({found!r}); "
            "the studio loads SD3, SD3.5, FLUX.1 dev and schnell"
        )
    keys = _unprefixed_keys(state)
    if any(k.startswith("joint_blocks.") for k in keys):
        if any(".x_block.attn2." in k for k in keys):
            return DitKind("sd3", "sd35-medium", "keys")
        if any(".attn.ln_q." in k for k in keys):
            return DitKind("sd3", "sd35-large", "keys")
        return DitKind("sd3", "sd3-medium", "keys")
    if any(k.startswith("double_blocks.") for k in keys) and any(
        k.startswith("single_blocks.") for k in keys
    ):
        guided = any(k.startswith("guidance_in.") for k in keys)
        return DitKind("flux", "flux-dev" if guided else "flux-schnell", "keys")
    # diffusers answers "v1" for whatever it does not know: only a real guess is worth naming
    guess = f"diffusers takes it for {found!r}; " if found not in ("v1", "unknown") else ""
    raise CheckpointError(
        f"{name} is not a whole SD3 or Flux model ({guess}its keys begin {describe_keys(state)})"
    )


def _unprefixed_keys(state: dict[str, Any]) -> list[str]:
    return [k[len(TRANSFORMER_PREFIX) :] if k.startswith(TRANSFORMER_PREFIX) else k for k in state]


def split_parts(state: dict[str, Any]) -> DitParts:
    """Split a file's tensors into transformer, VAE and text encoders (prefixes cut). A file
    without the checkpoint prefixes is all transformer."""
    if not any(k.startswith(TRANSFORMER_PREFIX) for k in state):
        return DitParts(transformer=dict(state))
    parts = DitParts(transformer={})
    for key, value in state.items():
        if key.startswith(TRANSFORMER_PREFIX):
            parts.transformer[key[len(TRANSFORMER_PREFIX) :]] = value
        elif key.startswith(VAE_PREFIXES):
            parts.vae[key.split(".", 1)[1]] = value
        else:
            for role, prefix in ENCODER_PREFIXES.items():
                if key.startswith(prefix):
                    parts.encoders.setdefault(role, {})[key[len(prefix) :]] = value
    return parts


# --------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class ConfigSource:
    """Where a file's configs come from: the shipped folder, or a sidecar next to the file."""

    folder: Path  # a config-only pipeline folder (model_index.json, transformer/, vae/, ...)
    transformer: dict[str, Any]
    sidecar: bool


def config_source(path: Path, kind: DitKind) -> ConfigSource:
    """The sidecar ``<stem>.config`` (a pipeline folder, or a bare transformer ``config.json``)
    when there is one, else the shipped folder of the variant."""
    shipped = CONFIGS / kind.variant
    sidecar = path.with_name(path.stem + ".config")
    if (sidecar / "transformer" / "config.json").is_file():
        return ConfigSource(sidecar, _read_json(sidecar / "transformer" / "config.json"), True)
    if (sidecar / "config.json").is_file():
        return ConfigSource(shipped, _read_json(sidecar / "config.json"), True)
    return ConfigSource(shipped, _read_json(shipped / "transformer" / "config.json"), False)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read the config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"the config {path} does not hold a JSON object")
    return data


def _count(keys: list[str], block: str) -> int:
    found = [int(m.group(2)) for k in keys if (m := _INDEX.match(k)) and m.group(1) == block]
    return max(found) + 1 if found else 0


def sd3_config(state: dict[str, Any], base: dict[str, Any], stem: str = "<file stem>") -> dict[str, Any]:
    """An SD3Transformer2DModel config: ``base`` updated with the shapes the original weights show."""
    keys = list(state)
    embed = state["x_embedder.proj.weight"]  # (hidden, in_channels, patch, patch)
    hidden, in_channels, patch = int(embed.shape[0]), int(embed.shape[1]), int(embed.shape[2])
    ln_q = state.get("joint_blocks.0.x_block.attn.ln_q.weight")
    head_dim = int(ln_q.shape[0]) if ln_q is not None else int(base.get("attention_head_dim", 64))
    if hidden % head_dim:
        raise CheckpointError(
            f"the transformer is {hidden} wide, which is not a whole number of {head_dim}-wide attention "
            f"heads; put the model's diffusers transformer config in a folder {stem}.config next to it"
        )
    context = state["context_embedder.weight"]
    pos_embed = state.get("pos_embed")
    config = dict(base)
    config.update(
        num_layers=_count(keys, "joint_blocks"),
        in_channels=in_channels,
        patch_size=patch,
        out_channels=int(state["final_layer.linear.weight"].shape[0]) // (patch * patch),
        attention_head_dim=head_dim,
        num_attention_heads=hidden // head_dim,
        caption_projection_dim=int(context.shape[0]),
        joint_attention_dim=int(context.shape[1]),
        pooled_projection_dim=int(state["y_embedder.mlp.0.weight"].shape[1]),
        dual_attention_layers=sorted(
            {int(m.group(2)) for k in keys if ".x_block.attn2." in k and (m := _INDEX.match(k))}
        ),
        qk_norm=("layer_norm" if "joint_blocks.0.x_block.attn.ln_q.bias" in state else "rms_norm")
        if ln_q is not None
        else None,
    )
    if pos_embed is not None:
        config["pos_embed_max_size"] = math.isqrt(int(pos_embed.shape[1]))
    return config


def flux_config(state: dict[str, Any], base: dict[str, Any], stem: str = "<file stem>") -> dict[str, Any]:
    """A FluxTransformer2DModel config: ``base`` updated with the shapes the original weights show."""
    keys = list(state)
    inner, in_channels = (int(n) for n in state["img_in.weight"].shape)
    head_dim = int(state["double_blocks.0.img_attn.norm.query_norm.scale"].shape[0])
    axes = list(base.get("axes_dims_rope", (16, 56, 56)))
    if sum(axes) != head_dim:
        raise CheckpointError(
            f"the attention heads are {head_dim} wide but the rotary axes {axes} add up to {sum(axes)}; "
            "put the model's diffusers transformer config (with its axes_dims_rope) in a folder "
            f"{stem}.config next to it"
        )
    config = dict(base)
    config.update(
        num_layers=_count(keys, "double_blocks"),
        num_single_layers=_count(keys, "single_blocks"),
        in_channels=in_channels,
        out_channels=int(state["final_layer.linear.weight"].shape[0]),
        attention_head_dim=head_dim,
        num_attention_heads=inner // head_dim,
        joint_attention_dim=int(state["txt_in.weight"].shape[1]),
        pooled_projection_dim=int(state["vector_in.in_layer.weight"].shape[1]),
        guidance_embeds="guidance_in.in_layer.weight" in state,
        axes_dims_rope=axes,
    )
    return config


# --------------------------------------------------------------------------- conversion


def sd3_to_diffusers(state: dict[str, Any]) -> dict[str, Any]:
    """Original MMDiT names -> SD3Transformer2DModel's, by diffusers' own converter (which pops
    from its input: it gets a copy)."""
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    return dict(convert_sd3_transformer_checkpoint_to_diffusers(dict(state)))


def _swap_halves(tensor: Any) -> Any:
    """(shift, scale) -> (scale, shift): the original final norm's order vs diffusers'."""
    import torch

    shift, scale = tensor.chunk(2, dim=0)
    return torch.cat([scale, shift], dim=0)


#: Flux's original names -> diffusers' names for the tensors that only change name.
_FLUX_RENAMES = {
    "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
    "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
    "txt_in": "context_embedder",
    "img_in": "x_embedder",
    "final_layer.linear": "proj_out",
}
_FLUX_DOUBLE = {
    "img_mod.lin": "norm1.linear",
    "txt_mod.lin": "norm1_context.linear",
    "img_attn.norm.query_norm.scale": "attn.norm_q.weight",
    "img_attn.norm.key_norm.scale": "attn.norm_k.weight",
    "txt_attn.norm.query_norm.scale": "attn.norm_added_q.weight",
    "txt_attn.norm.key_norm.scale": "attn.norm_added_k.weight",
    "img_mlp.0": "ff.net.0.proj",
    "img_mlp.2": "ff.net.2",
    "txt_mlp.0": "ff_context.net.0.proj",
    "txt_mlp.2": "ff_context.net.2",
    "img_attn.proj": "attn.to_out.0",
    "txt_attn.proj": "attn.to_add_out",
}
_FLUX_SINGLE = {
    "modulation.lin": "norm.linear",
    "norm.query_norm.scale": "attn.norm_q.weight",
    "norm.key_norm.scale": "attn.norm_k.weight",
    "linear2": "proj_out",
}


def flux_to_diffusers(state: dict[str, Any]) -> dict[str, Any]:
    """Original Flux names -> FluxTransformer2DModel's, as diffusers'
    ``convert_flux_transformer_checkpoint_to_diffusers`` does, but for any width (it assumes
    3072): fused q/k/v are split in three, the single blocks' ``linear1`` into q, k, v and the
    MLP by the width of ``img_in``, and the final norm's (shift, scale) swapped."""
    inner = int(state["img_in.weight"].shape[0])
    out: dict[str, Any] = {}
    for key, tensor in state.items():
        module, _, param = key.rpartition(".")
        if module in _FLUX_RENAMES:
            out[f"{_FLUX_RENAMES[module]}.{param}"] = tensor
        elif module == "final_layer.adaLN_modulation.1":
            out[f"norm_out.linear.{param}"] = _swap_halves(tensor)
        elif match := re.fullmatch(r"double_blocks\.(\d+)\.(.+)", key):
            out.update(_flux_double(f"transformer_blocks.{match[1]}.", match[2], tensor))
        elif match := re.fullmatch(r"single_blocks\.(\d+)\.(.+)", key):
            out.update(_flux_single(f"single_transformer_blocks.{match[1]}.", match[2], tensor, inner))
        else:
            raise CheckpointError(f"the Flux transformer has an unknown weight {key}")
    return out


def _flux_double(prefix: str, rest: str, tensor: Any) -> dict[str, Any]:
    if rest in _FLUX_DOUBLE:  # the qk-norm scales: a whole name
        return {prefix + _FLUX_DOUBLE[rest]: tensor}
    module, _, param = rest.rpartition(".")
    if module in _FLUX_DOUBLE:
        return {f"{prefix}{_FLUX_DOUBLE[module]}.{param}": tensor}
    if module in ("img_attn.qkv", "txt_attn.qkv"):
        names = (
            ("to_q", "to_k", "to_v")
            if module == "img_attn.qkv"
            else ("add_q_proj", "add_k_proj", "add_v_proj")
        )
        return {
            f"{prefix}attn.{n}.{param}": part for n, part in zip(names, tensor.chunk(3, dim=0), strict=True)
        }
    raise CheckpointError(f"the Flux transformer has an unknown weight {prefix}{rest}")


def _flux_single(prefix: str, rest: str, tensor: Any, inner: int) -> dict[str, Any]:
    import torch

    if rest in _FLUX_SINGLE:
        return {prefix + _FLUX_SINGLE[rest]: tensor}
    module, _, param = rest.rpartition(".")
    if module in _FLUX_SINGLE:
        return {f"{prefix}{_FLUX_SINGLE[module]}.{param}": tensor}
    if module == "linear1":
        mlp = int(tensor.shape[0]) - 3 * inner
        q, k, v, proj_mlp = torch.split(tensor, (inner, inner, inner, mlp), dim=0)
        return {
            f"{prefix}attn.to_q.{param}": q,
            f"{prefix}attn.to_k.{param}": k,
            f"{prefix}attn.to_v.{param}": v,
            f"{prefix}proj_mlp.{param}": proj_mlp,
        }
    raise CheckpointError(f"the Flux transformer has an unknown weight {prefix}{rest}")


# --------------------------------------------------------------------------- building


def storage_dtype_of(weight_dtype: str, state: dict[str, Any]) -> torch.dtype | None:
    """The dtype to keep weights in: ComfyUI's ``weight_dtype`` choice, or for "default" fp8 when
    the file is fp8 (as ComfyUI keeps flux1-dev-fp8), else None (the studio's dtype)."""
    import torch

    if weight_dtype not in WEIGHT_DTYPES:
        raise CheckpointError(f"weight_dtype must be one of {', '.join(WEIGHT_DTYPES)}, not {weight_dtype!r}")
    name = WEIGHT_DTYPES[weight_dtype]
    if name is not None:
        return getattr(torch, name)  # type: ignore[no-any-return]
    fp8 = (torch.float8_e4m3fn, torch.float8_e5m2)
    dtypes = [t.dtype for t in state.values() if t.dim() >= 2]
    if dtypes and sum(d in fp8 for d in dtypes) * 2 >= len(dtypes):
        return max(fp8, key=lambda d: sum(x == d for x in dtypes))
    return None


def build_model(
    cls: Any,
    config: dict[str, Any],
    weights: dict[str, Any],
    dtype: torch.dtype,
    name: str,
    storage: torch.dtype | None = None,
) -> Any:
    """A diffusers model of ``config`` holding exactly ``weights``, built on the meta device (no
    random initialisation of billions of weights). With ``storage`` (fp8), the layers diffusers'
    layerwise casting handles keep their weights in it and compute in ``dtype``; the rest
    (norms, embeddings) are in ``dtype``."""
    import torch

    with torch.device("meta"):
        model = cls.from_config(config)
    if storage is not None:
        model.enable_layerwise_casting(storage_dtype=storage, compute_dtype=dtype)
    expected = model.state_dict()
    mismatch = weight_mismatch(expected, weights)
    if mismatch:
        raise CheckpointError(
            f"{name} {mismatch}: "
            f"its shapes do not fit the {cls.__name__} config; put the model's diffusers config in a "
            f"folder named {Path(name).stem}.config next to it"
        )
    typed = {
        k: v.to(storage if storage is not None and expected[k].dtype == storage else dtype)
        for k, v in weights.items()
    }
    model.load_state_dict(typed, strict=True, assign=True)
    stuck = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if stuck:
        raise CheckpointError(f"{name}: {stuck[0]} was not loaded")
    return model.eval().requires_grad_(False)


def load_transformer(
    parts: DitParts,
    kind: DitKind,
    source: ConfigSource,
    dtype: torch.dtype,
    name: str,
    storage: torch.dtype | None = None,
) -> Any:
    """The SD3 / Flux transformer of a file, its config read from the weights over ``source``'s."""
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    state = parts.transformer
    try:
        if kind.family == "sd3":
            config, weights, cls = (
                sd3_config(state, source.transformer, Path(name).stem),
                sd3_to_diffusers(state),
                SD3Transformer2DModel,
            )
        else:
            config, weights, cls = (
                flux_config(state, source.transformer, Path(name).stem),
                flux_to_diffusers(state),
                FluxTransformer2DModel,
            )
    except KeyError as exc:
        raise CheckpointError(
            f"{name} is not a whole {kind.family.upper()} transformer: it lacks {exc.args[0]}"
        ) from None
    return build_model(cls, config, weights, dtype, name, storage)


def vae_config(state: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """An AutoencoderKL config: ``base`` (its scaling and shift factors, norm groups) updated with
    the shapes of an original-layout VAE (``encoder.down.N.block.M...``, no prefix)."""
    levels = 1 + max(
        (int(m.group(1)) for k in state if (m := re.match(r"encoder\.down\.(\d+)\.", k))), default=-1
    )
    if levels == 0 or "decoder.conv_in.weight" not in state:
        raise CheckpointError(
            f"it holds no VAE in the original layout (its keys begin {describe_keys(state)})"
        )
    blocks = 1 + max(
        int(m.group(1)) for k in state if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k))
    )
    config = dict(base)
    config.update(
        in_channels=int(state["encoder.conv_in.weight"].shape[1]),
        out_channels=int(state["decoder.conv_out.weight"].shape[0]),
        latent_channels=int(state["decoder.conv_in.weight"].shape[1]),
        block_out_channels=[
            int(state[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) for i in range(levels)
        ],
        down_block_types=["DownEncoderBlock2D"] * levels,
        up_block_types=["UpDecoderBlock2D"] * levels,
        layers_per_block=blocks,
        use_quant_conv="quant_conv.weight" in state,
        use_post_quant_conv="post_quant_conv.weight" in state,
        mid_block_add_attention="encoder.mid.attn_1.q.weight" in state,
    )
    groups = int(config.get("norm_num_groups", 32))
    if any(c % groups for c in config["block_out_channels"]):
        raise CheckpointError(
            f"its VAE's channels {config['block_out_channels']} do not split into {groups} norm groups; put "
            "its diffusers VAE config in a <file stem>.config folder next to it"
        )
    return config


def vae_from_original(state: dict[str, Any], base: dict[str, Any], dtype: torch.dtype, name: str) -> Any:
    """An AutoencoderKL from original-layout VAE weights (any number of latent channels)."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    try:
        config = vae_config(state, base)
        weights = convert_ldm_vae_checkpoint(state, config)
    except CheckpointError as exc:
        raise CheckpointError(f"{name}: {exc}") from None
    except KeyError as exc:
        raise CheckpointError(f"{name} is not a whole VAE: it lacks {exc.args[0]}") from None
    return build_model(AutoencoderKL, config, weights, dtype, name)


def load_vae_file(path: Path, state: dict[str, Any], dtype: torch.dtype) -> Any:
    """A 16-channel VAE file (Flux's ``ae.safetensors``, SD3's VAE; original or diffusers names,
    with or without ``first_stage_model.`` / ``vae.``). The two families' VAEs have the same shapes
    and differ only in the latent scale and shift, which weights do not carry: a name with "sd3"
    in it takes SD3's (1.5305, 0.0609), any other Flux's (0.3611, 0.1159); a ``<stem>.config``
    folder next to the file (a diffusers VAE config) says otherwise."""
    from diffusers import AutoencoderKL

    lowered = path.name.lower().replace(".", "").replace("_", "").replace("-", "")
    base = _read_json(CONFIGS / ("sd3-medium" if "sd3" in lowered else "flux-dev") / "vae" / "config.json")
    for prefix in VAE_PREFIXES:
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            break
    if "encoder.down_blocks.0.resnets.0.conv1.weight" not in state:
        return vae_from_original(state, base, dtype, path.name)
    levels = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"encoder\.down_blocks\.(\d+)\.", k)))
    config = dict(base)
    config.update(
        latent_channels=int(state["decoder.conv_in.weight"].shape[1]),
        block_out_channels=[
            int(state[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"].shape[0]) for i in range(levels)
        ],
        down_block_types=["DownEncoderBlock2D"] * levels,
        up_block_types=["UpDecoderBlock2D"] * levels,
        layers_per_block=1
        + max(
            int(m.group(1)) for k in state if (m := re.match(r"encoder\.down_blocks\.0\.resnets\.(\d+)\.", k))
        ),
        use_quant_conv="quant_conv.weight" in state,
        use_post_quant_conv="post_quant_conv.weight" in state,
    )
    return build_model(AutoencoderKL, config, state, dtype, path.name)


def scheduler_config(folder: Path) -> dict[str, Any]:
    """The FlowMatchEulerDiscreteScheduler config of a config folder, defaults filled in."""
    import diffusers

    raw = _read_json(folder / "scheduler" / "scheduler_config.json")
    cls = getattr(diffusers, raw.get("_class_name", "FlowMatchEulerDiscreteScheduler"))
    return dict(cls.from_config(raw).config)


def vae_stand_in(folder: Path) -> SimpleNamespace:
    """Stands in for the VAE a transformer-only file lacks: the sampler needs only its scale."""
    config = _read_json(folder / "vae" / "config.json")
    return SimpleNamespace(config=SimpleNamespace(block_out_channels=list(config["block_out_channels"])))


def load_dit_transformer_file(
    path: Path, state: dict[str, Any], *, device: str, dtype: torch.dtype, weight_dtype: str = "default"
) -> Checkpoint:
    """A transformer-only file (UNETLoader): a Checkpoint with the transformer as its denoiser, no
    text encoders, a stand-in for the VAE (its scale) and the variant's scheduler config."""
    parts = split_parts(state)
    kind = detect(parts.transformer, path.name)
    source = config_source(path, kind)
    storage = storage_dtype_of(weight_dtype, parts.transformer)
    transformer = load_transformer(parts, kind, source, dtype, path.name, storage).to(device)
    return Checkpoint(
        family=kind.family,
        unet=transformer,
        vae=vae_stand_in(source.folder),
        text_encoders=[],
        tokenizers=[],
        scheduler_config=scheduler_config(source.folder),
        source=str(path),
        extra={"encoders": (), "variant": kind.variant, "storage_dtype": str(storage) if storage else None},
    )


def load_dit_checkpoint(
    path: Path, state: dict[str, Any], *, dtype: torch.dtype, weight_dtype: str = "default"
) -> Checkpoint:
    """An all-in-one SD3 / Flux checkpoint: transformer, VAE and whichever text encoders it holds
    (the others come from DualCLIPLoader / TripleCLIPLoader)."""
    from models.text_encoders import encoder_from_state, tokenizer_for

    parts = split_parts(state)
    kind = detect(parts.transformer, path.name)
    if not parts.vae:
        raise CheckpointError(
            f"{path.name} holds only a {kind.family.upper()} transformer (no VAE, no text encoders): put "
            "it in models/unet (or models/diffusion_models) and load it with UNETLoader, its text "
            "encoders with "
            "DualCLIPLoader / TripleCLIPLoader and its VAE with VAELoader"
        )
    source = config_source(path, kind)
    storage = storage_dtype_of(weight_dtype, parts.transformer)
    transformer = load_transformer(parts, kind, source, dtype, path.name, storage)
    vae = vae_from_original(parts.vae, _read_json(source.folder / "vae" / "config.json"), dtype, path.name)
    roles = tuple(r for r in FAMILY_ENCODERS[kind.family] if r in parts.encoders)
    encoders = [
        encoder_from_state(parts.encoders[r], r, kind.family, dtype, f"{path.name} ({r})") for r in roles
    ]
    return Checkpoint(
        family=kind.family,
        unet=transformer,
        vae=vae,
        text_encoders=encoders,
        tokenizers=[tokenizer_for(r) for r in roles],
        scheduler_config=scheduler_config(source.folder),
        source=str(path),
        extra={
            "encoders": roles,
            "variant": kind.variant,
            "storage_dtype": str(storage) if storage else None,
        },
    )
