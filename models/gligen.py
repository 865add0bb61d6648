"""GLIGEN text-box grounding: phrases placed in boxes ("a red circle" here), through a GLIGEN adapter
(a position net and one gated self-attention "fuser" per transformer block) on an SD 1.x/2.x UNet.

Files. An adapter is one safetensors file in one of two layouts:

- the original (and ComfyUI's, e.g. ``gligen_sd14_textbox_pruned.safetensors``): ``position_net.*``
  and the fusers under LDM's block names, ``input_blocks.N.1.transformer_blocks.0.fuser.*``,
  ``middle_block.1...``, ``output_blocks.N.1...`` (a full checkpoint's ``model.diffusion_model.``
  prefix is dropped);
- diffusers': a gated UNet's (``attention_type="gated"``) ``position_net.*`` and
  ``down_blocks.L.attentions.N.transformer_blocks.0.fuser.*`` ... (the rest of the UNet's weights,
  if the file holds them, are not read), as a file, a UNet folder or a pipeline folder.

:func:`load_gligen` reads either into :class:`GligenWeights`, keyed the diffusers way once it meets
a UNet (LDM numbers are turned into diffusers' through :func:`models.checkpoint_save.unet_table`),
and refuses what is not a text-box GLIGEN (a text-image GLIGEN's ``position_net.linears_text`` /
``linears_image``, or no position net at all) in plain words. :func:`check_fits` refuses an adapter
made for another model (its width, its number of blocks).

Running. The cached UNet is shared by every run, so it is never changed: :func:`ground_unet` makes a
view of it (:func:`models.ip_adapter.weight_sharing_view`: new module objects, the same weight
tensors) and gives each of the view's transformer blocks its fuser and the view its position net,
built on the meta device and then handed the adapter's own tensors (no copy). The sampler passes what
diffusers' ``StableDiffusionGLIGENPipeline`` passes: ``cross_attention_kwargs={"gligen": {"boxes",
"positive_embeddings", "masks"}}``, 30 slots per row; rows whose conditioning carries no boxes (the
unconditional half of classifier-free guidance, as the pipeline builds it) have masks 0, which puts
the adapter's learned null embeddings there. The fusers are on for the first ``int(beta * steps)``
steps (the pipeline's ``gligen_scheduled_sampling_beta``, GLIGEN's scheduled sampling), then off.

Phrases are encoded as the pipeline (and ComfyUI) encode them: the text encoder's pooled output
(the final hidden state at the end-of-text token, unprojected).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.safety import check_weights_file, load_state_dict

if TYPE_CHECKING:
    import torch

#: The key of a :class:`Grounding` in ``Cond.extra`` (GLIGENTextBoxApply puts it there).
GROUNDING = "gligen"
#: GLIGEN's number of object slots (the pipeline's and ComfyUI's ``max_objs``).
MAX_BOXES = 30
#: The pipeline's default share of the steps with the fusers on.
DEFAULT_BETA = 0.3
#: The model families GLIGEN adapters exist for (UNets with cross-attention blocks).
FAMILIES = ("sd1", "sd2")
FUSER = ".fuser."
POSITION_NET = "position_net."
#: Prefixes a whole-checkpoint or whole-pipeline file puts before the UNet's keys.
PREFIXES = ("model.diffusion_model.", "unet.")
WIDTH_FAMILIES = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}


class GligenError(ValueError):
    """A GLIGEN file or use that cannot work, said in plain words (``input_name``: the input to blame)."""

    def __init__(self, message: str, input_name: str = "gligen_textbox_model") -> None:
        super().__init__(message)
        self.input_name = input_name


# --------------------------------------------------------------------------- files


@dataclass(frozen=True, eq=False)
class GligenWeights:
    """A text-box GLIGEN adapter's tensors: the position net's (``linears.*``, ``null_*``) and each
    fuser's (``linear``, ``attn``, ``ff``, ``norm1``/``norm2``, ``alpha_attn``/``alpha_dense``) by the
    path of its transformer block in the file's ``layout`` ("original" or "diffusers")."""

    name: str
    position_net: dict[str, torch.Tensor]
    fusers: dict[str, dict[str, torch.Tensor]]
    layout: str

    @property
    def phrase_width(self) -> int:
        """The width of the phrase embeddings it takes (the text encoder's pooled output)."""
        return int(self.position_net["null_positive_feature"].shape[0])

    @property
    def width(self) -> int:
        """The cross-attention width of the model it was made for (768 SD 1.x, 1024 SD 2.x)."""
        return int(self.position_net["linears.4.weight"].shape[0])

    @property
    def hidden(self) -> int:
        return int(self.position_net["linears.0.weight"].shape[0])

    @property
    def fourier_freqs(self) -> int:
        return int(self.position_net["null_position_feature"].shape[0]) // 8

    @property
    def made_for(self) -> str:
        family = WIDTH_FAMILIES.get(self.width)
        return (
            f"{family} (cross-attention width {self.width})"
            if family
            else f"cross-attention width {self.width}"
        )

    def to(self, dtype: Any) -> GligenWeights:
        """The same adapter with floating tensors in ``dtype``."""
        position = {k: v.to(dtype) if v.is_floating_point() else v for k, v in self.position_net.items()}
        fusers = {
            block: {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
            for block, state in self.fusers.items()
        }
        return replace(self, position_net=position, fusers=fusers)

    def cache_size(self) -> int:
        return 256


def weights_file(path: Path) -> Path:
    """The safetensors file of ``path``: itself, or a diffusers UNet or pipeline folder's UNet weights."""
    path = Path(path)
    if not path.is_dir():
        return path
    for candidate in (
        path / "diffusion_pytorch_model.safetensors",
        path / "unet" / "diffusion_pytorch_model.safetensors",
    ):
        if candidate.is_file():
            return candidate
    raise GligenError(
        f"{path.name} is a folder without diffusion_pytorch_model.safetensors (nor unet/ holding one): "
        "give a GLIGEN .safetensors file or a gated diffusers UNet folder"
    )


def load_gligen(path: Path, allow_pickle: bool = False, dtype: Any = None) -> GligenWeights:
    """A GLIGEN adapter from ``path`` (safetensors file or diffusers folder), in ``dtype`` if given."""
    file = weights_file(path)
    check_weights_file(file, allow_pickle)
    weights = gligen_from_state(load_state_dict(file), Path(path).name)
    return weights.to(dtype) if dtype is not None else weights


def gligen_from_state(state: Mapping[str, torch.Tensor], name: str) -> GligenWeights:
    """Split a file's tensors into a text-box GLIGEN's position net and fusers, or say what it is."""
    flat = dict(state)
    for prefix in PREFIXES:
        if any(k.startswith(prefix) for k in flat):
            flat = {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in flat.items()}
    position = {k[len(POSITION_NET) :]: v for k, v in flat.items() if k.startswith(POSITION_NET)}
    fusers: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in flat.items():
        if FUSER in key:
            block, _, rest = key.partition(FUSER)
            fusers.setdefault(block, {})[rest] = tensor
    if any(k.startswith(("linears_text.", "linears_image.")) for k in position):
        raise GligenError(
            f"{name} is a text-image GLIGEN (position_net.linears_text / linears_image: boxes grounded "
            "with reference pictures); the studio runs text-box GLIGEN (e.g. gligen_sd14_textbox_pruned)"
        )
    needed = ("linears.0.weight", "linears.4.weight", "null_positive_feature", "null_position_feature")
    if not fusers or any(k not in position for k in needed):
        shown = ", ".join(sorted(flat)[:4]) or "no tensors"
        raise GligenError(
            f"{name} is not a text-box GLIGEN adapter (it needs position_net.linears.* and "
            f"...transformer_blocks.N.fuser.* weights; found {len(flat)} tensors such as {shown}); put a "
            "GLIGEN file such as gligen_sd14_textbox_pruned.safetensors in models/gligen"
        )
    original = [b for b in fusers if b.startswith(("input_blocks.", "middle_block.", "output_blocks."))]
    layout = "original" if original else "diffusers"
    if original and len(original) != len(fusers):
        raise GligenError(f"{name} mixes the original and the diffusers layout of fuser names")
    for block, parts in fusers.items():
        if "linear.weight" not in parts or "attn.to_q.weight" not in parts:
            raise GligenError(f"{name}: the fuser of {block} lacks linear.weight or attn.to_q.weight")
    return GligenWeights(name, position, fusers, layout)


def diffusers_blocks(weights: GligenWeights, unet: Any) -> dict[str, dict[str, torch.Tensor]]:
    """The adapter's fusers keyed by the diffusers path of their transformer block in ``unet``."""
    if weights.layout == "diffusers":
        return dict(weights.fusers)
    from models.checkpoint_save import SaveError, unet_table

    try:
        table = unet_table(dict(unet.config))
    except SaveError as exc:
        raise GligenError(
            f"{weights.name} is in the original layout, which this UNet has none of: {exc}"
        ) from None
    original = {target: prefix for prefix, (target, _) in table.items() if ".attentions." in prefix}
    out = {}
    for block, state in weights.fusers.items():
        ldm, _, rest = block.partition(".transformer_blocks.")
        prefix = original.get(ldm + ".")
        if prefix is None:
            raise GligenError(
                f"{weights.name} has a fuser at {block}, where this UNet has no attention block: it was made "
                "for another architecture"
            )
        out[f"{prefix}transformer_blocks.{rest}"] = state
    return out


def transformer_blocks(unet: Any) -> dict[str, Any]:
    """The UNet's transformer blocks (diffusers' ``BasicTransformerBlock``) by path."""
    from diffusers.models.attention import BasicTransformerBlock

    return {name: m for name, m in unet.named_modules() if isinstance(m, BasicTransformerBlock)}


def check_fits(weights: GligenWeights, unet: Any) -> dict[str, dict[str, torch.Tensor]]:
    """The adapter's fusers by block path of ``unet``, or a :class:`GligenError` saying why not."""
    width = int(unet.config.cross_attention_dim) if isinstance(unet.config.cross_attention_dim, int) else -1
    family = WIDTH_FAMILIES.get(width, f"width {width}")
    if weights.width != width:
        raise GligenError(
            f"{weights.name} is a GLIGEN for {weights.made_for}; this model's cross-attention width is "
            f"{width} ({family}): use a GLIGEN made for this model"
        )
    fusers = diffusers_blocks(weights, unet)
    blocks = transformer_blocks(unet)
    if set(fusers) != set(blocks):
        raise GligenError(
            f"{weights.name} has {len(fusers)} fusers, this UNet {len(blocks)} transformer blocks "
            f"({', '.join(sorted(set(fusers) ^ set(blocks))[:3])} differ): it was made for another model"
        )
    for path, block in blocks.items():
        dim = int(block.norm1.normalized_shape[0])
        shape = tuple(fusers[path]["linear.weight"].shape)
        if shape != (dim, width):
            raise GligenError(
                f"{weights.name}: the fuser of {path} is {shape[0]} wide for {shape[1]}-wide objects; this "
                f"UNet's block is {dim} wide with width {width}: it was made for another architecture"
            )
    return fusers


# --------------------------------------------------------------------------- phrases and boxes


@dataclass(frozen=True)
class Box:
    """One phrase in one box: the phrase's pooled embedding (dim,) and the box in pixels."""

    phrase: str
    embedding: torch.Tensor
    x: float
    y: float
    width: float
    height: float

    def fractions(self, picture: tuple[int, int]) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) as fractions of a picture (height, width) as the pipeline has them."""
        height, width = picture
        return (
            self.x / width,
            self.y / height,
            (self.x + self.width) / width,
            (self.y + self.height) / height,
        )

    def check_inside(self, picture: tuple[int, int]) -> None:
        height, width = picture
        if self.x + self.width > width or self.y + self.height > height or self.x < 0 or self.y < 0:
            raise GligenError(
                f"the box of {self.phrase!r} ({self.width:g}x{self.height:g} px at x={self.x:g}, "
                f"y={self.y:g}) "
                f"reaches outside the {width}x{height} px picture: move it or make it smaller",
                "positive",
            )


@dataclass(frozen=True, eq=False)
class Grounding:
    """The boxes a conditioning carries (``Cond.extra[GROUNDING]``) and the adapter that reads them."""

    adapter: Callable[[], GligenWeights]
    adapter_key: Any
    adapter_name: str
    boxes: tuple[Box, ...] = ()
    beta: float = DEFAULT_BETA

    def with_box(self, box: Box, beta: float) -> Grounding:
        if len(self.boxes) >= MAX_BOXES:
            raise GligenError(f"GLIGEN takes at most {MAX_BOXES} boxes per prompt", "conditioning_to")
        return replace(self, boxes=(*self.boxes, box), beta=beta)


def encode_phrases(
    tokenizer: Any, text_encoder: Any, phrases: Sequence[str], device: str = "cpu"
) -> torch.Tensor:
    """The phrases' pooled text embeddings (n, dim), float32 on the CPU, as the GLIGEN pipeline makes them."""
    import torch

    tokens = tokenizer(
        list(phrases),
        padding=True,
        truncation=True,
        max_length=tokenizer.model_max_length,
        return_tensors="pt",
    ).to(device)
    with torch.no_grad():
        pooled = text_encoder(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).pooler_output
    return pooled.to("cpu", torch.float32)


def grounding_inputs(
    groundings: Sequence[Grounding | None],
    batch: int,
    picture: tuple[int, int],
    width: int,
    device: str,
    dtype: Any,
) -> dict[str, torch.Tensor]:
    """``cross_attention_kwargs["gligen"]`` for rows of ``batch`` pictures per conditioning: the boxes
    (fractions), phrase embeddings and masks of each conditioning's grounding, masks 0 where it has none."""
    import torch

    rows = len(groundings)
    boxes = torch.zeros(rows, MAX_BOXES, 4)
    embeds = torch.zeros(rows, MAX_BOXES, width)
    masks = torch.zeros(rows, MAX_BOXES)
    for row, grounding in enumerate(groundings):
        for slot, box in enumerate(grounding.boxes if grounding else ()):
            box.check_inside(picture)
            boxes[row, slot] = torch.tensor(box.fractions(picture))
            embeds[row, slot] = box.embedding
            masks[row, slot] = 1.0

    def repeated(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.repeat_interleave(batch, dim=0).to(device, dtype)

    return {"boxes": repeated(boxes), "positive_embeddings": repeated(embeds), "masks": repeated(masks)}


# --------------------------------------------------------------------------- one sampling run


def fuser_modules(weights: GligenWeights, unet: Any, device: str, dtype: Any) -> tuple[Any, dict[str, Any]]:
    """The adapter's position net and fusers (by block path) as modules holding its own tensors."""
    import torch
    from diffusers.models.attention import GatedSelfAttentionDense
    from diffusers.models.embeddings import GLIGENTextBoundingboxProjection

    fusers_state = check_fits(weights, unet)
    blocks = transformer_blocks(unet)

    def placed(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in state.items()}

    with torch.device("meta"):
        position_net = GLIGENTextBoundingboxProjection(
            weights.phrase_width, weights.width, "text-only", weights.fourier_freqs
        )
    if weights.hidden != 512:
        raise GligenError(f"{weights.name}: its position net is {weights.hidden} wide, GLIGEN's is 512")
    _assign(position_net, placed(weights.position_net), weights.name, "position_net")
    fusers = {}
    for path, block in blocks.items():
        attn = block.attn1
        with torch.device("meta"):
            fuser = GatedSelfAttentionDense(
                int(block.norm1.normalized_shape[0]), weights.width, attn.heads, attn.inner_dim // attn.heads
            )
        _assign(fuser, placed(fusers_state[path]), weights.name, f"the fuser of {path}")
        fusers[path] = fuser
    return position_net, fusers


def _assign(module: Any, state: dict[str, torch.Tensor], name: str, what: str) -> None:
    try:
        module.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:2] or [str(exc)]
        raise GligenError(f"{name}: {what} does not fit GLIGEN's layers ({first[0].strip()})") from None


@dataclass
class GroundedUNet:
    """A UNet view with a GLIGEN adapter installed, and its inputs, for one sampling run."""

    unet: Any
    fusers: list[Any]
    #: ``cross_attention_kwargs["gligen"]``
    inputs: dict[str, torch.Tensor]
    beta: float
    _enabled: bool = field(default=True)

    def at_step(self, index: int, total: int) -> None:
        """Fusers on for the first ``int(beta * total)`` steps (the pipeline's scheduled sampling)."""
        enabled = index < int(self.beta * total)
        if enabled != self._enabled:
            for fuser in self.fusers:
                fuser.enabled = enabled
            self._enabled = enabled


def groundings_of(conds: Sequence[Any]) -> list[Grounding | None]:
    """Each conditioning's grounding (None where it has none)."""
    return [c.extra.get(GROUNDING) for c in conds]


def ground_unet(
    unet: Any,
    conds: Sequence[Any],
    batch: int,
    picture: tuple[int, int],
    family: str,
    device: str,
    dtype: Any,
) -> GroundedUNet:
    """A view of ``unet`` (sharing its weights) with the conditionings' GLIGEN adapter installed, and the
    inputs for rows of ``batch`` pictures per conditioning in ``conds``' order."""
    from models.ip_adapter import weight_sharing_view

    groundings = groundings_of(conds)
    used = [g for g in groundings if g is not None]
    if family not in FAMILIES:
        raise GligenError(
            f"GLIGEN works with SD 1.x and 2.x UNet models; this is a {family} model: sample without the "
            "GLIGEN boxes",
            "model",
        )
    if len({repr(g.adapter_key) for g in used}) > 1:
        names = sorted({g.adapter_name for g in used})
        raise GligenError(
            f"the prompts carry boxes of different GLIGEN adapters ({', '.join(names)}): one run takes "
            "one adapter, so load one GLIGEN file for all the boxes",
            "positive",
        )
    weights = used[0].adapter()
    position_net, fusers = fuser_modules(weights, unet, device, dtype)
    view = weight_sharing_view(unet)
    for path, block in transformer_blocks(view).items():
        block.fuser = fusers[path]
    view.position_net = position_net
    inputs = grounding_inputs(groundings, batch, picture, weights.phrase_width, device, dtype)
    return GroundedUNet(view, list(fusers.values()), inputs, max(g.beta for g in used))


def to_original(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A gated diffusers UNet's adapter tensors (``position_net.*``, ``...fuser.*``; other keys are left
    out) renamed to the original (ComfyUI) layout, for a UNet of ``config``."""
    from models.checkpoint_save import unet_table

    table = unet_table(dict(config))
    prefixes = sorted((p for p in table if ".attentions." in p), key=len, reverse=True)
    out = {}
    for key, tensor in state.items():
        if key.startswith(POSITION_NET):
            out[key] = tensor
        elif FUSER in key:
            prefix = next((p for p in prefixes if key.startswith(p)), None)
            if prefix is None:
                raise GligenError(f"the fuser {key} has no place in the original layout")
            out[table[prefix][0] + key[len(prefix) :]] = tensor
    return out
