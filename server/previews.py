"""The latest preview pictures of each node of recent jobs, as PNG bytes for the page.

A sampler's live preview (a rough look at its latents after each step) and the images
a PreviewImage node shows arrive as ``NodePreview`` events carrying pixels; the job
queue encodes them as PNGs in the job's own thread (:func:`encode_pngs`) and keeps the
latest of each node here, before the ``node_preview`` event is sent, so a page that
hears of a preview finds it at ``GET /api/jobs/{id}/preview``. The store is bounded:
the previews of the :data:`MAX_JOBS` most recent jobs and :data:`MAX_BYTES` in all (the
oldest jobs go first; within one job, the nodes previewed longest ago).
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from typing import Any

#: Most bytes of PNGs kept in all.
MAX_BYTES = 32 * 2**20
#: Most jobs whose previews are kept.
MAX_JOBS = 50


def encode_pngs(image: Any) -> list[bytes]:
    """Each picture of an IMAGE batch (floats in [0, 1], (batch,) height, width, channels) or of a
    mask batch as PNG bytes (fast compression: these are looked at once)."""
    import numpy as np
    from PIL import Image

    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] not in (1, 3, 4)):
        array = array[..., None]  # a mask, or a batch of masks
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4) or 0 in array.shape:
        return []
    pixels = (np.clip(np.nan_to_num(array), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    out = []
    for picture in pixels:
        buffer = io.BytesIO()
        frame = picture[..., 0] if picture.shape[-1] == 1 else picture
        Image.fromarray(frame).save(buffer, format="PNG", compress_level=1)
        out.append(buffer.getvalue())
    return out


class PreviewStore:
    """``job id -> node id -> [PNG bytes]``, the newest jobs and nodes last; thread-safe."""

    def __init__(self, max_bytes: int = MAX_BYTES, max_jobs: int = MAX_JOBS) -> None:
        self.max_bytes = max_bytes
        self.max_jobs = max_jobs
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, OrderedDict[str, list[bytes]]] = OrderedDict()
        self._bytes = 0

    @property
    def size(self) -> int:
        """Bytes kept now."""
        with self._lock:
            return self._bytes

    def put(self, job_id: str, node_id: str, pngs: list[bytes]) -> None:
        """Keep ``pngs`` as the latest preview of ``node_id`` in ``job_id`` (replacing the last one)."""
        if not pngs:
            return
        with self._lock:
            nodes = self._jobs.setdefault(job_id, OrderedDict())
            self._jobs.move_to_end(job_id)
            self._bytes -= _total(nodes.pop(node_id, []))
            nodes[node_id] = list(pngs)
            self._bytes += _total(pngs)
            self._shrink(job_id, node_id)

    def _shrink(self, job_id: str, node_id: str) -> None:
        """Drop the oldest jobs, then this job's older nodes, then the new batch's last pictures
        (never its first), until the store is within bounds."""
        while len(self._jobs) > self.max_jobs or (self._bytes > self.max_bytes and len(self._jobs) > 1):
            _, nodes = self._jobs.popitem(last=False)
            self._bytes -= sum(_total(pngs) for pngs in nodes.values())
        nodes = self._jobs[job_id]
        while self._bytes > self.max_bytes and len(nodes) > 1:
            _, pngs = nodes.popitem(last=False)
            self._bytes -= _total(pngs)
        pngs = nodes[node_id]
        while self._bytes > self.max_bytes and len(pngs) > 1:
            self._bytes -= len(pngs.pop())

    def get(self, job_id: str, node_id: str | None = None) -> tuple[str, list[bytes]] | None:
        """(node id, its PNGs) for ``node_id``, or for the node previewed last when None."""
        with self._lock:
            nodes = self._jobs.get(job_id)
            if not nodes:
                return None
            if node_id is None:
                node_id = next(reversed(nodes))
            pngs = nodes.get(node_id)
            return (node_id, list(pngs)) if pngs else None

    def has(self, job_id: str, node_id: str) -> bool:
        with self._lock:
            return node_id in self._jobs.get(job_id, {})

    def forget(self, job_id: str) -> None:
        with self._lock:
            nodes = self._jobs.pop(job_id, None) or {}
            self._bytes -= sum(_total(pngs) for pngs in nodes.values())


def _total(pngs: list[bytes]) -> int:
    return sum(len(png) for png in pngs)
