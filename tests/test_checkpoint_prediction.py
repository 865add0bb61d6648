"""CheckpointLoader's ``prediction`` override reaches the scheduler even when the saved
scheduler config never named ``prediction_type`` (as the public SD1.5 repository's does not):
diffusers' ``from_config`` drops keys listed in ``_use_default_values``, so a plain dict update
would be silently ignored and a v-prediction model would be sampled as epsilon."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.loading import load_checkpoint
from models.sampling import make_scheduler
from tests.fixtures.tiny_models import save_tiny_sd_folder


@pytest.fixture(scope="module")
def folder_without_prediction_type(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = save_tiny_sd_folder(tmp_path_factory.mktemp("pred") / "tiny")
    config_file = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text())
    config.pop("prediction_type", None)
    config_file.write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m_karras", "ddim"])
def test_the_prediction_override_reaches_every_sampler(folder_without_prediction_type: Path, sampler: str):
    auto = load_checkpoint(folder_without_prediction_type)
    assert make_scheduler(sampler, auto.scheduler_config).config.prediction_type == "epsilon"
    forced = load_checkpoint(folder_without_prediction_type, prediction="v_prediction")
    assert make_scheduler(sampler, forced.scheduler_config).config.prediction_type == "v_prediction"
