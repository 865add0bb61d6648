"""Vision-language nodes: caption images (BLIP, BLIP-2, GIT, Florence-2) and score how well
an image matches a text with CLIP (CLIPScore).

Models are local transformers folders (``config.json``, weights, processor files) in
``models/captioners`` and ``models/clip``; nothing is downloaded and no remote code runs.
torch and transformers are imported inside ``run`` only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nodes import types as T
from nodes.base import Context, Input, Node, NodeInputError, Output, RunSettings
from nodes.support import file_state, find_model, manager_of, model_fingerprint, model_input

CAPTIONER = T.CAPTIONER
CLIP_SCORER = T.CLIP_SCORER

#: Captioner kinds by the config's ``model_type``: what the Captioner node can run.
CAPTION_MODEL_TYPES: dict[str, str] = {
    "blip": "BLIP",
    "blip-2": "BLIP-2",
    "git": "GIT",
    "florence2": "Florence-2",
}
FLORENCE_DEFAULT_TASK = "<CAPTION>"


@dataclass(eq=False)
class LoadedCaptioner:
    """What a CAPTIONER handle gives: the model, its processor and which family it is."""

    model: Any
    processor: Any
    kind: str  # "blip", "blip-vqa", "blip-2", "git" or "florence2"


@dataclass(eq=False)
class LoadedClip:
    """What a CLIP_SCORER handle gives: a transformers CLIPModel and its CLIPProcessor."""

    model: Any
    processor: Any


def _model_folder(ctx: Context, kind: str, name: str, input_name: str, what: str) -> Path:
    """The transformers folder ``name`` of ``kind`` in the run's model folders, or a
    NodeInputError naming the input."""
    if not name:
        raise NodeInputError(input_name, f"no model chosen: put a {what} folder in models/{kind}")
    path = find_model(ctx, kind, input_name, name, what=f"the {what} folder")
    if not path.is_dir() or not (path / "config.json").is_file():
        raise NodeInputError(
            input_name,
            f"{name!r} is not a transformers folder: a {what} needs a folder with config.json, "
            "the weights (model.safetensors) and the processor files",
        )
    return path


def _read_config(path: Path, input_name: str) -> dict[str, Any]:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NodeInputError(input_name, f"{path.name}/config.json cannot be read: {exc}") from None
    if not isinstance(config, dict):
        raise NodeInputError(input_name, f"{path.name}/config.json does not hold an object")
    return config


def _use_safetensors(path: Path, input_name: str, allow_pickle: bool) -> bool | None:
    """``use_safetensors`` for the folder: True (safetensors only), or None where its weights
    are pickle files and the user opted in (loaded weights-only); refused by name otherwise."""
    from models.safety import PickleRefused, check_weights_folder

    has_weights = any(
        p.suffix in (".safetensors", ".bin", ".pt", ".pth") or p.name == "model.safetensors.index.json"
        for p in path.iterdir()
    )
    if not has_weights:
        raise NodeInputError(
            input_name, f"{path.name} holds no weights: expected model.safetensors (or pytorch_model.bin)"
        )
    try:
        return check_weights_folder(path, allow_pickle)
    except PickleRefused as exc:
        raise NodeInputError(input_name, str(exc)) from None


def _load_pretrained(
    cls: Any, path: Path, input_name: str, manager: Any, use_safetensors: bool | None, config: dict[str, Any]
) -> Any:
    """``cls.from_pretrained`` offline, on the manager's device and dtype, in eval mode; pickle
    weights (only where the user opted in) are read with ``torch.load(weights_only=True)``."""
    from models.safety import plain_load_error

    try:
        model = cls.from_pretrained(
            str(path),
            local_files_only=True,
            use_safetensors=use_safetensors,
            weights_only=True,
            dtype=manager.dtype,
        )
    except Exception as exc:  # noqa: BLE001 - any failure to load is the chosen folder's fault
        hint = (
            " (its config names remote code, which is never run: use a folder in the format "
            "transformers supports natively)"
            if "auto_map" in config
            else ""
        )
        raise NodeInputError(
            input_name, f"{path.name} could not be loaded{hint}: {plain_load_error(exc)}"
        ) from None
    return model.to(manager.device).eval()


def _load_processor(path: Path, input_name: str) -> Any:
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # noqa: BLE001
        raise NodeInputError(
            input_name,
            f"the processor (tokenizer and image settings) of {path.name} could not be loaded: {exc}",
        ) from None


def _captioner_kind(config: dict[str, Any], name: str, input_name: str) -> str:
    model_type = str(config.get("model_type", ""))
    if model_type not in CAPTION_MODEL_TYPES:
        supported = ", ".join(f"{label} ({key})" for key, label in CAPTION_MODEL_TYPES.items())
        raise NodeInputError(
            input_name,
            f"{name!r} is a {model_type or 'unknown'!r} model, which the Captioner cannot run; "
            f"supported model types: {supported}",
        )
    if model_type == "blip" and "BlipForQuestionAnswering" in (config.get("architectures") or ()):
        return "blip-vqa"
    return model_type


def _caption_model_class(kind: str) -> Any:
    import transformers

    names = {
        "blip": "BlipForConditionalGeneration",
        "blip-vqa": "BlipForQuestionAnswering",
        "blip-2": "Blip2ForConditionalGeneration",
        "git": "GitForCausalLM",
        "florence2": "Florence2ForConditionalGeneration",
    }
    return getattr(transformers, names[kind])


def _to_pil(image: np.ndarray) -> list[Any]:
    from PIL import Image

    pixels = (np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return [Image.fromarray(picture) for picture in pixels]


def _check_image(image: Any) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 4 or image.shape[-1] != 3 or image.shape[0] < 1:
        shape = getattr(image, "shape", None)
        raise NodeInputError("image", f"expects an IMAGE (batch, height, width, 3), got shape {shape}")


def _on_model(inputs: Mapping[str, Any], model: Any) -> dict[str, Any]:
    """Processor outputs moved to the model's device; floating tensors in its dtype."""
    device, dtype = next(model.parameters()).device, model.dtype
    moved = {}
    for key, value in inputs.items():
        if hasattr(value, "to"):
            value = value.to(device, dtype) if value.is_floating_point() else value.to(device)
        moved[key] = value
    return moved


def caption_inputs(kind: str, processor: Any, picture: Any, prompt: str) -> dict[str, Any]:
    """The ``generate`` inputs for one image and prompt, as each family's model card does it."""
    import torch

    if kind == "git":
        pixel_values = processor(images=picture, return_tensors="pt").pixel_values
        if not prompt:
            return {"pixel_values": pixel_values}
        tokenizer = processor.tokenizer
        ids = tokenizer(prompt, add_special_tokens=False).input_ids
        return {"pixel_values": pixel_values, "input_ids": torch.tensor([[tokenizer.cls_token_id, *ids]])}
    if kind == "florence2":
        return dict(processor(text=prompt or FLORENCE_DEFAULT_TASK, images=picture, return_tensors="pt"))
    return dict(processor(images=picture, text=prompt or None, return_tensors="pt"))


class CaptionerLoader(Node):
    display_name = "Load Captioner"
    category = "loaders"
    description = "Load an image captioning model (BLIP, BLIP-2, GIT, Florence-2 transformers folder)."
    inputs = (
        model_input(
            "captioner_name",
            "captioners",
            "A transformers folder in models/captioners (config.json, weights, processor).",
        ),
    )
    outputs = (Output("captioner", CAPTIONER),)

    def fingerprint(self, inputs: Mapping[str, Any], settings: RunSettings) -> str | None:
        return model_fingerprint(settings, "captioners", inputs.get("captioner_name"))

    def run(self, ctx: Context, captioner_name: str) -> dict[str, Any]:
        from models.values import ModuleRef

        name = "captioner_name"
        path = _model_folder(ctx, "captioners", captioner_name, name, "captioning model")
        config = _read_config(path, name)
        kind = _captioner_kind(config, captioner_name, name)
        manager = manager_of(ctx)
        use_safetensors = _use_safetensors(path, name, manager.allow_pickle)
        key = ("captioner", str(path.resolve()), file_state(path))

        def load() -> LoadedCaptioner:
            model = _load_pretrained(_caption_model_class(kind), path, name, manager, use_safetensors, config)
            return LoadedCaptioner(model, _load_processor(path, name), kind)

        manager.get(key, load)
        return {"captioner": ModuleRef(key, manager, load)}


class Captioner(Node):
    category = "vision"
    description = "Describe each image in words (greedy or beam search: the same image gives the same text)."
    inputs = (
        Input("captioner", CAPTIONER),
        Input("image", T.IMAGE),
        Input(
            "prompt",
            T.STRING,
            default="",
            description=(
                "Text the caption starts from; the question for a VQA model; "
                "the task for Florence-2 (default <CAPTION>)."
            ),
        ),
        Input("max_new_tokens", T.INT, default=30, min=1, max=200, step=1),
        Input("num_beams", T.INT, default=1, min=1, max=8, step=1, description="1 is greedy decoding."),
    )
    outputs = (Output("text", T.STRING, "One caption per image, one a line."),)

    def run(
        self,
        ctx: Context,
        captioner: Any,
        image: np.ndarray,
        prompt: str,
        max_new_tokens: int,
        num_beams: int,
    ) -> dict[str, Any]:
        import torch

        _check_image(image)
        loaded: LoadedCaptioner = captioner.get()
        if loaded.kind == "blip-vqa" and not prompt.strip():
            raise NodeInputError("prompt", "this is a question-answering model: write the question here")
        pictures = _to_pil(image)
        captions = []
        for index, picture in enumerate(pictures):
            ctx.check_cancelled()
            inputs = _on_model(caption_inputs(loaded.kind, loaded.processor, picture, prompt), loaded.model)
            with torch.inference_mode():
                out = loaded.model.generate(
                    **inputs, max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False
                )
            captions.append(loaded.processor.batch_decode(out, skip_special_tokens=True)[0].strip())
            ctx.progress(index + 1, len(pictures))
        return {"text": "\n".join(captions)}


class ClipLoader(Node):
    display_name = "Load CLIP Scorer"
    category = "loaders"
    description = "Load a CLIP model (image and text towers) for scoring how well images match text."
    inputs = (
        model_input(
            "clip_name",
            "clip",
            "A transformers CLIPModel folder in models/clip (config.json, weights, processor).",
        ),
    )
    outputs = (Output("clip", CLIP_SCORER),)

    def fingerprint(self, inputs: Mapping[str, Any], settings: RunSettings) -> str | None:
        return model_fingerprint(settings, "clip", inputs.get("clip_name"))

    def run(self, ctx: Context, clip_name: str) -> dict[str, Any]:
        from models.values import ModuleRef

        name = "clip_name"
        path = _model_folder(ctx, "clip", clip_name, name, "CLIP model")
        config = _read_config(path, name)
        if config.get("model_type") != "clip":
            raise NodeInputError(
                name,
                f"{clip_name!r} is a {config.get('model_type') or 'unknown'!r} model; CLIPScore needs a "
                "full CLIP model (model type 'clip', with both the image and the text tower)",
            )
        manager = manager_of(ctx)
        use_safetensors = _use_safetensors(path, name, manager.allow_pickle)
        key = ("clip-scorer", str(path.resolve()), file_state(path))

        def load() -> LoadedClip:
            from transformers import CLIPModel

            model = _load_pretrained(CLIPModel, path, name, manager, use_safetensors, config)
            return LoadedClip(model, _load_processor(path, name))

        manager.get(key, load)
        return {"clip": ModuleRef(key, manager, load)}


class CLIPScore(Node):
    category = "vision"
    description = "CLIPScore of images against a text: 100 * max(cosine, 0), averaged over the batch."
    inputs = (
        Input("clip", CLIP_SCORER),
        Input("image", T.IMAGE),
        Input("text", T.STRING, default="", multiline=True, description="The caption to score against."),
    )
    outputs = (
        Output("score", T.FLOAT, "100 * max(cosine, 0), the mean over the batch (0 to 100)."),
        Output("similarity", T.FLOAT, "The raw cosine similarity, the mean over the batch (-1 to 1)."),
    )

    def run(self, ctx: Context, clip: Any, image: np.ndarray, text: str) -> dict[str, Any]:
        import torch

        _check_image(image)
        if not text.strip():
            raise NodeInputError("text", "no text given: write the caption to score the images against")
        loaded: LoadedClip = clip.get()
        model, processor = loaded.model, loaded.processor
        max_length = int(model.config.text_config.max_position_embeddings)
        inputs = processor(
            images=_to_pil(image),
            text=[text],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=max_length,
        )
        with torch.inference_mode():
            out = model(**_on_model(inputs, model))
        image_embeds = torch.nn.functional.normalize(out.image_embeds.float(), dim=-1)
        text_embeds = torch.nn.functional.normalize(out.text_embeds.float(), dim=-1)
        cosine = (image_embeds @ text_embeds.T)[:, 0].cpu()
        score = (100.0 * cosine.clamp(min=0)).mean()
        return {"score": float(score), "similarity": float(cosine.mean())}


NODES = (CaptionerLoader, Captioner, ClipLoader, CLIPScore)
