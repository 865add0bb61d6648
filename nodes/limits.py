"""How large a picture any node may make: one budget, used by every node that makes pixels.

A node that creates an image or a mask, or makes one larger (resize, pad, a batch
repeated), checks the size of its result with :func:`check_pixel_budget` before it
allocates anything, so a workflow asking for too much fails with a clear error naming
the input to change instead of exhausting the machine's memory. Image files are
checked too: Pillow refuses pictures whose header claims more pixels than it allows
(image "bombs"), and :func:`bomb_text` says so in plain words.
"""

from __future__ import annotations

import re

from nodes.base import NodeInputError

#: The largest width or height any node makes or takes as a number.
MAX_SIZE = 16384

#: The most pixels (batch x height x width) one node may make: 2**28, one 16384x16384
#: picture, about 3 GiB as float32 RGB.
MAX_PIXELS = 2**28


def check_pixel_budget(name: str, batch: int, height: int, width: int, channels: int = 3) -> None:
    """Raise a :class:`NodeInputError` on ``name`` when the result would be over the budget."""
    pixels = batch * height * width
    if pixels > MAX_PIXELS:
        gib = pixels * channels * 4 / 2**30
        raise NodeInputError(
            name,
            f"the result would be {batch} x {width}x{height} pixels (about {gib:.0f} GiB); "
            f"make it smaller (at most {MAX_PIXELS:,} pixels in all)",
        )


def bomb_text(exc: Exception) -> str:
    """Pillow's DecompressionBombError (or Warning) as a plain sentence: the pixels and the limit."""
    found = [int(a or b) for a, b in re.findall(r"\((\d+) pixels\)|limit of (\d+)", str(exc))]
    if len(found) == 2:
        return (
            f"it has {found[0]:,} pixels, more than the {found[1]:,} allowed "
            "(a picture this large can exhaust the memory); use a smaller image"
        )
    return (
        "it has more pixels than allowed (a picture this large can exhaust the memory); use a smaller image"
    )
