"""Where model files are found: our folders, a ComfyUI or A1111 folder, diffusers folders."""

from __future__ import annotations

import json
from pathlib import Path

from models.paths import REPO_MODELS, ModelPaths


def touch(path: Path, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_lists_files_and_model_folders_but_not_their_insides(tmp_path):
    root = tmp_path / "ours"
    touch(root / "checkpoints" / "a.safetensors")
    touch(root / "checkpoints" / "sub" / "b.ckpt")
    touch(root / "checkpoints" / "notes.txt")
    touch(root / "checkpoints" / "tiny" / "model_index.json", json.dumps({}).encode())
    touch(root / "checkpoints" / "tiny" / "unet" / "config.json", b"{}")
    touch(root / "checkpoints" / "tiny" / "unet" / "diffusion_pytorch_model.safetensors")
    touch(root / "checkpoints" / ".hidden" / "c.safetensors")
    paths = ModelPaths((root,))
    assert paths.list("checkpoints") == ["a.safetensors", "sub/b.ckpt", "tiny"]
    assert paths.find("checkpoints", "tiny") == root / "checkpoints" / "tiny"
    assert paths.find("checkpoints", "../../etc/passwd") is None
    assert paths.find("checkpoints", "/etc/passwd") is None


def test_comfyui_and_a1111_folders_just_work(tmp_path):
    comfy = tmp_path / "ComfyUI" / "models"
    touch(comfy / "checkpoints" / "sd15.safetensors")
    touch(comfy / "loras" / "style.safetensors")
    touch(comfy / "clip_vision" / "clipper" / "config.json", b"{}")
    a1111 = tmp_path / "webui" / "models"
    touch(a1111 / "Stable-diffusion" / "dream.safetensors")
    touch(a1111 / "Lora" / "detail.safetensors")
    touch(a1111 / "VAE" / "vae-ft.safetensors")
    paths = ModelPaths.with_roots([comfy, a1111])
    assert paths.roots == (REPO_MODELS, comfy, a1111)
    assert {"sd15.safetensors", "dream.safetensors"} <= set(paths.list("checkpoints"))
    assert {"style.safetensors", "detail.safetensors"} <= set(paths.list("loras"))
    assert "vae-ft.safetensors" in paths.list("vae")
    assert "clipper" in paths.list("clip")
    assert paths.find("loras", "detail.safetensors") == a1111 / "Lora" / "detail.safetensors"
