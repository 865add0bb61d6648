"""What a conditioning carries besides its text: where it applies, SDXL's size hints, and
the arithmetic of mixing two conditionings (ComfyUI's average and concat).

An :class:`Area` is kept as the user gave it (pixels or fractions) and resolved only when
sampling, against the latent grid and the VAE's scale, because the same conditioning may
meet latents of any size and VAEs that shrink by 4 or by 8.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from models.values import Cond


class AreaOutside(ValueError):
    """An area that does not overlap the picture being sampled."""


@dataclass(frozen=True)
class Area:
    """A box a conditioning is limited to: in ``pixels`` (ConditioningSetArea) or as ``fraction``\\ s
    of the picture (ConditioningSetAreaPercentage)."""

    unit: str  # "pixels" | "fraction"
    x: float
    y: float
    width: float
    height: float

    def cells(self, rows: int, cols: int, scale: int) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) on a latent grid of ``rows`` x ``cols`` cells, each ``scale``
        pixels wide; a box partly outside the picture is cut to it (as ComfyUI does), one entirely
        outside is an :class:`AreaOutside` error."""
        if self.unit == "pixels":
            # ComfyUI floors each number to whole latent cells
            top, left = int(self.y) // scale, int(self.x) // scale
            height, width = int(self.height) // scale, int(self.width) // scale
        else:
            top, left = round(self.y * rows), round(self.x * cols)
            height, width = max(1, round(self.height * rows)), max(1, round(self.width * cols))
        bottom, right = min(rows, top + height), min(cols, left + width)
        if top >= bottom or left >= right:
            raise AreaOutside(self._outside_message(rows, cols, scale))
        return top, bottom, left, right

    def _outside_message(self, rows: int, cols: int, scale: int) -> str:
        if self.unit == "pixels":
            box = f"{self.width:g}x{self.height:g} px at x={self.x:g}, y={self.y:g}"
            picture = f"the {cols * scale}x{rows * scale} px picture"
            return (
                f"the area {box} (ConditioningSetArea) lies outside {picture} "
                "(or is smaller than one latent cell); move x/y inside it or make it larger"
            )
        box = f"{self.width:g}x{self.height:g} at x={self.x:g}, y={self.y:g}"
        return (
            f"the area {box} (ConditioningSetAreaPercentage) lies outside the picture; "
            "x and y must be below 1"
        )


@dataclass(frozen=True)
class SizeConditioning:
    """SDXL's micro-conditioning of one prompt (ComfyUI's width/height/crop/target keys).

    ``width``/``height`` are the original size, ``crop_left``/``crop_top`` the crop's top-left
    corner, ``target_*`` the target size; ``aesthetic_score`` is for refiner UNets. ``None``
    means the sampler's default: the picture's size, no crop, the size as target, and an
    aesthetic score of 6 (positive) or 2.5 (negative), as ComfyUI's.
    """

    width: int | None = None
    height: int | None = None
    crop_left: int = 0
    crop_top: int = 0
    target_width: int | None = None
    target_height: int | None = None
    aesthetic_score: float | None = None

    def time_ids(self, picture: tuple[int, int], count: int, negative: bool) -> list[float]:
        """The UNet's ``time_ids`` for a picture (height, width): 6 numbers for an SDXL base
        (original size, crop corner, target size), 5 for a refiner (original size, crop corner,
        aesthetic score); the order is diffusers' (height before width, top before left)."""
        height = self.height if self.height is not None else picture[0]
        width = self.width if self.width is not None else picture[1]
        ids = [height, width, self.crop_top, self.crop_left]
        if count == 5:
            default = 2.5 if negative else 6.0
            return [*ids, self.aesthetic_score if self.aesthetic_score is not None else default]
        target_height = self.target_height if self.target_height is not None else height
        target_width = self.target_width if self.target_width is not None else width
        return [*ids, target_height, target_width]


def average(to: Cond, source: Cond, to_strength: float) -> Cond:
    """ComfyUI's ConditioningAverage for one entry: ``to * s + source * (1 - s)``, ``source``'s
    tokens cut or zero-padded to ``to``'s count; pooled embeddings (SDXL) averaged the same way,
    or ``source``'s taken when ``to`` has none. Everything else is ``to``'s."""
    import torch

    tokens = to.embeds.shape[1]
    other = source.embeds[:, :tokens].to(to.embeds.dtype)
    if other.shape[1] < tokens:
        pad = torch.zeros(1, tokens - other.shape[1], to.embeds.shape[2], dtype=other.dtype)
        other = torch.cat([other, pad], dim=1)
    embeds = to.embeds * to_strength + other * (1.0 - to_strength)
    pooled = to.pooled if to.pooled is not None else source.pooled
    if to.pooled is not None and source.pooled is not None:
        pooled = to.pooled * to_strength + source.pooled * (1.0 - to_strength)
    return to.with_(embeds=embeds, pooled=pooled)


def concat(to: Cond, source: Cond) -> Cond:
    """ComfyUI's ConditioningConcat for one entry: ``source``'s tokens appended to ``to``'s."""
    import torch

    return to.with_(embeds=torch.cat([to.embeds, source.embeds.to(to.embeds.dtype)], dim=1))


def check_widths(to: torch.Tensor, source: torch.Tensor) -> str | None:
    """Why two conditionings' token vectors cannot be mixed, or None when they can."""
    if to.shape[-1] != source.shape[-1]:
        return (
            f"its token vectors are {source.shape[-1]} wide but conditioning_to's are {to.shape[-1]}: "
            "both must come from the same kind of text encoder"
        )
    return None
