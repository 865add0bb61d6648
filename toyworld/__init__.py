"""A procedural toy world of simple colored shapes on a 3x3 grid, with captions, and a rule-based analyzer.

``render(random_scene(rng))`` draws a picture, ``caption(scene)`` says "a red circle at the top left" and
``parse_caption(text)`` reads a caption back; ``analyze(image)`` reads a picture back and
``score(scene, image)`` checks a (generated) picture against a scene.
"""

from toyworld.analyzer import Analysis, Detection, analyze, describe, kinds_for, score
from toyworld.world import (
    ALL_SHAPES,
    BACKGROUNDS,
    COLORS,
    NEW_SHAPES,
    POSITION_PHRASES,
    POSITIONS,
    SHAPES,
    Scene,
    Shape,
    all_instructions,
    caption,
    caption_background,
    caption_words,
    dataset,
    edges,
    edit,
    grayscale,
    held_out_combinations,
    instructions,
    mask,
    parse_caption,
    random_scene,
    render,
    split_of,
)

__all__ = [
    "ALL_SHAPES",
    "BACKGROUNDS",
    "COLORS",
    "NEW_SHAPES",
    "POSITIONS",
    "POSITION_PHRASES",
    "SHAPES",
    "Analysis",
    "Detection",
    "Scene",
    "Shape",
    "all_instructions",
    "analyze",
    "caption",
    "caption_background",
    "caption_words",
    "dataset",
    "describe",
    "edges",
    "edit",
    "grayscale",
    "held_out_combinations",
    "instructions",
    "kinds_for",
    "mask",
    "parse_caption",
    "random_scene",
    "render",
    "score",
    "split_of",
]
