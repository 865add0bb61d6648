"""The bundled toy models, as a user meets them: they ship small, safe and documented, and the studio's
workflows with them draw, edit and read toy-world pictures that the rule-based analyzer checks.

The samples here are small (bench/toy_quality.py measures the same tasks on 100 held-out scenes each);
their floors sit below the figures the benchmark measured, so that they catch a broken model or node
rather than a seed's bad luck.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from training import quality  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"
BUNDLED = {
    "checkpoints/toy-sd": "StableDiffusionPipeline",
    "checkpoints/toy-ip2p": "StableDiffusionInstructPix2PixPipeline",
    "controlnet/toy-edges": "ControlNetModel",
    "captioners/toy-blip": "BlipForConditionalGeneration",
    "clip/toy-clip": "CLIPModel",
}
MAX_BYTES = 40 * 1024 * 1024

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory):
    """The studio over the repository's models/ (where the toy models are bundled)."""
    return quality.Studio(folder=tmp_path_factory.mktemp("toy-studio"))


def config_class(folder: Path) -> str:
    for name in ("model_index.json", "config.json"):
        if (folder / name).is_file():
            data = json.loads((folder / name).read_text())
            return data.get("_class_name") or data.get("architectures", ["?"])[0]
    return "?"


def test_the_bundled_models_are_small_safe_and_documented():
    total = 0
    for name, kind in BUNDLED.items():
        folder = MODELS / name
        assert folder.is_dir(), f"{name} is missing"
        assert config_class(folder) == kind
        files = [f for f in folder.rglob("*") if f.is_file()]
        assert any(f.suffix == ".safetensors" for f in files)
        assert not [f for f in files if f.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")], "pickle files"
        card = (folder / "README.md").read_text()
        assert "How it was made" in card and "python -m training." in card, f"{name}'s model card"
        total += sum(f.stat().st_size for f in files)
    assert total <= MAX_BYTES, f"the toy models take {total / 2**20:.1f} MiB"


def test_text_to_image_draws_held_out_prompts(studio):
    figures = quality.text_to_image(studio, 16)
    assert figures["color"] >= 0.8 and figures["shape"] >= 0.7 and figures["position"] >= 0.8, figures


def test_the_captioner_reads_held_out_pictures(studio):
    figures = quality.captioning(studio, 30)
    assert min(figures["shape"], figures["color"], figures["position"]) >= 0.9, figures


def test_the_controlnet_draws_on_the_edges(studio):
    figures = quality.controlnet(studio, 8)
    assert figures["edge_iou"] >= 0.6, figures


def test_inpainting_keeps_every_pixel_outside_the_mask(studio):
    figures = quality.inpainting(studio, 8)
    assert figures["outside_max_change"] == 0 and figures["color"] >= 0.6, figures


def test_colorization_brings_back_the_hues(studio):
    figures = quality.colorization(studio, 10)
    assert figures["hue"] >= 0.8, figures


def test_the_editor_follows_instructions(studio):
    figures = quality.editing(studio, 10)
    assert figures["color_target"] >= 0.3, figures  # a weak editor (see docs/toy-models.md), not a broken one


def test_clip_scores_a_pictures_own_caption_higher(studio):
    figures = quality.clip_scoring(studio, 20)
    assert figures["own_caption_wins"] >= 0.7, figures
