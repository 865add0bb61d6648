"""The toy-model training scripts with tiny sizes and a few steps: the VAE trains and exports, the SD
trains, a resumed run equals a straight one, the time budget stops cleanly, and the exported
checkpoint loads in the studio and draws a 32x32 picture through its nodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from training import export, sd, vae  # noqa: E402
from training.run_folder import read_log, read_state  # noqa: E402
from training.toy_data import toy_batch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TINY_VAE = "--channels 16,16,16 --groups 8 --batch 4 --eval-images 16 --threads 1".split()
TINY_SD = "--channels 16,32 --groups 8 --text-hidden 32 --text-layers 2 --batch 4 --threads 1".split()


@pytest.fixture(autouse=True)
def _keep_torch_settings():
    """The scripts switch on deterministic algorithms, seed torch and set its threads (one here: tiny
    models on a shared machine); put the session back."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    rng = torch.get_rng_state()
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.set_rng_state(rng)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained tiny VAE (3 steps) and a straight 4-step SD run on it."""
    root = tmp_path_factory.mktemp("runs")
    assert vae.main(["--out", str(root / "vae"), "--steps", "3", *TINY_VAE]) == 0
    assert sd.main(sd_args(root, "sd", 4)) == 0
    return root


def sd_args(root: Path, name: str, steps: int, *extra: str) -> list[str]:
    return ["--out", str(root / name), "--vae", str(root / "vae"), "--steps", str(steps), *TINY_SD, *extra]


def state_tensors(run: Path) -> dict[str, torch.Tensor]:
    return {
        f"{f.stem}/{k}": v
        for f in sorted((run / "state").glob("*.safetensors"))
        for k, v in load_file(f).items()
    }


def test_the_stream_is_the_train_split_and_depends_only_on_seed_and_step():
    from toyworld import split_of

    first, again, other = toy_batch(7, 8, seed=3), toy_batch(7, 8, seed=3), toy_batch(8, 8, seed=3)
    assert torch.equal(first.images, again.images) and first.captions == again.captions
    assert not torch.equal(first.images, other.images)
    assert first.images.shape == (8, 3, 32, 32) and -1 <= first.images.min() < first.images.max() <= 1
    many = toy_batch(0, 200, seed=0, drop_p=0.5)
    assert all(split_of(scene) == "train" for scene in many.scenes)
    assert 50 < sum(c == "" for c in many.captions) < 150


def test_bare_captions_leave_the_places_out_and_leave_the_rest_of_the_stream_as_it_was():
    from toyworld import caption, parse_caption

    plain = toy_batch(0, 200, seed=0, drop_p=0.1)
    bare = toy_batch(0, 200, seed=0, drop_p=0.1, bare_p=0.4)
    assert torch.equal(plain.images, bare.images)  # the same pictures, captions apart
    assert [c == "" for c in plain.captions] == [c == "" for c in bare.captions]
    changed = [i for i, (a, b) in enumerate(zip(plain.captions, bare.captions, strict=True)) if a != b]
    assert 50 < len(changed) < 110  # about 0.4 of the 180 or so captions not dropped
    for i in changed:
        scene = bare.scenes[i]
        assert bare.captions[i] == caption(
            scene, background="background" in bare.captions[i], positions=False
        )
        assert " at the " not in bare.captions[i] and " on the " not in bare.captions[i]
    for i in set(range(200)) - set(changed):
        if plain.captions[i]:
            assert parse_caption(plain.captions[i])  # still full captions


def test_vae_trains_and_exports(runs: Path):
    from diffusers import AutoencoderKL

    state = read_state(runs / "vae")
    assert state is not None and (state.step, state.status) == (3, "done")
    assert [r["step"] for r in read_log(runs / "vae")] == [1, 2, 3]
    model = AutoencoderKL.from_pretrained(str(runs / "vae" / "vae"), local_files_only=True)
    assert model.config.latent_channels == 4 and len(model.config.block_out_channels) == 3
    summary = json.loads((runs / "vae" / "summary.json").read_text())
    assert summary["latent"] == [4, 8, 8] and summary["scaling_factor"] == pytest.approx(
        model.config.scaling_factor
    )
    with torch.no_grad():
        latents = model.encode(torch.zeros(1, 3, 32, 32)).latent_dist.mode()
    assert latents.shape == (1, 4, 8, 8)


def test_sd_trains_and_logs_every_step(runs: Path):
    state = read_state(runs / "sd")
    assert state is not None and (state.step, state.status) == (4, "done")
    log = read_log(runs / "sd")
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in log)
    config = json.loads((runs / "sd" / "config.json").read_text())
    assert config["models"]["unet"]["cross_attention_dim"] == config["models"]["text_encoder"]["hidden_size"]


def test_resuming_in_a_new_process_equals_a_straight_run(runs: Path, tmp_path: Path):
    (tmp_path / "vae").symlink_to(runs / "vae")  # the same trained VAE
    assert sd.main(sd_args(tmp_path, "sd", 2)) == 0
    assert read_state(tmp_path / "sd").step == 2
    # the second half in a new process, from the command line, as a real resumption would be
    command = [sys.executable, "-m", "training.sd", *sd_args(tmp_path, "sd", 4)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed, straight = state_tensors(tmp_path / "sd"), state_tensors(runs / "sd")
    assert resumed.keys() == straight.keys() and any(k.startswith("ema_unet/") for k in resumed)
    different = [k for k in straight if not k.startswith("rng/") and not torch.equal(resumed[k], straight[k])]
    assert different == []
    losses = [r["loss"] for r in read_log(tmp_path / "sd")]
    assert losses == [r["loss"] for r in read_log(runs / "sd")]


def test_resuming_with_other_sizes_is_refused(runs: Path, tmp_path: Path):
    (tmp_path / "vae").symlink_to(runs / "vae")
    assert sd.main(sd_args(tmp_path, "sd", 1)) == 0
    with pytest.raises(ValueError, match="text_hidden"):
        sd.main(sd_args(tmp_path, "sd", 2, "--text-hidden", "16"))


def test_the_time_budget_saves_and_stops(runs: Path, tmp_path: Path):
    (tmp_path / "vae").symlink_to(runs / "vae")
    assert sd.main(sd_args(tmp_path, "sd", 50, "--max-minutes", "0.00001")) == 0
    state = read_state(tmp_path / "sd")
    assert state is not None and (state.step, state.status) == (1, "stopped")


def test_export_loads_and_draws_through_the_nodes(runs: Path, tmp_path: Path):
    from models.loading import load_checkpoint

    folder = export.export_sd(runs / "sd", tmp_path / "checkpoints" / "toy-sd")
    for part in (
        "model_index.json",
        "README.md",
        "tokenizer/tokenizer_config.json",
        "scheduler/scheduler_config.json",
    ):
        assert (folder / part).is_file(), part
    assert list(folder.rglob("*.safetensors")) and not list(folder.rglob("*.bin"))
    index = json.loads((folder / "model_index.json").read_text())
    assert index["safety_checker"] == [None, None]
    card = (folder / "README.md").read_text()
    assert "4 steps" in card and "seed 0" in card and "toyworld" in card
    checkpoint = load_checkpoint(folder)
    assert (checkpoint.family, checkpoint.vae_scale, checkpoint.unet.config.sample_size) == ("sd1", 4, 8)
    ema = load_file(runs / "sd" / "state" / "ema_unet.safetensors")
    # stored as float16, loaded as float32: the EMA weights to float16 rounding, exactly
    assert all(torch.equal(v, ema[k].half().float()) for k, v in checkpoint.unet.state_dict().items())
    assert {f.dtype for f in checkpoint.unet.parameters()} == {torch.float32}
    from training import quality

    nodes = quality.txt2img_nodes("a red circle", seed=1)
    nodes["s"]["inputs"]["steps"] = 2
    studio = quality.Studio(models=tmp_path)  # the exported folder alone
    images = np.asarray(studio.run(nodes, seed=1)["show"]["images"])  # raises unless done
    assert images.shape == (1, 32, 32, 3) and np.isfinite(images).all()


@pytest.fixture(scope="module")
def exported(runs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding the tiny SD run exported as checkpoints/toy-sd."""
    root = tmp_path_factory.mktemp("models")
    export.export_sd(runs / "sd", root / "checkpoints" / "toy-sd")
    return root


def test_controlnet_trains_from_the_exported_sd_and_steers_it(exported: Path, tmp_path: Path):
    from training import controlnet, quality

    run = tmp_path / "controlnet"
    args = ["--out", str(run), "--sd", str(exported / "checkpoints" / "toy-sd"), "--steps", "2"]
    args += ["--batch", "2", "--threads", "1", "--embedding", "8,8,8"]
    assert controlnet.main([*args, "--export", str(exported / "controlnet" / "toy-edges")]) == 0
    assert read_state(run).status == "done" and len(read_log(run)) == 2
    folder = exported / "controlnet" / "toy-edges"
    assert "toy-sd" in (folder / "README.md").read_text() and (folder / "config.json").is_file()
    studio = quality.Studio(models=exported)
    hint = np.zeros((32, 32), np.uint8)
    hint[4:12, 4:12] = 255
    nodes = quality.controlnet_nodes("a red square at the top left", studio.put(hint), seed=1)
    nodes["s"]["inputs"]["steps"] = 2
    with_hint = studio.picture(nodes, seed=1)
    nodes["control"]["inputs"]["strength"] = 0.0
    without = studio.picture(nodes, seed=1)
    assert with_hint.shape == (32, 32, 3)
    assert not np.array_equal(with_hint, without)  # two training steps moved the zero convolutions


def test_editor_trains_from_the_exported_sd_and_edits_through_the_nodes(exported: Path, tmp_path):
    from safetensors.torch import load_file as load

    from toyworld import Scene, Shape, render
    from training import ip2p, quality

    run = tmp_path / "ip2p"
    args = ["--out", str(run), "--sd", str(exported / "checkpoints" / "toy-sd"), "--steps", "2"]
    args += ["--batch", "2", "--threads", "1", "--export", str(exported / "checkpoints" / "toy-ip2p")]
    assert ip2p.main(args) == 0
    folder = exported / "checkpoints" / "toy-ip2p"
    assert json.loads((folder / "unet" / "config.json").read_text())["in_channels"] == 8
    for part in ("text_encoder/model.safetensors", "vae/diffusion_pytorch_model.safetensors"):
        shared, ours = load(exported / "checkpoints" / "toy-sd" / part), load(folder / part)
        assert all(torch.equal(shared[k], ours[k]) for k in shared)  # the SD's, frozen
    for part in ("text_encoder", "tokenizer", "vae"):  # stored once: links into the SD's folder
        assert (folder / part).is_symlink() and (folder / part).resolve() == (
            exported / "checkpoints" / "toy-sd" / part
        )
    studio = quality.Studio(models=exported)
    picture = render(Scene((Shape("circle", "red", (0, 0)),), "white", 32))
    nodes = quality.edit_nodes("make the circle blue", studio.put(picture), seed=1)
    nodes["edit"]["inputs"]["steps"] = 2
    assert studio.picture(nodes, seed=1).shape == (32, 32, 3)


def test_editor_items_are_valid_training_edits():
    from training.ip2p import edit_item

    for index in range(20):
        source, instruction, target = edit_item(0, 3, index, 32)
        assert instruction.startswith(("make the ", "move the "))
        assert source.shape == target.shape == (32, 32, 3) and not np.array_equal(source, target)
    assert edit_item(0, 3, 5, 32)[1] == edit_item(0, 3, 5, 32)[1]  # depends on (seed, step, item) only


def test_halved_weights_keep_metadata_and_load_as_float32(tmp_path: Path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from training.script import halve_weights

    weights = {"w": torch.randn(4, 4), "steps": torch.arange(3)}
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    halve_weights(tmp_path)
    with safe_open(tmp_path / "model.safetensors", framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert f.get_tensor("w").dtype == torch.float16 and f.get_tensor("steps").dtype == torch.int64
        assert torch.equal(f.get_tensor("w").float(), weights["w"].half().float())


def test_clip_trains_exports_and_scores_through_the_nodes(tmp_path: Path):
    from training import clip, quality

    root = tmp_path / "models"
    args = ["--out", str(tmp_path / "clip"), "--steps", "2", "--batch", "4", "--threads", "1"]
    args += ["--hidden", "32", "--layers", "1", "--eval", "4", "--export", str(root / "clip" / "toy-clip")]
    assert clip.main(args) == 0
    folder = root / "clip" / "toy-clip"
    assert json.loads((folder / "eval.json").read_text())["n"] == 4
    assert "python -m training.clip" in (folder / "README.md").read_text()
    studio = quality.Studio(models=root)
    nodes = quality.clip_nodes(studio.put(np.full((32, 32, 3), 200, np.uint8)), "a red circle")
    assert -1.0 <= float(studio.run(nodes)["show"]["text"]) <= 1.0


def test_an_altered_caption_changes_exactly_one_shape():
    from toyworld import random_scene
    from training.clip import altered

    for i in range(30):
        rng = np.random.default_rng(i)
        scene = random_scene(rng, size=32, split="test")
        changed = altered(scene, rng)
        assert len(set(scene.attributes) ^ set(changed.attributes)) == 2  # one shape out, one in


def test_edge_iou_rewards_shapes_on_the_outlines_only():
    from toyworld import Scene, Shape, edges, render
    from training.controlnet import edge_iou

    scene = Scene((Shape("square", "red", (0, 0)), Shape("circle", "blue", (2, 2))), "white", 32)
    elsewhere = Scene((Shape("square", "red", (0, 2)), Shape("circle", "blue", (2, 0))), "white", 32)
    blank = render(Scene((), "white", 32))
    assert edge_iou(render(scene), edges(scene)) > 0.8
    assert edge_iou(render(elsewhere), edges(scene)) < 0.1
    assert edge_iou(blank, edges(scene)) == 0.0


def test_the_inpainting_mask_covers_exactly_one_cell():
    from toyworld import Scene, Shape, mask
    from training.quality import cell_mask

    scene = Scene((Shape("triangle", "green", (1, 2)),), "white", 32)
    cells = [cell_mask(scene, (row, col)) > 0 for row in range(3) for col in range(3)]
    assert (np.sum(cells, axis=0) == 1).all()  # the nine cells tile the picture
    assert not (mask(scene) > 0)[~cells[5]].any()  # the shape lies inside its own cell


def test_sd_fine_tunes_with_grounding_and_exports_beside_the_sd_it_started_from(exported: Path, tmp_path):
    from training import quality_grounding

    base = exported / "checkpoints" / "toy-sd"
    run = tmp_path / "grounded"
    args = ["--out", str(run), "--vae", str(base / "vae"), "--init", str(base), "--steps", "2"]
    args += ["--batch", "4", "--threads", "1", "--freeze-text", "--ground", "0.5", "--bare-p", "0.5"]
    assert sd.main(args) == 0
    log = read_log(run)
    assert len(log) == 2 and all(r["ground"] > 0 and r["denoise"] > 0 for r in log)
    for record in log:  # the loss is the denoising loss plus the weighted grounding loss
        assert record["loss"] == pytest.approx(record["denoise"] + 0.5 * record["ground"], rel=1e-5)
    out = exported / "checkpoints" / "toy-sd-grounded"
    export.export_sd(run, out, link_from=base)
    for part in ("text_encoder", "tokenizer", "vae"):  # frozen, so stored once: links into the SD's folder
        assert (out / part).is_symlink() and (out / part).resolve() == base.resolve() / part
    trained = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    started = load_file(base / "unet" / "diffusion_pytorch_model.safetensors")
    assert any(not torch.equal(trained[k], started[k]) for k in started)  # the UNet trained on
    card = (out / "README.md").read_text()
    assert "# toy-sd-grounded: toy-sd fine-tuned to ground its words" in card
    assert "--init" in card and "--freeze-text --ground 0.5 --bare-p 0.5" in card and "--link-from" in card
    assert "50% of its captions leave the places out" in card
    probe = quality_grounding.grounding_probe(out, n=2, timesteps=(500,))
    assert 0 < probe["even"] < 1 and 0 < probe["inside"] < 1 and 0 < probe["peak_kind"] <= 1


def test_the_editor_trains_with_grounding(exported: Path, tmp_path: Path):
    from training import ip2p

    run = tmp_path / "ip2p-ground"
    args = ["--out", str(run), "--sd", str(exported / "checkpoints" / "toy-sd"), "--steps", "2"]
    assert ip2p.main([*args, "--batch", "4", "--threads", "1", "--shapes", "2", "--ground", "0.5"]) == 0
    log = read_log(run)
    assert len(log) == 2 and all(r["ground"] > 0 for r in log)
    config = json.loads((run / "config.json").read_text())
    assert config["ground"] == 0.5
    assert "--shapes 2 --ground 0.5" in ip2p.reproduce_commands(run, config)[-1]
