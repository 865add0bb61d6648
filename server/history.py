"""The run history: one SQLite file (WAL mode) under the output folder.

Every job is written when it is submitted and rewritten on each change of state,
so a server that stops or crashes loses nothing but the job it was running: on
the next start, jobs still marked ``queued`` or ``running`` are marked
``interrupted``, with an error text that says so.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: Where the history lives, relative to the output folder.
HISTORY_FILE = Path(".studio") / "history.sqlite3"

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

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        #: Jobs found unfinished when the file was opened, now marked ``interrupted``.
        self.interrupted: list[str] = self._mark_interrupted()

    @classmethod
    def in_output_folder(cls, output_dir: Path | str) -> History:
        """The history kept in ``output_dir/.studio/history.sqlite3``."""
        return cls(Path(output_dir) / HISTORY_FILE)

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
                (*params, int(limit), int(offset)),
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


def _status_filter(statuses: Iterable[str] | None) -> tuple[str, Sequence[str]]:
    if statuses is None:
        return "", ()
    chosen = list(statuses)
    return f" WHERE status IN ({', '.join('?' for _ in chosen)})", chosen
