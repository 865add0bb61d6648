"""The registry of node types, filled by node packs.

A pack is a module with a ``NODES`` tuple of node classes. :func:`default_registry`
builds a fresh registry from the built-in packs; nothing here is global state, so
tests and servers can hold registries of their own. A registry carries the services
(models/services.py) its loaders list their model choices from, so two registries over
different model folders offer different files in the same process.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from models.services import Services
from nodes.base import Node, check_definition

#: Built-in packs, imported in this order. Packs must not import torch, diffusers
#: or gradio at module level: listing and validating nodes has to start fast.
BUILTIN_PACKS: tuple[str, ...] = (
    "nodes.primitives",
    "nodes.image_io",
    "nodes.image",
    "nodes.mask",
    "nodes.diffusion",
    "nodes.conditioning",
    "nodes.text_encoder_loaders",
    "nodes.latent",
    "nodes.sampling_custom",
    "nodes.model_ops",
    "nodes.clip_vision",
    "nodes.dit",
    "nodes.ip_adapter",
    "nodes.gligen",
    "nodes.control",
    "nodes.edit",
    "nodes.vision",
    "nodes.video",
    "nodes.evaluation",
    "nodes.training",
    "nodes.attend_excite",
)


@dataclass
class PackProblem:
    """A pack that could not be loaded, and why (shown by ``app.py nodes``)."""

    pack: str
    reason: str


@dataclass
class Registry:
    """Node types by name, and the services their model choices are listed from."""

    _nodes: dict[str, type[Node]] = field(default_factory=dict)
    problems: list[PackProblem] = field(default_factory=list)
    services: Services = field(default_factory=Services)

    def add(self, cls: type[Node]) -> None:
        check_definition(cls)
        if cls.type in self._nodes and self._nodes[cls.type] is not cls:
            raise ValueError(f"node type {cls.type!r} is registered twice")
        self._nodes[cls.type] = cls

    def add_all(self, classes: Iterable[type[Node]]) -> None:
        for cls in classes:
            self.add(cls)

    def add_pack(self, module_name: str) -> None:
        """Import a pack and register its ``NODES``; a broken pack is recorded, not fatal."""
        try:
            module = importlib.import_module(module_name)
            self.add_all(module.NODES)
        except Exception as exc:  # noqa: BLE001 - any failure of a pack must not stop the studio
            self.problems.append(PackProblem(module_name, f"{type(exc).__name__}: {exc}"))

    def get(self, node_type: str) -> type[Node] | None:
        return self._nodes.get(node_type)

    def __contains__(self, node_type: object) -> bool:
        return node_type in self._nodes

    def __iter__(self) -> Iterator[type[Node]]:
        return iter(sorted(self._nodes.values(), key=lambda c: (c.category, c.type)))

    def __len__(self) -> int:
        return len(self._nodes)

    def describe(self) -> list[dict[str, Any]]:
        """Every node's description, choices listed now from this registry's services, with
        the names ComfyUI users know it by as ``aliases`` (comfy_import/display_names.py)."""
        from comfy_import.display_names import comfy_aliases

        aliases = comfy_aliases()
        return [cls.describe(self.services, aliases.get(cls.type, ())) for cls in self]


def default_registry(packs: Iterable[str] = BUILTIN_PACKS, *, services: Services | None = None) -> Registry:
    """A registry of ``packs`` whose model choices come from ``services`` (``None``: the
    repository's ``models/`` folder alone)."""
    registry = Registry(services=services if services is not None else Services())
    for pack in packs:
        registry.add_pack(pack)
    return registry
