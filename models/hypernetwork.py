"""Hypernetworks (the A1111 / ComfyUI kind, SD 1.x era): small MLPs that bend the keys and values
of a UNet's attention layers.

What one is. A file maps an input width (320, 640, 768, 1280 for SD 1.x) to two MLPs, one for the
keys and one for the values. While sampling, every attention layer (``attn1`` self-attention and
``attn2`` cross-attention of each transformer block) whose key/value input has that width gets

    key input   k <- k + strength * mlp_key(k)
    value input v <- v + strength * mlp_value(v)

before its ``to_k`` / ``to_v`` projections. Self-attention's input is the block's normalised hidden
states (320/640/1280 wide in SD 1.x), cross-attention's is the text context (768), as ComfyUI's
``HypernetworkLoader`` patches ``attn1`` and ``attn2`` (comfy_extras/nodes_hypernetwork.py and
BasicTransformerBlock.forward in comfy/ldm/modules/attention.py). Several hypernetworks apply in
the order they were added, each on the previous one's result.

Each MLP is a chain of linear layers, read in the order of their layer numbers: after each one
comes the file's activation (``activation_func``; after the last one only with ``activate_output``),
then a LayerNorm when ``is_layer_norm`` (its weights are the next entry; ComfyUI then applies the
activation after the last linear layer too, where A1111 does not: we follow ComfyUI, whose workflows
these are). ``use_dropout`` and ``last_layer_dropout`` only matter while training: dropout is off
here, as A1111 runs them (ComfyUI leaves its modules in training mode, so its pictures of dropout
files vary from run to run; ours are deterministic). ``swish`` is ``Hardswish``, as both A1111 and
ComfyUI take it.

Files. A1111 saves them with ``torch.save`` (``.pt``: a pickle): ``{768: [key_state, value_state],
..., "activation_func": "relu", "is_layer_norm": False, ...}`` with ``linear.N.weight`` /
``linear.N.bias`` in each state. Pickle is refused without the opt-in (``--allow-pickle``) and then
read with ``torch.load(weights_only=True)``. The same weights as ``.safetensors`` are
``"768.0.linear.0.weight"`` (width, 0 keys / 1 values, layer name), with the settings in the file's
metadata as text (``"activation_func": "relu"``, ``"is_layer_norm": "true"``); :func:`save_safetensors`
writes that layout.

Running. The cached UNet is shared by every run, so it is never changed: :func:`hypernetwork_view`
makes a view of it for one run (``models.ip_adapter.weight_sharing_view``: new module objects, the
same weight tensors) whose matching ``to_k`` / ``to_v`` are wrapped in :class:`HyperProjection`.
Whatever attention processor the layer has (our Triton kernel, SDPA, IP-Adapter's) calls
``attn.to_k(...)`` as before and gets the bent keys.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from models.safety import UnsafeOrBrokenFile, check_weights_file, load_state_dict, plain_load_error

#: The activations ComfyUI's loader knows, by the name files record, and the torch.nn class of each
#: (None: no activation).
ACTIVATIONS: dict[str, str | None] = {
    "linear": None,
    "relu": "ReLU",
    "leakyrelu": "LeakyReLU",
    "elu": "ELU",
    "swish": "Hardswish",
    "tanh": "Tanh",
    "sigmoid": "Sigmoid",
    "softsign": "Softsign",
    "mish": "Mish",
}
#: The settings a file records, with the values taken when one is absent (ComfyUI's defaults).
SETTINGS: dict[str, Any] = {
    "activation_func": "linear",
    "is_layer_norm": False,
    "use_dropout": False,
    "activate_output": False,
    "last_layer_dropout": False,
}
#: Which of a width's two MLPs feeds which projection.
PROJECTIONS = (("to_k", 0), ("to_v", 1))


class HypernetworkError(ValueError):
    """A file that is not a usable hypernetwork, said in plain words."""


@dataclass(frozen=True, eq=False)
class Hypernetwork:
    """A hypernetwork's MLPs: ``nets[str(width)]`` is a ModuleList (key MLP, value MLP), in eval mode."""

    name: str
    nets: torch.nn.ModuleDict
    activation: str

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(sorted(int(w) for w in self.nets))

    def mlp(self, width: int, index: int) -> torch.nn.Module:
        """The key (``index`` 0) or value (1) MLP for inputs ``width`` wide."""
        return self.nets[str(width)][index]

    def cache_size(self) -> int:
        return 256


@dataclass(frozen=True, eq=False)
class HypernetworkPatch:
    """One HypernetworkLoader on a MODEL: its weights (from the model manager), strength and file name."""

    weights: Callable[[], Hypernetwork]
    strength: float
    name: str


# --------------------------------------------------------------------------- files


def load_hypernetwork(path: Path, allow_pickle: bool = False) -> Hypernetwork:
    """A hypernetwork from ``path``: ``.safetensors``, or an A1111 ``.pt`` only with ``allow_pickle``
    (then loaded weights-only). Raises PickleRefused, UnsafeOrBrokenFile or HypernetworkError."""
    path = Path(path)
    check_weights_file(path, allow_pickle)
    if path.suffix.lower() == ".safetensors":
        widths, settings = _read_safetensors(path)
    else:
        widths, settings = _read_pickle(path)
    return hypernetwork_from(widths, settings, path.name)


def _read_pickle(path: Path) -> tuple[dict[int, Sequence[Mapping[str, Any]]], dict[str, Any]]:
    """An A1111 ``.pt``: int width keys to [key state, value state], and the settings beside them."""
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - code in the pickle, or a corrupt file
        raise UnsafeOrBrokenFile(
            f"{path.name} could not be loaded as weights only: {plain_load_error(exc)}"
        ) from None
    if not isinstance(data, dict):
        raise HypernetworkError(f"{path.name} is not a hypernetwork: it holds no dictionary")
    widths: dict[int, Sequence[Mapping[str, Any]]] = {}
    for key, value in data.items():
        width = _as_width(key)
        if width is not None:
            widths[width] = value
    settings = {name: data[name] for name in SETTINGS if name in data}
    return widths, settings


def _read_safetensors(path: Path) -> tuple[dict[int, Sequence[Mapping[str, Any]]], dict[str, Any]]:
    """Our safetensors layout: ``"{width}.{0|1}.{layer}.{weight|bias}"``, settings in the metadata."""
    from safetensors import safe_open

    state = load_state_dict(path)  # UnsafeOrBrokenFile for a corrupt file
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    grouped: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
    for key, tensor in state.items():
        parts = key.split(".", 2)
        width = _as_width(parts[0])
        if width is None or len(parts) < 3 or parts[1] not in ("0", "1"):
            continue
        grouped.setdefault(width, ({}, {}))[int(parts[1])][parts[2]] = tensor
    settings: dict[str, Any] = {}
    for name, default in SETTINGS.items():
        if name in metadata:
            text = metadata[name]
            flag = text.strip().lower() in ("true", "1", "yes")
            settings[name] = flag if isinstance(default, bool) else text
    return dict(grouped), settings


def _as_width(key: Any) -> int | None:
    if isinstance(key, int) and not isinstance(key, bool):
        return key
    if isinstance(key, str) and key.isdigit():
        return int(key)
    return None


def hypernetwork_from(
    widths: Mapping[int, Sequence[Mapping[str, Any]]], settings: Mapping[str, Any], name: str
) -> Hypernetwork:
    """Build the MLPs of a hypernetwork from its per-width states and settings, checking every shape."""

    activation = str(settings.get("activation_func", SETTINGS["activation_func"]))
    if activation not in ACTIVATIONS:
        raise HypernetworkError(
            f"{name} uses the activation {activation!r}, which is not supported; supported: "
            f"{', '.join(ACTIVATIONS)}"
        )
    if not widths:
        raise HypernetworkError(
            f"{name} is not a hypernetwork: it has no layers keyed by a width (320, 640, 768, 1280, ...)"
        )
    layer_norm = bool(settings.get("is_layer_norm", False))
    activate_output = bool(settings.get("activate_output", False))
    nets = torch.nn.ModuleDict()
    for width, states in sorted(widths.items()):
        if not isinstance(states, list | tuple) or len(states) != 2:
            raise HypernetworkError(
                f"{name} is not a hypernetwork: width {width} should hold two MLPs (keys and values)"
            )
        pair = [
            _mlp(states[i], width, activation, layer_norm, activate_output, f"{name} ({width}, {which})")
            for i, which in ((0, "keys"), (1, "values"))
        ]
        nets[str(width)] = torch.nn.ModuleList(pair)
    nets.eval().requires_grad_(False)
    return Hypernetwork(name, nets, activation)


def _layer_order(key: str) -> tuple[Any, ...]:
    """Sort layer names by their numbers (``linear.10`` after ``linear.2``), as they were built."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key))


def _mlp(
    state: Mapping[str, Any], width: int, activation: str, layer_norm: bool, activate_output: bool, where: str
) -> torch.nn.Sequential:
    if not isinstance(state, Mapping) or not state:
        raise HypernetworkError(f"{where}: no layers; this is not a hypernetwork")
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    names = sorted((k[: -len(".weight")] for k in tensors if k.endswith(".weight")), key=_layer_order)
    entries = []
    for layer in names:
        bias = tensors.get(layer + ".bias")
        if bias is None:
            raise HypernetworkError(f"{where}: layer {layer} has a weight but no bias")
        entries.append((layer, tensors[layer + ".weight"].float(), bias.float()))
    linears = [e for e in entries if e[1].ndim == 2]
    if not linears:
        raise HypernetworkError(f"{where}: no linear layers; this is not a hypernetwork")
    layers: list[torch.nn.Module] = []
    features = width
    i = 0
    while i < len(entries):
        layer, weight, bias = entries[i]
        if weight.ndim != 2 or weight.shape[1] != features or bias.shape != (weight.shape[0],):
            raise HypernetworkError(
                f"{where}: layer {layer} has weights of shape {tuple(weight.shape)} where a linear layer "
                f"taking {features} features belongs; the file is not a hypernetwork for this width"
            )
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
        linear.load_state_dict({"weight": weight, "bias": bias})
        layers.append(linear)
        features = weight.shape[0]
        last = i == len(entries) - 1  # ComfyUI's test: with LayerNorms the last linear is never "last"
        kind = ACTIVATIONS[activation]
        if kind is not None and (not last or activate_output):
            layers.append(getattr(torch.nn, kind)())
        if layer_norm:
            i += 1
            if i >= len(entries) or entries[i][1].shape != (features,) or entries[i][2].shape != (features,):
                raise HypernetworkError(
                    f"{where}: is_layer_norm is set but layer {layer} is not followed by a "
                    f"LayerNorm of {features} features"
                )
            norm = torch.nn.LayerNorm(features)
            norm.load_state_dict({"weight": entries[i][1], "bias": entries[i][2]})
            layers.append(norm)
        i += 1
    if features != width:
        raise HypernetworkError(
            f"{where}: the last layer gives {features} features, not {width}; not a hypernetwork"
        )
    return torch.nn.Sequential(*layers)


def save_safetensors(
    widths: Mapping[int, Sequence[Mapping[str, torch.Tensor]]], settings: Mapping[str, Any], path: Path
) -> None:
    """Write per-width (key state, value state) and settings in our safetensors layout."""
    from safetensors.torch import save_file

    flat = {
        f"{width}.{index}.{key}": tensor.contiguous()
        for width, states in widths.items()
        for index, state in enumerate(states)
        for key, tensor in state.items()
    }
    metadata = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in settings.items()}
    save_file(flat, str(path), metadata=metadata)


# --------------------------------------------------------------------------- one sampling run


class HyperProjection(torch.nn.Module):
    """An attention layer's ``to_k`` or ``to_v`` with hypernetwork MLPs on its input: each
    ``x <- x + strength * mlp(x)`` in turn, then the original projection."""

    def __init__(self, projection: Any, chain: Sequence[tuple[Any, float]]) -> None:
        super().__init__()
        self.projection = projection
        self.mlps = torch.nn.ModuleList([mlp for mlp, _ in chain])
        self.strengths = [float(strength) for _, strength in chain]

    @property
    def weight(self) -> Any:  # code that reads ``attn.to_k.weight`` (dtype, device) still works
        return self.projection.weight

    @property
    def bias(self) -> Any:
        return self.projection.bias

    @property
    def in_features(self) -> int:
        return int(self.projection.in_features)

    @property
    def out_features(self) -> int:
        return int(self.projection.out_features)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        for mlp, strength in zip(self.mlps, self.strengths, strict=True):
            x = x + mlp(x) * strength
        return self.projection(x, *args, **kwargs)


def attention_layers(unet: Any) -> list[tuple[str, Any]]:
    """The UNet's transformer-block attention layers (``attn1`` and ``attn2``), by name."""
    from diffusers.models.attention_processor import Attention

    return [
        (name, module)
        for name, module in unet.named_modules()
        if isinstance(module, Attention) and name.rsplit(".", 1)[-1] in ("attn1", "attn2")
    ]


def attention_widths(unet: Any) -> set[int]:
    """The key/value input widths of the UNet's attention layers (what hypernetwork widths can match)."""
    return {int(module.to_k.in_features) for _, module in attention_layers(unet)}


def hypernetwork_view(
    unet: Any, patches: Sequence[tuple[Hypernetwork, float]], device: Any, dtype: Any
) -> Any:
    """``unet`` itself when no patch acts (none, or all at strength 0); otherwise a view of it
    (weights shared, modules new) whose matching ``to_k`` / ``to_v`` apply the hypernetworks in order,
    their MLPs copied to ``device`` and ``dtype``. ``unet`` keeps its modules and processors."""
    from models.ip_adapter import weight_sharing_view

    acting = [(hn, float(s)) for hn, s in patches if float(s) != 0.0]
    if not acting:
        return unet
    view = weight_sharing_view(unet)
    copies: dict[tuple[int, int, int], Any] = {}

    def placed(number: int, hn: Hypernetwork, width: int, index: int) -> Any:
        key = (number, width, index)
        if key not in copies:
            copies[key] = copy.deepcopy(hn.mlp(width, index)).to(device=device, dtype=dtype).eval()
        return copies[key]

    for _, attention in attention_layers(view):
        for attribute, index in PROJECTIONS:
            projection = getattr(attention, attribute)
            width = int(projection.in_features)
            chain = [
                (placed(number, hn, width, index), strength)
                for number, (hn, strength) in enumerate(acting)
                if width in hn.widths
            ]
            if chain:
                setattr(attention, attribute, HyperProjection(projection, chain))
    return view
