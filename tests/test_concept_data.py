"""The concept trainer's one augmentation (training/concept/data.shifted): pictures also seen moved by
a few pixels with their edges repeated, captions unchanged, a bounded number of placements each; and
the timestep bias that draws one quarter of the timesteps more often."""

from __future__ import annotations

import numpy as np

from training.concept.data import SHIFT_VARIANTS, Example, shift_pixels, shifted


def picture(height: int = 6, width: int = 7) -> np.ndarray:
    return np.arange(3 * height * width, dtype=np.float32).reshape(3, height, width)


def test_a_shift_moves_content_and_repeats_the_edges() -> None:
    pixels = picture()
    moved = shift_pixels(pixels, 2, 1)  # right 2, down 1
    assert moved.shape == pixels.shape
    np.testing.assert_array_equal(moved[:, 1:, 2:], pixels[:, :-1, :-2])
    np.testing.assert_array_equal(moved[:, 0, 2:], pixels[:, 0, :-2])  # top row repeated
    np.testing.assert_array_equal(moved[:, 1:, 0], pixels[:, :-1, 0])  # left column repeated
    back = shift_pixels(pixels, -3, -2)
    np.testing.assert_array_equal(back[:, :-2, :-3], pixels[:, 2:, 3:])
    np.testing.assert_array_equal(shift_pixels(pixels, 0, 0), pixels)


def test_shifted_keeps_captions_and_every_small_offset() -> None:
    examples = [Example(picture(), "a red heart on the right", "a.png"), Example(picture() + 1, "b", "b.png")]
    assert shifted(examples, 0) == examples
    out = shifted(examples, 1)
    assert len(out) == 2 * 9
    assert [e.caption for e in out[:9]] == ["a red heart on the right"] * 9
    placements = {
        shift_pixels(examples[0].pixels, dx, dy).tobytes() for dx in (-1, 0, 1) for dy in (-1, 0, 1)
    }
    assert {e.pixels.tobytes() for e in out[:9]} == placements


def test_large_shifts_take_a_bounded_seeded_sample_with_the_original() -> None:
    examples = [Example(picture(20, 20), "x", "x.png")]
    out = shifted(examples, 5, seed=3)
    assert len(out) == SHIFT_VARIANTS
    assert any(np.array_equal(e.pixels, examples[0].pixels) for e in out)
    assert [e.pixels.tobytes() for e in shifted(examples, 5, seed=3)] == [e.pixels.tobytes() for e in out]


def test_timestep_bias_favours_one_quarter_three_times() -> None:
    from training.concept.trainer import timestep_weights

    assert timestep_weights("none", 1000) is None
    early, late = timestep_weights("earlier", 1000), timestep_weights("later", 1000)
    assert early is not None and late is not None
    assert abs(float(early.sum()) - 1) < 1e-6 and abs(float(late.sum()) - 1) < 1e-6
    assert abs(float(early[0] / early[-1]) - 3) < 1e-5 and abs(float(late[-1] / late[0]) - 3) < 1e-5
    assert abs(float(early[:250].sum()) - 0.5) < 1e-6  # 3 * 250 / (3 * 250 + 750)
