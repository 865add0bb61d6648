"""ComfyUI node types the table has no rule for, on purpose: the editor's own nodes and
primitives (resolved when the UI format is read), and the model families the studio does not
run yet (reported as such)."""

from __future__ import annotations

#: UI-format node types that exist only in ComfyUI's editor: resolved, never reported.
UI_ONLY = frozenset({"Reroute", "PrimitiveNode", "Note", "MarkdownNote"})
#: ComfyUI's newer primitive nodes: each passes its one widget value on.
PRIMITIVES = frozenset(
    {"PrimitiveInt", "PrimitiveFloat", "PrimitiveString", "PrimitiveStringMultiline", "PrimitiveBoolean"}
)

#: Node types of model families (and ComfyUI VIDEO/audio nodes) the studio does not run yet.
NOT_YET = frozenset(
    {
        "QuadrupleCLIPLoader",
        "CLIPTextEncodeHunyuanDiT",
        "ModelSamplingAuraFlow",
        "EmptyHunyuanLatentVideo",
        "EmptyLTXVLatentVideo",
        "EmptyMochiLatentVideo",
        "EmptyCosmosLatentVideo",
        "EmptyHunyuanImageLatent",
        "EmptyChromaRadianceLatentImage",
        "WanImageToVideo",
        "WanFirstLastFrameToVideo",
        "LTXVConditioning",
        "LTXVImgToVideo",
        "CosmosImageToVideoLatent",
        "StableCascade_EmptyLatentImage",
        "StableCascade_StageB_Conditioning",
        "StableZero123_Conditioning",
        "SaveWEBM",
        "SaveVideo",
        "CreateVideo",
        "LoadVideo",
        "EmptyAceStepLatentAudio",
        "SaveAudio",
    }
)
