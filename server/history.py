"""The run history: one SQLite file (WAL mode) in the studio's state folder.

Every job is written when it is submitted and rewritten on each change of state,
so a server that stops or crashes loses nothing but the job it was running: on
the next start, jobs still marked ``queued`` or ``running`` are marked
``interrupted``, with an error text that says so.

The state folder is never served (the output folder may be: the page shows the
images saved there). By default it is ``$XDG_STATE_HOME/workflow-studio/NAME-HASH``
(``~/.local/state/...``), one per output folder, since the history names its files
relative to the output folder; see :func:`default_state_dir`. Older studios kept the
history in ``OUTPUT/.studio/history.sqlite3``: :meth:`History.in_state_folder` moves
its jobs into the state folder on first start and deletes the old file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: The history's file name in the state folder.
HISTORY_NAME = "history.sqlite3"
#: Where studios before the state folder kept the history, relative to the output folder.
LEGACY_HISTORY_FILE = Path(".studio") / HISTORY_NAME
HISTORY_FILE = LEGACY_HISTORY_FILE  # the old name, for older callers
#: The largest integer SQLite stores (and takes as LIMIT / OFFSET).
MAX_SQLITE_INT = 2**63 - 1

#: Every state a job can be in; the last four are final.
STATUSES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
FINAL_STATUSES = frozenset({"done", "failed", "cancelled", "interrupted"})

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    source TEXT NOT NULL,
    submitted REAL NOT NULL,
    started REAL,
    finished REAL,
    seed INTEGER,
    workflow TEXT NOT NULL,
    error TEXT,
    outputs TEXT NOT NULL DEFAULT '[]',
    results TEXT NOT NULL DEFAULT '{}',
    nodes_planned INTEGER NOT NULL DEFAULT 0,
    nodes_executed INTEGER NOT NULL DEFAULT 0,
    nodes_cached INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_time ON jobs (submitted, id);
"""

_INTERRUPTED_RUNNING = "the server stopped while this job was running; files it saved before are kept"
_INTERRUPTED_QUEUED = "the server stopped before this job started"


@dataclass
class JobRecord:
    """One job as the history keeps it (times are seconds since the epoch, UTC)."""

    id: str
    status: str
    source: str
    submitted: float
    workflow: str
    seed: int | None = None
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    outputs: list[str] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    nodes_planned: int = 0
    nodes_executed: int = 0
    nodes_cached: int = 0

    def to_dict(self, *, workflow: bool = True) -> dict[str, Any]:
        """JSON-ready; the workflow (parsed) only when asked for."""
        data = asdict(self)
        data.pop("workflow")
        if workflow:
            try:
                data["workflow"] = json.loads(self.workflow)
            except ValueError:
                data["workflow"] = self.workflow
        return data


_COLUMNS = tuple(JobRecord.__dataclass_fields__)
_JSON_COLUMNS = frozenset({"outputs", "results"})


def _to_row(record: JobRecord) -> tuple[Any, ...]:
    return tuple(_encode(name, getattr(record, name)) for name in _COLUMNS)


def _encode(name: str, value: Any) -> Any:
    return json.dumps(value) if name in _JSON_COLUMNS else value


def _from_row(row: sqlite3.Row) -> JobRecord:
    values = {name: row[name] for name in _COLUMNS}
    for name in _JSON_COLUMNS:
        try:
            values[name] = json.loads(values[name]) if values[name] else None
        except ValueError:
            values[name] = None
    values["outputs"] = values["outputs"] if isinstance(values["outputs"], list) else []
    values["results"] = values["results"] if isinstance(values["results"], dict) else {}
    return JobRecord(**values)


class History:
    """Jobs in a SQLite file; safe to use from several threads."""

    def __init__(self, path: Path | str, *, migrate_from: Path | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        if migrate_from is not None:
            self._migrate(migrate_from)
        #: Jobs found unfinished when the file was opened, now marked ``interrupted``.
        self.interrupted: list[str] = self._mark_interrupted()

    @classmethod
    def in_state_folder(cls, state_dir: Path | str, legacy_output_dir: Path | str | None = None) -> History:
        """The history kept in ``state_dir/history.sqlite3``.

        When ``legacy_output_dir/.studio/history.sqlite3`` (where older studios kept
        it) exists, its jobs are copied in first (jobs already there are kept), then
        the old file is deleted, so the history is no longer beside served files.
        """
        path = Path(state_dir) / HISTORY_NAME
        legacy = Path(legacy_output_dir) / LEGACY_HISTORY_FILE if legacy_output_dir is not None else None
        if legacy is not None and legacy.is_file() and legacy.resolve() != path.resolve():
            return cls(path, migrate_from=legacy)
        return cls(path)

    @classmethod
    def in_output_folder(cls, output_dir: Path | str) -> History:
        """The history in ``output_dir/.studio/history.sqlite3``, where older studios kept it.

        Kept for tests and tools that read an old output folder; the studio uses
        :meth:`in_state_folder`, which moves this file out of the output folder.
        """
        return cls(Path(output_dir) / LEGACY_HISTORY_FILE)

    def _migrate(self, legacy: Path) -> None:
        """Copy the jobs of an older history file in, then delete it (and its WAL files)."""
        try:
            self._db.execute("ATTACH DATABASE ? AS legacy", (str(legacy),))
        except sqlite3.Error as exc:
            log.warning("could not read the old history %s (%s); it is left where it is", legacy, exc)
            return
        try:
            names = ", ".join(_COLUMNS)
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.execute(f"INSERT OR IGNORE INTO jobs ({names}) SELECT {names} FROM legacy.jobs")
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            log.warning("could not move the old history %s (%s); it is left where it is", legacy, exc)
            self._db.execute("DETACH DATABASE legacy")
            return
        self._db.execute("DETACH DATABASE legacy")
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{legacy}{suffix}").unlink()
        with contextlib.suppress(OSError):
            legacy.parent.rmdir()  # only when nothing else is in it
        log.info("moved the history from %s to %s", legacy, self.path)

    def _mark_interrupted(self) -> list[str]:
        now = time.time()
        with self._lock:
            rows = self._db.execute(
                "SELECT id, status FROM jobs WHERE status IN ('queued', 'running')"
            ).fetchall()
            for row in rows:
                text = _INTERRUPTED_RUNNING if row["status"] == "running" else _INTERRUPTED_QUEUED
                self._db.execute(
                    "UPDATE jobs SET status = 'interrupted', error = ?, finished = ? WHERE id = ?",
                    (text, now, row["id"]),
                )
        return [row["id"] for row in rows]

    def add(self, record: JobRecord) -> None:
        """Record a new job (an id already there is an error)."""
        self._write("INSERT", record)

    def save(self, record: JobRecord) -> None:
        """Record a job, replacing what was kept about it."""
        self._write("INSERT OR REPLACE", record)

    def _write(self, verb: str, record: JobRecord) -> None:
        marks = ", ".join("?" for _ in _COLUMNS)
        with self._lock:
            self._db.execute(f"{verb} INTO jobs ({', '.join(_COLUMNS)}) VALUES ({marks})", _to_row(record))

    def update(self, job_id: str, **changes: Any) -> None:
        """Change some fields of one job (names as in :class:`JobRecord`)."""
        unknown = set(changes) - set(_COLUMNS) | ({"id"} & set(changes))
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}")
        if not changes:
            return
        names = list(changes)
        assignments = ", ".join(f"{name} = ?" for name in names)
        values = [_encode(name, changes[name]) for name in names]
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*values, job_id))

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _from_row(row) if row is not None else None

    def list(
        self, limit: int = 50, offset: int = 0, statuses: Iterable[str] | None = None
    ) -> list[JobRecord]:
        """The newest jobs first."""
        where, params = _status_filter(statuses)
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM jobs{where} ORDER BY submitted DESC, rowid DESC LIMIT ? OFFSET ?",
                (*params, _sqlite_int(limit), _sqlite_int(offset)),
            ).fetchall()
        return [_from_row(row) for row in rows]

    def count(self, statuses: Iterable[str] | None = None) -> int:
        where, params = _status_filter(statuses)
        with self._lock:
            (total,) = self._db.execute(f"SELECT COUNT(*) FROM jobs{where}", params).fetchone()
        return int(total)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _sqlite_int(value: int) -> int:
    """``value`` within what SQLite takes (0 to 2^63 - 1)."""
    return max(0, min(int(value), MAX_SQLITE_INT))


class StateFolderRefused(ValueError):
    """A state folder the studio will not use (one inside the output folder would be served)."""


def check_state_dir(state_dir: Path, output_dir: Path) -> None:
    """Raise :class:`StateFolderRefused` when ``state_dir`` is ``output_dir`` or inside it."""
    state, output = Path(state_dir).resolve(), Path(output_dir).resolve()
    if state == output or output in state.parents:
        raise StateFolderRefused(f"the state folder {state} must not be inside the output folder {output}")


def default_state_dir(output_dir: Path | str) -> Path:
    """Where the studio keeps its state for ``output_dir`` unless told otherwise.

    ``$XDG_STATE_HOME/workflow-studio/NAME-HASH`` (``~/.local/state/...`` when the
    variable is unset or not absolute): the XDG place for history that must survive
    restarts but is neither configuration nor output; outside the output folder, so it
    is never served with it; one folder per output folder (``NAME`` its name, ``HASH``
    from its full path), as the history names files relative to the output folder.
    """
    folder = Path(output_dir).resolve()
    base = os.environ.get("XDG_STATE_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".local" / "state"
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", folder.name)[:40] or "root"
    digest = hashlib.blake2b(str(folder).encode("utf-8", "surrogateescape"), digest_size=6).hexdigest()
    return root / "workflow-studio" / f"{name}-{digest}"


def _status_filter(statuses: Iterable[str] | None) -> tuple[str, Sequence[str]]:
    if statuses is None:
        return "", ()
    chosen = list(statuses)
    return f" WHERE status IN ({', '.join('?' for _ in chosen)})", chosen
