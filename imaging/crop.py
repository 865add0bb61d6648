"""Where a centre crop cuts: shared by latent resizing (nodes/latent.py) and the pictures an editing
UNet sees (models/concat_image.py), both as ComfyUI's ``center`` crop."""

from __future__ import annotations


def center_crop_box(height: int, width: int, new_height: int, new_width: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the centred region with the new size's aspect ratio.

    As ComfyUI's ``center`` crop: an equal margin (rounded) is cut from both sides.
    """
    old_aspect, new_aspect = width / height, new_width / new_height
    left = top = 0
    if old_aspect > new_aspect:
        left = round((width - width * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        top = round((height - height * (old_aspect / new_aspect)) / 2)
    return top, height - top, left, width - left
