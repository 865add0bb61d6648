"""Image to video (Stable Video Diffusion) and saving frames: ImageOnlyCheckpointLoader,
SVD_img2vid_Conditioning, VideoLinearCFGGuidance / VideoTriangleCFGGuidance, KSampler and
VAEDecode on a video model; SaveAnimatedWEBP, SaveAnimatedPNG, SaveAnimatedGIF, SaveVideo.

Oracles: diffusers' StableVideoDiffusionPipeline with the same tiny model (tests/fixtures/tiny_svd.py),
picture, seed and settings (frames equal to uint8 rounding); the key names of Stability's published
single files; Pillow and PyAV reading the saved files back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from graph.executor import Executor
from graph.validate import validate
from models.manager import ModelManager
from nodes.base import NodeInputError, RunSettings
from nodes.registry import default_registry
from tests.fixtures.services import services_over
from tests.fixtures.tiny_svd import (
    FRAMES,
    original_state,
    save_svd_folder,
    save_svd_single_file,
    tiny_svd_pipeline,
)
from tests.helpers import link, make_ctx, run_graph

SIZE = 32  # pixels (the tiny VAE halves: latents of 16 x 16)
SETTINGS = {"fps": 7, "motion_bucket_id": 100, "augmentation": 0.05, "steps": 2, "cfg": 2.5, "min_cfg": 1.0}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models root with the tiny SVD as a diffusers folder and as an original single file (with
    its config sidecar), an SD-like file and an SD folder; an inputs folder with one picture."""
    from safetensors.torch import save_file

    base = tmp_path_factory.mktemp("video")
    checkpoints = base / "models" / "checkpoints"
    pipe = tiny_svd_pipeline()
    save_svd_folder(pipe, checkpoints / "tiny-svd")
    save_svd_single_file(pipe, checkpoints / "svd_tiny.safetensors")
    save_file(
        {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)},
        str(checkpoints / "sd.safetensors"),
    )
    (checkpoints / "sd-folder").mkdir()
    (checkpoints / "sd-folder" / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    inputs = base / "inputs"
    inputs.mkdir()
    shapes = Image.open(Path(__file__).resolve().parents[1] / "workflows" / "assets" / "shapes.png")
    shapes.convert("RGB").resize((SIZE, SIZE), Image.BICUBIC).save(inputs / "start.png")
    return base


@pytest.fixture(scope="module")
def manager() -> ModelManager:
    return ModelManager(device="cpu")


def video_workflow(ckpt: str, seed: int, guidance: str = "VideoLinearCFGGuidance") -> dict[str, Any]:
    s = SETTINGS
    return {
        "load": {"type": "ImageOnlyCheckpointLoader", "inputs": {"ckpt_name": ckpt}},
        "picture": {"type": "LoadImage", "inputs": {"path": "start.png"}},
        "cond": {
            "type": "SVD_img2vid_Conditioning",
            "inputs": {
                "clip_vision": link("load", "clip_vision"),
                "init_image": link("picture", "image"),
                "vae": link("load", "vae"),
                "width": SIZE,
                "height": SIZE,
                "video_frames": FRAMES,
                "motion_bucket_id": s["motion_bucket_id"],
                "fps": s["fps"],
                "augmentation_level": s["augmentation"],
            },
        },
        "guide": {"type": guidance, "inputs": {"model": link("load", "model"), "min_cfg": s["min_cfg"]}},
        "sample": {
            "type": "Sampler",
            "inputs": {
                "model": link("guide", "model"),
                "positive": link("cond", "positive"),
                "negative": link("cond", "negative"),
                "latent": link("cond", "latent"),
                "seed": seed,
                "steps": s["steps"],
                "cfg": s["cfg"],
                "sampler": "euler",
                "denoise": 1.0,
            },
        },
        "decode": {
            "type": "VAEDecode",
            "inputs": {"vae": link("load", "vae"), "latent": link("sample", "latent")},
        },
        "show": {"type": "PreviewImage", "inputs": {"images": link("decode", "image")}},
    }


def as_uint8(images: np.ndarray) -> np.ndarray:
    return (np.clip(images, 0, 1) * 255 + 0.5).astype(np.uint8)


def pipeline_frames(root: Path, seed: int) -> np.ndarray:
    from diffusers import StableVideoDiffusionPipeline

    s = SETTINGS
    pipe = StableVideoDiffusionPipeline.from_pretrained(str(root / "models" / "checkpoints" / "tiny-svd"))
    frames = pipe(
        image=Image.open(root / "inputs" / "start.png"),
        height=SIZE,
        width=SIZE,
        num_frames=FRAMES,
        num_inference_steps=s["steps"],
        min_guidance_scale=s["min_cfg"],
        max_guidance_scale=s["cfg"],
        fps=s["fps"],
        motion_bucket_id=s["motion_bucket_id"],
        noise_aug_strength=s["augmentation"],
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type="np",
    ).frames
    return np.asarray(frames[0])


# --------------------------------------------------------------------------- the oracle


@pytest.mark.parametrize("ckpt", ["tiny-svd", pytest.param("svd_tiny.safetensors", marks=pytest.mark.slow)])
def test_frames_match_the_svd_pipeline(root: Path, manager: ModelManager, ckpt: str) -> None:
    result = run_graph(video_workflow(ckpt, seed=11), root / "models", manager, work=root)
    assert result.status == "done", result.error
    ours = as_uint8(result.outputs["show"]["images"])
    theirs = as_uint8(pipeline_frames(root, seed=11))
    assert ours.shape == theirs.shape == (FRAMES, SIZE, SIZE, 3)
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1


@pytest.mark.slow
def test_the_seed_and_the_guidance_shape_matter(root: Path, manager: ModelManager) -> None:
    def frames(nodes: dict[str, Any]) -> np.ndarray:
        return run_graph(nodes, root / "models", manager, work=root).outputs["show"]["images"]

    first = frames(video_workflow("tiny-svd", seed=11))
    other = frames(video_workflow("tiny-svd", seed=12))
    triangle = frames(video_workflow("tiny-svd", 11, "VideoTriangleCFGGuidance"))
    assert np.abs(first - other).max() > 1e-3
    assert np.abs(first - triangle).max() > 1e-4


def test_frame_guidance_shapes() -> None:
    from models.video_sampling import frame_guidance

    torch.testing.assert_close(frame_guidance("linear", 1.0, 3.0, 5), torch.tensor([1.0, 1.5, 2.0, 2.5, 3.0]))
    torch.testing.assert_close(
        frame_guidance("triangle", 1.0, 3.0, 5), torch.tensor([1.0, 2.0, 3.0, 2.0, 1.0])
    )


# --------------------------------------------------------------------------- loading


def test_single_file_loads_the_same_weights(root: Path) -> None:
    from models.svd import IMAGE_ENCODER, load_svd

    folder = load_svd(root / "models" / "checkpoints" / "tiny-svd")
    single = load_svd(root / "models" / "checkpoints" / "svd_tiny.safetensors")
    assert single.family == folder.family == "svd"
    assert single.text_encoders == [] and single.scheduler_config["prediction_type"] == "v_prediction"
    for part in ("unet", "vae"):
        ours, theirs = getattr(single, part).state_dict(), getattr(folder, part).state_dict()
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert torch.equal(ours[key], theirs[key]), key
    pixels = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        a = single.extra[IMAGE_ENCODER](pixel_values=pixels).image_embeds
        b = folder.extra[IMAGE_ENCODER](pixel_values=pixels).image_embeds
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_single_file_has_the_published_key_names() -> None:
    """Names taken from Stability's svd.safetensors (and the converters that read it): the fixture
    writes through the product's key map, so these anchor the map to the real layout."""
    keys = set(original_state(tiny_svd_pipeline()))
    published = {
        "model.diffusion_model.input_blocks.0.0.weight",
        "model.diffusion_model.time_embed.0.weight",
        "model.diffusion_model.label_emb.0.0.weight",
        "model.diffusion_model.input_blocks.1.0.in_layers.0.weight",
        "model.diffusion_model.input_blocks.1.0.time_stack.in_layers.2.weight",
        "model.diffusion_model.input_blocks.1.0.time_mixer.mix_factor",
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
        "model.diffusion_model.input_blocks.1.1.time_stack.0.ff_in.net.0.proj.weight",
        "model.diffusion_model.input_blocks.1.1.time_pos_embed.0.weight",
        "model.diffusion_model.input_blocks.3.0.op.weight",
        "model.diffusion_model.middle_block.1.time_mixer.mix_factor",
        "model.diffusion_model.middle_block.2.time_stack.out_layers.3.weight",
        "model.diffusion_model.output_blocks.2.1.conv.weight",
        "model.diffusion_model.output_blocks.3.0.skip_connection.weight",
        "model.diffusion_model.out.2.weight",
        "first_stage_model.decoder.mid.block_1.mix_factor",
        "first_stage_model.decoder.mid.block_1.time_stack.in_layers.0.weight",
        "first_stage_model.decoder.mid.attn_1.q.weight",
        "first_stage_model.decoder.up.0.block.0.time_stack.out_layers.3.weight",
        "first_stage_model.decoder.up.1.upsample.conv.weight",
        "first_stage_model.decoder.conv_out.time_mix_conv.weight",
        "conditioner.embedders.3.encoder.encoder.down.0.block.0.conv1.weight",
        "conditioner.embedders.3.encoder.encoder.mid.attn_1.proj_out.weight",
        "conditioner.embedders.3.encoder.quant_conv.weight",
        "conditioner.embedders.0.open_clip.model.visual.transformer.resblocks.0.attn.in_proj_weight",
        "conditioner.embedders.0.open_clip.model.visual.proj",
    }
    assert published <= keys, sorted(published - keys)


def test_shipped_configs_build_the_published_models() -> None:
    from accelerate import init_empty_weights
    from diffusers import UNetSpatioTemporalConditionModel

    from models.loading import CONFIGS

    for name, frames in (("svd", 14), ("svd-xt", 25)):
        config = UNetSpatioTemporalConditionModel.load_config(str(CONFIGS / name / "unet"))
        assert config["num_frames"] == frames
        with init_empty_weights():
            unet = UNetSpatioTemporalConditionModel.from_config(config)
        assert 1.4e9 < sum(p.numel() for p in unet.parameters()) < 1.6e9  # SVD's 1.52 B


def ctx_with(root: Path, manager: ModelManager) -> Any:
    ctx = make_ctx(root / "out")
    ctx.settings.services = services_over(root / "models", manager=manager)
    return ctx


@pytest.mark.parametrize(
    ("ckpt", "said"),
    [("sd.safetensors", "CheckpointLoader"), ("sd-folder", "StableDiffusionPipeline")],
)
def test_an_image_checkpoint_is_refused_by_name(
    root: Path, manager: ModelManager, ckpt: str, said: str
) -> None:
    from nodes.video import ImageOnlyCheckpointLoader

    with pytest.raises(NodeInputError) as caught:
        ImageOnlyCheckpointLoader().run(ctx_with(root, manager), ckpt_name=ckpt)
    assert caught.value.input_name == "ckpt_name"
    assert "not" in str(caught.value) and said in str(caught.value)


def test_video_frames_out_of_range(root: Path, manager: ModelManager) -> None:
    nodes = video_workflow("tiny-svd", seed=1)
    nodes["cond"]["inputs"]["video_frames"] = 0
    registry = default_registry(services=services_over(root / "models", manager=manager))
    checked = validate({"version": 1, "nodes": nodes}, registry)
    assert not checked.ok
    assert any(i.node_id == "cond" and i.input == "video_frames" for i in checked.issues)


@pytest.mark.parametrize(("setting", "value"), [("sampler", "dpmpp_2m"), ("denoise", 0.5)])
def test_sampler_settings_svd_cannot_take_name_their_input(
    root: Path, manager: ModelManager, setting: str, value: Any
) -> None:
    nodes = video_workflow("tiny-svd", seed=1)
    nodes["sample"]["inputs"][setting] = value
    result = run_graph(nodes, root / "models", manager, work=root)
    assert result.status == "failed"
    assert result.error.node_id == "sample" and result.error.input == setting


def test_guidance_over_frames_refuses_an_image_model(root: Path, manager: ModelManager) -> None:
    from models.values import CheckpointRef, ModelRef
    from nodes.video import VideoLinearCFGGuidance

    image_model = ModelRef(CheckpointRef("x", manager, lambda: None, "sd1"))
    with pytest.raises(NodeInputError, match="video models"):
        VideoLinearCFGGuidance().run(make_ctx(), model=image_model, min_cfg=1.0)


# --------------------------------------------------------------------------- saving


def moving_frames(count: int = 4, height: int = 32, width: int = 48) -> np.ndarray:
    """Frames of a bright square moving right on a gradient (each frame differs)."""
    y, x = np.mgrid[0:height, 0:width]
    frames = np.zeros((count, height, width, 3), np.float32)
    for index in range(count):
        frames[index, ..., 0] = x / width
        frames[index, ..., 1] = y / height
        frames[index, 8:20, 4 + 8 * index : 16 + 8 * index, :] = 1.0
    return frames


def save(node: Any, tmp_path: Path, **inputs: Any) -> list[Path]:
    ctx = make_ctx(tmp_path)
    values = {spec.name: spec.default for spec in node.inputs if spec.has_default}
    values.update(inputs)
    node().run(ctx, **values)
    return [Path(p) for p in ctx.files]


@pytest.mark.parametrize(
    ("node_name", "suffix", "extra"),
    [
        ("SaveAnimatedWEBP", ".webp", {"lossless": True}),
        ("SaveAnimatedWEBP", ".webp", {"lossless": False, "quality": 90, "method": "fastest"}),
        ("SaveAnimatedPNG", ".png", {"compress_level": 9}),
        ("SaveAnimatedGIF", ".gif", {}),
    ],
)
def test_animations_hold_every_frame_and_its_duration(
    tmp_path: Path, node_name: str, suffix: str, extra: dict[str, Any]
) -> None:
    import nodes.video as video

    frames = moving_frames()
    (path,) = save(
        getattr(video, node_name), tmp_path, images=frames, filename_prefix="clip", fps=8.0, **extra
    )
    assert path.name == f"clip_00001{suffix}" and path.parent == tmp_path
    with Image.open(path) as animation:
        assert animation.n_frames == len(frames) and animation.size == (48, 32)
        for index in range(len(frames)):
            animation.seek(index)
            pixels = np.asarray(animation.convert("RGB"), np.float32) / 255  # loads the frame and its info
            # GIF keeps hundredths of a second: 125 ms is stored as 120 or 130
            assert abs(animation.info["duration"] - 125) <= (5 if suffix == ".gif" else 0)
            assert np.abs(pixels - frames[index]).mean() < (0.03 if suffix != ".png" else 1 / 255)


def test_mp4_decodes_to_the_frames(tmp_path: Path) -> None:
    import av

    from nodes.video import SaveVideo

    frames = moving_frames(count=6)
    (path,) = save(SaveVideo, tmp_path, images=frames, filename_prefix="clips/wave", fps=12.0, crf=12)
    assert path == tmp_path / "clips" / "wave_00001.mp4"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert float(stream.average_rate) == pytest.approx(12.0)
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(decoded) == 6 and decoded[0].shape == (32, 48, 3)
    error = np.abs(np.stack(decoded).astype(np.float32) / 255 - frames).mean()
    assert error < 0.03


def test_saving_never_overwrites(tmp_path: Path) -> None:
    from nodes.video import SaveAnimatedGIF, SaveVideo

    frames = moving_frames(count=2)
    first = save(SaveAnimatedGIF, tmp_path, images=frames, filename_prefix="same")
    second = save(SaveAnimatedGIF, tmp_path, images=frames, filename_prefix="same")
    third = save(SaveVideo, tmp_path, images=frames, filename_prefix="same")
    assert [p.name for p in first + second + third] == ["same_00001.gif", "same_00002.gif", "same_00001.mp4"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_saving_refuses_bad_prefixes_and_odd_video_sizes(tmp_path: Path) -> None:
    from nodes.video import SaveAnimatedWEBP, SaveVideo

    with pytest.raises(NodeInputError) as caught:
        save(SaveAnimatedWEBP, tmp_path, images=moving_frames(2), filename_prefix="../escape")
    assert caught.value.input_name == "filename_prefix"
    with pytest.raises(NodeInputError, match="even width and height"):
        save(SaveVideo, tmp_path, images=moving_frames(2, height=31), filename_prefix="odd")


def test_the_file_route_serves_animations_and_videos_with_their_types(tmp_path: Path, registry: Any) -> None:
    """What the studio's page plays: the saved files come back with their content types (and a
    video answers a range request, which browsers make to seek)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from nodes.video import SaveAnimatedGIF, SaveAnimatedPNG, SaveAnimatedWEBP, SaveVideo
    from server.api import api_router
    from server.jobs import JobQueue

    frames = moving_frames(count=2)
    for node in (SaveAnimatedWEBP, SaveAnimatedPNG, SaveAnimatedGIF, SaveVideo):
        save(node, tmp_path, images=frames, filename_prefix="clip")
    queue = JobQueue(Executor(registry), registry, lambda: RunSettings(output_dir=tmp_path), None)
    app = FastAPI()
    app.include_router(api_router(queue))
    try:
        with TestClient(app) as client:
            for suffix, kind in (
                (".webp", "image/webp"),
                (".png", "image/png"),
                (".gif", "image/gif"),
                (".mp4", "video/mp4"),
            ):
                answer = client.get(f"/api/files/clip_00001{suffix}")
                assert answer.status_code == 200 and answer.headers["content-type"] == kind
            part = client.get("/api/files/clip_00001.mp4", headers={"Range": "bytes=0-99"})
            assert part.status_code == 206 and len(part.content) == 100
    finally:
        queue.close(timeout=10)
