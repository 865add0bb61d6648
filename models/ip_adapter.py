"""IP-Adapter image prompts (SD 1.x and SDXL): load an adapter file, check that it fits a model,
and run it for one sampling run through diffusers' own IP-Adapter machinery.

Files. An adapter is one safetensors file with ``image_proj.*`` (the projection of CLIP vision
features into extra cross-attention tokens) and ``ip_adapter.N.to_k_ip.weight`` /
``to_v_ip.weight`` (a key and value projection per cross-attention layer, N = 1, 3, 5, ...), as
ComfyUI_IPAdapter_plus users keep them in ``models/ipadapter``. :func:`load_ip_adapter` reads it
(a pickle ``.bin`` only with the opt-in) and tells the kinds apart by their keys:

- "standard" (``ip-adapter_sd15``, ``ip-adapter_sdxl_vit-h``...): ``image_proj.proj`` + ``norm``
  over the tower's projected image embedding, 4 tokens;
- "plus" (``ip-adapter-plus_sd15``, ``ip-adapter-plus-face_sd15``, ``ip-adapter-plus_sdxl_vit-h``):
  a Resampler (``image_proj.latents``, ``proj_in``, ``layers.*``) over the tower's penultimate
  hidden states;
- "full" (``ip-adapter-full-face_sd15``): an MLP over the penultimate hidden states.

FaceID adapters (``perceiver_resampler.*``, ``proj.0``/``proj.2``/``norm`` projections, LoRA
weights) need insightface's face embeddings and are refused, naming what was found.

Running. The cached UNet is shared by every run in the model manager (and, in the studio, by runs
on other worker threads at the same time), so it is never changed. :func:`adapt_unet` makes a
*view* of it for one sampling run: a structural copy whose modules are new objects but whose
parameters and buffers are the cached UNet's own tensors (``copy.deepcopy`` with the weights in
its memo: no weight is copied, a full-size UNet's skeleton copies in a fraction of a second).
diffusers' ``_load_ip_adapter_weights`` installs the adapters on the view (image projections as
``MultiIPAdapterImageProjection``, ``IPAdapterAttnProcessor2_0`` on the cross-attention layers,
fresh processors of the same class on the self-attention layers, so our Triton processor stays
there); the cross-attention processors are then swapped for :class:`KernelIPAdapterProcessor`,
which computes both the text and the image attention with our kernel where the layer used it
before. Installing and restoring on the shared UNet instead would let a concurrent run see the
adapter, and a crash between the two would leave it installed.

The image embeddings reach the UNet as ``added_cond_kwargs["image_embeds"]`` (one tensor per
adapter, ``(rows, images, ...)``); the unconditional rows of classifier-free guidance get the
adapter's negative embeddings, as ``prepare_ip_adapter_image_embeds`` builds them: zeros for the
standard kind, the tower's features of an all-zero (normalised) picture for the others, or the
features of ``image_negative`` when given. Each step, :meth:`AdaptedUNet.at_step` sets every
adapter's scale: its weight inside its ``[start, end)`` window of the steps (the ControlNet
pipelines' rule), 0 outside, where the processor skips it.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

from models.safety import check_weights_file, load_state_dict, plain_load_error

if TYPE_CHECKING:
    import torch

#: How ComfyUI_IPAdapter_plus scales the image attention (``embeds_scaling``); "V only" is the
#: paper's (and diffusers') output scale.
EMBEDS_SCALINGS = ("V only", "K+V", "K+V w/ C penalty", "K+mean(V) w/ C penalty")
#: How several pictures given to one adapter are joined ("concat": all their tokens side by side,
#: as diffusers takes a list of pictures; the others merge the CLIP features first, as
#: ComfyUI_IPAdapter_plus does).
COMBINE_EMBEDS = ("concat", "add", "subtract", "average", "norm average")
#: Known models' cross-attention widths, to name the family an adapter was made for.
WIDTH_FAMILIES = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}
FAMILY_NAMES = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}


class IPAdapterError(ValueError):
    """An adapter file that cannot be used (wrong kind, wrong model), said in plain words."""


# --------------------------------------------------------------------------- files


@dataclass(frozen=True, eq=False)
class IPAdapterWeights:
    """An adapter file's weights, split as diffusers takes them, and what they fit."""

    name: str
    image_proj: dict[str, torch.Tensor]
    ip_adapter: dict[str, torch.Tensor]
    kind: str  # "standard" | "plus" | "full"

    @property
    def state(self) -> dict[str, dict[str, torch.Tensor]]:
        """The ``{"image_proj": ..., "ip_adapter": ...}`` dict diffusers' loaders take."""
        return {"image_proj": self.image_proj, "ip_adapter": self.ip_adapter}

    @property
    def uses_hidden_states(self) -> bool:
        """Whether the adapter reads the tower's penultimate hidden states (else its image embeds)."""
        return self.kind != "standard"

    @property
    def layers(self) -> int:
        """How many cross-attention layers the adapter has keys and values for."""
        return sum(1 for key in self.ip_adapter if key.endswith(".to_k_ip.weight"))

    @property
    def cross_attention_dim(self) -> int:
        """The text-embedding width of the model it was made for (768 SD 1.x, 2048 SDXL)."""
        return int(self.ip_adapter["1.to_k_ip.weight"].shape[1])

    @property
    def feature_dim(self) -> int:
        """The width of the CLIP vision features it takes."""
        proj = self.image_proj
        if self.kind == "standard":
            return int(proj["proj.weight"].shape[-1])
        if self.kind == "plus":
            return int(proj["proj_in.weight"].shape[1])
        return int(proj["proj.0.weight"].shape[1])

    @property
    def made_for(self) -> str:
        """The family the adapter's width says, in words."""
        width = self.cross_attention_dim
        family = WIDTH_FAMILIES.get(width)
        return f"{family} (cross-attention width {width})" if family else f"cross-attention width {width}"

    def cache_size(self) -> int:
        return 256


def load_ip_adapter(path: Path, allow_pickle: bool = False) -> IPAdapterWeights:
    """An adapter from ``path`` (safetensors; a pickle file only with ``allow_pickle``)."""
    path = Path(path)
    check_weights_file(path, allow_pickle)
    if path.suffix.lower() == ".safetensors":
        flat = load_state_dict(path)
    else:
        flat = _load_pickle(path)
    return adapter_from_state(flat, path.name)


def _load_pickle(path: Path) -> dict[str, torch.Tensor]:
    """A pickle adapter (``{"image_proj": {...}, "ip_adapter": {...}}``) loaded weights-only, flattened."""
    import torch

    from models.safety import UnsafeOrBrokenFile

    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file, said in plain words
        raise UnsafeOrBrokenFile(
            f"{path.name} could not be loaded as weights only: {plain_load_error(exc)}"
        ) from None
    flat: dict[str, torch.Tensor] = {}
    for key, value in data.items() if isinstance(data, dict) else ():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items() if isinstance(v, torch.Tensor)})
        elif isinstance(value, torch.Tensor):
            flat[key] = value
    return flat


def adapter_from_state(flat: dict[str, torch.Tensor], name: str) -> IPAdapterWeights:
    """Split and classify an adapter's flat ``image_proj.*`` / ``ip_adapter.*`` weights."""
    image_proj = {k[len("image_proj.") :]: v for k, v in flat.items() if k.startswith("image_proj.")}
    ip_adapter = {k[len("ip_adapter.") :]: v for k, v in flat.items() if k.startswith("ip_adapter.")}
    if not image_proj or not ip_adapter:
        shown = ", ".join(sorted(flat)[:4]) or "no tensors"
        raise IPAdapterError(
            f"{name} is not an IP-Adapter (it has no image_proj.* and ip_adapter.* weights; found "
            f"{len(flat)} tensors such as {shown}); put an IP-Adapter file such as "
            "ip-adapter_sd15.safetensors in models/ipadapter"
        )
    faceid = _faceid_sign(image_proj, ip_adapter)
    if faceid:
        raise IPAdapterError(
            f"{name} is a FaceID IP-Adapter ({faceid}): FaceID adapters need insightface's face "
            "embeddings, which the studio does not compute; use a standard or plus adapter "
            "(ip-adapter_sd15, ip-adapter-plus_sd15, ip-adapter-plus-face_sd15)"
        )
    if "proj.weight" in image_proj and "norm.weight" in image_proj:
        kind = "standard"
    elif "latents" in image_proj and "proj_in.weight" in image_proj:
        kind = "plus"
    elif "proj.3.weight" in image_proj:
        kind = "full"
    else:
        raise IPAdapterError(
            f"{name} has an image projection of an unknown kind (keys {', '.join(sorted(image_proj)[:5])}); "
            "the studio reads standard, plus and full-face IP-Adapters"
        )
    if "1.to_k_ip.weight" not in ip_adapter or "1.to_v_ip.weight" not in ip_adapter:
        raise IPAdapterError(f"{name} lacks ip_adapter.1.to_k_ip.weight / to_v_ip.weight")
    return IPAdapterWeights(name, image_proj, ip_adapter, kind)


def _faceid_sign(image_proj: dict[str, Any], ip_adapter: dict[str, Any]) -> str:
    """What marks the weights as a FaceID adapter, in words ("" when nothing does)."""
    if any("lora" in key for key in ip_adapter):
        return "LoRA weights in ip_adapter.*, such as " + next(k for k in ip_adapter if "lora" in k)
    if any(key.startswith("perceiver_resampler.") for key in image_proj):
        return "a FaceID Plus projection, image_proj.perceiver_resampler.*"
    if "proj.0.weight" in image_proj and "proj.3.weight" not in image_proj:
        return "a face-embedding projection, image_proj.proj.0 / proj.2"
    return ""


def cross_attention_layers(unet: Any) -> list[str]:
    """The UNet's cross-attention processor names, in the order adapter files number them."""
    return [name for name in unet.attn_processors if not name.endswith("attn1.processor")]


def check_fits(weights: IPAdapterWeights, unet: Any, family: str) -> None:
    """Raise :class:`IPAdapterError` unless the adapter was made for this UNet's architecture."""
    width = int(unet.config.cross_attention_dim)
    layers = len(cross_attention_layers(unet))
    if weights.cross_attention_dim == width and weights.layers == layers:
        return
    model = FAMILY_NAMES.get(family, family)
    raise IPAdapterError(
        f"{weights.name} is an IP-Adapter for {weights.made_for}, {weights.layers} cross-attention "
        f"layers; this {model} model has width {width} and {layers} layers: use the adapter made for "
        f"{model} (e.g. ip-adapter_sd15 for SD 1.x, ip-adapter_sdxl_vit-h for SDXL)"
    )


def check_features(weights: IPAdapterWeights, width: int) -> None:
    """Raise :class:`IPAdapterError` unless the CLIP vision features are as wide as the adapter takes."""
    if width == weights.feature_dim:
        return
    what = "penultimate hidden states" if weights.uses_hidden_states else "image embeddings"
    raise IPAdapterError(
        f"{weights.name} takes CLIP vision {what} of {weights.feature_dim} numbers, the CLIP vision "
        f"model gives {width}: load the encoder it was trained with (ViT-H/14, "
        "CLIP-ViT-H-14-laion2B-s32B-b79K, for the _sd15 and _vit-h adapters; ViT-bigG/14 for ip-adapter_sdxl)"
    )


# --------------------------------------------------------------------------- image prompts


@dataclass(frozen=True, eq=False)
class ImagePrompt:
    """One adapter with its pictures, as an IPAdapter node applies it to a MODEL.

    ``positive`` / ``negative`` are the CLIP vision features (float32, CPU) the adapter takes:
    ``(images, dim)`` image embeddings, or ``(images, tokens, width)`` hidden states.
    """

    adapter: Callable[[], IPAdapterWeights]
    positive: torch.Tensor
    negative: torch.Tensor
    weight: float = 1.0
    start: float = 0.0
    end: float = 1.0
    scaling: str = "V only"

    def active(self, index: int, total: int) -> bool:
        """Whether step ``index`` of ``total`` lies in the prompt's window (ControlNet's rule)."""
        return not (index / total < self.start or (index + 1) / total > self.end)


def combine_features(features: torch.Tensor, how: str) -> torch.Tensor:
    """Several pictures' features as ComfyUI_IPAdapter_plus's ``combine_embeds`` joins them
    (``concat`` keeps them all: their tokens are attended side by side)."""
    import torch

    if how not in COMBINE_EMBEDS:
        raise ValueError(f"combine_embeds must be one of {', '.join(COMBINE_EMBEDS)}, not {how!r}")
    if how == "concat" or features.shape[0] < 2:
        return features
    if how == "add":
        return features.sum(0, keepdim=True)
    if how == "subtract":
        return (features[0] - features[1:].mean(0))[None]
    if how == "average":
        return features.mean(0, keepdim=True)
    return (features / torch.norm(features, dim=0, keepdim=True)).mean(0, keepdim=True)


# --------------------------------------------------------------------------- attention


class KernelIPAdapterProcessor(IPAdapterAttnProcessor2_0):
    """diffusers' ``IPAdapterAttnProcessor2_0`` computing the text and the image attention with our
    Triton kernel when ``kernel`` is set and the inputs allow (as ``TritonAttnProcessor`` decides),
    SDPA otherwise, with ComfyUI_IPAdapter_plus's ``embeds_scaling`` per adapter. Built from the
    processor diffusers installed, sharing its ``to_k_ip`` / ``to_v_ip`` layers. No masks."""

    def __init__(self, base: IPAdapterAttnProcessor2_0, scalings: Sequence[str], kernel: bool) -> None:
        import torch

        from kernels.processor import TritonAttnProcessor

        torch.nn.Module.__init__(self)
        self.hidden_size, self.cross_attention_dim = base.hidden_size, base.cross_attention_dim
        self.num_tokens, self.scale = list(base.num_tokens), list(base.scale)
        self.to_k_ip, self.to_v_ip = base.to_k_ip, base.to_v_ip
        self.scalings = list(scalings)
        #: Our processor when the layer had it (it decides per call whether the kernel can run).
        self.kernel = TritonAttnProcessor() if kernel else None

    def _attend(self, attn: Any, query: Any, key: Any, value: Any) -> Any:
        import torch.nn.functional as F

        if self.kernel is not None and self.kernel.use_kernel(query, key, value, None):
            from kernels.attention import attention

            return attention(query, key, value, scale=attn.scale)
        return F.scaled_dot_product_attention(
            query, key, value, dropout_p=0.0, is_causal=False, scale=attn.scale
        )

    def __call__(  # type: ignore[override]
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: Any = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        scale: float = 1.0,
        ip_adapter_masks: Any = None,
    ) -> torch.Tensor:
        if (
            attention_mask is not None
            or ip_adapter_masks is not None
            or not isinstance(encoder_hidden_states, tuple)
        ):
            raise ValueError("the studio's IP-Adapter processor takes no attention masks")
        text, images = encoder_hidden_states
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch = hidden_states.shape[0]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if attn.norm_cross:
            text = attn.norm_encoder_hidden_states(text)
        key, value = attn.to_k(text), attn.to_v(text)
        head_dim = key.shape[-1] // attn.heads

        def heads(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.view(batch, -1, attn.heads, head_dim).transpose(1, 2)

        def merged(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)

        query_heads = heads(query)
        hidden_states = merged(self._attend(attn, query_heads, heads(key), heads(value)))
        for features, weight, scaling, to_k_ip, to_v_ip in zip(
            images, self.scale, self.scalings, self.to_k_ip, self.to_v_ip, strict=True
        ):
            if weight == 0:
                continue
            ip_key, ip_value = to_k_ip(features), to_v_ip(features)
            ip_key, ip_value, out_weight = _scaled(
                ip_key.flatten(1, -2), ip_value.flatten(1, -2), weight, scaling
            )
            attended = merged(self._attend(attn, query_heads, heads(ip_key), heads(ip_value)))
            hidden_states = hidden_states + out_weight * attended
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def _scaled(key: Any, value: Any, weight: float, scaling: str) -> tuple[Any, Any, float]:
    """(key, value, output weight) for ComfyUI_IPAdapter_plus's ``embeds_scaling``: "V only" scales
    the output (diffusers' rule), the others the keys and values (with a penalty by width)."""
    if scaling == "V only":
        return key, value, weight
    if scaling == "K+V":
        return key * weight, value * weight, 1.0
    if scaling not in EMBEDS_SCALINGS:
        raise ValueError(f"embeds_scaling must be one of {', '.join(EMBEDS_SCALINGS)}, not {scaling!r}")
    weight = weight * key.shape[-1] / 1280.0  # the "C penalty": narrower layers count less
    if scaling == "K+V w/ C penalty":
        return key * weight, value * weight, 1.0
    mean = value.mean(dim=1, keepdim=True)
    return key * weight, (value - mean) + mean * weight, 1.0


# --------------------------------------------------------------------------- one sampling run


def weight_sharing_view(module: torch.nn.Module) -> Any:
    """A copy of ``module`` whose submodules are new objects and whose parameters and buffers are
    the original's own tensors: changing the copy's processors or attributes leaves the original
    as it is, and no weight memory is spent."""
    memo = {id(t): t for t in itertools.chain(module.parameters(), module.buffers())}
    return copy.deepcopy(module, memo)


@dataclass
class AdaptedUNet:
    """A UNet view with image prompts installed, for one sampling run."""

    unet: Any
    prompts: Sequence[ImagePrompt]
    processors: list[KernelIPAdapterProcessor]
    #: ``added_cond_kwargs["image_embeds"]``: one (rows, images, ...) tensor per prompt
    image_embeds: list[torch.Tensor]

    def at_step(self, index: int, total: int) -> None:
        """Set each prompt's scale for step ``index`` of ``total``: its weight inside its window."""
        scales = [p.weight if p.active(index, total) else 0.0 for p in self.prompts]
        for processor in self.processors:
            processor.scale = scales


def adapt_unet(
    unet: Any, prompts: Sequence[ImagePrompt], rows: Sequence[bool], device: str, dtype: Any
) -> AdaptedUNet:
    """A view of ``unet`` (see :func:`weight_sharing_view`) with the prompts' adapters installed by
    diffusers' ``_load_ip_adapter_weights``, and their embeddings for a batch whose rows are
    unconditional where ``rows`` says False (classifier-free guidance's negative half)."""
    import torch

    from kernels.processor import TritonAttnProcessor

    adapters = [prompt.adapter() for prompt in prompts]
    originals = unet.attn_processors
    view = weight_sharing_view(unet)
    view._load_ip_adapter_weights([a.state for a in adapters])
    scalings = [p.scaling for p in prompts]
    processors: list[KernelIPAdapterProcessor] = []
    chosen = {}
    for name, processor in view.attn_processors.items():
        if isinstance(processor, IPAdapterAttnProcessor2_0):
            ours = KernelIPAdapterProcessor(
                processor, scalings, isinstance(originals[name], TritonAttnProcessor)
            )
            processors.append(ours)
            processor = ours
        chosen[name] = processor
    view.set_attn_processor(chosen)
    embeds = []
    for prompt in prompts:
        per_row = [prompt.positive if positive else prompt.negative for positive in rows]
        embeds.append(torch.stack(per_row).to(device, dtype))
    adapted = AdaptedUNet(view, prompts, processors, embeds)
    adapted.at_step(0, 1)
    return adapted
