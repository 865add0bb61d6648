"""The editor's training options (training/ip2p.py): the pool of pre-encoded edits, the loss weight on
the changed cells, the cosine schedule and starting from an exported editor. They run on the bundled
toy-sd (frozen, as the real run uses it) with batches of 2 and a few steps."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from training import ip2p  # noqa: E402
from training.frozen import load_frozen_sd, to_tensor  # noqa: E402
from training.run_folder import read_state  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TOY_SD = REPO / "models" / "checkpoints" / "toy-sd"
TOY_IP2P = REPO / "models" / "checkpoints" / "toy-ip2p"


@pytest.fixture(autouse=True)
def _keep_torch_settings():
    """The script switches on deterministic algorithms, seeds torch and sets its threads: put them back."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    rng = torch.get_rng_state()
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.set_rng_state(rng)


@pytest.fixture(scope="module")
def frozen_sd():
    torch.set_num_threads(1)
    return load_frozen_sd(TOY_SD, torch.device("cpu"))


def test_changed_cells_cover_the_edited_shape_only():
    from toyworld import Scene, Shape, edit, render

    scene = Scene((Shape("circle", "red", (0, 0)), Shape("square", "blue", (2, 2))), "white", 32)
    source, target = to_tensor([render(scene)]), to_tensor([render(edit(scene, "make the circle green"))])
    cells = ip2p.changed_cells(source, target, 8)
    assert cells.shape == (1, 1, 8, 8) and set(cells.unique().tolist()) == {0.0, 1.0}
    assert cells[0, 0, 1, 1] == 1 and cells[0, 0, :, 5:].sum() == 0 and cells[0, 0, 5:, :].sum() == 0
    assert ip2p.changed_cells(source, source, 8).sum() == 0


def test_the_pool_holds_the_items_latents_and_reads_back(frozen_sd, tmp_path: Path):
    pool = ip2p.build_pool(frozen_sd, 5, seed=3, size=32, device=torch.device("cpu"), chunk=2)
    assert pool.texts == [ip2p.edit_item(3, ip2p.POOL_STEP, i, 32)[1] for i in range(5)]
    assert pool.source.shape == pool.mean.shape == pool.std.shape == (5, 4, 8, 8)
    assert pool.changed.shape == (5, 1, 8, 8) and (pool.changed.sum(dim=(1, 2, 3)) > 0).all()
    source, _, target = ip2p.edit_item(3, ip2p.POOL_STEP, 4, 32)
    with torch.no_grad():
        expected = frozen_sd.vae.encode(to_tensor([source])).latent_dist.mode()[0]
    torch.testing.assert_close(pool.source[4], expected, rtol=1e-4, atol=1e-4)  # batched vs alone
    pool.save(tmp_path / "pool.safetensors")
    again = ip2p.EditPool.load(tmp_path / "pool.safetensors", torch.device("cpu"))
    assert again.texts == pool.texts
    for name in ("source", "mean", "std", "changed"):  # the same values in the same memory layout
        built, read = getattr(pool, name), getattr(again, name)
        assert torch.equal(built, read) and built.stride() == read.stride()


def test_two_shape_items_name_one_shape_of_two_and_change_only_it():
    from toyworld import analyze

    for index in range(12):
        source, text, target = ip2p.edit_item(5, 0, index, 32, shapes=2)
        before, after = ({(d.kind, d.color, d.cell) for d in analyze(p).shapes} for p in (source, target))
        assert len(before) == len(after) == 2, text
        # exactly one of the two shapes is what it was no more (recolored or moved)
        assert len(before & after) == 1, (text, before, after)
    # left unset, scenes of one shape come too, as before the option existed
    counts = {len(analyze(ip2p.edit_item(5, 0, i, 32)[0]).shapes) for i in range(24)}
    assert counts == {1, 2}


def test_cosine_schedule_warms_up_then_decays_to_its_floor():
    args = argparse.Namespace(lr=1e-3, warmup=10, steps=110, decay_to=0.1)
    lr_at = ip2p.lr_schedule(args)
    assert lr_at(0) == pytest.approx(1e-4) and lr_at(10) == pytest.approx(1e-3)
    assert lr_at(60) == pytest.approx(0.55e-3) and lr_at(110) == pytest.approx(1e-4)
    assert all(lr_at(s) >= lr_at(s + 1) for s in range(10, 120))
    stopped_early = ip2p.lr_schedule(
        argparse.Namespace(lr=1e-3, warmup=10, steps=60, decay_to=0.1, decay_steps=110)
    )
    assert [stopped_early(s) for s in range(60)] == [lr_at(s) for s in range(60)]
    constant = ip2p.lr_schedule(argparse.Namespace(lr=1e-3, warmup=10, steps=110, decay_to=None))
    assert constant(200) == pytest.approx(1e-3)


def pool_run(out: Path, steps: int) -> list[str]:
    return [
        "--out",
        str(out),
        "--sd",
        str(TOY_SD),
        "--steps",
        str(steps),
        "--batch",
        "2",
        "--threads",
        "1",
        "--pool",
        "6",
        "--edit-weight",
        "2",
        "--shapes",
        "2",
        "--decay-to",
        "0.1",
        "--warmup",
        "1",
        "--init",
        str(TOY_IP2P),
    ]


def test_a_pool_run_from_the_shipped_editor_resumes_exactly(frozen_sd, tmp_path: Path):
    assert ip2p.main(pool_run(tmp_path / "straight", 3)) == 0
    # stopped by its time budget after its first step, then resumed from the saved state and pool
    assert ip2p.main([*pool_run(tmp_path / "resumed", 3), "--max-minutes", "1e-9"]) == 0
    assert read_state(tmp_path / "resumed").step == 1
    assert ip2p.main(pool_run(tmp_path / "resumed", 3)) == 0
    straight = load_file(tmp_path / "straight" / "state" / "unet.safetensors")
    resumed = load_file(tmp_path / "resumed" / "state" / "unet.safetensors")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    shipped = load_file(TOY_IP2P / "unet" / "diffusion_pytorch_model.safetensors")
    moved = [k for k in shipped if not torch.equal(shipped[k].float(), straight[k])]
    assert moved and max(float((shipped[k].float() - straight[k]).abs().max()) for k in moved) < 0.05
    # the card's commands: the shipped editor's own, then this run's with every option
    card = ip2p.model_card(ip2p.build_editor_unet(frozen_sd.unet), tmp_path / "straight")
    commands = card.split("```bash\n")[1].split("```")[0].splitlines()
    shipped_card = (TOY_IP2P / "README.md").read_text()
    assert len(commands) >= 2 and all(c in shipped_card for c in commands[:-1])
    assert commands[-1].startswith("python -m training.ip2p ") and "--steps 3 " in commands[-1]
    assert "(2 shapes)" in card
    for option in (
        "--pool 6",
        "--edit-weight 2.0",
        "--shapes 2",
        "--decay-to 0.1 --decay-steps 3",
        f"--init {TOY_IP2P}",
    ):
        assert option in commands[-1]


def test_init_from_loads_the_exported_editor_exactly(frozen_sd):
    editor = ip2p.build_editor_unet(frozen_sd.unet)
    ip2p.init_from(editor, TOY_IP2P)
    shipped = load_file(TOY_IP2P / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(v, shipped[k].float()) for k, v in editor.state_dict().items())
    with pytest.raises(ValueError, match="not an editor"):
        ip2p.init_from(editor, TOY_SD)  # the SD's UNet: 4 input channels
    with pytest.raises(FileNotFoundError, match="no exported editor"):
        ip2p.init_from(editor, TOY_SD / "scheduler")


def test_runs_saved_before_the_new_options_still_resume(tmp_path: Path):
    from training.run_folder import write_config
    from training.script import settings

    args = ip2p.parse_args(["--out", str(tmp_path)])
    new = ("init", "pool", "edit_weight", "decay_to", "decay_steps")
    write_config(tmp_path, {k: v for k, v in settings(args).items() if k not in new}, resuming=False)
    write_config(tmp_path, settings(args), resuming=True)  # the defaults read as the old settings
    with pytest.raises(ValueError, match="pool"):
        write_config(tmp_path, settings(ip2p.parse_args(["--out", str(tmp_path), "--pool", "8"])), True)
