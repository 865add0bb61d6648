"""Tokenizers built offline: CLIP's from ``open_clip_torch``, T5's from ``diffsynth``.

Single-file checkpoints carry no tokenizer. CLIP's byte-pair vocabulary
(``bpe_simple_vocab_16e6.txt.gz``) is inside PyPI's ``open_clip_torch`` wheel, which
``setup.sh`` installs without its dependencies; a ``CLIPTokenizer`` built from it
tokenizes exactly as CLIP does. T5's sentencepiece vocabulary (for SD3's and Flux's T5-XXL
encoder) comes from a user's diffusers folder when it has one (``tokenizer_3`` of SD3,
``tokenizer_2`` of Flux), else from the copy PyPI's ``diffsynth`` wheel ships (Apache-2.0;
``diffsynth/tokenizer_configs/flux/tokenizer_2``), also installed without dependencies.
Neither package is imported (their imports pull in torchvision): they are located with
``importlib.util.find_spec``. Nothing here contacts a model hub.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import CLIPTokenizer, PreTrainedTokenizerBase

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
#: Merges CLIP uses: 49152 - 256 - 2 lines after the header.
N_MERGES = 49152 - 256 - 2
CACHE = Path(__file__).resolve().parent / ".cache" / "clip-tokenizer"


#: T5 tokenizer files inside the ``diffsynth`` package (Flux's copy of t5-v1_1-xxl's vocabulary).
T5_IN_DIFFSYNTH = ("tokenizer_configs", "flux", "tokenizer_2")
#: A diffusers folder's T5 tokenizer: SD3's third tokenizer, Flux's second.
T5_SUBFOLDERS = ("tokenizer_3", "tokenizer_2")
#: Either file is enough for T5TokenizerFast (tokenizer.json is read first).
T5_FILES = ("tokenizer.json", "spiece.model")


class TokenizerUnavailable(Exception):
    """The files a tokenizer is built from are not there; the message says what to install."""


def bpe_path() -> Path:
    spec = importlib.util.find_spec("open_clip")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        candidate = Path(folder) / BPE_FILE
        if candidate.is_file():
            return candidate
    raise TokenizerUnavailable(
        "CLIP's vocabulary was not found: run `bash setup.sh` (it installs open_clip_torch "
        "without dependencies, which carries the file)"
    )


def _bytes_to_unicode() -> list[str]:
    """CLIP's (and GPT-2's) reversible map from bytes to printable characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]  # CLIP's order: printable bytes first, then the rest


def write_vocabulary(folder: Path) -> tuple[Path, Path]:
    """Write ``vocab.json`` and ``merges.txt`` for CLIPTokenizer into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    if vocab_file.is_file() and merges_file.is_file():
        return vocab_file, merges_file
    with gzip.open(bpe_path(), "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    merges = lines[1 : N_MERGES + 1]  # the first line is a version header
    symbols = _bytes_to_unicode()
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    if len(vocab) != 49408:
        raise TokenizerUnavailable(f"{bpe_path()} does not hold CLIP's vocabulary ({len(vocab)} tokens)")
    _write_atomic(merges_file, "#version: 0.2\n" + "\n".join(merges) + "\n")
    _write_atomic(vocab_file, json.dumps({token: index for index, token in enumerate(vocab)}))
    return vocab_file, merges_file


def _write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file, so two processes building at once never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    Path(tmp).replace(path)


def clip_tokenizer(pad_token: str = "<|endoftext|>", cache: Path = CACHE) -> CLIPTokenizer:
    """CLIP's tokenizer (77 tokens). SD1.x pads with ``<|endoftext|>``; SD2 and SDXL's second
    encoder pad with ``!``."""
    from transformers import CLIPTokenizer

    vocab_file, merges_file = write_vocabulary(cache)
    return CLIPTokenizer(str(vocab_file), str(merges_file), pad_token=pad_token, model_max_length=77)


def _has_t5_files(folder: Path) -> bool:
    return any((folder / name).is_file() for name in T5_FILES)


def packaged_t5_folder() -> Path | None:
    """The T5 tokenizer folder inside the installed ``diffsynth`` package (not imported), or None."""
    spec = importlib.util.find_spec("diffsynth")
    for location in list(spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location).joinpath(*T5_IN_DIFFSYNTH)
        if _has_t5_files(candidate):
            return candidate
    return None


def t5_tokenizer_folder(folder: Path | None = None) -> Path:
    """Where T5's tokenizer files are: ``folder`` itself or its ``tokenizer_3`` / ``tokenizer_2``
    (a user's SD3 or Flux diffusers folder) when given and present, else the packaged copy."""
    if folder is not None:
        folder = Path(folder)
        for candidate in (folder, *(folder / sub for sub in T5_SUBFOLDERS)):
            if _has_t5_files(candidate) and _looks_like_t5(candidate):
                return candidate
    packaged = packaged_t5_folder()
    if packaged is not None:
        return packaged
    where = (
        f"{folder} has no T5 tokenizer files ({' or '.join(T5_FILES)} in tokenizer_3/ or tokenizer_2/), and "
        if folder
        else ""
    )
    raise TokenizerUnavailable(
        f"T5's tokenizer was not found: {where}the diffsynth package, which carries T5's vocabulary, "
        "is not installed. Run `bash setup.sh` (it installs diffsynth without dependencies from "
        "requirements-nodeps.txt), or `.venv/bin/pip install --no-deps diffsynth==1.1.7`, or use a "
        "diffusers folder of SD3 or Flux that has its tokenizer files"
    )


def _looks_like_t5(folder: Path) -> bool:
    """A tokenizer folder of T5 (not a CLIP tokenizer_2 of SDXL, which has vocab.json/merges.txt)."""
    config = folder / "tokenizer_config.json"
    if not config.is_file():
        return (folder / "spiece.model").is_file()
    try:
        cls = json.loads(config.read_text()).get("tokenizer_class", "")
    except (OSError, json.JSONDecodeError):
        return False
    return "T5" in str(cls)


def t5_tokenizer(folder: Path | None = None, max_length: int = 512) -> PreTrainedTokenizerBase:
    """T5's tokenizer (t5-v1_1's sentencepiece vocabulary, 32100 tokens with the 100 sentinels),
    from a diffusers folder's files when ``folder`` is given and has them, else from the
    ``diffsynth`` package; :class:`TokenizerUnavailable` when neither is there."""
    from transformers import T5TokenizerFast

    source = t5_tokenizer_folder(folder)
    return T5TokenizerFast.from_pretrained(str(source), local_files_only=True, model_max_length=max_length)
