"""The table's entries for ComfyUI's model merging nodes (``comfy_extras/nodes_model_merging.py``):
whole models, by blocks, CLIP models, and saving the result as a checkpoint."""

from __future__ import annotations

from comfy_import.rules.base import Rule, one, same
from comfy_import.rules.values import checkpoint_prefix

#: ModelMergeSD1/SD2's inputs: ComfyUI's names (LDM prefixes with a dot) -> ours (identifiers).
_SD1_BLOCKS: tuple[tuple[str, str], ...] = (
    ("time_embed.", "time_embed"),
    ("label_emb.", "label_emb"),
    *((f"input_blocks.{i}.", f"input_blocks_{i}") for i in range(12)),
    *((f"middle_block.{i}.", f"middle_block_{i}") for i in range(3)),
    *((f"output_blocks.{i}.", f"output_blocks_{i}") for i in range(12)),
    ("out.", "out"),
)
#: ModelMergeSDXL's inputs (ComfyUI names its blocks without the trailing dot).
_SDXL_BLOCKS: tuple[tuple[str, str], ...] = (
    ("time_embed.", "time_embed"),
    ("label_emb.", "label_emb"),
    *((f"input_blocks.{i}", f"input_blocks_{i}") for i in range(9)),
    *((f"middle_block.{i}", f"middle_block_{i}") for i in range(3)),
    *((f"output_blocks.{i}", f"output_blocks_{i}") for i in range(9)),
    ("out.", "out"),
)


def _block_merge(type_: str, blocks: tuple[tuple[str, str], ...]) -> Rule:
    """A per-block merge: one ratio widget per block, in ComfyUI's order."""
    return one(
        type_,
        {"model1": "model1", "model2": "model2", **dict(blocks)},
        ("model",),
        widgets=tuple(comfy for comfy, _ in blocks),
    )


MERGING_RULES: dict[str, Rule] = {
    "ModelMergeSimple": one(
        "ModelMergeSimple", same("model1", "model2", "ratio"), ("model",), widgets=("ratio",)
    ),
    "ModelMergeAdd": one("ModelMergeAdd", same("model1", "model2"), ("model",)),
    "ModelMergeSubtract": one(
        "ModelMergeSubtract", same("model1", "model2", "multiplier"), ("model",), widgets=("multiplier",)
    ),
    "ModelMergeBlocks": one(
        "ModelMergeBlocks",
        same("model1", "model2", "input", "middle", "out"),
        ("model",),
        widgets=("input", "middle", "out"),
    ),
    "ModelMergeSD1": _block_merge("ModelMergeSD1", _SD1_BLOCKS),
    "ModelMergeSD2": _block_merge("ModelMergeSD1", _SD1_BLOCKS),  # ComfyUI: the same blocks as SD1
    "ModelMergeSDXL": _block_merge("ModelMergeSDXL", _SDXL_BLOCKS),
    "CLIPMergeSimple": one("CLIPMergeSimple", same("clip1", "clip2", "ratio"), ("clip",), widgets=("ratio",)),
    "CLIPMergeAdd": one("CLIPMergeAdd", same("clip1", "clip2"), ("clip",)),
    "CLIPMergeSubtract": one(
        "CLIPMergeSubtract", same("clip1", "clip2", "multiplier"), ("clip",), widgets=("multiplier",)
    ),
    "CheckpointSave": one(
        "CheckpointSave",
        same("model", "clip", "vae", "filename_prefix"),
        (),
        values={"filename_prefix": checkpoint_prefix},
        widgets=("filename_prefix",),
    ),
}
