"""``DIR/manifest.jsonl``: one JSON line per finished item of a sweep, written as each finishes.

An item's line::

    {"key", "index", "values", "seed", "status", "error", "files", "outputs",
     "worker", "attempts", "started", "finished", "seconds"}

``files`` are relative to DIR. At the end of a run a last line ``{"summary": {...}}`` says what the
run did (items, done, failed, cancelled, retried, workers with their model loads, ...). A resumed
sweep appends to the same file, so a manifest may hold several summaries, and an item that failed
once and was done later has two lines; the last one counts.

Each line is written with one ``write`` call under a lock, then flushed to disk (fsync), so the
file stays valid JSON lines; only a crash in the middle of a write can leave a torn last line,
which :func:`read_manifest` ignores and :meth:`Manifest.open` (with ``resume``) cuts off first.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.jsonl"
#: The item statuses a manifest holds ("cancelled" items are not written: --resume runs them again).
DONE = "done"
FAILED = "failed"


class ManifestError(Exception):
    """A manifest that cannot be read or written; the message names the file and line."""


@dataclass
class ManifestContents:
    """What a manifest holds: item records (in file order), summaries, and whether the last line was torn."""

    records: list[dict[str, Any]] = field(default_factory=list)
    summaries: list[dict[str, Any]] = field(default_factory=list)
    #: Bytes at the end that do not form a whole line (a crash mid-write), or 0.
    torn_bytes: int = 0

    def latest(self) -> dict[str, dict[str, Any]]:
        """Each key's last record (a later run's result replaces an earlier one)."""
        found: dict[str, dict[str, Any]] = {}
        for record in self.records:
            found[record["key"]] = record
        return found

    def done_keys(self) -> set[str]:
        return {key for key, record in self.latest().items() if record.get("status") == DONE}


def read_manifest(path: Path) -> ManifestContents:
    """The records of the manifest at ``path`` (none when it does not exist).

    A torn last line is left out (and counted in ``torn_bytes``); a broken line before the last
    one means the file was edited or damaged otherwise, and raises ManifestError naming it.
    """
    contents = ManifestContents()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return contents
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    lines = data.split(b"\n")
    tail = lines.pop()  # after the last newline: empty unless the last write was torn
    if tail.strip():
        contents.torn_bytes = len(tail)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        record = _parse_line(line)
        if record is None:
            if number == len(lines) and not tail.strip():
                contents.torn_bytes = len(line) + 1  # a whole but broken last line
                continue
            raise ManifestError(
                f"{path}, line {number}: not a manifest line (the file was edited or damaged); "
                "fix or remove that line, or choose another --out"
            )
        if "summary" in record:
            contents.summaries.append(record["summary"])
        else:
            contents.records.append(record)
    return contents


def _parse_line(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    if "summary" in record:
        return record if isinstance(record["summary"], dict) else None
    return record if isinstance(record.get("key"), str) and isinstance(record.get("status"), str) else None


def done_keys(path: Path) -> set[str]:
    """The keys of the items the manifest at ``path`` has as done (for ``--resume``)."""
    return read_manifest(path).done_keys()


class Manifest:
    """Appends lines to a sweep's manifest, one whole line per write, each flushed to disk."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path) -> Manifest:
        """Open ``path`` for appending (created when missing), cutting off a torn last line first."""
        torn = read_manifest(path).torn_bytes
        if torn:
            size = path.stat().st_size
            with path.open("r+b") as handle:
                handle.truncate(size - torn)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ManifestError(f"{path}: cannot write it ({exc.strerror or exc})") from None
        return cls(path, fd)

    def write(self, record: Mapping[str, Any]) -> str:
        """Append ``record`` as one line and flush it to disk; returns the line (without newline)."""
        line = json.dumps(record, ensure_ascii=False, allow_nan=False, default=str)
        data = (line + "\n").encode("utf-8", "backslashreplace")
        with self._lock:
            view = memoryview(data)
            while view:  # one call writes it all unless the disk is full or a signal interrupts
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
        return line

    def write_summary(self, summary: Mapping[str, Any]) -> str:
        return self.write({"summary": dict(summary)})

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def item_record(
    *,
    key: str,
    index: int,
    values: Mapping[str, Any],
    seed: int | None,
    status: str,
    error: str | None,
    files: list[str],
    out_dir: Path,
    outputs: Mapping[str, Any] | None = None,
    worker: str | None = None,
    attempts: int = 0,
    started: float | None = None,
    finished: float | None = None,
    seconds: float = 0.0,
) -> dict[str, Any]:
    """An item's manifest line, its files made relative to ``out_dir``."""
    return {
        "key": key,
        "index": index,
        "values": dict(values),
        "seed": seed,
        "status": status,
        "error": error,
        "files": [relative_file(f, out_dir) for f in files],
        "outputs": dict(outputs or {}),
        "worker": worker,
        "attempts": attempts,
        "started": started,
        "finished": finished,
        "seconds": round(seconds, 4),
    }


def relative_file(file: str, out_dir: Path) -> str:
    """``file`` relative to ``out_dir`` (with forward slashes) when it lies inside, else as it is."""
    path = Path(file)
    base = out_dir.resolve()
    try:
        return (path if path.is_absolute() else path.resolve()).resolve().relative_to(base).as_posix()
    except (ValueError, OSError):
        return file
