"""The model manager: one loaded copy of each model, placed on the right device, evicted
least-recently-used under a memory budget (offloaded to the CPU before being dropped).

Nodes ask ``manager.get(key, load)``; every node that asks for the same key shares the
same object. ``manager.on_device(obj)`` moves an offloaded model back before use. The
manager is an object held by whoever runs workflows (the CLI, the studio server); there
is no global instance.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch

T = TypeVar("T")


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def modules_of(obj: Any) -> list[torch.nn.Module]:
    """The torch modules an object holds: itself, its attributes, or the items of its
    lists, tuples and dicts (one level down), without repeats."""
    import torch

    found: list[torch.nn.Module] = []

    def visit(value: Any, depth: int) -> None:
        if isinstance(value, torch.nn.Module):
            if not any(value is m for m in found):
                found.append(value)
        elif depth < 2 and isinstance(value, dict):
            for item in value.values():
                visit(item, depth + 1)
        elif depth < 2 and isinstance(value, list | tuple):
            for item in value:
                visit(item, depth + 1)
        elif depth < 1 and hasattr(value, "__dict__"):
            for item in vars(value).values():
                visit(item, depth + 1)

    visit(obj, 0)
    return found


def bytes_of(obj: Any) -> int:
    total = 0
    for module in modules_of(obj):
        for tensor in list(module.parameters()) + list(module.buffers()):
            total += tensor.numel() * tensor.element_size()
    return total


@dataclass
class _Entry:
    value: Any
    size: int
    on_device: bool


class ModelManager:
    """Loaded models by key, bounded by ``budget_bytes`` on the device. Thread-safe."""

    def __init__(
        self,
        device: str | None = None,
        dtype: torch.dtype | None = None,
        budget_bytes: int | None = None,
        allow_pickle: bool = False,
        attention: str = "auto",
    ) -> None:
        import torch

        self.device = device or default_device()
        if dtype is None:
            dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        self.dtype = dtype
        self.budget_bytes = budget_bytes if budget_bytes is not None else self._default_budget()
        self.allow_pickle = allow_pickle
        self.attention = attention
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._lock = threading.RLock()
        self.loads = 0  # how many times a loader actually ran (for tests and stats)

    def _default_budget(self) -> int:
        import torch

        if self.device.startswith("cuda"):
            total = torch.cuda.get_device_properties(torch.device(self.device)).total_memory
            return int(total * 0.8)
        return 12 * 1024**3

    def install_attention(self, model: Any) -> str:
        """Put the attention kernel chosen by ``self.attention`` into a UNet or ControlNet
        ("auto": our Triton kernel on CUDA, PyTorch's SDPA elsewhere). Returns what was installed."""
        from kernels.processor import install_attention

        return install_attention(model, self.attention)

    def get(self, key: Hashable, load: Callable[[], T]) -> T:
        """The model under ``key``, loading it (once) with ``load`` when absent."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                value = load()
                self.loads += 1
                entry = _Entry(value, bytes_of(value), on_device=self.device == "cpu")
                self._entries[key] = entry
            self._entries.move_to_end(key)
            self._ensure_on_device(key, entry)
            self._evict(keep=key)
            return entry.value  # type: ignore[no-any-return]

    def on_device(self, key: Hashable) -> None:
        """Bring an offloaded model back to the device before it is used."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self._ensure_on_device(key, entry)
                self._evict(keep=key)

    def _ensure_on_device(self, key: Hashable, entry: _Entry) -> None:
        if entry.on_device:
            return
        for module in modules_of(entry.value):
            module.to(self.device)
        entry.on_device = True

    def _device_bytes(self) -> int:
        return sum(e.size for e in self._entries.values() if e.on_device)

    def _evict(self, keep: Hashable) -> None:
        """Offload (GPU) or drop (CPU) least recently used models until within budget."""
        for key in list(self._entries):
            if self._device_bytes() <= self.budget_bytes:
                return
            if key == keep:
                continue
            entry = self._entries[key]
            if self.device != "cpu" and entry.on_device:
                for module in modules_of(entry.value):
                    module.to("cpu")
                entry.on_device = False
            else:
                del self._entries[key]
        if self.device != "cpu":
            import torch

            torch.cuda.empty_cache()

    def drop(self, key: Hashable) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._entries)

    @property
    def loaded_bytes(self) -> int:
        with self._lock:
            return sum(e.size for e in self._entries.values())
