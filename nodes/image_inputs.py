"""What nodes that take pictures share: IMAGE and MASK inputs checked (each error naming the input
and what to do), their sizes compared, and batches of one matched to others.

Every IMAGE is a float32 array (batch, height, width, 3) in [0, 1]; every MASK is float32 (batch,
height, width) in [0, 1] (see :mod:`nodes.types`). Pure image functions live in :mod:`imaging`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nodes.base import NodeInputError


def as_image(name: str, value: Any) -> np.ndarray:
    """Check that ``value`` is an IMAGE (batch, height, width, 3); return it as float32."""
    if not isinstance(value, np.ndarray):
        raise NodeInputError(name, f"expects an IMAGE (an array), got {type(value).__name__}")
    if value.ndim == 3 and value.shape[-1] == 3:
        value = value[None]
    if value.ndim != 4 or value.shape[-1] != 3 or 0 in value.shape:
        raise NodeInputError(
            name, f"expects an IMAGE of shape (batch, height, width, 3), got shape {value.shape}"
        )
    return value.astype(np.float32, copy=False)


def as_mask(name: str, value: Any) -> np.ndarray:
    """Check that ``value`` is a MASK (batch, height, width); return it as float32."""
    if not isinstance(value, np.ndarray):
        raise NodeInputError(name, f"expects a MASK (an array), got {type(value).__name__}")
    if value.ndim == 2:
        value = value[None]
    if value.ndim != 3 or 0 in value.shape:
        raise NodeInputError(name, f"expects a MASK of shape (batch, height, width), got shape {value.shape}")
    return value.astype(np.float32, copy=False)


def size_text(array: np.ndarray) -> str:
    """``width x height`` of an IMAGE or MASK, as people say it."""
    return f"{array.shape[2]}x{array.shape[1]}"


def check_same_size(
    name: str,
    first: np.ndarray,
    second: np.ndarray,
    first_name: str,
    second_name: str,
    fix: str = "put an ImageResize (or an ImageCrop or ImagePad) in front of one of them",
) -> None:
    """Raise on ``name`` unless both arrays have the same height and width."""
    if first.shape[1:3] != second.shape[1:3]:
        raise NodeInputError(
            name,
            f"{second_name} is {size_text(second)} but {first_name} is {size_text(first)} "
            f"(width x height); they must be the same size: {fix}",
        )


def batch_size_of(name: str, *arrays: np.ndarray) -> int:
    """The common batch size, where a batch of one matches any other; raise on ``name`` otherwise."""
    sizes = {a.shape[0] for a in arrays}
    sizes.discard(1)
    if len(sizes) > 1:
        shown = " and ".join(str(a.shape[0]) for a in arrays)
        raise NodeInputError(
            name, f"batch sizes {shown} do not match; give batches of the same size, or a batch of one"
        )
    return sizes.pop() if sizes else 1


def repeat_batch(array: np.ndarray, batch: int) -> np.ndarray:
    """``array`` with its batch of one repeated to ``batch`` (unchanged when it already is)."""
    if array.shape[0] == batch:
        return array
    return np.repeat(array, batch, axis=0)
