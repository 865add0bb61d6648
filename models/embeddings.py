"""Textual-inversion embeddings, used by name in prompts.

A prompt names an embedding by its file name: ``embedding:name`` (as in ComfyUI) or the
bare ``name`` (as in A1111) when a file ``models/embeddings/name.safetensors`` exists.
Files: A1111/kohya safetensors (``emb_params``), SDXL ones (``clip_l`` and ``clip_g``),
diffusers' (a single tensor under the token's name), and A1111 ``.pt`` files
(``string_to_param``), which are pickles: refused unless allowed, then loaded weights-only.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.safety import check_weights_file, plain_load_error

if TYPE_CHECKING:
    import torch

SUFFIXES = (".safetensors", ".pt", ".bin")


class EmbeddingError(Exception):
    pass


def find_names(prompt: str, available: dict[str, Path]) -> list[str]:
    """The embeddings a prompt uses, by name, in order of first use."""
    used = []
    for match in re.finditer(r"(?:embedding:)?([\w.\-]+)", prompt):
        word = match.group(1)
        stem = word.removesuffix(".safetensors").removesuffix(".pt")
        if stem in available and stem not in used:
            used.append(stem)
    return used


def load_vectors(path: Path, encoders: int, allow_pickle: bool) -> list[torch.Tensor]:
    """One (vectors, dim) tensor per text encoder."""
    import torch

    check_weights_file(path, allow_pickle)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        data: Any = load_file(str(path))
    else:
        try:
            data = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - code in the pickle, or a corrupt file
            raise EmbeddingError(f"{path.name} could not be loaded: {plain_load_error(exc)}") from None
    if isinstance(data, dict) and "string_to_param" in data:
        data = {"emb_params": next(iter(data["string_to_param"].values()))}
    if not isinstance(data, dict):
        raise EmbeddingError(f"{path.name} holds no embedding")
    if encoders == 2:
        if "clip_l" in data and "clip_g" in data:
            return [data["clip_l"], data["clip_g"]]
        raise EmbeddingError(f"{path.name} is not an SDXL embedding (it needs clip_l and clip_g vectors)")
    if "emb_params" in data:
        vectors = data["emb_params"]
    elif len(data) == 1:
        vectors = next(iter(data.values()))
    else:
        raise EmbeddingError(f"{path.name}: cannot tell which of its tensors is the embedding")
    return [vectors.reshape(-1, vectors.shape[-1])]


def with_embeddings(
    tokenizers: list[Any], encoders: list[Any], files: dict[str, Path], allow_pickle: bool
) -> tuple[list[Any], list[Any], dict[str, str]]:
    """Copies of the tokenizers and encoders that know the embeddings, and how each name expands."""
    from models.prompts import add_embedding

    tokenizers = [copy.deepcopy(t) for t in tokenizers]
    encoders = [copy.deepcopy(e) for e in encoders]
    expansions = {}
    for name, path in files.items():
        vectors = load_vectors(path, len(encoders), allow_pickle)
        for tokenizer, encoder, vector in zip(tokenizers, encoders, vectors, strict=True):
            if vector.shape[-1] != encoder.get_input_embeddings().weight.shape[-1]:
                raise EmbeddingError(f"{path.name} was made for another model (width {vector.shape[-1]})")
            tokens = add_embedding(tokenizer, encoder, name, vector)
        expansions[name] = " ".join(tokens)
    return tokenizers, encoders, expansions


def expand(prompt: str, expansions: dict[str, str]) -> str:
    """Replace ``embedding:name`` and ``name`` by the tokens the tokenizer learnt for them."""

    def swap(match: re.Match[str]) -> str:
        stem = match.group(1).removesuffix(".safetensors").removesuffix(".pt")
        return expansions.get(stem, match.group(0))

    return re.sub(r"(?:embedding:)?([\w.\-]+)", swap, prompt)
