"""ControlNet: load one, apply it to a conditioning, and make hint images without weights.

The preprocessors need no model: Canny edges (OpenCV), soft edges (a blurred gradient
magnitude), and a blurred "tile" image; a grayscale hint comes from ImageGrayscale.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from imaging.edges import canny_edges
from imaging.luma import gray_uint8
from nodes import types as T
from nodes.base import Context, Input, Node, NodeInputError, Output, RunSettings
from nodes.image_inputs import as_image
from nodes.support import checkpoint_for, file_state, find_model, manager_of, model_fingerprint, model_input

#: The model input of both ControlNet loaders.
CONTROL_NET_NAME = model_input(
    "control_net_name", "controlnet", "A file or diffusers folder in models/controlnet."
)


class ControlNetLoader(Node):
    display_name = "Load ControlNet Model"
    category = "loaders"
    description = "Load a ControlNet (diffusers folder or single file, SD 1.x or SDXL)."
    inputs = (CONTROL_NET_NAME,)
    outputs = (Output("control_net", T.CONTROL_NET),)

    def fingerprint(self, inputs: Mapping[str, Any], settings: RunSettings) -> str | None:
        return model_fingerprint(settings, "controlnet", inputs.get("control_net_name"))

    def run(self, ctx: Context, control_net_name: str) -> dict[str, Any]:
        from models.loading import CheckpointError, load_controlnet
        from models.safety import PickleRefused, UnsafeOrBrokenFile
        from models.values import ModuleRef

        path = find_model(ctx, "controlnet", "control_net_name", control_net_name)
        manager = manager_of(ctx)
        key = ("controlnet", str(path.resolve()), file_state(path))

        def load() -> Any:
            controlnet = load_controlnet(
                path, device=manager.device, dtype=manager.dtype, allow_pickle=manager.allow_pickle
            )
            manager.install_attention(controlnet)
            return controlnet

        try:
            manager.get(key, load)
        except (CheckpointError, PickleRefused, UnsafeOrBrokenFile) as exc:
            raise NodeInputError("control_net_name", str(exc)) from None
        return {"control_net": ModuleRef(key, manager, load)}


class DiffControlNetLoader(Node):
    display_name = "Load ControlNet Model (diff)"
    category = "loaders"
    description = (
        "Load a ControlNet for a model: 'diff' ControlNet files store only their difference to "
        "the model's weights and need it; ordinary ones load as with ControlNetLoader."
    )
    inputs = (
        Input("model", T.MODEL, description="The model the ControlNet was made against (its base)."),
        CONTROL_NET_NAME,
    )
    outputs = (Output("control_net", T.CONTROL_NET),)

    def fingerprint(self, inputs: Mapping[str, Any], settings: RunSettings) -> str | None:
        return model_fingerprint(settings, "controlnet", inputs.get("control_net_name"))

    def run(self, ctx: Context, model: Any, control_net_name: str) -> dict[str, Any]:
        from models.controlnet_diff import is_difference_file, load_diff_controlnet
        from models.loading import CheckpointError
        from models.merge import model_key
        from models.safety import PickleRefused, UnsafeOrBrokenFile
        from models.values import ModuleRef

        path = find_model(ctx, "controlnet", "control_net_name", control_net_name)
        manager = manager_of(ctx)
        try:
            difference = is_difference_file(path, manager.allow_pickle)
        except (PickleRefused, UnsafeOrBrokenFile, OSError) as exc:
            raise NodeInputError("control_net_name", str(exc)) from None
        if not difference:
            return ControlNetLoader().run(ctx, control_net_name)
        key = ("controlnet-diff", str(path.resolve()), file_state(path), model_key(model))

        def load() -> Any:
            unet = checkpoint_for(model, ctx).unet
            controlnet = load_diff_controlnet(
                path, unet, device=manager.device, dtype=manager.dtype, allow_pickle=manager.allow_pickle
            )
            manager.install_attention(controlnet)
            return controlnet

        try:
            manager.get(key, load)
        except (CheckpointError, PickleRefused, UnsafeOrBrokenFile) as exc:
            raise NodeInputError("control_net_name", str(exc)) from None
        return {"control_net": ModuleRef(key, manager, load)}


class ControlNetApply(Node):
    display_name = "Apply ControlNet"
    category = "conditioning/control"
    description = "Guide a conditioning with a ControlNet and a hint image; chain several to combine."
    inputs = (
        Input("conditioning", T.CONDITIONING),
        Input("control_net", T.CONTROL_NET),
        Input("image", T.IMAGE, description="The hint: edges, depth, a pose... (white on black for edges)."),
        Input("strength", T.FLOAT, default=1.0, min=0.0, max=10.0, step=0.05),
        Input(
            "start",
            T.FLOAT,
            default=0.0,
            min=0.0,
            max=1.0,
            step=0.01,
            description="From which fraction of the steps it acts.",
        ),
        Input(
            "end",
            T.FLOAT,
            default=1.0,
            min=0.0,
            max=1.0,
            step=0.01,
            description="Until which fraction of the steps it acts.",
        ),
    )
    outputs = (Output("conditioning", T.CONDITIONING),)

    def run(
        self,
        ctx: Context,
        conditioning: Any,
        control_net: Any,
        image: np.ndarray,
        strength: float,
        start: float,
        end: float,
    ) -> dict[str, Any]:
        import torch

        from models.sampling import ControlHint

        if end <= start:
            raise NodeInputError("end", f"end ({end}) must be after start ({start})")
        image = as_image("image", image)
        hint = torch.from_numpy(np.ascontiguousarray(image[:1])).permute(0, 3, 1, 2).contiguous()
        control = ControlHint(model=control_net.get, image=hint, strength=strength, start=start, end=end)
        return {"conditioning": tuple(c.with_(controls=(*c.controls, control)) for c in conditioning)}


class CannyEdges(Node):
    category = "image/preprocess"
    description = "White Canny edges on black (OpenCV), the hint for a canny ControlNet."
    inputs = (
        Input("image", T.IMAGE),
        Input("low_threshold", T.INT, default=100, min=0, max=255),
        Input("high_threshold", T.INT, default=200, min=0, max=255),
    )
    outputs = (Output("image", T.IMAGE),)

    def run(self, ctx: Context, image: np.ndarray, low_threshold: int, high_threshold: int) -> dict[str, Any]:
        if high_threshold < low_threshold:
            raise NodeInputError("high_threshold", "must be at least low_threshold")
        image = as_image("image", image)
        out = canny_edges(image, low_threshold, high_threshold).astype(np.float32) / 255.0
        return {"image": np.repeat(out[..., None], 3, axis=-1)}


class SoftEdges(Node):
    category = "image/preprocess"
    description = "Soft edges: the blurred gradient strength, for soft-edge / HED-style ControlNets."
    inputs = (
        Input("image", T.IMAGE),
        Input(
            "blur", T.FLOAT, default=1.5, min=0.0, max=20.0, step=0.1, description="Blur before, in pixels."
        ),
    )
    outputs = (Output("image", T.IMAGE),)

    def run(self, ctx: Context, image: np.ndarray, blur: float) -> dict[str, Any]:
        import cv2

        image = as_image("image", image)
        out = []
        for gray in gray_uint8(image):
            g = gray.astype(np.float32) / 255.0
            if blur > 0:
                g = cv2.GaussianBlur(g, (0, 0), blur)
            dx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
            dy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
            magnitude = np.sqrt(dx * dx + dy * dy)
            peak = float(magnitude.max())
            out.append(magnitude / peak if peak > 0 else magnitude)
        stacked = np.stack(out).astype(np.float32)
        return {"image": np.repeat(stacked[..., None], 3, axis=-1)}


class TileBlur(Node):
    category = "image/preprocess"
    description = "A blurred copy (downscaled and back), the hint for a tile ControlNet."
    inputs = (
        Input("image", T.IMAGE),
        Input("factor", T.INT, default=4, min=1, max=64, description="How much smaller the detail becomes."),
    )
    outputs = (Output("image", T.IMAGE),)

    def run(self, ctx: Context, image: np.ndarray, factor: int) -> dict[str, Any]:
        import cv2

        image = as_image("image", image)
        height, width = image.shape[1:3]
        small = (max(1, width // factor), max(1, height // factor))
        out = [
            cv2.resize(
                cv2.resize(frame, small, interpolation=cv2.INTER_AREA),
                (width, height),
                interpolation=cv2.INTER_CUBIC,
            )
            for frame in image
        ]
        return {"image": np.clip(np.stack(out), 0, 1).astype(np.float32)}


NODES = (ControlNetLoader, DiffControlNetLoader, ControlNetApply, CannyEdges, SoftEdges, TileBlur)
