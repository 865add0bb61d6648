"""Evaluation (evaluation/, app.py eval, nodes/evaluation.py) against known answers: identical
sets score about 0, a set moved further away scores worse, the estimators match a direct
computation, and the metrics rank a deliberately degraded toy model below the bundled one."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from evaluation import metrics as M  # noqa: E402
from evaluation.features import load_features  # noqa: E402
from evaluation.images import load_folder, png_prompt  # noqa: E402
from toyworld.world import caption, random_scene, render  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def toy_pictures(n: int, seed: int) -> list[np.ndarray]:
    return [render(random_scene(np.random.default_rng([seed, i]), size=32)) for i in range(n)]


def noised(pictures: list[np.ndarray], std: float, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        np.clip(p.astype(np.float32) + rng.normal(0, 255 * std, p.shape), 0, 255).round().astype(np.uint8)
        for p in pictures
    ]


@pytest.fixture(scope="module")
def model():
    return load_features()


@pytest.fixture(scope="module")
def sets(model):
    base = toy_pictures(24, 1)
    return {
        "base": model.embed(base),
        "light": model.embed(noised(base, 0.03)),
        "heavy": model.embed(noised(base, 0.35)),
    }


# --------------------------------------------------------------------------- known answers


def test_identical_sets_score_zero(sets):
    """FID is 0; the unbiased KID and CMMD are -(2/m)(mean diagonal - mean off-diagonal kernel), a
    small negative number (0 in expectation for two samples of one distribution)."""
    x = sets["base"]
    m = len(x)
    assert M.fid(x, x) == pytest.approx(0.0, abs=1e-2)

    def identical_answer(k: np.ndarray) -> float:
        return -(2 / m) * (np.trace(k) / m - (k.sum() - np.trace(k)) / (m * (m - 1)))

    poly = (x @ x.T / x.shape[1] + 1.0) ** 3
    assert M.kid(x, x)[0] == pytest.approx(identical_answer(poly), rel=1e-6)
    xn = M.l2_normalize(x)
    rbf = M.rbf_kernel(xn, xn, M.CMMD_SIGMA)
    assert M.cmmd(x, x) == pytest.approx(M.CMMD_SCALE * identical_answer(rbf), rel=1e-6)


def test_a_set_moved_further_away_scores_worse(sets):
    x, light, heavy = sets["base"], sets["light"], sets["heavy"]
    assert M.fid(x, heavy) > M.fid(x, light)
    assert M.kid(x, heavy)[0] > M.kid(x, light)[0]
    assert M.cmmd(x, heavy) > M.cmmd(x, light)


def test_the_unbiased_mmd_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 5)), rng.normal(0.5, 1.0, size=(9, 5))

    def direct(kernel, a, b) -> float:
        m, n = len(a), len(b)
        xx = sum(kernel(a[i], a[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
        yy = sum(kernel(b[i], b[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
        xy = sum(kernel(a[i], b[j]) for i in range(m) for j in range(n)) / (m * n)
        return xx + yy - 2 * xy

    def rbf(u, v):
        return np.exp(-np.sum((u - v) ** 2) / (2 * M.CMMD_SIGMA**2))

    xn, yn = M.l2_normalize(x), M.l2_normalize(y)
    assert M.cmmd(x, y) == pytest.approx(M.CMMD_SCALE * direct(rbf, xn, yn), rel=1e-9, abs=1e-12)

    # KID on one subset holding every sample: torchmetrics' unbiased MMD² with (x.y / d + 1)^3
    def poly(u, v):
        return (u @ v / x.shape[1] + 1.0) ** 3

    y7 = y[:7]
    assert M.kid(x, y7, subsets=1)[0] == pytest.approx(direct(poly, x, y7), rel=1e-6)


def test_precision_and_recall_are_one_on_identical_sets_and_drop_when_a_set_moves(sets):
    x = sets["base"]
    assert M.precision_recall(x, x) == (1.0, 1.0)
    far = x + 10.0 * np.abs(x).max()
    assert M.precision_recall(x, far) == (0.0, 0.0)
    precision, _ = M.precision_recall(x, sets["heavy"])
    assert precision < 1.0


def test_the_feature_module_plugs_into_torchmetrics_as_is(model):
    """torchmetrics' FID with the feature module given as ``feature=`` equals the FID of features
    computed once (what the CLI does)."""
    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance

    a, b = toy_pictures(8, 3), noised(toy_pictures(8, 3), 0.2)
    metric = FrechetInceptionDistance(feature=model.image)
    metric.update(torch.from_numpy(np.stack(a)).permute(0, 3, 1, 2), real=True)
    metric.update(torch.from_numpy(np.stack(b)).permute(0, 3, 1, 2), real=False)
    assert float(metric.compute()) == pytest.approx(M.fid(model.embed(a), model.embed(b)), rel=0.05)


def test_clip_score_prefers_the_pictures_own_caption(model):
    scenes = [random_scene(np.random.default_rng([5, i]), size=32) for i in range(12)]
    pictures = model.embed([render(s) for s in scenes])
    own = M.clip_scores(pictures, model.embed_texts([caption(s) for s in scenes]))
    other = M.clip_scores(pictures, model.embed_texts([caption(s) for s in scenes[1:] + scenes[:1]]))
    assert own.mean() > other.mean()
    assert np.all(np.abs(own) <= 100.0)


def test_the_analyzer_reads_rendered_scenes_as_their_captions():
    scenes = [random_scene(np.random.default_rng([6, i]), size=32) for i in range(6)]
    found = M.analyzer_accuracy([render(s) for s in scenes], [caption(s) for s in scenes])
    assert found["value"] == 1.0 and found["count"] == 6
    swapped = M.analyzer_accuracy([render(s) for s in scenes], [caption(s) for s in scenes[1:] + scenes[:1]])
    assert swapped["value"] < 0.5
    with pytest.raises(M.MetricError):
        M.analyzer_accuracy([render(scenes[0])], ["a photo of a cat"])


# --------------------------------------------------------------------------- command line and report


def write_folder(folder: Path, pictures: list[np.ndarray]) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, picture in enumerate(pictures):
        Image.fromarray(picture).save(folder / f"{i:02d}.png")
    return folder


def test_the_command_measures_two_folders_and_writes_the_report(tmp_path, capsys):
    from app import main

    scenes = [random_scene(np.random.default_rng([9, i]), size=32) for i in range(10)]
    images = write_folder(tmp_path / "images", noised([render(s) for s in scenes], 0.05))
    reference = write_folder(tmp_path / "reference", toy_pictures(10, 10))
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({f"{i:02d}.png": caption(s) for i, s in enumerate(scenes)}))
    report = tmp_path / "report.html"
    code = main(
        [
            "eval",
            "--images", str(images),
            "--reference", str(reference),
            "--metrics", "fid,kid,cmmd,clip,precision_recall,analyzer",
            "--prompts", str(prompts),
            "--json",
            "--report", str(report),
        ]
    )  # fmt: skip
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["metrics"]) == {"fid", "kid", "cmmd", "clip", "precision_recall", "analyzer"}
    assert data["skipped"] == {}
    assert data["features"] == {"model": "toy-clip", "dim": 64}
    assert len(data["metrics"]["clip"]["per_image"]) == 10
    assert data["metrics"]["analyzer"]["count"] == 10
    page = report.read_text()
    uris = [part.split('"', 1)[0] for part in page.split('src="data:image/png;base64,')[1:]]
    assert len(uris) == 3  # metrics, feature-space scatter, per-image CLIP scores
    assert all(base64.b64decode(u).startswith(b"\x89PNG") for u in uris)


def test_the_command_skips_what_it_cannot_measure_and_refuses_bad_arguments(tmp_path, capsys):
    from app import main

    images = write_folder(tmp_path / "images", toy_pictures(4, 11))
    assert main(["eval", "--images", str(images), "--metrics", "fid,clip"]) == 0
    out = capsys.readouterr().out
    assert "fid" in out and "skipped" in out and "reference" in out
    assert main(["eval", "--images", str(images), "--metrics", "fid,bogus"]) == 2
    assert main(["eval", "--images", str(tmp_path / "missing")]) == 2
    assert "error:" in capsys.readouterr().err
    for name, data in (("garbage.safetensors", b"\x07" * 300), ("text.bin", b"not a pickle at all\n")):
        (tmp_path / name).write_bytes(data)
        assert main(["eval", "--images", str(images), "--features", str(tmp_path / name)]) == 2
        assert f"{name} is not a CLIP model the evaluation can use" in capsys.readouterr().err


def test_prompts_come_from_the_workflow_a_studio_png_carries(tmp_path):
    from PIL import Image, PngImagePlugin

    workflow = json.loads((REPO / "workflows" / "txt2img.json").read_text())
    info = PngImagePlugin.PngInfo()
    info.add_text("workflow", json.dumps(workflow))
    Image.fromarray(toy_pictures(1, 12)[0]).save(tmp_path / "a.png", pnginfo=info)
    assert (
        png_prompt((tmp_path / "a.png").read_bytes(), "a.png") == workflow["nodes"]["pos"]["inputs"]["text"]
    )
    assert load_folder(tmp_path).prompts == {"a.png": workflow["nodes"]["pos"]["inputs"]["text"]}


def test_prompts_come_from_captions_beside_the_pictures_and_name_tab_prompt_files(tmp_path):
    """A same-stem .txt caption (a training dataset's) is a picture's prompt, before the prompt its
    PNG carries; a prompts file may name each picture (``name<TAB>prompt``, toyworld's
    captions.txt), and one that names a picture not there is refused with its name."""
    from PIL import Image, PngImagePlugin

    from evaluation.images import EvaluationInputError, read_prompts

    workflow = json.loads((REPO / "workflows" / "txt2img.json").read_text())
    info = PngImagePlugin.PngInfo()
    info.add_text("workflow", json.dumps(workflow))
    pictures = toy_pictures(3, 14)
    for name, picture in zip(("a", "b", "c"), pictures, strict=True):
        Image.fromarray(picture).save(tmp_path / f"{name}.png", pnginfo=info)
    (tmp_path / "a.txt").write_text("a red circle at the top left\n")
    (tmp_path / "b.txt").write_text("  \n")  # an empty caption says nothing: the PNG's prompt stands
    loaded = load_folder(tmp_path)
    carried = workflow["nodes"]["pos"]["inputs"]["text"]
    assert loaded.prompts == {"a.png": "a red circle at the top left", "b.png": carried, "c.png": carried}
    assert load_folder(tmp_path, read_prompts=False).prompts == {}

    named = tmp_path / "captions.txt"
    named.write_text("c.png\ta blue square in the center\na.png\ta green cross on the left\n")
    assert read_prompts(named, loaded) == {
        "c.png": "a blue square in the center",
        "a.png": "a green cross on the left",
    }
    named.write_text("a.png\tone\nz.png\ttwo\n")
    with pytest.raises(EvaluationInputError, match="z.png"):
        read_prompts(named, loaded)


# --------------------------------------------------------------------------- nodes


def test_the_evaluation_nodes_give_floats():
    from nodes.evaluation import CMMDScore, FIDScore, KIDScore, PrecisionRecall
    from nodes.registry import default_registry
    from tests.helpers import run_node

    registry = default_registry()
    assert not registry.problems
    for cls in (FIDScore, KIDScore, CMMDScore, PrecisionRecall):
        assert registry.get(cls.type) is cls and cls.readable_name()
    batch = np.stack(toy_pictures(6, 13)).astype(np.float32) / 255.0
    assert run_node(FIDScore, images=batch, reference=batch)["fid"] == pytest.approx(0.0, abs=1e-2)
    far = np.clip(batch + np.random.default_rng(0).normal(0, 0.3, batch.shape), 0, 1).astype(np.float32)
    assert run_node(CMMDScore, images=far, reference=batch)["cmmd"] > 1.0
    assert isinstance(run_node(KIDScore, images=far, reference=batch)["kid"], float)
    assert run_node(PrecisionRecall, images=batch, reference=batch) == {"precision": 1.0, "recall": 1.0}


# --------------------------------------------------------------------------- a degraded model ranks lower


@pytest.mark.slow
def test_the_metrics_rank_a_degraded_toy_model_below_the_bundled_one(tmp_path, model):
    from training.quality_evaluation import compare

    # 8 held-out prompts x 2 pictures per model, 8 steps, 32 rendered references (bench/evaluation.py
    # measures the same at a larger size)
    results = compare(tmp_path, prompts=8, batch=2, steps=8, references=32, features=model)
    good, bad = results["bundled"], results["degraded"]
    for lower_is_better in ("fid", "kid", "cmmd"):
        assert good[lower_is_better]["value"] < bad[lower_is_better]["value"], (lower_is_better, results)
    assert good["precision_recall"]["precision"] >= bad["precision_recall"]["precision"], results
    assert good["clip"]["value"] > bad["clip"]["value"], results
    assert good["analyzer"]["value"] > bad["analyzer"]["value"], results


def test_the_evaluation_nodes_load_their_feature_model_once_per_manager():
    from nodes.evaluation import CMMDScore, FIDScore
    from tests.helpers import make_ctx

    ctx = make_ctx()
    manager = ctx.services.models()
    batch = np.stack(toy_pictures(4, 21)).astype(np.float32) / 255.0
    before = manager.loads
    fid = FIDScore().run(ctx, images=batch, reference=batch, features="toy-clip")["fid"]
    cmmd = CMMDScore().run(ctx, images=batch, reference=batch, features="toy-clip")["cmmd"]
    assert manager.loads == before + 1
    assert fid == pytest.approx(0.0, abs=1e-2) and isinstance(cmmd, float)
