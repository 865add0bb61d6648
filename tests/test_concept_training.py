"""Concept training (training/concept, ``app.py train-lora`` / ``train-embedding``): a few steps on
the bundled toy-sd from pictures of a star, a shape it never saw. The files it writes are used at once
by LoraLoader and by prompts, diffusers' own loaders read them the same way (the oracle), a seed
repeats a run, and bad requests are refused before any training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from models.paths import REPO_MODELS
from toyworld.__main__ import write_concept
from training.concept import ConceptConfig, ConceptError, loss_plot, train_concept

TOY_SD = REPO_MODELS / "checkpoints" / "toy-sd"
pytestmark = pytest.mark.skipif(not TOY_SD.is_dir(), reason="the bundled toy-sd is missing")


@pytest.fixture(scope="module")
def stars(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 pictures of a star with captions calling it 'toy-star'."""
    folder = tmp_path_factory.mktemp("stars")
    write_concept("star", 8, 32, 0, "toy-star", folder)
    return folder


def config(kind: str, images: Path, out: Path, **extra: object) -> ConceptConfig:
    settings: dict = {"token": "toy-star", "steps": 3, "batch": 2, "threads": 1, "learning_rate": 0.05}
    return ConceptConfig(kind, TOY_SD, images, out, **(settings | extra))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def lora_file(stars: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lora") / "star.safetensors"
    result = train_concept(config("lora", stars, out, token="star"))
    assert result.path == out and result.steps_done == 3 and not result.stopped
    return out


@pytest.fixture(scope="module")
def embedding_file(stars: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("embedding") / "toy-star.safetensors"
    train_concept(config("embedding", stars, out, init_word="diamond"))
    return out


def studio_over(root: Path, lora: Path | None = None, embedding: Path | None = None):  # noqa: ANN201
    """A studio whose models folder holds toy-sd and the given files."""
    from training.quality import Studio

    (root / "checkpoints").mkdir(parents=True, exist_ok=True)
    if not (root / "checkpoints" / "toy-sd").exists():
        (root / "checkpoints" / "toy-sd").symlink_to(TOY_SD, target_is_directory=True)
    for kind, path in (("loras", lora), ("embeddings", embedding)):
        if path is not None:
            (root / kind).mkdir(exist_ok=True)
            (root / kind / path.name).write_bytes(path.read_bytes())
    return Studio(models=root, folder=root / "run")


def picture(studio, prompt: str, lora: str | None = None) -> np.ndarray:  # noqa: ANN001
    from training.quality import txt2img_nodes
    from training.quality_concept import with_lora

    nodes = txt2img_nodes(prompt, 7)
    return studio.picture(with_lora(nodes, lora) if lora else nodes, 7)


# ------------------------------------------------------------------------------------------- LoRA


def test_lora_file_has_kohya_keys_alpha_and_metadata(lora_file: Path) -> None:
    state = load_file(str(lora_file))
    downs = [k for k in state if k.endswith(".lora_down.weight")]
    assert downs and all(k.startswith("lora_unet_") for k in downs)
    assert all(state[k.replace(".lora_down.weight", ".alpha")].item() == 4.0 for k in downs)
    assert any("attn2_to_k" in k for k in downs)  # cross-attention, where the words come in
    with safe_open(str(lora_file), "pt") as handle:
        meta = handle.metadata()
    assert meta["kind"] == "lora" and meta["base_model"] == "toy-sd" and meta["steps_done"] == "3"
    assert meta["trigger"] == "star" and meta["ss_network_dim"] == "4"


def test_lora_loader_uses_it_at_once_and_it_changes_the_picture(lora_file: Path, tmp_path: Path) -> None:
    studio = studio_over(tmp_path, lora=lora_file)
    before = picture(studio, "a red star at the top left")
    after = picture(studio, "a red star at the top left", lora=lora_file.name)
    assert np.abs(before.astype(int) - after.astype(int)).max() > 10


def test_every_target_the_config_accepts_has_its_layers() -> None:
    from training.concept.config import TARGETS
    from training.concept.lora_file import UNET_TARGET_SETS

    assert tuple(UNET_TARGET_SETS) == TARGETS


@pytest.mark.parametrize("targets", ["attention", "all", "cross"])
def test_diffusers_load_lora_weights_agrees_with_our_loader(
    targets: str, lora_file: Path, stars: Path, tmp_path: Path
) -> None:
    """Oracle: the UNet with our file through diffusers' load_lora_weights and fuse_lora equals the
    UNet our LoraLoader path (models.loading.with_loras) makes; with ``targets="all"`` the file also
    holds the ResNets' convolutions (LoCon) and the feed-forward layers, with ``targets="cross"`` only
    the cross-attention's key and value projections (Custom Diffusion)."""
    from diffusers import StableDiffusionPipeline

    from models.loading import load_checkpoint, with_loras

    if targets == "all":
        lora_file = tmp_path / "all.safetensors"
        train_concept(config("lora", stars, lora_file, token="star", steps=1, targets="all"))
        keys = load_file(str(lora_file))
        assert any("resnets_0_conv1.lora_down" in k for k in keys) and any("ff_net_2" in k for k in keys)
    if targets == "cross":
        lora_file = tmp_path / "cross.safetensors"
        train_concept(config("lora", stars, lora_file, token="star", steps=1, targets="cross"))
        layers = {k.split(".")[0] for k in load_file(str(lora_file))}
        assert layers and all(k.endswith(("attn2_to_k", "attn2_to_v")) for k in layers), sorted(layers)
        assert any(k.endswith("attn2_to_k") for k in layers) and any(k.endswith("attn2_to_v") for k in layers)

    ours = with_loras(load_checkpoint(TOY_SD), [(lora_file, 1.0, 1.0)], allow_pickle=False).unet
    pipe = StableDiffusionPipeline.from_pretrained(str(TOY_SD), local_files_only=True, safety_checker=None)
    pipe.load_lora_weights(str(lora_file.parent), weight_name=lora_file.name)
    pipe.fuse_lora(lora_scale=1.0)
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, 8, 8, generator=generator)
    text = torch.randn(1, 77, ours.config.cross_attention_dim, generator=generator)
    with torch.no_grad():
        expected = pipe.unet(latents, 500, text).sample
        got = ours(latents, 500, text).sample
        plain = load_checkpoint(TOY_SD).unet(latents, 500, text).sample
    assert (expected - plain).abs().max() > 1e-3  # the LoRA does something
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_lora_with_text_encoder_layers_loads(stars: Path, tmp_path: Path) -> None:
    out = tmp_path / "te.safetensors"
    train_concept(config("lora", stars, out, token="star", steps=1, train_text_encoder=True))
    state = load_file(str(out))
    assert any(k.startswith("lora_te_text_model_encoder_layers_0_self_attn_q_proj") for k in state)
    from models.loading import load_checkpoint, with_loras

    base = load_checkpoint(TOY_SD)
    fused = with_loras(base, [(out, 1.0, 1.0)], allow_pickle=False)
    q_base = base.text_encoders[0].get_submodule("encoder.layers.0.self_attn.q_proj").weight
    q_fused = fused.text_encoders[0].get_submodule("encoder.layers.0.self_attn.q_proj").weight
    assert not torch.equal(q_base, q_fused)


def test_training_is_deterministic_for_a_seed(stars: Path, tmp_path: Path, lora_file: Path) -> None:
    again = train_concept(config("lora", stars, tmp_path / "again.safetensors", token="star"))
    first, second = load_file(str(lora_file)), load_file(str(again.path))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    other = train_concept(config("lora", stars, tmp_path / "other.safetensors", token="star", seed=1))
    third = load_file(str(other.path))
    assert any(not torch.equal(first[k], third[k]) for k in first)
    moved = train_concept(config("lora", stars, tmp_path / "moved.safetensors", token="star", shift=1))
    fourth = load_file(str(moved.path))  # the pictures also seen moved by a pixel: another result
    assert any(not torch.equal(first[k], fourth[k]) for k in first)


# -------------------------------------------------------------------------------------- embedding


def test_embedding_file_is_emb_params_and_a_prompt_uses_it(embedding_file: Path, tmp_path: Path) -> None:
    state = load_file(str(embedding_file))
    assert set(state) == {"emb_params"} and state["emb_params"].shape == (1, 64)
    with safe_open(str(embedding_file), "pt") as handle:
        assert handle.metadata()["token"] == "toy-star"
    studio = studio_over(tmp_path, embedding=embedding_file)
    named = picture(studio, "a red toy-star at the top left")
    prefixed = picture(studio, "a red embedding:toy-star at the top left")
    plain = picture(studio, "a red diamond at the top left")
    assert np.array_equal(named, prefixed)
    assert np.abs(named.astype(int) - plain.astype(int)).max() > 10  # it learnt away from "diamond"


def test_embedding_leaves_every_other_row_and_prompt_as_it_was(embedding_file: Path) -> None:
    from models.embeddings import with_embeddings
    from models.loading import load_checkpoint
    from models.prompts import encode

    base = load_checkpoint(TOY_SD)
    tokenizers, encoders, expansions = with_embeddings(
        base.tokenizers, base.text_encoders, {"toy-star": embedding_file}, False
    )
    old = base.text_encoders[0].get_input_embeddings().weight
    new = encoders[0].get_input_embeddings().weight
    assert torch.equal(new[: old.shape[0]], old)
    diamond = old[base.tokenizers[0]("diamond", add_special_tokens=False).input_ids[0]]
    assert not torch.equal(new[old.shape[0]], diamond)  # the new row moved from its start
    prompt = "a red circle at the top left"
    assert torch.equal(
        encode(base.tokenizers[0], base.text_encoders[0], prompt)[0],
        encode(tokenizers[0], encoders[0], prompt)[0],
    )


def test_new_rows_train_and_the_table_does_not() -> None:
    from models.loading import load_checkpoint
    from training.concept.tokens import add_tokens

    base = load_checkpoint(TOY_SD)
    tokenizer, encoder = base.tokenizers[0], base.text_encoders[0]
    new = add_tokens(tokenizer, encoder, "<thing>", 2, "")
    table = new.rows.table.weight.detach().clone()
    ids = tokenizer("a <thing> <thing>_1 here", return_tensors="pt").input_ids
    assert set(new.rows.ids.tolist()) <= set(ids[0].tolist())
    optimizer = torch.optim.AdamW([new.rows.vectors], lr=0.1)
    encoder(ids)[0].pow(2).mean().backward()
    optimizer.step()
    assert torch.equal(new.rows.table.weight, table)
    new.write_back(encoder)
    weight = encoder.get_input_embeddings().weight
    assert torch.equal(weight[new.rows.ids], new.rows.vectors.detach())
    assert not torch.equal(weight[new.rows.ids], table[new.rows.ids])


def test_embedding_diffusers_oracle(embedding_file: Path) -> None:
    """Oracle: diffusers' load_textual_inversion with our file gives the prompt embedding our
    prompt path gives."""
    from diffusers import StableDiffusionPipeline

    from models.embeddings import expand, with_embeddings
    from models.loading import load_checkpoint
    from models.prompts import encode

    pipe = StableDiffusionPipeline.from_pretrained(str(TOY_SD), local_files_only=True, safety_checker=None)
    pipe.load_textual_inversion(str(embedding_file), token="toy-star")
    prompt = "a blue toy-star at the top left"
    expected, _ = pipe.encode_prompt(prompt, "cpu", 1, False)
    base = load_checkpoint(TOY_SD)
    tokenizers, encoders, expansions = with_embeddings(
        base.tokenizers, base.text_encoders, {"toy-star": embedding_file}, False
    )
    got, _ = encode(tokenizers[0], encoders[0], expand(prompt, expansions))
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------------ prior, stop, single file


def test_prior_preservation_draws_class_pictures_and_trains(stars: Path, tmp_path: Path) -> None:
    """Missing class pictures are drawn by the base model, one prompt after another, and saved with
    their prompts as captions; a second run reuses them."""
    from toyworld import analyze

    classes = tmp_path / "classes"
    classes.mkdir()
    prior = {
        "prior_preservation": True,
        "class_prompt": "a red square at the top left|a blue circle in the center",
        "class_images": classes,
        "num_class_images": 2,
    }
    result = train_concept(
        config("lora", stars, tmp_path / "prior.safetensors", token="star", steps=2, **prior)
    )
    drawn = sorted(classes.glob("*.png"))
    assert result.steps_done == 2 and len(drawn) == 2
    captions = [p.with_suffix(".txt").read_text().strip() for p in drawn]
    assert captions == ["a red square at the top left", "a blue circle in the center"]
    read = [[d.kind for d in analyze(np.asarray(Image.open(p).convert("RGB"))).shapes] for p in drawn]
    assert read == [["square"], ["circle"]]
    before = [p.read_bytes() for p in drawn]
    train_concept(config("lora", stars, tmp_path / "again.safetensors", token="star", steps=1, **prior))
    assert [p.read_bytes() for p in sorted(classes.glob("*.png"))] == before


def test_prior_target_base_holds_class_pictures_to_the_base_models_prediction(
    stars: Path, tmp_path: Path
) -> None:
    """With ``prior_target="base"`` the class pictures' target is the base model's prediction, so at
    the first step (LoRA layers start at zero) their loss is exactly 0 and the total is the concept's
    loss alone; DreamBooth's noise target is not met by the base model. Later steps drift from it."""
    classes = tmp_path / "classes"
    write_concept("heart", 2, 32, 3, "heart", classes)
    prior = {
        "prior_preservation": True,
        "class_prompt": "a heart",
        "class_images": classes,
        "num_class_images": 2,
        "train_text_encoder": True,
    }

    def losses(name: str, **extra: object) -> tuple[float, ...]:
        out = tmp_path / f"{name}.safetensors"
        return train_concept(config("lora", stars, out, token="star", steps=2, **(prior | extra))).losses

    alone = losses("alone", prior_target="base", prior_weight=0.0)
    base = losses("base", prior_target="base", prior_weight=1.0)
    noise = losses("noise", prior_target="noise", prior_weight=1.0)
    assert base[0] == alone[0]
    assert noise[0] > alone[0] + 1e-3
    assert base[1] > alone[1]  # the LoRA has moved: the class pictures' loss is no longer 0


def test_pivotal_tuning_bundles_the_trigger_words_learnt_rows_into_the_lora(
    stars: Path, tmp_path: Path
) -> None:
    """``pivotal``: the trigger word gets new rows that learn with the LoRA and go into the LoRA file
    (A1111's ``bundle_emb.TOKEN.emb_params``), so LoraLoader alone teaches prompts the word; with
    ``embedding_out`` they are also written as an embedding file of their own, the same rows."""
    from models.embeddings import Bundled, load_vectors
    from models.loading import load_checkpoint

    rows = tmp_path / "embeddings" / "toy-star.safetensors"
    rows.parent.mkdir()
    out = tmp_path / "pivotal.safetensors"
    result = train_concept(
        config("lora", stars, out, pivotal=True, embedding_out=rows, init_word="diamond", vectors=2)
    )
    assert result.path == out and result.embedding_path == rows
    state = load_file(str(out))
    assert any(k.startswith("lora_unet_") for k in state)
    vectors = load_vectors(Bundled(out, "toy-star"), 1, allow_pickle=False)[0]
    assert vectors.shape == (2, 64)
    assert torch.equal(load_vectors(rows, 1, allow_pickle=False)[0], vectors)
    base = load_checkpoint(TOY_SD)
    tokenizer, encoder = base.tokenizers[0], base.text_encoders[0]
    diamond = encoder.get_input_embeddings().weight[
        tokenizer("diamond", add_special_tokens=False).input_ids[0]
    ]
    assert not torch.allclose(vectors[0], diamond)  # it learnt from where it started
    with safe_open(str(out), "pt") as handle:
        assert '"pivotal": true' in handle.metadata()["settings"]
    prompt = "a red toy-star at the top left"
    with_word = picture(studio_over(tmp_path / "models", lora=out), prompt, "pivotal.safetensors")
    # the oracle: the LoRA without its bundle, and the rows as a file in models/embeddings
    unbundled = tmp_path / "unbundled" / "pivotal.safetensors"
    unbundled.parent.mkdir()
    save_file({k: v for k, v in state.items() if not k.startswith("bundle_emb.")}, str(unbundled))
    as_file = picture(
        studio_over(tmp_path / "split", lora=unbundled, embedding=rows), prompt, "pivotal.safetensors"
    )
    without_rows = picture(studio_over(tmp_path / "bare", lora=unbundled), prompt, "pivotal.safetensors")
    assert np.array_equal(with_word, as_file)
    assert np.abs(with_word.astype(int) - without_rows).max() > 0
    with pytest.raises(ConceptError, match="already exists"):
        train_concept(config("lora", stars, tmp_path / "again.safetensors", pivotal=True, embedding_out=rows))
    with pytest.raises(ConceptError, match="embedding_out must be a .safetensors file"):
        train_concept(
            config(
                "lora", stars, tmp_path / "again.safetensors", pivotal=True, embedding_out=tmp_path / "r.pt"
            )
        )


def test_a_candidate_lora_anywhere_is_measured_as_the_shipped_one_is(tmp_path: Path) -> None:
    """``python -m training.quality_concept --lora FILE``: a copy of the shipped heart LoRA outside the
    models folder gives the figures the repository's folder gives for the shipped file itself."""
    from training.quality import Studio
    from training.quality_concept import LORA, LORA_STRENGTH, candidate, concept_shares, others

    copy = tmp_path / "elsewhere" / "candidate.safetensors"
    copy.parent.mkdir()
    copy.write_bytes((REPO_MODELS / "loras" / LORA).read_bytes())
    figures = candidate(copy, "heart", 3)
    studio = Studio()
    shipped = concept_shares(studio, "heart", 3, LORA, strength=LORA_STRENGTH)
    assert (figures["top_left"], figures["all_right"]) == (shipped["top_left"], shipped["all"])
    assert figures["others_all"] == others(studio, 3, LORA, strength=LORA_STRENGTH)["all"]
    assert figures["top_left"] > concept_shares(studio, "heart", 3)["top_left"]  # the LoRA was loaded


def test_should_stop_saves_what_it_has(stars: Path, tmp_path: Path) -> None:
    seen = []
    result = train_concept(
        config("embedding", stars, tmp_path / "stop.safetensors", steps=50),
        on_step=seen.append,
        should_stop=lambda: len(seen) >= 2,
    )
    assert result.stopped and result.steps_done == 2 and len(result.losses) == 2 and result.path.is_file()
    assert [r.step for r in seen] == [1, 2] and seen[0].steps == 50


def test_single_file_checkpoint_trains(stars: Path, tmp_path: Path) -> None:
    from tests.fixtures.original_layout import write_original_sd1
    from tests.fixtures.tiny_models import save_config_folder

    single = write_original_sd1(TOY_SD, tmp_path / "toy.safetensors")
    save_config_folder(TOY_SD, tmp_path / "toy.config")
    out = tmp_path / "from-single.safetensors"
    threads = torch.get_num_threads()
    config = ConceptConfig("lora", single, stars, out, token="star", steps=1, threads=threads + 1)
    result = train_concept(config)
    assert result.path.is_file()
    assert torch.get_num_threads() == threads  # its thread count held only while it trained


# ---------------------------------------------------------------------------------- bad requests


def test_bad_requests_are_refused_before_training(stars: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.safetensors"
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"not a png")
    exists = tmp_path / "exists.safetensors"
    exists.write_bytes(b"")
    keep = ("a red circle at the top left",)
    blocked = tmp_path / "a-file"  # a "folder" that is a file: nothing can be written under it
    blocked.write_bytes(b"")
    sd3 = REPO_MODELS / "checkpoints" / "toy-sd3"
    cases = [
        (config("lora", tmp_path / "missing", out), "does not exist"),
        (config("lora", empty, out), "holds no pictures"),
        (config("lora", broken, out), "cannot read the picture a.png"),
        (config("lora", stars, exists), "already exists"),
        (config("lora", stars, tmp_path / "x.pt"), ".safetensors"),
        (config("embedding", stars, out, token="red"), "already a word"),
        (config("embedding", stars, out, token="<nowhere>"), "no caption names the token"),
        (config("embedding", stars, out, init_word="red circle"), "init word"),
        (config("lora", stars, out, prior_preservation=True), "class prompt"),
        (config("lora", stars, out, prior_target="model"), "prior_target must be"),
        (config("embedding", stars, out, pivotal=True), "pivotal tuning is for a LoRA"),
        (
            config("lora", stars, out, token="star", pivotal=True, embedding_out=tmp_path / "s.safetensors"),
            "already a word",
        ),
        (config("lora", stars, out, protect=keep), "targets 'cross'"),
        (
            config("lora", stars, out, targets="cross", train_text_encoder=True, protect=keep),
            "without text-encoder layers",
        ),
        (
            config("lora", stars, out, targets="cross", protect=keep, protect_share=1.0),
            "protect_share must be",
        ),
        (
            config("lora", stars, out, targets="cross", protect=("a red toy-star on the left",)),
            "says the trigger word 'toy-star'",
        ),
        (config("lora", stars, out, steps=0), "steps must be at least 1"),
        (config("lora", stars, out, learning_rate=float("nan")), "learning rate must be a positive number"),
        (config("lora", stars, out, learning_rate=float("inf")), "learning rate must be a positive number"),
        (config("lora", stars, out, max_minutes=-1.0), "max_minutes must be a positive number"),
        (config("lora", stars, out, prior_weight=float("nan")), "prior_weight must be 0 or more"),
        (config("lora", stars, out, snr_gamma=float("nan")), "snr_gamma must be positive"),
        (config("lora", stars, blocked / "x.safetensors"), "cannot write x.safetensors into"),
        (config("lora", stars, out, shift=-1), "shift must be 0"),
        (config("lora", stars, out, shift=9), "shift 9 is too large"),
        (ConceptConfig("lora", tmp_path, stars, out), "model_index.json"),
    ]
    if sd3.is_dir():
        cases.append((ConceptConfig("lora", sd3, stars, out), "SD 1.x or 2.x"))
    for bad, message in cases:
        with pytest.raises(ConceptError, match=message.replace(".", r"\.")):
            train_concept(bad)
    assert not out.exists()


# ------------------------------------------------------------------------------ protected prompts


def test_the_protected_basis_holds_the_share_and_the_projection_removes_it() -> None:
    """Known answer: states in a 3-dimensional subspace of an 8-wide space need those 3 directions; after
    the projection a down matrix reads nothing of them and all of what lies outside."""
    from training.concept.protect import projector, protected_basis

    generator = torch.Generator().manual_seed(0)
    inside = torch.linalg.qr(torch.randn(8, 3, generator=generator))[0]  # orthonormal columns
    states = torch.randn(50, 77, 3, generator=generator) @ inside.T
    basis = protected_basis(states, 0.999)
    assert basis.shape == (8, 3)
    torch.testing.assert_close(basis @ basis.T, inside @ inside.T, atol=1e-5, rtol=0)  # the same span
    down = torch.randn(4, 8, generator=generator)
    before = down.clone()
    projector([down], basis)()
    assert (down @ states.reshape(-1, 8).T).abs().max() < 1e-4
    outside = torch.eye(8) - inside @ inside.T
    torch.testing.assert_close(down @ outside, before @ outside, atol=1e-5, rtol=0)


def test_protected_prompts_come_from_a_file_of_lines(tmp_path: Path) -> None:
    from training.concept.protect import read_prompts, with_empty

    path = tmp_path / "keep.txt"
    path.write_text("a red circle\n\n  a blue square  \na red circle\n", encoding="utf-8")
    assert read_prompts(path) == ("a red circle", "a blue square", "a red circle")
    assert with_empty(read_prompts(path)) == ["", "a red circle", "a blue square"]
    (tmp_path / "blank.txt").write_text("\n \n")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00not text")
    for name, message in (
        ("none.txt", "does not exist"),
        ("blank.txt", "holds no prompt"),
        ("binary.txt", "cannot read"),
    ):
        with pytest.raises(ConceptError, match=message):
            read_prompts(tmp_path / name)


def test_a_protected_lora_leaves_its_prompts_and_changes_others(stars: Path, tmp_path: Path) -> None:
    """The same 3 steps with and without ``protect``: through our LoraLoader path, the UNet's prediction
    for a protected prompt hardly moves with the protected LoRA (under a tenth of what the plain one
    moves it), while the trigger word's prompt still changes."""
    from models.loading import load_checkpoint, with_loras

    protect = ("a red circle at the top left", "a blue square in the center")
    files = {}
    for name, extra in (("plain", {}), ("kept", {"protect": protect})):
        files[name] = tmp_path / f"{name}.safetensors"
        result = train_concept(
            config("lora", stars, files[name], token="star", targets="cross", rank=8, steps=3, **extra)
        )
        assert result.steps_done == 3
    with safe_open(str(files["kept"]), "pt") as handle:
        metadata = handle.metadata()
    assert json.loads(metadata["settings"])["protected_prompts"] == 2
    assert int(metadata["protected_directions"]) >= 1

    base = load_checkpoint(TOY_SD)
    tokenizer, encoder = base.tokenizers[0], base.text_encoders[0]
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))

    def predictions(unet: torch.nn.Module, prompt: str) -> torch.Tensor:
        ids = tokenizer(prompt, padding="max_length", max_length=77, return_tensors="pt").input_ids
        with torch.no_grad():
            return unet(latents, 500, encoder(ids)[0]).sample

    unets = {
        name: with_loras(base, [(path, 1.0, 1.0)], allow_pickle=False).unet for name, path in files.items()
    }
    for prompt in ("a red circle at the top left", ""):
        plain = (predictions(unets["plain"], prompt) - predictions(base.unet, prompt)).abs().max()
        kept = (predictions(unets["kept"], prompt) - predictions(base.unet, prompt)).abs().max()
        assert plain > 1e-3 and kept < 0.1 * plain, (prompt, float(plain), float(kept))
    star = "a yellow star at the top left"
    assert (predictions(unets["kept"], star) - predictions(base.unet, star)).abs().max() > 1e-4


def test_loss_plot_is_a_picture() -> None:
    plot = loss_plot([1.0 / (i + 1) for i in range(100)], "loss")
    assert plot.dtype == np.uint8 and plot.ndim == 3 and plot.shape[2] == 3 and plot.std() > 1
    assert loss_plot([]).shape == plot.shape


# -------------------------------------------------------------------------------------------- CLI


def test_cli_trains_end_to_end_and_reports_errors_in_one_line(
    stars: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import app

    out = tmp_path / "cli-star.safetensors"
    argv = ["train-embedding", "--checkpoint", "toy-sd", "--images", str(stars), "--out", str(out)]
    assert app.main([*argv, "--token", "toy-star", "--steps", "2", "--threads", "1", "--quiet"]) == 0
    assert out.is_file() and (tmp_path / "cli-star.loss.png").is_file()
    assert "2 steps" in capsys.readouterr().out
    assert app.main([*argv, "--token", "toy-star"]) == 2  # it exists now
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "already exists" in err and "\n" not in err
    assert app.main(["train-lora", "--checkpoint", "nope", "--images", str(stars), "--name", "x"]) == 2
    assert "no checkpoint 'nope'" in capsys.readouterr().err


def test_the_training_page_names_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/training.md is the guide to both commands: every flag their --help lists is there."""
    import re

    from app import build_parser

    text = (Path(__file__).resolve().parent.parent / "docs" / "training.md").read_text()
    for command in ("train-lora", "train-embedding"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
        usage = capsys.readouterr().out.split("options:")[0]
        flags = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", usage)) - {"--help"}
        assert {"--checkpoint", "--images", "--steps"} <= flags
        missing = sorted(flag for flag in flags if not re.search(rf"{re.escape(flag)}(?![\w-])", text))
        assert not missing, f"docs/training.md does not mention {missing}"
