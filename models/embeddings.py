"""Textual-inversion embeddings, used by name in prompts.

A prompt names an embedding by its file name: ``embedding:name`` (as in ComfyUI) or the
bare ``name`` (as in A1111) when a file ``models/embeddings/name.safetensors`` exists.
Files: A1111/kohya safetensors (``emb_params``), SDXL ones (``clip_l`` and ``clip_g``),
diffusers' (a single tensor under the token's name), and A1111 ``.pt`` files
(``string_to_param``), which are pickles: refused unless allowed, then loaded weights-only.

A LoRA file may carry embeddings too (pivotal tuning's trigger words): A1111's bundled form,
``bundle_emb.NAME.emb_params`` (or ``.string_to_param.*``, ``.clip_l``/``.clip_g``). A prompt
encoded with the text encoder such a LoRA was applied to knows NAME, as if the file were in
``models/embeddings`` (and before a file there of the same name).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.safety import check_weights_file, plain_load_error

if TYPE_CHECKING:
    import torch

SUFFIXES = (".safetensors", ".pt", ".bin")
BUNDLE_PREFIX = "bundle_emb."


class EmbeddingError(Exception):
    pass


@dataclass(frozen=True)
class Bundled:
    """An embedding inside a LoRA file: its keys are ``bundle_emb.NAME.*``."""

    path: Path
    name: str


#: Where an embedding's vectors are: its own file, or a LoRA file that bundles it.
Source = Path | Bundled


def label(source: Source) -> str:
    """How messages name an embedding: its file, or the LoRA file that bundles it and its name."""
    if isinstance(source, Bundled):
        return f"{source.path.name}'s bundled embedding {source.name!r}"
    return source.name


def bundled_names(path: Path) -> list[str]:
    """The names of the embeddings a LoRA file bundles, in the file's order (none for a pickle)."""
    if path.suffix != ".safetensors":
        return []
    from safetensors import safe_open

    names: list[str] = []
    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
    except Exception:  # noqa: BLE001 - a broken file: loading the LoRA itself says so, in its words
        return []
    for key in keys:
        if key.startswith(BUNDLE_PREFIX):
            name = key[len(BUNDLE_PREFIX) :].split(".", 1)[0]
            if name and name not in names:
                names.append(name)
    return names


def _bundle(source: Bundled) -> dict[str, Any]:
    """The tensors under ``bundle_emb.NAME.``, keyed as an embedding file's (``string_to_param.*``
    as A1111's ``string_to_param`` dict)."""
    from safetensors import safe_open

    prefix = f"{BUNDLE_PREFIX}{source.name}."
    data: dict[str, Any] = {}
    with safe_open(str(source.path), framework="pt") as handle:
        for key in handle.keys():
            if key.startswith(prefix):
                rest = key[len(prefix) :]
                if rest.startswith("string_to_param."):
                    data.setdefault("string_to_param", {})[rest.split(".", 1)[1]] = handle.get_tensor(key)
                else:
                    data[rest] = handle.get_tensor(key)
    return data


#: A word that may name an embedding: ``embedding:name``, ``name``, or a trigger word in angle
#: brackets (``<plus>``, which a LoRA may bundle under that very name).
_WORD = re.compile(r"(?:embedding:)?(<?[\w.\-]+>?)")


def _named(word: str, available: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """(text before, name, text after) where ``word`` names an available embedding: as written,
    else without its angle brackets (which then stay around it in the prompt)."""
    stem = word.removesuffix(".safetensors").removesuffix(".pt")
    if stem in available:
        return "", stem, ""
    before, inner, after = _split_brackets(word)
    inner = inner.removesuffix(".safetensors").removesuffix(".pt")
    return (before, inner, after) if inner in available else None


def _split_brackets(word: str) -> tuple[str, str, str]:
    before = "<" if word.startswith("<") else ""
    after = ">" if word.endswith(">") and len(word) > len(before) else ""
    return before, word[len(before) : len(word) - len(after)], after


def find_names(prompt: str, available: Mapping[str, Any]) -> list[str]:
    """The embeddings a prompt uses, by name, in order of first use."""
    used = []
    for match in _WORD.finditer(prompt):
        found = _named(match.group(1), available)
        if found is not None and found[1] not in used:
            used.append(found[1])
    return used


def load_vectors(source: Source, encoders: int, allow_pickle: bool) -> list[torch.Tensor]:
    """One (vectors, dim) tensor per text encoder."""
    import torch

    if isinstance(source, Bundled):
        data: Any = _bundle(source)
        return _vectors(data, encoders, label(source))
    path = source
    check_weights_file(path, allow_pickle)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        data = load_file(str(path))
    else:
        try:
            data = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - code in the pickle, or a corrupt file
            raise EmbeddingError(f"{path.name} could not be loaded: {plain_load_error(exc)}") from None
    return _vectors(data, encoders, label(path))


def _vectors(data: Any, encoders: int, shown: str) -> list[torch.Tensor]:
    if isinstance(data, dict) and data.get("string_to_param"):
        data = {"emb_params": next(iter(data["string_to_param"].values()))}
    if not isinstance(data, dict) or not data:
        raise EmbeddingError(f"{shown} holds no embedding")
    if encoders == 2:
        if "clip_l" in data and "clip_g" in data:
            return [data["clip_l"], data["clip_g"]]
        raise EmbeddingError(f"{shown} is not an SDXL embedding (it needs clip_l and clip_g vectors)")
    if "emb_params" in data:
        vectors = data["emb_params"]
    elif len(data) == 1:
        vectors = next(iter(data.values()))
    else:
        raise EmbeddingError(f"{shown}: cannot tell which of its tensors is the embedding")
    return [vectors.reshape(-1, vectors.shape[-1])]


def with_embeddings(
    tokenizers: list[Any], encoders: list[Any], files: dict[str, Source], allow_pickle: bool
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
                raise EmbeddingError(f"{label(path)} was made for another model (width {vector.shape[-1]})")
            tokens = add_embedding(tokenizer, encoder, name, vector)
        expansions[name] = " ".join(tokens)
    return tokenizers, encoders, expansions


def expand(prompt: str, expansions: dict[str, str]) -> str:
    """Replace ``embedding:name`` and ``name`` by the tokens the tokenizer learnt for them."""

    def swap(match: re.Match[str]) -> str:
        found = _named(match.group(1), expansions)
        if found is None:
            return match.group(0)
        before, name, after = found
        return f"{before}{expansions[name]}{after}"

    return _WORD.sub(swap, prompt)
