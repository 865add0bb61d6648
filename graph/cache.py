"""The signature cache: node outputs by signature, bounded by entries and bytes (LRU)."""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


def size_of(value: Any, _depth: int = 0) -> int:
    """Bytes a value holds, as far as it can be told cheaply (arrays and tensors exactly)."""
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    custom = getattr(value, "cache_size", None)
    if callable(custom):
        return int(custom())
    if isinstance(value, str | bytes | bytearray):
        return len(value)
    if _depth < 4 and isinstance(value, dict):
        return sum(size_of(v, _depth + 1) for v in value.values()) + 64
    if _depth < 4 and isinstance(value, list | tuple):
        return sum(size_of(v, _depth + 1) for v in value) + 64
    return sys.getsizeof(value)


@dataclass(frozen=True)
class CacheEntry:
    outputs: dict[str, Any]
    files: tuple[str, ...]
    size: int


class Cache:
    """Least-recently-used outputs, at most ``max_entries`` and ``max_bytes``. Thread-safe."""

    def __init__(self, max_entries: int = 512, max_bytes: int = 2 * 1024**3) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, signature: str) -> CacheEntry | None:
        with self._lock:
            entry = self._entries.get(signature)
            if entry is not None:
                self._entries.move_to_end(signature)
            return entry

    def put(self, signature: str, outputs: dict[str, Any], files: list[str]) -> None:
        """Store ``outputs`` under ``signature`` (replacing what was there), then evict the oldest."""
        size = size_of(outputs)
        with self._lock:
            old = self._entries.pop(signature, None)
            if old is not None:
                self._bytes -= old.size
            if size > self.max_bytes:
                return  # too big to keep: and the key no longer holds its earlier value either
            self._entries[signature] = CacheEntry(outputs, tuple(files), size)
            self._bytes += size
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.size

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def bytes(self) -> int:
        """The summed sizes of the entries held."""
        with self._lock:
            return self._bytes
