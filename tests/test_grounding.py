"""Token grounding for training (training/grounding.py): the recording processor computes what
diffusers' own does, the loss has its known answers and moves attention where it asks, and the words
grounded are the ones that name each shape (read back through CLIP's tokenizer)."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402

from training.grounding import (  # noqa: E402
    AttentionStore,
    TokenCounter,
    caption_groundings,
    grounding_loss,
    inside_shares,
    instruction_groundings,
    record_cross_attention,
    scene_targets,
)
from training.sd import build_unet  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    from models.tokenizer import clip_tokenizer

    return clip_tokenizer()


def tiny_unet(seed: int = 0):
    torch.manual_seed(seed)
    return build_unet(channels=(16, 32), groups=8, cross_attention_dim=32, head_dim=8).eval()


def unet_inputs(batch: int = 2, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, 4, 8, 8, generator=generator)
    states = torch.randn(batch, 77, 32, generator=generator)
    return latents, torch.tensor([10, 700])[:batch], states


def test_the_recording_processor_computes_what_diffusers_does_and_records_every_cross_attention():
    unet = tiny_unet()
    latents, steps, states = unet_inputs()
    with torch.no_grad():
        expected = unet(latents, steps, states).sample
        store = record_cross_attention(unet)
        store.start()
        got = unet(latents, steps, states).sample
    maps = store.take()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    layers = [name for name in unet.attn_processors if name.endswith("attn2.processor")]
    assert len(maps) == len(layers) > 0
    # batch x heads: the UNet's attention_head_dim 8 is, in diffusers' SD UNet, 8 heads per layer
    assert {m.shape[0] for m in maps} == {2 * 8}
    assert {m.shape[1] for m in maps} == {64, 16}  # the 8x8 and 4x4 grids
    for probs in maps:
        torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:2]))
    with torch.no_grad():
        unet(latents, steps, states)
    assert store.take() == []  # nothing recorded unless started


def test_the_loss_is_zero_inside_the_mask_and_known_for_an_even_spread():
    targets = torch.zeros(1, 3, 8, 8)
    targets[0, 1, :4, :4] = 1  # token 1 belongs to the top-left quarter
    weights = torch.tensor([[0.0, 1.0, 0.0]])
    inside = torch.zeros(1, 64, 3)
    inside[0, :, 0] = 1.0
    grid = torch.zeros(8, 8)
    grid[:4, :4] = 1
    inside[0, :, 1] = grid.flatten() / 16  # the token's attention all in its quarter
    inside[0, :, 0] = 1 - inside[0, :, 1]
    assert float(grounding_loss([inside], targets, weights)) == pytest.approx(0.0, abs=1e-7)
    even = torch.full((1, 64, 3), 1 / 3)
    assert float(grounding_loss([even], targets, weights)) == pytest.approx((1 - 16 / 64) ** 2)
    # a coarser layer: the mask max-pooled to 4x4 touches 4 of 16 cells
    coarse = torch.full((1, 16, 3), 1 / 3)
    assert float(grounding_loss([even, coarse], targets, weights)) == pytest.approx((1 - 0.25) ** 2)
    assert float(grounding_loss([even], targets, torch.zeros(1, 3))) == 0.0  # nothing grounded
    (share,) = inside_shares([even], targets)
    assert float(share[0, 1]) == pytest.approx(0.25)


def test_heads_are_averaged_per_picture_not_mixed_across_the_batch():
    targets = torch.zeros(2, 2, 2, 2)
    targets[0, 0, 0, 0] = 1  # picture 0's token 0: the first cell
    targets[1, 0, 1, 1] = 1  # picture 1's token 0: the last cell
    probs = torch.zeros(4, 4, 2)  # (2 pictures x 2 heads, 4 cells, 2 tokens), batch-major
    probs[:, :, 1] = 1.0
    probs[0:2, 0, :] = torch.tensor([1.0, 0.0])  # picture 0 attends token 0 at the first cell only
    probs[2:4, 3, :] = torch.tensor([1.0, 0.0])  # picture 1 at the last cell only
    weights = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert float(grounding_loss([probs], targets, weights)) == pytest.approx(0.0, abs=1e-7)
    swapped = torch.cat([probs[2:4], probs[0:2]])
    assert float(grounding_loss([swapped], targets, weights)) == pytest.approx(1.0)


def test_a_few_steps_of_the_loss_move_a_word_s_attention_into_its_place():
    unet = tiny_unet(2).train()
    store = record_cross_attention(unet)
    latents, steps, states = unet_inputs()
    targets = torch.zeros(2, 77, 8, 8)
    targets[:, 5, :3, :3] = 1
    weights = torch.zeros(2, 77)
    weights[:, 5] = 1

    def share() -> float:
        with torch.no_grad():
            store.start()
            unet(latents, steps, states)
        shares = inside_shares(store.take(), targets)
        return float(torch.stack([s[:, 5] for s in shares]).mean())

    before = share()
    optimizer = torch.optim.Adam(unet.parameters(), lr=3e-3)
    for _ in range(15):
        store.start()
        unet(latents, steps, states)
        loss = grounding_loss(store.take(), targets, weights)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert share() > before + 0.2, (before, share())


def test_each_shape_s_color_and_kind_words_are_grounded_to_its_mask(tokenizer):
    from toyworld import caption, mask, random_scene

    count = TokenCounter(tokenizer)

    def pieces(word: str) -> list[str]:
        return [tokenizer.decode([t]).strip() for t in tokenizer(word, add_special_tokens=False).input_ids]

    assert pieces("cyan") == ["cy", "an"]
    rng = np.random.default_rng(4)
    scenes = [random_scene(rng, size=32, shapes=2) for _ in range(12)]
    captions = [caption(s, background=bool(i % 2)) for i, s in enumerate(scenes)]
    for scene, text in zip(scenes, captions, strict=True):
        ids = tokenizer(text).input_ids
        found = caption_groundings(scene, text, count)
        words = [(tokenizer.decode([ids[p]]).strip(), i) for p, i in found]
        order = sorted(range(2), key=lambda i: scene.shapes[i].cell)
        expected = [
            (piece, i)
            for i in order
            for word in (scene.shapes[i].color, scene.shapes[i].kind)
            for piece in pieces(word)  # "cyan" is two tokens, both grounded
        ]
        assert words == expected, text
        kinds = caption_groundings(scene, text, count, attributes=("kind",))
        expected_kinds = [(p, i) for i in order for p in pieces(scene.shapes[i].kind)]
        assert [(tokenizer.decode([ids[p]]).strip(), i) for p, i in kinds] == expected_kinds
    targets, weights = scene_targets(scenes, captions, count)
    assert weights.sum(1).tolist() == [
        float(len(caption_groundings(s, t, count))) for s, t in zip(scenes, captions, strict=True)
    ]
    for b, (scene, text) in enumerate(zip(scenes, captions, strict=True)):
        for position, index in caption_groundings(scene, text, count):
            assert np.array_equal(targets[b, position].numpy() > 0, mask(scene, index) > 0)
    assert caption_groundings(scenes[0], "", count) == []  # a dropped caption grounds nothing


def test_same_kind_twice_grounds_each_word_to_its_own_shape(tokenizer):
    from toyworld import Scene, Shape, caption

    scene = Scene((Shape("circle", "blue", (2, 2)), Shape("circle", "red", (0, 0))), "white", 32)
    count = TokenCounter(tokenizer)
    text = caption(scene)  # "a red circle at the top left and a blue circle at the bottom right"
    ids = tokenizer(text).input_ids
    found = caption_groundings(scene, text, count)
    assert [(tokenizer.decode([ids[p]]), i) for p, i in found] == [
        ("red", 1),
        ("circle", 1),
        ("blue", 0),
        ("circle", 0),
    ]


@pytest.mark.parametrize(
    "text, words",
    [
        ("make the circle blue", ["circle", "blue"]),
        ("make the red circle green", ["red", "circle", "green"]),
        ("move the square up", ["square"]),
        ("move the circle at the top left to the right", ["circle", "at", "the", "top", "left"]),
        ("Move the triangle down.", ["triangle"]),
        ("", []),
        ("draw a cat", []),
    ],
)
def test_an_instruction_grounds_the_words_naming_what_changes(tokenizer, text, words):
    ids = tokenizer(text).input_ids
    positions = instruction_groundings(text, TokenCounter(tokenizer))
    assert [tokenizer.decode([ids[p]]).strip() for p in positions] == words


def test_a_unet_without_cross_attention_is_refused():
    from diffusers import UNet2DModel

    unet = UNet2DModel(
        sample_size=8,
        block_out_channels=(16, 16),
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    )
    with pytest.raises(ValueError, match="no cross-attention"):
        record_cross_attention(unet)
    with pytest.raises(ValueError, match="no cross-attention maps"):
        grounding_loss([], torch.zeros(1, 1, 2, 2), torch.ones(1, 1))
    assert AttentionStore().take() == []


def test_the_shipped_grounded_model_ties_words_to_their_shapes_where_toy_sd_hardly_does():
    """The probe (training/quality_grounding.py) on held-out scenes: toy-sd's shape words spread their
    attention about evenly; toy-sd-grounded's fall mostly on their own shape."""
    from pathlib import Path

    from training.quality_grounding import grounding_probe

    checkpoints = Path(__file__).resolve().parent.parent / "models" / "checkpoints"
    plain = grounding_probe(checkpoints / "toy-sd", n=8, timesteps=(500,))
    grounded = grounding_probe(checkpoints / "toy-sd-grounded", n=8, timesteps=(500,))
    assert plain["even"] == grounded["even"] and 0.05 < plain["even"] < 0.3  # the same scenes
    assert plain["inside"] < plain["even"] + 0.1
    assert grounded["inside"] > grounded["even"] + 0.5
    assert grounded["peak_kind"] > plain["peak_kind"]
