"""The services a run's nodes are handed: where the model files are, and the model manager that
loads them, with the settings it is made with.

A command (app.py's ``run``, ``sweep``, the studio) or a worker's engine builds one
:class:`Services` and passes it down: to the registry, whose loaders list their choices from
its paths, and to every run through ``RunSettings.services``, where nodes find it as
``ctx.services``. Nothing reads it from the environment or from a module global.

Importing this module does not import torch (listing and validating nodes stays fast): the
model manager is made, importing torch, the first time a node asks for it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from models.paths import ModelPaths

if TYPE_CHECKING:
    from models.manager import ModelManager


@dataclass(eq=False)
class Services:
    """Model folders, and the one model manager that every run given these services shares.

    ``allow_pickle``, ``attention`` and ``device`` are the settings the manager is made with
    (``device`` ``None``: CUDA when there is one, else the CPU). The manager is made once, on
    the first call of :meth:`models`, whichever thread asks first; :meth:`sharing` hands in one
    made elsewhere instead.
    """

    paths: ModelPaths = field(default_factory=ModelPaths)
    allow_pickle: bool = False
    attention: str = "auto"
    device: str | None = None
    #: Most bytes the loaded models may take on the device (None: the manager's default).
    budget_bytes: int | None = None
    _manager: ModelManager | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def sharing(cls, manager: ModelManager, paths: ModelPaths | None = None) -> Services:
        """Services around a manager made elsewhere (tests share one for the session); the
        settings are the manager's own, so the two never disagree."""
        services = cls(
            paths=paths if paths is not None else ModelPaths(),
            allow_pickle=manager.allow_pickle,
            attention=manager.attention,
            device=manager.device,
            budget_bytes=manager.budget_bytes,
        )
        services._manager = manager
        return services

    def models(self) -> ModelManager:
        """The model manager, made on the first call (thread-safe) and the same one afterwards."""
        with self._lock:
            if self._manager is None:
                from models.manager import ModelManager

                self._manager = ModelManager(
                    device=self.device,
                    budget_bytes=self.budget_bytes,
                    allow_pickle=self.allow_pickle,
                    attention=self.attention,
                )
            return self._manager

    @property
    def has_models(self) -> bool:
        """Whether the manager exists yet (asking does not make it)."""
        return self._manager is not None

    @property
    def loads(self) -> int:
        """How many models the manager has loaded so far (0 before it is made)."""
        manager = self._manager
        return int(manager.loads) if manager is not None else 0
