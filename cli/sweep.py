"""``app.py sweep``: run every combination of input values, prompts and seeds of one workflow.

The items (sweep/plan.py) run on N local worker processes, or on Ray actors with ``--ray``,
through the sweep scheduler (sweep/scheduler.py), which sends an item to a worker that already
holds its models. Each finished item is appended to ``OUT/manifest.jsonl`` at once
(sweep/manifest.py); its pictures go to ``OUT/<index>-<key>/``. A sweep over one or two axes
also draws ``OUT/grid.png`` (sweep/grid.py).

Ctrl-C once: no new items start, running ones are cancelled, and what is done stays in the
manifest (cancelled items are not written, so ``--resume`` runs them again). Ctrl-C twice: stop
at once. Exit codes: 0 every item done, 1 some failed, 130 interrupted, 2 bad arguments or an
invalid workflow.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from cli.info import EXIT_INVALID, EXIT_OK, load_registry, read_runnable, write_safely
from cli.run import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    OverrideError,
    apply_overrides,
    interrupt_handler,
    report_issues,
)
from cli.workers import WorkersUnavailable, engine_spec, make_workers
from graph.strict_json import printable
from graph.workflow import VersionError, migrate, parse_json
from nodes.base import CancelToken
from nodes.registry import Registry
from sweep.manifest import (
    DONE,
    FAILED,
    MANIFEST_NAME,
    Manifest,
    ManifestError,
    item_record,
    read_manifest,
)
from sweep.plan import Item, Plan, PlanError, make_plan
from sweep.scheduler import Scheduler, SweepStats, Task, TaskResult, WorkerStats


def sweep_command(args: argparse.Namespace) -> int:
    write_safely()
    if args.workers is not None and args.workers < 1:
        print(f"error: --workers must be 1 or more, got {args.workers}", file=sys.stderr)
        return EXIT_INVALID
    registry = load_registry(args)
    plan = _plan(args, registry)
    if isinstance(plan, int):
        return plan
    for note in plan.notes:
        print(f"note: {note}", file=sys.stderr)

    out_dir = Path(args.out).expanduser().resolve()
    manifest_path = out_dir / MANIFEST_NAME
    done: set[str] = set()
    try:
        contents = read_manifest(manifest_path)
        if (contents.records or contents.summaries) and not args.resume:
            print(
                f"error: {printable(str(manifest_path))} already records a sweep: pass --resume to run "
                "only the items not done yet, or choose another --out",
                file=sys.stderr,
            )
            return EXIT_INVALID
        if contents.torn_bytes:
            print(
                f"note: {printable(str(manifest_path))} ends in a line cut short (a crash while "
                "writing it); that line is removed and its item runs again",
                file=sys.stderr,
            )
        done = contents.done_keys()
        out_dir.mkdir(parents=True, exist_ok=True)
        manifest = Manifest.open(manifest_path)
    except (ManifestError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID

    with manifest:
        return _sweep(args, plan, out_dir, manifest, done)


def _plan(args: argparse.Namespace, registry: Registry) -> Plan | int:
    """The sweep's plan, or the exit code after saying what is wrong."""
    source = read_runnable(args.workflow, "sweep")
    if source is None:
        return EXIT_INVALID
    try:
        data = parse_json(source.text)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        data = migrate(data)
    except (ValueError, VersionError):
        from graph.validate import validate

        report_issues(printable(args.workflow), validate(source.text, registry).issues, args.json)
        return EXIT_INVALID
    try:
        apply_overrides(data, args.set, registry)
        plan = make_plan(
            data,
            registry,
            grid=args.grid,
            seeds=args.seeds,
            prompts=Path(args.prompts) if args.prompts else None,
            prompt_input=args.prompt_input,
        )
    except (OverrideError, PlanError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    issues = plan.base_issues()
    if issues:
        report_issues(printable(args.workflow), issues, args.json)
        return EXIT_INVALID
    return plan


@dataclass
class _Totals:
    """What this run of the sweep did: counts, and each worker's items, loads and losses."""

    workers: dict[str, WorkerStats] = field(default_factory=dict)
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    retried: int = 0
    affinity_hits: int = 0

    def summary(self, total: int, remaining: int, seconds: float) -> dict[str, Any]:
        """The manifest's summary line of a run over ``remaining`` of the plan's ``total`` items."""
        finished = self.done + self.failed
        return {
            "items": total,
            "skipped": total - remaining,
            "done": self.done,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "not_run": remaining - finished - self.cancelled,
            "retried": self.retried,
            "workers": [
                {"name": w.name, "items": w.items, "loads": w.loads, "lost": w.lost}
                for w in self.workers.values()
            ],
            "affinity_hits": self.affinity_hits,
            "seconds": round(seconds, 3),
            "items_per_s": round(finished / seconds, 4) if seconds > 0 else 0.0,
        }

    def add(self, stats: SweepStats) -> None:
        self.cancelled += stats.cancelled
        self.retried += stats.retried
        self.affinity_hits += stats.affinity_hits
        for worker in stats.workers:
            total = self.workers.setdefault(worker.name, WorkerStats(worker.name))
            total.items += worker.items
            total.loads = max(total.loads, worker.loads)
            total.lost += worker.lost


def _sweep(args: argparse.Namespace, plan: Plan, out_dir: Path, manifest: Manifest, done: set[str]) -> int:
    total = len(plan)
    remaining = total if not done else sum(1 for item in plan.items() if item.key not in done)
    if done:
        print(f"resuming: {total - remaining} of {total} items are done already; skipped", file=sys.stderr)
    started = time.time()
    cancel = CancelToken()
    writer = ItemWriter(manifest, out_dir, SweepProgress(sys.stderr, remaining), echo=args.json)
    scheduler: Scheduler | None = None
    previous = signal.signal(
        signal.SIGINT, interrupt_handler(cancel, "cancelling: no new items start, running ones stop")
    )
    try:
        if remaining:
            scheduler = _scheduler(args, plan.registry, out_dir, remaining)
            if scheduler is None:
                return EXIT_INVALID
            pending = (item for item in plan.items() if item.key not in done)
            writer.totals.add(scheduler.run(_tasks(plan, pending, writer), writer.write, cancel=cancel))
    except KeyboardInterrupt:  # the second Ctrl-C: stop at once
        writer.progress.close()
        print("stopped; the manifest keeps every item finished so far", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGINT, previous)
        writer.progress.close()
        if scheduler is not None:
            scheduler.close(timeout=1.0 if cancel.cancelled else 10.0)

    summary = writer.totals.summary(total, remaining, time.time() - started)
    line = manifest.write_summary(summary)
    if args.json:
        print(line, flush=True)
    grids = _write_grids(plan, out_dir)
    _print_summary(summary, out_dir, grids, cancel.cancelled)
    if cancel.cancelled:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if writer.totals.failed else EXIT_OK


class ItemWriter:
    """Writes each finished item to the manifest (and stdout with --json), counts it and shows it.

    Cancelled items are shown but not written: ``--resume`` runs them again.
    """

    def __init__(self, manifest: Manifest, out_dir: Path, progress: SweepProgress, *, echo: bool) -> None:
        self.manifest = manifest
        self.out_dir = out_dir
        self.progress = progress
        self.echo = echo
        self.totals = _Totals()
        #: The items handed to the scheduler and not finished yet, by key.
        self.running: dict[str, Item] = {}

    def write(self, result: TaskResult) -> None:
        """An item the scheduler ran (its ``on_result``)."""
        item = self.running.pop(result.key)
        if result.status not in (DONE, FAILED):
            self.progress.update(item, result.status, None)
            return
        self._write(
            item,
            item_record(
                key=item.key,
                index=item.index,
                values=item.values,
                seed=result.seed if result.seed is not None else item.run_seed,
                status=result.status,
                error=result.error,
                files=result.files,
                out_dir=self.out_dir,
                outputs=result.outputs,
                worker=result.worker,
                attempts=result.attempts,
                started=result.started,
                finished=result.finished,
                seconds=result.seconds,
            ),
        )

    def write_invalid(self, item: Item, error: str) -> None:
        """An item that was not run: its workflow does not validate."""
        record = item_record(
            key=item.key,
            index=item.index,
            values=item.values,
            seed=item.run_seed,
            status=FAILED,
            error=error,
            files=[],
            out_dir=self.out_dir,
        )
        self._write(item, record)

    def _write(self, item: Item, record: dict[str, Any]) -> None:
        line = self.manifest.write(record)
        if record["status"] == DONE:
            self.totals.done += 1
        else:
            self.totals.failed += 1
        if self.echo:
            print(line, flush=True)
        self.progress.update(item, record["status"], record["error"])


def _tasks(plan: Plan, items: Iterator[Item], writer: ItemWriter) -> Iterator[Task]:
    """The items' tasks, built as the scheduler takes them (so a long sweep is never held whole
    in memory); an item that does not validate is written as failed at once instead."""
    for item in items:
        built = plan.build(item)
        if built.workflow_json is None:
            writer.write_invalid(item, built.error or "invalid item")
            continue
        writer.running[item.key] = item
        yield Task(item.key, built.workflow_json, item.run_seed, built.models)


def _scheduler(args: argparse.Namespace, registry: Registry, out_dir: Path, items: int) -> Scheduler | None:
    """The scheduler over --workers local worker processes (default 1), or Ray actors with --ray
    (default: one per GPU of the cluster, else one per CPU); never more workers than ``items``."""
    input_dirs = tuple(Path(d).resolve() for d in args.input_dir) or (
        Path(args.workflow).resolve().parent,
        Path.cwd(),
        Path("input").resolve(),
    )
    spec = engine_spec(registry.services, out_dir, input_dirs, tuple(args.pack), allow_absolute_paths=True)
    try:
        workers = make_workers(spec, args.workers, args.ray, "", most=items)
    except WorkersUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    print(f"running on {workers.where}", file=sys.stderr)
    return Scheduler(workers.runners, workers.names)


def _write_grids(plan: Plan, out_dir: Path) -> list[Path]:
    """Draw the contact sheets from the whole manifest (earlier runs' items included)."""
    if not 1 <= len(plan.axes) <= 2:
        return []
    from sweep.grid import plan_sheets, write_sheets

    try:
        latest = read_manifest(out_dir / MANIFEST_NAME).latest()
        sheets = plan_sheets(plan, latest, out_dir)
        if not sheets:
            print("note: the sweep is too large for a contact sheet; none drawn", file=sys.stderr)
            return []
        return write_sheets(sheets, out_dir)
    except (ManifestError, OSError) as exc:
        print(f"warning: the contact sheet could not be drawn: {exc}", file=sys.stderr)
        return []


def _print_summary(summary: dict[str, Any], out_dir: Path, grids: list[Path], interrupted: bool) -> None:
    said = f"{summary['done']} done, {summary['failed']} failed"
    if summary["skipped"]:
        said += f", {summary['skipped']} done before"
    if interrupted:
        said += f"; interrupted: {summary['cancelled'] + summary['not_run']} not run (--resume runs them)"
    print(
        f"sweep: {said} in {summary['seconds']:.1f} s ({summary['items_per_s']:.2f} items/s)", file=sys.stderr
    )
    for worker in summary["workers"]:
        print(
            f"  {worker['name']}: {worker['items']} items, {worker['loads']} model loads"
            + (f", lost {worker['lost']} times" if worker["lost"] else ""),
            file=sys.stderr,
        )
    print(f"manifest: {printable(str(out_dir / MANIFEST_NAME))}", file=sys.stderr)
    for grid in grids:
        print(f"grid: {printable(str(grid))}", file=sys.stderr)


class SweepProgress:
    """A bar over the sweep's items with items/s and ETA on a terminal; a line per item otherwise."""

    def __init__(self, stream: TextIO, total: int) -> None:
        self.stream = stream
        self.total = total
        self.count = 0
        self.started = time.monotonic()
        self.bar: Any = None
        if stream.isatty() and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="sweep", unit="item", file=stream, dynamic_ncols=True)

    def update(self, item: Item, status: str, error: str | None) -> None:
        self.count += 1
        if self.bar is not None:
            self.bar.update(1)
            if status == FAILED and error:
                self.bar.write(f"item {item.index} ({item.key}) failed: {error}", file=self.stream)
            return
        elapsed = time.monotonic() - self.started
        rate = self.count / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.count) / rate if rate > 0 else 0.0
        values = " ".join(f"{k}={_short(v)}" for k, v in item.values.items())
        seed = f" seed={item.seed}" if item.seed is not None else ""
        reason = f": {error}" if status == FAILED and error else ""
        print(
            f"[{self.count}/{self.total}] {status} item {item.index}{(' ' + values) if values else ''}{seed}"
            f"{reason} ({rate:.2f} items/s, ETA {_clock(eta)})",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _short(value: Any, limit: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
