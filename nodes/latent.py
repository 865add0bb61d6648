"""Latent nodes: scale latents (hires fix), paste one into another, blend two.

They follow ComfyUI's LatentUpscale, LatentUpscaleBy, LatentComposite and LatentBlend, so
imported workflows behave the same. Sizes and positions are given in pixels, as there; a
pixel is ``scale`` latent cells across, where ``scale`` is how much the VAE shrinks a picture
(8 for Stable Diffusion's, 4 for the bundled toy model's). A LATENT does not know its VAE,
so the nodes that turn pixels into latent cells take an optional ``vae`` and assume 8
without one, as ComfyUI always does.

torch is imported inside the functions only, so listing nodes stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from imaging.crop import center_crop_box
from nodes import types as T
from nodes.base import Context, Input, Node, NodeInputError, Output
from nodes.limits import MAX_SIZE, check_pixel_budget

if TYPE_CHECKING:
    import torch

    from models.values import Latent

#: How a latent is resized; ComfyUI's names. bislerp interpolates directions on the sphere.
UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "bislerp")
#: disabled: stretch to the new size; center: first cut the centre to the new aspect ratio.
CROP_METHODS = ("disabled", "center")
#: How much Stable Diffusion's VAE shrinks a picture: assumed when no VAE is connected.
DEFAULT_VAE_SCALE = 8

VAE_INPUT = Input(
    "vae",
    T.VAE,
    optional=True,
    description="Connect the VAE so pixel sizes become latent sizes correctly for it; "
    "without it a VAE that shrinks by 8 (Stable Diffusion's) is assumed.",
)
METHOD_INPUT = Input(
    "upscale_method",
    T.STRING,
    default="nearest-exact",
    choices=UPSCALE_METHODS,
    accepts="constant",
    description="nearest-exact repeats cells; bilinear, bicubic and area blend them; bislerp blends "
    "their directions on a sphere, which keeps the latents' strength (sharper hires fixes).",
)


def vae_scale(vae: Any) -> int:
    """How many pixels one latent cell covers across, for ``vae`` (8 when not given)."""
    if vae is None:
        return DEFAULT_VAE_SCALE
    return 2 ** (len(vae.get().config.block_out_channels) - 1)


# -- resizing ------------------------------------------------------------------------------------


def resize_latents(samples: torch.Tensor, height: int, width: int, method: str, crop: str) -> torch.Tensor:
    """Resize (batch, channels, h, w) to ``height`` x ``width`` cells, cutting the centre first if asked."""
    import torch.nn.functional as F

    if crop == "center":
        top, bottom, left, right = center_crop_box(samples.shape[-2], samples.shape[-1], height, width)
        samples = samples[..., top:bottom, left:right]
    if method == "bislerp":
        return bislerp(samples, height, width)
    return F.interpolate(samples.float(), size=(height, width), mode=method)


def _axis_sources(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each output position along one axis: the two source cells and the share of the second.

    Cell centres line up as in bilinear resizing without corner alignment: output ``j`` reads
    source position ``(j + 0.5) * n_in / n_out - 0.5``, held inside the picture.
    """
    import torch

    position = (torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5
    position = position.clamp(0.0, n_in - 1)
    first = position.floor().long()
    second = (first + 1).clamp(max=n_in - 1)
    return first, second, (position - first).float()


def slerp_vectors(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of channel vectors (last dimension) with linearly blended lengths.

    The direction moves along the great circle from ``a``'s to ``b``'s by the share ``t``;
    the length is ``(1 - t) |a| + t |b|``. A zero vector has no direction (it counts as
    perpendicular to everything, as in ComfyUI). Nearly parallel vectors blend linearly
    (the limit of the formula; ComfyUI copies ``a`` there); nearly opposite ones too, as in ComfyUI.
    """
    import torch

    t = t.unsqueeze(-1)
    norm_a = a.norm(dim=-1, keepdim=True)
    norm_b = b.norm(dim=-1, keepdim=True)
    unit_a = torch.where(norm_a > 0, a / norm_a.clamp_min(1e-30), torch.zeros_like(a))
    unit_b = torch.where(norm_b > 0, b / norm_b.clamp_min(1e-30), torch.zeros_like(b))
    dot = (unit_a * unit_b).sum(-1, keepdim=True)
    omega = torch.acos(dot.clamp(-1.0, 1.0))
    sin_omega = torch.sin(omega)
    safe = sin_omega.clamp_min(1e-12)
    direction = (torch.sin((1.0 - t) * omega) * unit_a + torch.sin(t * omega) * unit_b) / safe
    spherical = direction * ((1.0 - t) * norm_a + t * norm_b)
    linear = (1.0 - t) * a + t * b
    degenerate = (dot > 1.0 - 1e-5) | (dot < -1.0 + 1e-5)
    return torch.where(degenerate, linear, spherical)


def bislerp(samples: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize (batch, channels, h, w) by spherical-linear interpolation: along the width, then the height.

    Like bilinear resizing, but each pixel's channel vector is interpolated in direction
    (slerp) and length separately, so blending two different latents does not shrink them
    towards zero the way averaging does (ComfyUI's ``bislerp``).
    """
    dtype = samples.dtype
    x = samples.float().movedim(1, -1)  # (batch, h, w, channels)
    first, second, t = _axis_sources(x.shape[2], width)
    x = slerp_vectors(x[:, :, first], x[:, :, second], t[None, None, :])
    first, second, t = _axis_sources(x.shape[1], height)
    x = slerp_vectors(x[:, first], x[:, second], t[None, :, None])
    return x.movedim(-1, 1).contiguous().to(dtype)


def resized_latent(latent: Latent, height: int, width: int, method: str, crop: str) -> Latent:
    """``latent`` at a new size: the samples by ``method``, its inpainting mask bilinearly.

    The encoder's spread (``std``) is dropped: it no longer matches the resized latents, so
    the sampler starts from them as they are.
    """
    samples = resize_latents(latent.samples, height, width, method, crop)
    mask = latent.noise_mask
    if mask is not None:
        mask = resize_latents(mask, height, width, "bilinear", crop).clamp(0.0, 1.0)
    masked = latent.masked_image
    if masked is not None:
        masked = resize_latents(masked, height, width, method, crop)
    inpaint = latent.inpaint_mask  # a 9-channel model's 0/1 mask: stays 0/1
    if inpaint is not None:
        inpaint = resize_latents(inpaint, height, width, "bilinear", crop).round()
    return latent.with_(
        samples=samples,
        std=None,
        noise_mask=mask,
        masked_image=masked,
        masked_image_std=None,
        inpaint_mask=inpaint,
    )


def _latent_size_text(samples: torch.Tensor, scale: int) -> str:
    height, width = samples.shape[-2:]
    return f"{width * scale}x{height * scale} pixels ({width}x{height} latent cells)"


class LatentUpscale(Node):
    display_name = "Upscale Latent"
    category = "latent"
    description = (
        "Resize a latent to a size in pixels (for a hires fix: upscale, then sample again with "
        "denoise about 0.5). Set width or height to 0 to keep the aspect ratio."
    )
    inputs = (
        Input("latent", T.LATENT),
        METHOD_INPUT,
        Input(
            "width",
            T.INT,
            default=512,
            min=0,
            max=MAX_SIZE,
            step=8,
            description="In pixels; 0 follows the height, keeping the aspect ratio.",
        ),
        Input(
            "height",
            T.INT,
            default=512,
            min=0,
            max=MAX_SIZE,
            step=8,
            description="In pixels; 0 follows the width, keeping the aspect ratio.",
        ),
        Input(
            "crop",
            T.STRING,
            default="disabled",
            choices=CROP_METHODS,
            accepts="constant",
            description="disabled stretches to the new size; center first cuts the middle to its "
            "aspect ratio.",
        ),
        VAE_INPUT,
    )
    outputs = (Output("latent", T.LATENT),)

    def run(
        self,
        ctx: Context,
        latent: Latent,
        upscale_method: str,
        width: int,
        height: int,
        crop: str,
        vae: Any = None,
    ) -> dict[str, Any]:
        scale = vae_scale(vae)
        cells_h, cells_w = latent.samples.shape[-2:]
        if width == 0 and height == 0:
            raise NodeInputError(
                "width", "width and height are both 0: give at least one (0 keeps the aspect ratio)"
            )
        if width == 0:
            width = round(cells_w * height / cells_h)
        elif height == 0:
            height = round(cells_h * width / cells_w)
        new_w, new_h = width // scale, height // scale
        for name, pixels, cells in (("width", width, new_w), ("height", height, new_h)):
            if cells == 0:
                raise NodeInputError(
                    name, f"{pixels} pixels is less than one latent cell ({scale} pixels for this VAE)"
                )
        check_pixel_budget("width", latent.samples.shape[0], new_h * scale, new_w * scale)
        return {"latent": resized_latent(latent, new_h, new_w, upscale_method, crop)}


class LatentUpscaleBy(Node):
    display_name = "Upscale Latent By"
    category = "latent"
    description = (
        "Resize a latent by a factor (for a hires fix: 2x, then sample again with denoise about 0.5)."
    )
    inputs = (
        Input("latent", T.LATENT),
        METHOD_INPUT,
        Input(
            "scale_by",
            T.FLOAT,
            default=1.5,
            min=0.01,
            max=8.0,
            step=0.01,
            description="The new width and height over the old (rounded to whole latent cells).",
        ),
        Input(
            "vae",
            T.VAE,
            optional=True,
            description="Connect the VAE to check the decoded picture's size for it "
            "(without it a VAE that shrinks by 8 is assumed).",
        ),
    )
    outputs = (Output("latent", T.LATENT),)

    def run(
        self, ctx: Context, latent: Latent, upscale_method: str, scale_by: float, vae: Any = None
    ) -> dict[str, Any]:
        cells_h, cells_w = latent.samples.shape[-2:]
        new_w, new_h = round(cells_w * scale_by), round(cells_h * scale_by)
        if new_w == 0 or new_h == 0:
            raise NodeInputError(
                "scale_by",
                f"{scale_by} makes the latent ({cells_w}x{cells_h} cells) smaller than one cell; "
                "use a larger factor",
            )
        scale = vae_scale(vae)
        check_pixel_budget("scale_by", latent.samples.shape[0], new_h * scale, new_w * scale)
        return {"latent": resized_latent(latent, new_h, new_w, upscale_method, "disabled")}


# -- composite and blend --------------------------------------------------------------------------


def common_batch(name: str, first: torch.Tensor, second: torch.Tensor, names: tuple[str, str]) -> int:
    """The batch both latents become (a batch of one is repeated); raise on ``name`` otherwise."""
    a, b = first.shape[0], second.shape[0]
    if a != b and 1 not in (a, b):
        raise NodeInputError(
            name,
            f"{names[0]} holds {a} latents and {names[1]} {b}; give batches of the same size, "
            "or a batch of one",
        )
    return max(a, b)


def check_channels(name: str, first: torch.Tensor, second: torch.Tensor, names: tuple[str, str]) -> None:
    if first.shape[1] != second.shape[1]:
        raise NodeInputError(
            name,
            f"{names[1]} has {second.shape[1]} channels but {names[0]} has {first.shape[1]}: "
            "they come from different kinds of model; use latents of the same model",
        )


def repeat_to(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    """``tensor`` with its batch of one repeated to ``batch`` (unchanged when it already is)."""
    return tensor if tensor.shape[0] == batch else tensor.repeat(batch, *([1] * (tensor.dim() - 1)))


def feather_weights(
    height: int, width: int, feather: int, sides: tuple[bool, bool, bool, bool]
) -> torch.Tensor:
    """(height, width) weights of a pasted piece: 1 inside, ramping down over ``feather`` cells.

    ``sides`` (top, bottom, left, right) says which edges are feathered: those that lie
    inside the destination (an edge on the destination's border stays hard). The k-th row
    or column from a feathered edge (k = 0, 1, ...) is weighted ``(k + 1) / feather``;
    a corner gets the product of its two ramps, as in ComfyUI.
    """
    import torch

    weights = torch.ones(height, width)
    if feather <= 0:
        return weights
    ramp = (torch.arange(feather, dtype=torch.float32) + 1.0) / feather
    top, bottom, left, right = sides
    rows, cols = min(feather, height), min(feather, width)
    if top:
        weights[:rows] *= ramp[:rows, None]
    if bottom:
        weights[height - rows :] *= ramp[:rows].flip(0)[:, None]
    if left:
        weights[:, :cols] *= ramp[:cols]
    if right:
        weights[:, width - cols :] *= ramp[:cols].flip(0)
    return weights


class LatentComposite(Node):
    category = "latent"
    description = (
        "Paste one latent into another at x, y (in pixels), cut off at the edges; feather "
        "fades the pasted edges in over that many pixels."
    )
    inputs = (
        Input("samples_to", T.LATENT, description="The latent pasted into."),
        Input("samples_from", T.LATENT, description="The latent pasted; any size."),
        Input("x", T.INT, default=0, min=0, max=MAX_SIZE, step=8, description="Left edge, in pixels."),
        Input("y", T.INT, default=0, min=0, max=MAX_SIZE, step=8, description="Top edge, in pixels."),
        Input(
            "feather",
            T.INT,
            default=0,
            min=0,
            max=MAX_SIZE,
            step=8,
            description="Width in pixels of the fade at the pasted edges that lie inside the "
            "destination; 0 pastes with hard edges.",
        ),
        VAE_INPUT,
    )
    outputs = (Output("latent", T.LATENT),)

    def run(
        self,
        ctx: Context,
        samples_to: Latent,
        samples_from: Latent,
        x: int,
        y: int,
        feather: int,
        vae: Any = None,
    ) -> dict[str, Any]:
        names = ("samples_to", "samples_from")
        dest, source = samples_to.samples, samples_from.samples
        check_channels("samples_from", dest, source, names)
        batch = common_batch("samples_from", dest, source, names)
        scale = vae_scale(vae)
        left, top, fade = x // scale, y // scale, feather // scale
        dest_h, dest_w = dest.shape[-2:]
        size = f"samples_to is {_latent_size_text(dest, scale)}"
        if left >= dest_w:
            raise NodeInputError("x", f"x = {x} is past the right edge: {size}; use a smaller x")
        if top >= dest_h:
            raise NodeInputError("y", f"y = {y} is past the bottom edge: {size}; use a smaller y")
        piece = source[..., : dest_h - top, : dest_w - left]
        height, width = piece.shape[-2:]
        sides = (top > 0, top + height < dest_h, left > 0, left + width < dest_w)
        weight = feather_weights(height, width, fade, sides)
        out = repeat_to(dest, batch).clone()
        region = out[..., top : top + height, left : left + width]
        region.copy_(repeat_to(piece, batch) * weight + region * (1.0 - weight))
        return {"latent": samples_to.with_(samples=out, std=None)}


class LatentBlend(Node):
    category = "latent"
    description = (
        "Mix two latents: blend_factor of samples1 and the rest of samples2 (samples2 is resized "
        "to samples1's size first when they differ)."
    )
    inputs = (
        Input("samples1", T.LATENT),
        Input("samples2", T.LATENT),
        Input(
            "blend_factor",
            T.FLOAT,
            default=0.5,
            min=0.0,
            max=1.0,
            step=0.01,
            description="The share of samples1: 1 gives samples1, 0 gives samples2.",
        ),
    )
    outputs = (Output("latent", T.LATENT),)

    def run(self, ctx: Context, samples1: Latent, samples2: Latent, blend_factor: float) -> dict[str, Any]:
        names = ("samples1", "samples2")
        first, second = samples1.samples, samples2.samples
        check_channels("samples2", first, second, names)
        batch = common_batch("samples2", first, second, names)
        if second.shape[-2:] != first.shape[-2:]:  # as ComfyUI: bicubic, centre cut to the aspect ratio
            second = resize_latents(second, first.shape[-2], first.shape[-1], "bicubic", "center")
        mixed = repeat_to(first, batch) * blend_factor + repeat_to(second, batch) * (1.0 - blend_factor)
        return {"latent": samples1.with_(samples=mixed.contiguous(), std=None)}


class RepeatLatentBatch(Node):
    category = "latent/batch"
    description = (
        "Repeat a latent batch 'amount' times (e.g. one encoded image four times, to sample four "
        "variations with different noise)."
    )
    inputs = (
        Input("latent", T.LATENT),
        Input("amount", T.INT, default=1, min=1, max=64, description="How many copies of the batch."),
    )
    outputs = (Output("latent", T.LATENT),)

    def run(self, ctx: Context, latent: Latent, amount: int) -> dict[str, Any]:
        batch = latent.samples.shape[0]
        height, width = (side * DEFAULT_VAE_SCALE for side in latent.samples.shape[-2:])
        check_pixel_budget("amount", batch * amount, height, width)

        def repeated(tensor: torch.Tensor | None) -> torch.Tensor | None:
            """A tensor of the batch's size repeated with it; one of batch 1 applies to all as it is."""
            if tensor is None or (tensor.shape[0] != batch and tensor.shape[0] == 1):
                return tensor
            return tensor.repeat(amount, *([1] * (tensor.dim() - 1)))

        return {
            "latent": latent.with_(
                samples=repeated(latent.samples),
                std=repeated(latent.std),
                noise_mask=repeated(latent.noise_mask),
                masked_image=repeated(latent.masked_image),
                masked_image_std=repeated(latent.masked_image_std),
                inpaint_mask=repeated(latent.inpaint_mask),
            )
        }


# -- crop -----------------------------------------------------------------------------------------

#: ComfyUI's LatentCrop keeps at least this many pixels across from x and y to the far edges.
MIN_CROP_PIXELS = 64


class LatentCrop(Node):
    display_name = "Crop Latent"
    category = "latent/transform"
    description = (
        "Cut a rectangle out of a latent, given in pixels: its top-left corner x, y and its size "
        "(cut off at the edges). As ComfyUI, x and y are held at least 64 pixels from the far edges."
    )
    inputs = (
        Input("latent", T.LATENT),
        Input("width", T.INT, default=512, min=8, max=MAX_SIZE, step=8, description="In pixels."),
        Input("height", T.INT, default=512, min=8, max=MAX_SIZE, step=8, description="In pixels."),
        Input("x", T.INT, default=0, min=0, max=MAX_SIZE, step=8, description="Left edge, in pixels."),
        Input("y", T.INT, default=0, min=0, max=MAX_SIZE, step=8, description="Top edge, in pixels."),
        VAE_INPUT,
    )
    outputs = (Output("latent", T.LATENT),)

    def run(
        self, ctx: Context, latent: Latent, width: int, height: int, x: int, y: int, vae: Any = None
    ) -> dict[str, Any]:
        scale = vae_scale(vae)
        cells_h, cells_w = latent.samples.shape[-2:]
        keep = MIN_CROP_PIXELS // scale
        left = max(0, min(x // scale, cells_w - keep))
        top = max(0, min(y // scale, cells_h - keep))
        new_w, new_h = width // scale, height // scale
        for name, pixels, cells in (("width", width, new_w), ("height", height, new_h)):
            if cells == 0:
                raise NodeInputError(
                    name, f"{pixels} pixels is less than one latent cell ({scale} pixels for this VAE)"
                )

        def cropped(tensor: torch.Tensor | None) -> torch.Tensor | None:
            """The same region of a tensor on the latent grid (a mask of another size as it is)."""
            if tensor is None or tensor.shape[-2:] != (cells_h, cells_w):
                return tensor
            return tensor[..., top : top + new_h, left : left + new_w].contiguous()

        return {
            "latent": latent.with_(
                samples=cropped(latent.samples),
                std=cropped(latent.std),
                noise_mask=cropped(latent.noise_mask),
                masked_image=cropped(latent.masked_image),
                masked_image_std=cropped(latent.masked_image_std),
                inpaint_mask=cropped(latent.inpaint_mask),
            )
        }


NODES = (LatentUpscale, LatentUpscaleBy, LatentComposite, LatentBlend, RepeatLatentBatch, LatentCrop)
