"""ModelMergeSimple and CheckpointSave, with tiny checkpoints in real formats.

Oracles: a diffusers pipeline whose UNet holds the averaged weights (computed here); the
original-layout writer of the test fixtures (written separately from the product's mapping) and
diffusers' own single-file conversion, which must find every weight of a saved file; and the
picture a saved checkpoint draws after loading it back through CheckpointLoader.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from graph.executor import Executor
from graph.validate import validate
from models.manager import ModelManager
from nodes.base import RunSettings
from nodes.registry import default_registry
from tests.fixtures.models_root import SIZE
from tests.fixtures.services import services_over
from tests.helpers import as_uint8, link

pytestmark = pytest.mark.slow
PROMPT = "a red circle at the top left"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Two SD1 checkpoints with different weights, an inpainting one (9 input channels) and an SDXL
    one, as the studio's models root; the output folder is a models root too, so saved checkpoints
    (output/checkpoints/...) load back by name."""
    from tests.fixtures.tiny_models import save_config_folder, save_tiny_sd_folder, save_tiny_sdxl_folder

    base = tmp_path_factory.mktemp("model-ops")
    checkpoints = base / "models" / "checkpoints"
    save_tiny_sd_folder(checkpoints / "ops-a", seed=0)
    save_tiny_sd_folder(checkpoints / "ops-b", seed=1)
    save_tiny_sd_folder(checkpoints / "ops-inpaint", seed=2, in_channels=9)
    save_tiny_sdxl_folder(checkpoints / "ops-xl", seed=0)
    save_config_folder(checkpoints / "ops-a", base / "sd1.config")
    save_config_folder(checkpoints / "ops-xl", base / "sdxl.config")
    (base / "out").mkdir()
    return base


@pytest.fixture(scope="module")
def manager() -> ModelManager:
    return ModelManager(device="cpu")


def run(nodes: dict, root: Path, manager: ModelManager) -> Any:
    """Run ``nodes`` with ``root``'s models and its output folder as model roots (so saved
    checkpoints load back by name)."""
    services = services_over(root / "models", root / "out", manager=manager)
    registry = default_registry(services=services)
    checked = validate({"version": 1, "nodes": nodes}, registry)
    assert checked.ok, [str(i) for i in checked.issues]
    settings = RunSettings(services=services, output_dir=root / "out")
    return Executor(registry).run(checked.workflow, settings=settings)


def loader(name: str) -> dict:
    return {"type": "CheckpointLoader", "inputs": {"ckpt_name": name}}


def merge(first: str, second: str, ratio: float) -> dict:
    return {
        "type": "ModelMergeSimple",
        "inputs": {"model1": link(first, "model"), "model2": link(second, "model"), "ratio": ratio},
    }


def draw(model: tuple[str, str], texts: str = "ck") -> dict:
    """Nodes drawing PROMPT with ``model`` (node, output), the text encoder and VAE of ``texts``."""
    return {
        "pos": {"type": "CLIPTextEncode", "inputs": {"clip": link(texts, "clip"), "text": PROMPT}},
        "neg": {"type": "CLIPTextEncode", "inputs": {"clip": link(texts, "clip"), "text": ""}},
        "lat": {"type": "EmptyLatent", "inputs": {"width": SIZE, "height": SIZE, "vae": link(texts, "vae")}},
        "s": {
            "type": "Sampler",
            "inputs": {
                "model": link(*model),
                "positive": link("pos", "conditioning"),
                "negative": link("neg", "conditioning"),
                "latent": link("lat", "latent"),
                "seed": 42,
                "steps": 4,
                "cfg": 7.5,
                "sampler": "euler",
            },
        },
        "d": {"type": "VAEDecode", "inputs": {"vae": link(texts, "vae"), "latent": link("s", "latent")}},
        "show": {"type": "PreviewImage", "inputs": {"images": link("d", "image")}},
    }


def picture(result: Any) -> np.ndarray:
    assert result.status == "done", result.error
    return result.outputs["show"]["images"]


def assert_close_pictures(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape
    assert int(np.abs(as_uint8(ours).astype(int) - as_uint8(theirs).astype(int)).max()) <= 1


#: Pictures already drawn in this module, by what drew them (each takes seconds to draw).
DRAWN: dict[tuple[Any, ...], np.ndarray] = {}


def plain_picture(root: Path, manager: ModelManager, name: str) -> np.ndarray:
    key = (root, name)
    if key not in DRAWN:
        DRAWN[key] = picture(run({"ck": loader(name), **draw(("ck", "model"))}, root, manager))
    return DRAWN[key]


def merged_picture(root: Path, manager: ModelManager, ratio: float, second: str = "ops-b") -> np.ndarray:
    key = (root, "ops-a", second, ratio)
    if key not in DRAWN:
        nodes = {"ck": loader("ops-a"), "ck2": loader(second), "m": merge("ck", "ck2", ratio)}
        DRAWN[key] = picture(run({**nodes, **draw(("m", "model"))}, root, manager))
    return DRAWN[key]


# --------------------------------------------------------------------------- ModelMergeSimple


def test_ratio_one_is_model1_bit_for_bit(root: Path, manager: ModelManager) -> None:
    alone = plain_picture(root, manager, "ops-a")
    assert np.array_equal(merged_picture(root, manager, 1.0), alone)
    assert not np.array_equal(plain_picture(root, manager, "ops-b"), alone)  # the other model does differ


def test_a_model_merged_with_itself_draws_its_own_picture(root: Path, manager: ModelManager) -> None:
    alone = plain_picture(root, manager, "ops-a")
    for ratio in (0.3, 0.75):
        assert_close_pictures(merged_picture(root, manager, ratio, second="ops-a"), alone)


def test_half_merge_equals_a_pipeline_with_the_averaged_weights(root: Path, manager: ModelManager) -> None:
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    from models.sampling import make_scheduler

    folder = root / "models" / "checkpoints"
    pipe = StableDiffusionPipeline.from_pretrained(
        str(folder / "ops-a"), local_files_only=True, safety_checker=None
    )
    other = UNet2DConditionModel.from_pretrained(str(folder / "ops-b" / "unet"), local_files_only=True)
    mine, theirs = pipe.unet.state_dict(), other.state_dict()
    pipe.unet.load_state_dict({key: (mine[key] + theirs[key]) / 2 for key in mine})
    pipe.scheduler = make_scheduler("euler", pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(
        PROMPT,
        num_inference_steps=4,
        guidance_scale=7.5,
        height=SIZE,
        width=SIZE,
        generator=torch.Generator("cpu").manual_seed(42),
        output_type="np",
    ).images
    ours = merged_picture(root, manager, 0.5)
    assert_close_pictures(ours, expected)
    assert not np.array_equal(as_uint8(ours), as_uint8(plain_picture(root, manager, "ops-a")))


def test_merging_never_changes_the_cached_originals(root: Path, manager: ModelManager) -> None:
    from diffusers import UNet2DConditionModel

    merged_picture(root, manager, 0.25)
    from_disk = UNet2DConditionModel.from_pretrained(
        str(root / "models" / "checkpoints" / "ops-a" / "unet"), local_files_only=True
    ).state_dict()
    cached = [key for key in manager.keys() if isinstance(key, tuple) and key[:1] == ("checkpoint",)]
    ops_a = [key for key in cached if key[1].endswith("ops-a")]
    assert ops_a
    for key in ops_a:
        unet = manager.get(key, lambda: None).unet.state_dict()
        assert all(torch.equal(unet[name], from_disk[name]) for name in from_disk)
    merges = [key for key in manager.keys() if isinstance(key, tuple) and "merge" in key]
    assert merges, "the merged checkpoint is kept in the manager"


def test_models_of_different_architectures_are_refused_naming_model2(
    root: Path, manager: ModelManager
) -> None:
    nodes = {"ck": loader("ops-a"), "ck2": loader("ops-inpaint"), "m": merge("ck", "ck2", 0.5)}
    result = run({**nodes, **draw(("m", "model"))}, root, manager)
    assert result.status == "failed"
    assert result.error.node_id == "m" and result.error.input == "model2"
    assert "in_channels (4 vs 9)" in result.error.message


def test_a_lora_added_after_merging_applies_to_the_merged_weights(root: Path, manager: ModelManager) -> None:
    """ComfyUI's order: LoRA(merge(a, b)) is the merged weights plus the LoRA's change (not a LoRA on
    model1 alone, scaled by the ratio). Oracle: the pipeline with averaged weights, and the LoRA's
    layer changed by hand: W += strength * alpha / rank * up @ down."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from safetensors.torch import save_file

    from models.sampling import make_scheduler

    folder = root / "models" / "checkpoints"
    pipe = StableDiffusionPipeline.from_pretrained(
        str(folder / "ops-a"), local_files_only=True, safety_checker=None
    )
    layer = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    weight = dict(pipe.unet.named_parameters())[layer + ".weight"]
    generator = torch.Generator().manual_seed(5)
    down = torch.randn(4, weight.shape[1], generator=generator) * 0.3
    up = torch.randn(weight.shape[0], 4, generator=generator) * 0.3
    key = "lora_unet_" + layer.replace(".", "_")
    lora = {f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up, f"{key}.alpha": torch.tensor(4.0)}
    lora_file = root / "models" / "loras" / "ops-style.safetensors"
    lora_file.parent.mkdir(exist_ok=True)
    save_file(lora, str(lora_file))

    other = UNet2DConditionModel.from_pretrained(str(folder / "ops-b" / "unet"), local_files_only=True)
    mine, theirs = pipe.unet.state_dict(), other.state_dict()
    averaged = {name: (mine[name] + theirs[name]) / 2 for name in mine}
    averaged[layer + ".weight"] += 4.0 / 4 * (up @ down)
    pipe.unet.load_state_dict(averaged)
    pipe.scheduler = make_scheduler("euler", pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(
        PROMPT,
        num_inference_steps=4,
        guidance_scale=7.5,
        height=SIZE,
        width=SIZE,
        generator=torch.Generator("cpu").manual_seed(42),
        output_type="np",
    ).images

    nodes = {
        "ck": loader("ops-a"),
        "ck2": loader("ops-b"),
        "m": merge("ck", "ck2", 0.5),
        "lora": {
            "type": "LoraLoader",
            "inputs": {
                "model": link("m", "model"),
                "clip": link("ck", "clip"),
                "lora_name": "ops-style.safetensors",
                "strength_model": 1.0,
                "strength_clip": 0.0,
            },
        },
    }
    ours = picture(run({**nodes, **draw(("lora", "model"))}, root, manager))
    assert_close_pictures(ours, expected)
    assert not np.array_equal(as_uint8(ours), as_uint8(merged_picture(root, manager, 0.5)))


# --------------------------------------------------------------------------- CheckpointSave


def save(root: Path, manager: ModelManager, model: tuple[str, str], extra: dict, prefix: str) -> list[str]:
    nodes = {
        **extra,
        "save": {
            "type": "CheckpointSave",
            "inputs": {
                "model": link(*model),
                "clip": link("ck", "clip"),
                "vae": link("ck", "vae"),
                "filename_prefix": prefix,
            },
        },
    }
    result = run(nodes, root, manager)
    assert result.status == "done", result.error
    return result.files


def test_checkpoint_save_names_files_like_comfyui_and_never_overwrites(
    root: Path, manager: ModelManager
) -> None:
    from safetensors import safe_open

    first = save(root, manager, ("ck", "model"), {"ck": loader("ops-a")}, "named/ops")
    second = save(root, manager, ("ck", "model"), {"ck": loader("ops-a")}, "checkpoints/named/ops")
    folder = root / "out" / "checkpoints" / "named"
    assert [Path(f) for f in first + second] == [
        folder / "ops_00001_.safetensors",
        folder / "ops_00002_.safetensors",
    ]
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary file left
    with safe_open(str(folder / "ops_00001_.safetensors"), "pt") as opened:
        metadata = opened.metadata()
    assert metadata["software"] == "Workflow Studio"
    assert metadata["modelspec.architecture"] == "stable-diffusion-v1"


def test_a_bad_prefix_is_refused_by_name(root: Path, manager: ModelManager) -> None:
    nodes = {
        "ck": loader("ops-a"),
        "save": {
            "type": "CheckpointSave",
            "inputs": {
                "model": link("ck", "model"),
                "clip": link("ck", "clip"),
                "vae": link("ck", "vae"),
                "filename_prefix": "../escape",
            },
        },
    }
    result = run(nodes, root, manager)
    assert result.status == "failed" and result.error.input == "filename_prefix"


def assert_diffusers_reads_every_weight(state: dict[str, torch.Tensor], components: dict[str, Any]) -> None:
    """diffusers' single-file conversion finds every UNet, VAE and CLIP weight of the file, none
    missing and none left over, and the converted tensors are the components' own."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )

    unet, vae, encoder = components["unet"], components["vae"], components["text_encoder"]
    for prefix, converted, module in (
        ("model.diffusion_model.", convert_ldm_unet_checkpoint(state, dict(unet.config)), unet),
        ("first_stage_model.", convert_ldm_vae_checkpoint(state, dict(vae.config)), vae),
    ):
        want = module.state_dict()
        assert set(converted) == set(want), sorted(set(converted) ^ set(want))[:5]
        assert len(converted) == len([k for k in state if k.startswith(prefix)])  # nothing left over
        assert all(torch.equal(converted[k], want[k]) for k in want)
    clip = {k.removeprefix("text_model."): v for k, v in convert_ldm_clip_checkpoint(state).items()}
    want = encoder.state_dict()
    assert set(clip) == set(want) and all(torch.equal(clip[k], want[k]) for k in want)


def test_saved_sd1_file_has_the_original_layout(root: Path, manager: ModelManager) -> None:
    from diffusers import StableDiffusionPipeline
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type
    from safetensors.torch import load_file

    from tests.fixtures.original_layout import original_sd1_state_dict

    (path,) = save(root, manager, ("ck", "model"), {"ck": loader("ops-a")}, "layout-sd1")
    state = load_file(path)
    assert infer_diffusers_model_type(state) == "v1"
    folder = root / "models" / "checkpoints" / "ops-a"
    pipe = StableDiffusionPipeline.from_pretrained(str(folder), local_files_only=True, safety_checker=None)
    assert_diffusers_reads_every_weight(state, pipe.components)
    reference = original_sd1_state_dict(pipe.components)  # the fixtures' separately written mapping
    assert set(state) == set(reference)
    assert all(torch.allclose(state[k], reference[k]) for k in reference)


def test_a_saved_merge_loads_back_and_draws_the_same_picture(root: Path, manager: ModelManager) -> None:
    nodes = {"ck": loader("ops-a"), "ck2": loader("ops-b"), "m": merge("ck", "ck2", 0.5)}
    (path,) = save(root, manager, ("m", "model"), nodes, "merged")
    saved = Path(path)
    assert saved == root / "out" / "checkpoints" / "merged_00001_.safetensors"
    # the tiny model's shapes are not SD1.5's: give the file the tiny config, as a sidecar folder
    shutil.copytree(root / "sd1.config", saved.with_name(saved.stem + ".config"))
    reloaded = plain_picture(root, manager, saved.name)
    assert np.array_equal(reloaded, merged_picture(root, manager, 0.5))


def test_saved_sdxl_file_loads_in_diffusers_with_every_weight(root: Path, manager: ModelManager) -> None:
    from diffusers import StableDiffusionXLPipeline
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type
    from safetensors.torch import load_file

    from tests.fixtures.original_layout import original_sdxl_state_dict

    (path,) = save(root, manager, ("ck", "model"), {"ck": loader("ops-xl")}, "layout-sdxl")
    state = load_file(path)
    assert infer_diffusers_model_type(state) == "xl_base"
    folder = root / "models" / "checkpoints" / "ops-xl"
    pipe = StableDiffusionXLPipeline.from_pretrained(str(folder), local_files_only=True)
    reference = original_sdxl_state_dict(pipe.components)
    assert set(state) == set(reference)
    assert all(torch.equal(state[k], reference[k]) for k in reference)
    loaded = StableDiffusionXLPipeline.from_single_file(
        path,
        config=str(root / "sdxl.config"),
        local_files_only=True,
        tokenizer=pipe.tokenizer,
        tokenizer_2=pipe.tokenizer_2,
    )
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        want, got = getattr(pipe, name).state_dict(), getattr(loaded, name).state_dict()
        assert set(want) == set(got), name
        assert all(torch.equal(want[k], got[k]) for k in want), name


def test_sd2_state_dict_has_the_original_layout() -> None:
    """SD 2.x keeps its text encoder in OpenCLIP's names (q, k, v stacked); diffusers' converter
    must read every weight back. The fixtures' writer adds the unused projection real files carry."""
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint, infer_diffusers_model_type

    from models.checkpoint_save import original_state_dict
    from tests.fixtures.original_layout import SD2_OPEN_CLIP_PREFIX, original_sd2_state_dict
    from tests.fixtures.tiny_models import tiny_sd2_components

    parts = tiny_sd2_components(seed=3)
    config = dict(parts["scheduler"].config)
    state = original_state_dict("sd2", parts["unet"], parts["vae"], [parts["text_encoder"]], config)
    assert infer_diffusers_model_type(state) == "v2"
    reference = original_sd2_state_dict(parts)
    unused = {SD2_OPEN_CLIP_PREFIX + "text_projection", SD2_OPEN_CLIP_PREFIX + "logit_scale"}
    assert set(state) - {"v_pred"} == set(reference) - unused
    assert all(torch.allclose(state[k], reference[k]) for k in set(reference) - unused)
    assert ("v_pred" in state) == (config.get("prediction_type") == "v_prediction")
    converted = convert_open_clip_checkpoint(parts["text_encoder"], state)
    want = parts["text_encoder"].state_dict()
    converted = {k.removeprefix("text_model."): v for k, v in converted.items()}
    want = {k.removeprefix("text_model."): v for k, v in want.items()}
    assert set(converted) == set(want) and all(torch.equal(converted[k], want[k]) for k in want)
