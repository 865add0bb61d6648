"""Captioning and CLIP scoring nodes against transformers run directly on the same folders.

Tiny BLIP, BLIP-VQA, GIT, BLIP-2, Florence-2 and CLIP models with random weights are saved as real
transformers folders (safetensors, processor files, a BERT vocabulary written here and
CLIP's real tokenizer) under a temporary models root; the nodes must give what the
processor and model give when run by hand.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from graph.executor import Executor  # noqa: E402
from graph.validate import validate  # noqa: E402
from models.manager import ModelManager  # noqa: E402
from models.services import Services  # noqa: E402
from nodes.base import CancelToken, Context, NodeInputError, RunSettings  # noqa: E402
from nodes.registry import default_registry  # noqa: E402
from nodes.vision import Captioner, CaptionerLoader, ClipLoader, CLIPScore  # noqa: E402
from tests.fixtures.services import services_over  # noqa: E402
from tests.fixtures.tiny_vision import (  # noqa: E402
    TOWER,
    VISION,
    bert_tokenizer,
    save_tiny_blip,
    save_tiny_clip,
    save_tiny_git,
)
from tests.helpers import link  # noqa: E402

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT = 48, 40


def save_tiny_blip2(folder: Path) -> None:
    """BLIP-2 with a tiny OPT language model and CLIP's tokenizer (the processor adds <image>)."""
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        BlipImageProcessor,
        OPTConfig,
    )

    from models.tokenizer import clip_tokenizer

    image_processor = BlipImageProcessor(size={"height": 32, "width": 32})
    processor = Blip2Processor(
        image_processor=image_processor, tokenizer=clip_tokenizer(), num_query_tokens=4
    )
    tokenizer = processor.tokenizer
    language = OPTConfig(
        hidden_size=32,
        ffn_dim=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        word_embed_proj_dim=32,
        vocab_size=len(tokenizer),
        max_position_embeddings=64,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        init_std=0.2,
    )
    config = Blip2Config(
        vision_config=VISION,
        qformer_config={**TOWER, "vocab_size": 64, "encoder_hidden_size": 32, "max_position_embeddings": 64},
        text_config=language.to_dict(),
        num_query_tokens=4,
        image_token_index=tokenizer.convert_tokens_to_ids(str(processor.image_token)),
    )
    torch.manual_seed(5)
    Blip2ForConditionalGeneration(config).save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)


def save_tiny_florence2(folder: Path) -> None:
    """Florence-2 (transformers-native) with a tiny DaViT, a tiny BART and a byte-level vocabulary."""
    from transformers import (
        BartConfig,
        BartTokenizer,
        CLIPImageProcessor,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
    )

    from models.tokenizer import _bytes_to_unicode

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for symbol in _bytes_to_unicode():
        vocab.setdefault(symbol, len(vocab))
    vocab["<mask>"] = len(vocab)
    words = folder.parent / "florence-vocab"
    words.mkdir(parents=True, exist_ok=True)
    (words / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (words / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = BartTokenizer.from_pretrained(
        str(words), extra_special_tokens={"image_token": "<image>"}, local_files_only=True
    )
    # DaViT shrinks by 32: a 64 px image gives 2x2 tokens plus one pooled token
    image_processor = CLIPImageProcessor(size={"height": 64, "width": 64}, do_center_crop=False)
    image_processor.image_seq_length = 5
    processor = Florence2Processor(image_processor=image_processor, tokenizer=tokenizer)
    vision = {
        "depths": (1, 1, 1, 1),
        "embed_dim": (8, 16, 16, 32),
        "num_heads": (1, 2, 2, 4),
        "num_groups": (1, 2, 2, 4),
        "window_size": 2,
        "projection_dim": 32,
        "drop_path_rate": 0.0,
        "max_position_embeddings": 8,
    }
    text = BartConfig(
        vocab_size=len(tokenizer),
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=37,
        decoder_ffn_dim=37,
        max_position_embeddings=64,
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=2,
        init_std=0.2,
    )
    config = Florence2Config(
        vision_config=vision, text_config=text.to_dict(), image_token_id=tokenizer.image_token_id
    )
    torch.manual_seed(6)
    Florence2ForConditionalGeneration(config).save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)


def pictures() -> list[Image.Image]:
    """Two different RGB pictures of the same size: the shapes asset and a colour ramp with noise."""
    shapes = Image.open(REPO / "workflows" / "assets" / "shapes.png").convert("RGB").resize((WIDTH, HEIGHT))
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    noise = np.random.default_rng(7).integers(0, 60, (HEIGHT, WIDTH))
    ramp = np.stack([xs * 255 // WIDTH, ys * 255 // HEIGHT, noise + 100], -1).astype(np.uint8)
    return [shapes, Image.fromarray(ramp)]


def as_image(*pics: Image.Image) -> np.ndarray:
    """IMAGE (batch, h, w, 3) float32 in [0, 1] from PIL pictures (exact at uint8)."""
    return np.stack([np.asarray(p, dtype=np.float32) / 255.0 for p in pics])


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("vision-models")
    tokenizer = bert_tokenizer(root / "bert-vocab")
    captioners = root / "captioners"
    save_tiny_blip(captioners / "tiny-blip", tokenizer)
    save_tiny_blip(captioners / "tiny-blip-vqa", tokenizer, vqa=True)
    save_tiny_git(captioners / "tiny-git", tokenizer)
    save_tiny_blip2(captioners / "tiny-blip2")
    save_tiny_florence2(captioners / "tiny-florence2")
    save_tiny_clip(root / "clip" / "tiny-clip")
    # the same BLIP with pickle weights only
    pickled = captioners / "pickled-blip"
    shutil.copytree(captioners / "tiny-blip", pickled)
    from safetensors.torch import load_file

    torch.save(load_file(str(pickled / "model.safetensors")), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    # a model type the Captioner does not run
    other = captioners / "tiny-vit"
    other.mkdir()
    (other / "config.json").write_text('{"model_type": "vit"}', encoding="utf-8")
    (captioners / "loose.safetensors").write_bytes(b"")
    inputs = root / "inputs"
    inputs.mkdir()
    for index, picture in enumerate(pictures()):
        picture.save(inputs / f"pic{index}.png")
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def services(models_root: Path) -> Services:
    """This module's models folder, with one CPU model manager for the module."""
    return services_over(models_root, manager=ModelManager(device="cpu"))


def ctx_for(services: Services, node_type: str = "X") -> Context:
    return Context(
        node_id="n1",
        node_type=node_type,
        run_id="test",
        seed=1,
        settings=RunSettings(services=services),
        cancel_token=CancelToken(),
        emit=lambda event: None,
    )


def load_captioner(services: Services, name: str) -> Any:
    return CaptionerLoader().run(ctx_for(services), captioner_name=name)["captioner"]


def caption(services: Services, name: str, image: np.ndarray, **kwargs: Any) -> str:
    args = {"prompt": "", "max_new_tokens": 12, "num_beams": 1, **kwargs}
    handle = load_captioner(services, name)
    return str(Captioner().run(ctx_for(services), captioner=handle, image=image, **args)["text"])


def direct_caption(folder: Path, kind: str, picture: Image.Image, prompt: str, **generate: Any) -> str:
    """The caption transformers gives for the folder, run by hand as its model card shows."""
    import transformers

    processor = transformers.AutoProcessor.from_pretrained(str(folder), local_files_only=True)
    cls = {
        "blip": transformers.BlipForConditionalGeneration,
        "blip-vqa": transformers.BlipForQuestionAnswering,
        "git": transformers.GitForCausalLM,
        "blip-2": transformers.Blip2ForConditionalGeneration,
        "florence2": transformers.Florence2ForConditionalGeneration,
    }[kind]
    model = cls.from_pretrained(str(folder), local_files_only=True).eval()
    if kind == "git":
        inputs: dict[str, Any] = {"pixel_values": processor(images=picture, return_tensors="pt").pixel_values}
        if prompt:
            ids = processor.tokenizer(prompt, add_special_tokens=False).input_ids
            inputs["input_ids"] = torch.tensor([[processor.tokenizer.cls_token_id, *ids]])
    elif kind == "florence2":
        inputs = dict(processor(text=prompt or "<CAPTION>", images=picture, return_tensors="pt"))
    else:
        inputs = dict(processor(images=picture, text=prompt or None, return_tensors="pt"))
    with torch.no_grad():
        out = model.generate(**inputs, do_sample=False, **generate)
    return str(processor.decode(out[0], skip_special_tokens=True)).strip()


def test_blip_captions_match_transformers(models_root: Path, services: Services) -> None:
    pics = pictures()
    text = caption(services, "tiny-blip", as_image(*pics))
    lines = text.split("\n")
    assert len(lines) == 2
    folder = models_root / "captioners" / "tiny-blip"
    for line, picture in zip(lines, pics, strict=True):
        assert line == direct_caption(folder, "blip", picture, "", max_new_tokens=12, num_beams=1)
        assert line  # random weights still produce words
    assert lines[0] != lines[1]  # the two pictures give different captions
    # one image at a time gives the same lines as the batch
    assert caption(services, "tiny-blip", as_image(pics[1])) == lines[1]


def test_blip_prompt_and_beams(models_root: Path, services: Services) -> None:
    pics = pictures()
    folder = models_root / "captioners" / "tiny-blip"
    plain = caption(services, "tiny-blip", as_image(*pics)).split("\n")
    prompted = caption(services, "tiny-blip", as_image(*pics), prompt="A picture of").split("\n")
    for line, before in zip(prompted, plain, strict=True):
        assert line.startswith("a picture of")  # BERT lower-cases; the caption continues the prompt
        assert line != before
    assert prompted[0] == direct_caption(folder, "blip", pics[0], "A picture of", max_new_tokens=12)
    beams = caption(services, "tiny-blip", as_image(pics[0]), num_beams=3, max_new_tokens=8)
    assert beams == direct_caption(folder, "blip", pics[0], "", max_new_tokens=8, num_beams=3)


def test_git_captions_match_transformers(models_root: Path, services: Services) -> None:
    pics = pictures()
    folder = models_root / "captioners" / "tiny-git"
    lines = caption(services, "tiny-git", as_image(*pics), max_new_tokens=10).split("\n")
    for line, picture in zip(lines, pics, strict=True):
        assert line == direct_caption(folder, "git", picture, "", max_new_tokens=10)
    prompted = caption(services, "tiny-git", as_image(pics[0]), prompt="a photo of", max_new_tokens=10)
    assert prompted == direct_caption(folder, "git", pics[0], "a photo of", max_new_tokens=10)
    assert prompted.startswith("a photo of")


def test_blip_vqa_answers_and_needs_a_question(models_root: Path, services: Services) -> None:
    pics = pictures()
    folder = models_root / "captioners" / "tiny-blip-vqa"
    question = "what color is the circle"
    answer = caption(services, "tiny-blip-vqa", as_image(pics[1]), prompt=question, max_new_tokens=6)
    assert answer == direct_caption(folder, "blip-vqa", pics[1], question, max_new_tokens=6)
    with pytest.raises(NodeInputError) as caught:
        caption(services, "tiny-blip-vqa", as_image(pics[1]))
    assert caught.value.input_name == "prompt"


@pytest.mark.parametrize(("name", "kind"), [("tiny-blip2", "blip-2"), ("tiny-florence2", "florence2")])
def test_blip2_and_florence2_match_transformers(
    models_root: Path, services: Services, name: str, kind: str
) -> None:
    pics = pictures()
    folder = models_root / "captioners" / name
    assert load_captioner(services, name).get().kind == kind
    lines = caption(services, name, as_image(*pics), max_new_tokens=8).split("\n")
    for line, picture in zip(lines, pics, strict=True):
        assert line == direct_caption(folder, kind, picture, "", max_new_tokens=8)
    prompt = "a photo of" if kind == "blip-2" else "<DETAILED_CAPTION>"
    prompted = caption(services, name, as_image(pics[0]), prompt=prompt, max_new_tokens=8, num_beams=2)
    assert prompted == direct_caption(folder, kind, pics[0], prompt, max_new_tokens=8, num_beams=2)
    if kind == "blip-2":
        assert prompted.startswith("a photo of")  # a decoder-only model continues the prompt


def clip_oracle(folder: Path, picture: Image.Image, text: str) -> float:
    """cos of CLIPModel.get_image_features and get_text_features, computed by hand."""
    from transformers import CLIPModel, CLIPProcessor

    processor = CLIPProcessor.from_pretrained(str(folder), local_files_only=True)
    model = CLIPModel.from_pretrained(str(folder), local_files_only=True).eval()
    inputs = processor(images=[picture], text=[text], return_tensors="pt", padding=True)
    with torch.no_grad():
        image_features = model.get_image_features(pixel_values=inputs["pixel_values"])
        text_features = model.get_text_features(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        )
    image_features = getattr(image_features, "pooler_output", image_features)[0].double()
    text_features = getattr(text_features, "pooler_output", text_features)[0].double()
    return float(image_features @ text_features / (image_features.norm() * text_features.norm()))


def score(services: Services, image: np.ndarray, text: str) -> dict[str, Any]:
    handle = ClipLoader().run(ctx_for(services), clip_name="tiny-clip")["clip"]
    return CLIPScore().run(ctx_for(services), clip=handle, image=image, text=text)


def test_clip_score_matches_the_definition(models_root: Path, services: Services) -> None:
    pics = pictures()
    folder = models_root / "clip" / "tiny-clip"
    text = "a red circle and a blue square"
    singles = []
    for picture in pics:
        out = score(services, as_image(picture), text)
        assert isinstance(out["score"], float) and isinstance(out["similarity"], float)
        cosine = clip_oracle(folder, picture, text)
        assert out["similarity"] == pytest.approx(cosine, abs=1e-4)
        assert out["score"] == pytest.approx(100 * max(cosine, 0.0), abs=1e-4)
        assert 0.0 <= out["score"] <= 100.0
        singles.append(out)
    both = score(services, as_image(*pics), text)
    assert both["score"] == pytest.approx((singles[0]["score"] + singles[1]["score"]) / 2, abs=1e-4)
    assert both["similarity"] == pytest.approx(
        (singles[0]["similarity"] + singles[1]["similarity"]) / 2, abs=1e-4
    )
    assert score(services, as_image(pics[0]), text) == singles[0]  # same input, same score
    other = score(services, as_image(pics[0]), "a green triangle")
    assert other["similarity"] != singles[0]["similarity"]
    with pytest.raises(NodeInputError) as caught:
        score(services, as_image(pics[0]), "  ")
    assert caught.value.input_name == "text"


@pytest.mark.parametrize(
    ("node", "input_name", "name", "says"),
    [
        (CaptionerLoader, "captioner_name", "missing-blip", "not in models/captioners"),
        (CaptionerLoader, "captioner_name", "", "no model chosen"),
        (CaptionerLoader, "captioner_name", "tiny-vit", "'vit' model"),
        (CaptionerLoader, "captioner_name", "loose.safetensors", "not a transformers folder"),
        (CaptionerLoader, "captioner_name", "pickled-blip", "pickle"),
        (ClipLoader, "clip_name", "missing-clip", "not in models/clip"),
        (ClipLoader, "clip_name", "../captioners/tiny-blip", "not in models/clip"),
    ],
)
def test_loader_errors_name_the_input(
    models_root: Path, services: Services, node: Any, input_name: str, name: str, says: str
) -> None:
    with pytest.raises(NodeInputError) as caught:
        node().run(ctx_for(services), **{input_name: name})
    assert caught.value.input_name == input_name
    assert says in caught.value.message
    if name == "tiny-vit":
        assert "BLIP" in caught.value.message and "florence2" in caught.value.message


def test_pickle_weights_load_with_the_opt_in(models_root: Path) -> None:
    pics = pictures()
    allowing = services_over(models_root, manager=ModelManager(device="cpu", allow_pickle=True))
    safe = services_over(models_root, manager=ModelManager(device="cpu"))
    from_pickle = caption(allowing, "pickled-blip", as_image(pics[0]))
    assert from_pickle == caption(safe, "tiny-blip", as_image(pics[0]))


def test_loader_shares_one_copy(models_root: Path) -> None:
    fresh = services_over(models_root, manager=ModelManager(device="cpu"))
    first = load_captioner(fresh, "tiny-blip")
    second = load_captioner(fresh, "tiny-blip")
    assert fresh.loads == 1
    assert first.get() is second.get()
    assert first.get().kind == "blip"
    assert next(first.get().model.parameters()).dtype == fresh.models().dtype


def test_choices_list_the_folders(services: Services) -> None:
    names = CaptionerLoader.input("captioner_name").current_choices(services)  # type: ignore[union-attr]
    assert {"tiny-blip", "tiny-git", "tiny-blip-vqa", "tiny-blip2", "tiny-florence2"} <= set(names or [])
    assert "tiny-clip" in (ClipLoader.input("clip_name").current_choices(services) or [])  # type: ignore[union-attr]


def test_graph_load_caption_score_show(models_root: Path, services: Services) -> None:
    nodes = {
        "img": {"type": "LoadImage", "inputs": {"path": "pic0.png"}},
        "cl": {"type": "CaptionerLoader", "inputs": {"captioner_name": "tiny-blip"}},
        "cap": {
            "type": "Captioner",
            "inputs": {
                "captioner": link("cl", "captioner"),
                "image": link("img", "image"),
                "max_new_tokens": 12,
            },
        },
        "show": {"type": "ShowValue", "inputs": {"value": link("cap", "text")}},
        "clip": {"type": "ClipLoader", "inputs": {"clip_name": "tiny-clip"}},
        "sc": {
            "type": "CLIPScore",
            "inputs": {"clip": link("clip", "clip"), "image": link("img", "image"), "text": "a red circle"},
        },
        "show_score": {"type": "ShowValue", "inputs": {"value": link("sc", "score")}},
    }
    registry = default_registry(services=services)
    checked = validate({"version": 1, "nodes": nodes}, registry)
    assert checked.ok, [str(issue) for issue in checked.issues]
    settings = RunSettings(
        services=services, input_dirs=(models_root / "inputs",), output_dir=models_root / "out"
    )
    result = Executor(registry).run(checked.workflow, settings=settings)
    assert result.status == "done", result.error
    picture = pictures()[0]
    expected = direct_caption(
        models_root / "captioners" / "tiny-blip", "blip", picture, "", max_new_tokens=12
    )
    assert result.outputs["show"]["text"] == repr(expected)  # ShowValue shows the text's repr
    cosine = clip_oracle(models_root / "clip" / "tiny-clip", picture, "a red circle")
    assert float(result.outputs["show_score"]["text"]) == pytest.approx(100 * max(cosine, 0.0), abs=1e-4)


def test_pack_imports_without_torch() -> None:
    code = "import sys, nodes.vision; sys.exit('torch' in sys.modules or 'transformers' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
