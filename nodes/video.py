"""Image to video with Stable Video Diffusion, and saving frames as animations and videos.

ComfyUI's node and input names: ImageOnlyCheckpointLoader loads an SVD checkpoint,
SVD_img2vid_Conditioning turns a picture into the video's conditioning and an empty latent of
``video_frames`` frames, VideoLinearCFGGuidance / VideoTriangleCFGGuidance let the guidance change
over the frames; KSampler (euler) samples it and VAEDecode gives the frames as an IMAGE batch.

SaveAnimatedWEBP, SaveAnimatedPNG, SaveAnimatedGIF and SaveVideo (MP4, H.264 through PyAV) write
a batch of frames as one file in the output folder, named and guarded as SaveImage names its
pictures (the next free ``prefix_00001.ext``, never overwriting), and report it as SaveImage does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from nodes import types as T
from nodes.base import Context, Input, Node, NodeInputError, Output, RunSettings
from nodes.image_inputs import as_image
from nodes.saving import output_folder, to_uint8, write_exclusive
from nodes.support import file_state, find_model, manager_of, model_fingerprint, model_input

# --------------------------------------------------------------------------- the model


class ImageOnlyCheckpointLoader(Node):
    display_name = "Image Only Checkpoint Loader (img2vid model)"
    category = "loaders/video"
    description = (
        "Load a Stable Video Diffusion checkpoint (svd.safetensors, svd_xt.safetensors or a diffusers "
        "folder): its video model, its CLIP vision image encoder and its VAE."
    )
    inputs = (
        model_input("ckpt_name", "checkpoints", "An SVD file or diffusers folder in models/checkpoints."),
    )
    outputs = (Output("model", T.MODEL), Output("clip_vision", T.CLIP_VISION), Output("vae", T.VAE))

    def fingerprint(self, inputs: Mapping[str, Any], settings: RunSettings) -> str | None:
        return model_fingerprint(settings, "checkpoints", inputs.get("ckpt_name"))

    def run(self, ctx: Context, ckpt_name: str) -> dict[str, Any]:
        from models.loading import CheckpointError
        from models.safety import PickleRefused, UnsafeOrBrokenFile
        from models.svd import IMAGE_ENCODER, ExtraRef, load_svd
        from models.values import CheckpointRef, ModelRef, ModuleRef

        path = find_model(ctx, "checkpoints", "ckpt_name", ckpt_name)
        manager = manager_of(ctx)
        key = ("svd-checkpoint", str(path.resolve()), file_state(path))

        def load() -> Any:
            loaded = load_svd(
                path, device=manager.device, dtype=manager.dtype, allow_pickle=manager.allow_pickle
            )
            manager.install_attention(loaded.unet)  # spatial and temporal layers use stock processors
            return loaded

        try:
            checkpoint = manager.get(key, load)
        except (CheckpointError, PickleRefused, UnsafeOrBrokenFile) as exc:
            raise NodeInputError("ckpt_name", str(exc)) from None
        return {
            "model": ModelRef(CheckpointRef(key, manager, load, checkpoint.family)),
            "clip_vision": ExtraRef(key, manager, load, part=IMAGE_ENCODER),
            "vae": ModuleRef(key, manager, load, part="vae"),
        }


def video_image_embeds(encoder: Any, image: np.ndarray) -> Any:
    """The picture's CLIP image embedding (1, 1, dim) as StableVideoDiffusionPipeline makes it:
    stretched to the encoder's square size with its antialiased resize, CLIP's mean and std."""
    import torch
    from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
        _resize_with_antialiasing,
    )

    from models.clip_vision import CLIP_MEAN, CLIP_STD

    size = int(encoder.config.image_size)
    pixels = torch.from_numpy(np.ascontiguousarray(image[:1])).permute(0, 3, 1, 2) * 2.0 - 1.0
    pixels = (_resize_with_antialiasing(pixels, (size, size)) + 1.0) / 2.0
    pixels = (pixels - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    parameter = next(encoder.parameters())
    with torch.no_grad():
        embeds = encoder(pixel_values=pixels.to(parameter.device, parameter.dtype)).image_embeds
    return embeds.to("cpu", torch.float32).unsqueeze(1)


def fit_picture(image: np.ndarray, width: int, height: int) -> Any:
    """The first picture at ``width`` x ``height`` (centre-cropped to that shape, then bilinear,
    as ComfyUI fits it), as (1, 3, height, width) in [-1, 1]."""
    import torch
    import torch.nn.functional as F

    pixels = torch.from_numpy(np.ascontiguousarray(image[:1])).permute(0, 3, 1, 2)
    old_h, old_w = pixels.shape[-2:]
    if (old_h, old_w) != (height, width):
        if old_w * height > width * old_h:  # too wide: keep the middle columns
            keep = round(old_h * width / height)
            left = (old_w - keep) // 2
            pixels = pixels[..., left : left + keep]
        else:
            keep = round(old_w * height / width)
            top = (old_h - keep) // 2
            pixels = pixels[..., top : top + keep, :]
        pixels = F.interpolate(pixels, size=(height, width), mode="bilinear", align_corners=False)
    return pixels * 2.0 - 1.0


class SVDImg2VidConditioning(Node):
    type = "SVD_img2vid_Conditioning"
    display_name = "SVD_img2vid_Conditioning"
    category = "conditioning/video_models"
    description = (
        "Condition a Stable Video Diffusion model on a picture: the video starts from it. Gives the "
        "positive and negative conditioning and an empty latent of video_frames frames."
    )
    inputs = (
        Input("clip_vision", T.CLIP_VISION, description="The SVD checkpoint's image encoder."),
        Input("init_image", T.IMAGE, description="The picture the video starts from (the first of a batch)."),
        Input("vae", T.VAE),
        Input("width", T.INT, default=1024, min=16, max=8192, step=8),
        Input("height", T.INT, default=576, min=16, max=8192, step=8),
        Input("video_frames", T.INT, default=14, min=1, max=4096, description="SVD: 14, SVD-XT: 25."),
        Input(
            "motion_bucket_id",
            T.INT,
            default=127,
            min=1,
            max=1023,
            description="How much motion: higher moves more.",
        ),
        Input("fps", T.INT, default=6, min=1, max=1024, description="The frame rate the model aims at."),
        Input(
            "augmentation_level",
            T.FLOAT,
            default=0.0,
            min=0.0,
            max=10.0,
            step=0.01,
            description="Noise added to the picture: higher strays further from it and moves more.",
        ),
    )
    outputs = (
        Output("positive", T.CONDITIONING),
        Output("negative", T.CONDITIONING),
        Output("latent", T.LATENT),
    )

    def run(
        self,
        ctx: Context,
        clip_vision: Any,
        init_image: np.ndarray,
        vae: Any,
        width: int,
        height: int,
        video_frames: int,
        motion_bucket_id: int,
        fps: int,
        augmentation_level: float,
    ) -> dict[str, Any]:
        import torch

        from models.values import Cond, Latent
        from models.video_sampling import VIDEO_IMAGE, VideoImage
        from nodes.limits import check_pixel_budget

        image = as_image("init_image", init_image)
        check_pixel_budget("video_frames", video_frames, height, width)
        model = vae.get()
        scale = 2 ** (len(model.config.block_out_channels) - 1)
        if width % scale or height % scale:
            raise NodeInputError("width" if width % scale else "height", f"must be a multiple of {scale}")
        embeds = video_image_embeds(clip_vision.get(), image)
        pixels = fit_picture(image, width, height)
        video = VideoImage(pixels, vae, int(fps), int(motion_bucket_id), float(augmentation_level))
        positive = Cond(embeds, extra={VIDEO_IMAGE: video})
        negative = Cond(torch.zeros_like(embeds), extra={VIDEO_IMAGE: replace(video, negative=True)})
        channels = int(model.config.latent_channels)
        latent = Latent(torch.zeros(video_frames, channels, height // scale, width // scale))
        return {"positive": (positive,), "negative": (negative,), "latent": latent}


def _with_frame_guidance(model: Any, shape: str, min_cfg: float) -> Any:
    from models.video_sampling import FRAME_GUIDANCE

    family = model.checkpoint.family
    if family != "svd":
        raise NodeInputError(
            "model",
            f"is a {family} model; guidance over frames is for video models (ImageOnlyCheckpointLoader)",
        )
    sampling = {**dict(model.sampling), FRAME_GUIDANCE: (shape, float(min_cfg))}
    return model.with_(sampling=tuple(sampling.items()))


MIN_CFG = Input(
    "min_cfg",
    T.FLOAT,
    default=1.0,
    min=0.0,
    max=100.0,
    step=0.5,
    description="The guidance at the first frame; the sampler's cfg is the guidance at the last.",
)


class VideoLinearCFGGuidance(Node):
    category = "sampling/video_models"
    description = (
        "Let the guidance of a video model rise linearly over the frames, from min_cfg on the first "
        "to the sampler's cfg on the last (SVD's usual setting: the first frame stays near the picture)."
    )
    inputs = (Input("model", T.MODEL), MIN_CFG)
    outputs = (Output("model", T.MODEL),)

    def run(self, ctx: Context, model: Any, min_cfg: float) -> dict[str, Any]:
        return {"model": _with_frame_guidance(model, "linear", min_cfg)}


class VideoTriangleCFGGuidance(Node):
    category = "sampling/video_models"
    description = (
        "Let the guidance of a video model rise from min_cfg on the first frame to the sampler's cfg "
        "mid-video and fall back to min_cfg on the last."
    )
    inputs = (Input("model", T.MODEL), MIN_CFG)
    outputs = (Output("model", T.MODEL),)

    def run(self, ctx: Context, model: Any, min_cfg: float) -> dict[str, Any]:
        return {"model": _with_frame_guidance(model, "triangle", min_cfg)}


# --------------------------------------------------------------------------- saving


def frame_pictures(images: np.ndarray) -> list[Any]:
    """IMAGE frames as Pillow RGB pictures."""
    from PIL import Image

    return [Image.fromarray(pixels) for pixels in to_uint8(as_image("images", images))]


def save_animation(
    ctx: Context, images: np.ndarray, filename_prefix: str, fps: float, suffix: str, **options: Any
) -> dict[str, Any]:
    """Save the frames as one animated picture (Pillow's ``format`` and ``options``) under the next
    free name in the output folder, and report the file."""
    frames = frame_pictures(images)
    folder, prefix = output_folder(ctx.settings, filename_prefix)

    def write(path: Path) -> None:
        frames[0].save(
            path, save_all=True, append_images=frames[1:], duration=frame_duration(fps), loop=0, **options
        )

    ctx.add_file(write_exclusive(folder, prefix, suffix, write))
    return {}


def frame_duration(fps: float) -> int:
    """Milliseconds per frame at ``fps`` (whole milliseconds, as the animated formats store them)."""
    return max(1, round(1000.0 / fps))


FILENAME_PREFIX = Input(
    "filename_prefix",
    T.STRING,
    default="video/frames",
    accepts="constant",
    description="Start of the file name; may name a sub-folder, as in 'clips/wave'.",
)
FPS = Input("fps", T.FLOAT, default=6.0, min=0.01, max=1000.0, step=0.01, description="Frames per second.")


class SaveAnimatedWEBP(Node):
    display_name = "Save Animated WEBP"
    category = "image/animation"
    description = "Save the frames as one animated WebP in the output folder (plays in any browser)."
    output_node = True
    inputs = (
        Input("images", T.IMAGE),
        FILENAME_PREFIX,
        FPS,
        Input("lossless", T.BOOLEAN, default=True),
        Input("quality", T.INT, default=80, min=0, max=100, description="For lossy files: higher is better."),
        Input(
            "method",
            T.STRING,
            default="default",
            choices=("default", "fastest", "slowest"),
            description="How hard the encoder works: slowest makes the smallest files.",
        ),
    )
    outputs = ()

    def run(
        self,
        ctx: Context,
        images: np.ndarray,
        filename_prefix: str,
        fps: float,
        lossless: bool,
        quality: int,
        method: str,
    ) -> dict[str, Any]:
        effort = {"default": 4, "fastest": 0, "slowest": 6}[method]
        return save_animation(
            ctx,
            images,
            filename_prefix,
            fps,
            ".webp",
            format="WEBP",
            lossless=lossless,
            quality=quality,
            method=effort,
        )


class SaveAnimatedPNG(Node):
    display_name = "Save Animated PNG"
    category = "image/animation"
    description = "Save the frames as one animated PNG (APNG) in the output folder, lossless."
    output_node = True
    inputs = (
        Input("images", T.IMAGE),
        FILENAME_PREFIX,
        FPS,
        Input("compress_level", T.INT, default=4, min=0, max=9, description="0: fastest, 9: smallest."),
    )
    outputs = ()

    def run(
        self, ctx: Context, images: np.ndarray, filename_prefix: str, fps: float, compress_level: int
    ) -> dict[str, Any]:
        from PIL import PngImagePlugin

        from graph.workflow import PNG_SEED_KEY, PNG_WORKFLOW_KEY

        info = PngImagePlugin.PngInfo()
        info.add_text(PNG_SEED_KEY, str(ctx.seed))
        if ctx.settings.workflow_json is not None:
            info.add_text(PNG_WORKFLOW_KEY, ctx.settings.workflow_json)
        return save_animation(
            ctx,
            images,
            filename_prefix,
            fps,
            ".png",
            format="PNG",
            compress_level=compress_level,
            pnginfo=info,
        )


class SaveAnimatedGIF(Node):
    display_name = "Save Animated GIF"
    category = "image/animation"
    description = (
        "Save the frames as one animated GIF in the output folder (256 colours per frame; GIF keeps "
        "time in hundredths of a second)."
    )
    output_node = True
    inputs = (Input("images", T.IMAGE), FILENAME_PREFIX, FPS)
    outputs = ()

    def run(self, ctx: Context, images: np.ndarray, filename_prefix: str, fps: float) -> dict[str, Any]:
        return save_animation(ctx, images, filename_prefix, fps, ".gif", format="GIF")


class SaveVideo(Node):
    display_name = "Save Video (MP4)"
    category = "image/animation"
    description = (
        "Save the frames as an MP4 video (H.264, which every browser and player plays) in the output folder."
    )
    output_node = True
    inputs = (
        Input("images", T.IMAGE),
        FILENAME_PREFIX,
        Input("fps", T.FLOAT, default=8.0, min=1.0, max=240.0, step=0.01, description="Frames per second."),
        Input(
            "crf",
            T.INT,
            default=19,
            min=0,
            max=51,
            description="Quality: lower is better and larger (0 nearly lossless, 23 the encoder's default).",
        ),
    )
    outputs = ()

    def run(
        self, ctx: Context, images: np.ndarray, filename_prefix: str, fps: float, crf: int
    ) -> dict[str, Any]:
        pixels = to_uint8(as_image("images", images))
        height, width = pixels.shape[1:3]
        if width % 2 or height % 2:
            raise NodeInputError(
                "images",
                f"are {width}x{height}: H.264 video needs an even width and height; resize them first",
            )
        folder, prefix = output_folder(ctx.settings, filename_prefix)

        def write(path: Path) -> None:
            write_mp4(path, pixels, fps, crf, ctx.check_cancelled)

        ctx.add_file(write_exclusive(folder, prefix, ".mp4", write))
        return {}


def write_mp4(
    path: Path, frames: np.ndarray, fps: float, crf: int, check_cancelled: Callable[[], None]
) -> None:
    """uint8 frames (n, h, w, 3) as H.264 (yuv420p) in an MP4 whose index comes first, so a
    browser starts playing before the whole file has arrived."""
    from fractions import Fraction

    import av

    with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = int(frames.shape[2]), int(frames.shape[1])
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for pixels in frames:
            check_cancelled()
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


NODES = (
    ImageOnlyCheckpointLoader,
    SVDImg2VidConditioning,
    VideoLinearCFGGuidance,
    VideoTriangleCFGGuidance,
    SaveAnimatedWEBP,
    SaveAnimatedPNG,
    SaveAnimatedGIF,
    SaveVideo,
)
