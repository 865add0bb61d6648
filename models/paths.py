"""Where model files live: folders under ``models/`` (or another root a user points at).

A user's existing ComfyUI or A1111 folder works as an extra root: the folder names
they use (``Stable-diffusion``, ``Lora``, ``ControlNet``, ``VAE``, ``embeddings``,
``checkpoints``, ``loras``, ``controlnet``, ``vae``, ...) are recognised.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

REPO_MODELS = Path(__file__).resolve().parent

#: Our folder name for each kind, then the names other tools use for it.
KIND_FOLDERS: dict[str, tuple[str, ...]] = {
    "checkpoints": ("checkpoints", "Stable-diffusion", "diffusers"),
    "vae": ("vae", "VAE"),
    "controlnet": ("controlnet", "ControlNet"),
    "loras": ("loras", "Lora", "LoRA"),
    "embeddings": ("embeddings",),
    "captioners": ("captioners", "blip"),
    "clip": ("clip", "clip_vision"),
    "editors": ("editors",),
    "text_encoders": ("text_encoders", "clip"),
    "upscale_models": ("upscale_models", "ESRGAN", "RealESRGAN", "SwinIR"),
    "unet": ("unet", "diffusion_models"),
    "ipadapter": ("ipadapter", "ip_adapter"),
    "gligen": ("gligen",),
    "hypernetworks": ("hypernetworks",),
}

#: File suffixes of weights; a folder holding model_index.json or config.json counts too.
WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")

#: The environment variable naming extra model roots (separated like PATH). Only the commands
#: read it (cli/services.py), as a user's setting beside ``--models DIR``; nothing else does.
ENV_MODEL_ROOTS = "STUDIO_MODELS"


@dataclass(frozen=True)
class ModelPaths:
    """The model roots to search, in order (by default the repository's ``models/`` alone)."""

    roots: tuple[Path, ...] = field(default_factory=lambda: (REPO_MODELS,))

    @classmethod
    def with_roots(cls, extra: Iterable[Path | str] = ()) -> ModelPaths:
        """The repository's ``models/`` first, then ``extra`` in order (``~`` expanded, repeats dropped)."""
        roots = [REPO_MODELS, *(Path(p).expanduser() for p in extra)]
        return cls(tuple(dict.fromkeys(roots)))

    def folders(self, kind: str) -> list[Path]:
        names = KIND_FOLDERS[kind]
        found = []
        for root in self.roots:
            for name in names:
                candidate = root / name
                if candidate.is_dir():
                    found.append(candidate)
            if root.name in names and root.is_dir():
                found.append(root)
        return list(dict.fromkeys(found))

    def list(self, kind: str) -> list[str]:
        """Names of the models of one kind: files with weights and diffusers/transformers folders."""
        names: set[str] = set()
        for folder in self.folders(kind):
            for path in sorted(folder.rglob("*")):
                rel = path.relative_to(folder)
                if any(part.startswith(".") for part in rel.parts):
                    continue
                if _inside_model_folder(path, folder):
                    continue
                if path.is_file() and path.suffix.lower() in WEIGHT_SUFFIXES:
                    names.add(rel.as_posix())
                elif path.is_dir() and _is_model_folder(path):
                    names.add(rel.as_posix())
        return sorted(names)

    def find(self, kind: str, name: str) -> Path | None:
        """The path of a model by the name :meth:`list` gives, or None."""
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts:
            return None
        for folder in self.folders(kind):
            candidate = folder / rel
            if candidate.exists():
                return candidate
        return None


def _is_model_folder(path: Path) -> bool:
    return (path / "model_index.json").is_file() or (path / "config.json").is_file()


def _inside_model_folder(path: Path, top: Path) -> bool:
    """Weights inside a diffusers/transformers folder belong to that folder, not listed alone."""
    for parent in path.parents:
        if parent == top:
            return False
        if _is_model_folder(parent):
            return True
    return False
