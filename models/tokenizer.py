"""CLIP's tokenizer, built offline from the BPE vocabulary that ``open_clip_torch`` ships.

Single-file checkpoints carry no tokenizer. CLIP's byte-pair vocabulary
(``bpe_simple_vocab_16e6.txt.gz``) is inside PyPI's ``open_clip_torch`` wheel, which
``setup.sh`` installs without its dependencies; a ``CLIPTokenizer`` built from it
tokenizes exactly as CLIP does. The package is located without importing it (its
import pulls in torchvision).
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
    from transformers import CLIPTokenizer

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
#: Merges CLIP uses: 49152 - 256 - 2 lines after the header.
N_MERGES = 49152 - 256 - 2
CACHE = Path(__file__).resolve().parent / ".cache" / "clip-tokenizer"


class TokenizerUnavailable(Exception):
    pass


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
