"""``app.py run``: run a workflow headless, with progress on the terminal or JSON events."""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from cli.info import EXIT_INVALID, EXIT_OK, load_registry, read_runnable, write_safely
from graph.events import Event, NodeCached, NodeFailed, NodeFinished, NodeProgress, NodeStarted, RunStarted
from graph.executor import MAX_SEED, Executor
from graph.issues import Issue
from graph.strict_json import has_lone_surrogate, printable, printable_repr
from graph.validate import validate
from graph.workflow import VersionError, migrate, parse_json
from nodes import types as T
from nodes.base import CancelToken, Input, Node, RunSettings
from nodes.registry import Registry

EXIT_FAILED = 1
EXIT_INTERRUPTED = 130

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


class OverrideError(Exception):
    pass


def parse_override(text: str) -> tuple[str, str, str]:
    """``NODE.INPUT=VALUE`` into its three parts (node ids may contain dots)."""
    target, sep, value = text.partition("=")
    node_id, dot, name = target.rpartition(".")
    if not sep or not dot or not node_id or not name:
        said = printable_repr(text, 80)
        raise OverrideError(f"--set {said}: write it as NODE.INPUT=VALUE, e.g. --set sampler.steps=30")
    return node_id, name, value


def convert(value: str, input_type: str) -> Any:
    """A command-line string as a value of the input's type."""
    if input_type == T.INT:
        digits = value.strip().lstrip("+-")
        if digits.isascii() and digits.isdigit() and len(digits) > 19:
            raise OverrideError(f"expects a whole number {_INT_RANGE}, got one of {len(digits)} digits")
        try:
            number = int(value)
        except ValueError:
            raise OverrideError(f"expects a whole number, got {printable_repr(value)}") from None
        if not T.int_in_range(number):
            raise OverrideError(f"expects a whole number {_INT_RANGE}, got {number}")
        return number
    if input_type == T.FLOAT:
        try:
            number = float(value)
        except ValueError:
            raise OverrideError(f"expects a number, got {printable_repr(value)}") from None
        if math.isnan(number):
            raise OverrideError(f"expects a number, got {printable_repr(value)}, which is NaN (not a number)")
        if math.isinf(number):
            raise OverrideError(
                f"{printable_repr(value)} is too large for a number (the largest is about 1.8e308)"
            )
        return number
    if input_type == T.BOOLEAN:
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise OverrideError(f"expects true or false, got {printable_repr(value)}")
    if input_type == T.STRING:
        if has_lone_surrogate(value):
            raise OverrideError(
                f"expects text, got {printable_repr(value)}, which holds bytes that are not UTF-8"
            )
        return value
    try:
        return parse_json(value)
    except ValueError:
        return value


_INT_RANGE = f"from {T.INT_MIN} to {T.INT_MAX} (64-bit)"


def constant_input(
    data: dict[str, Any], registry: Registry, node_id: str, name: str, said: str
) -> tuple[dict[str, Any], type[Node], Input]:
    """The node entry, node type and input that ``NODE.INPUT`` names in the workflow ``data``,
    for a value given on the command line (``said`` quotes what the user wrote). Raises
    OverrideError for an unknown node, type or input, or an input that only takes a link."""
    nodes = data.get("nodes")
    if not isinstance(nodes, dict) or not isinstance(nodes.get(node_id), dict):
        known = ", ".join(sorted(printable(n) for n in nodes)) if isinstance(nodes, dict) else "none"
        raise OverrideError(f"{said}: there is no node {printable_repr(node_id)} (nodes: {known})")
    entry = nodes[node_id]
    cls = registry.get(str(entry.get("type")))
    if cls is None:
        raise OverrideError(f"{said}: node {node_id!r} has unknown type {printable_repr(entry.get('type'))}")
    spec = cls.input(name)
    if spec is None:
        known = ", ".join(s.name for s in cls.inputs)
        raise OverrideError(
            f"{said}: {cls.type} node {node_id!r} has no input {printable_repr(name)} (inputs: {known})"
        )
    if not spec.accepts_constant:
        raise OverrideError(
            f"{said}: input {name!r} of node {node_id!r} ({cls.type}) takes a {spec.type} link, not a value"
        )
    return entry, cls, spec


def apply_overrides(data: dict[str, Any], overrides: list[str], registry: Registry) -> None:
    for text in overrides:
        node_id, name, raw = parse_override(text)
        said = f"--set {printable_repr(text, 80)}"
        entry, cls, spec = constant_input(data, registry, node_id, name, said)
        try:
            value = convert(raw, spec.type)
        except OverrideError as exc:
            raise OverrideError(
                f"{said}: node {printable_repr(node_id)} ({cls.type}), input {name!r} {exc}"
            ) from None
        inputs = entry.setdefault("inputs", {})
        if not isinstance(inputs, dict):
            raise OverrideError(f"{said}: node {node_id!r} has malformed inputs")
        inputs[name] = value


def run_command(args: argparse.Namespace) -> int:
    write_safely()
    if args.seed is not None and not 0 <= args.seed <= MAX_SEED:
        print(
            f"error: --seed must be a whole number from 0 to {MAX_SEED}, got {printable_repr(args.seed)}",
            file=sys.stderr,
        )
        return EXIT_INVALID
    registry = load_registry(args)
    path = Path(args.workflow)
    source = read_runnable(args.workflow, "run")
    if source is None:
        return EXIT_INVALID

    data: Any = source.text
    if args.set:
        try:
            data = parse_json(source.text)
            if isinstance(data, dict):
                data = migrate(data)
            apply_overrides(data, args.set, registry)
        except OverrideError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_INVALID
        except (ValueError, VersionError):
            data = source.text  # let validation say what is wrong with the file

    checked = validate(data, registry)
    if not checked.ok or checked.workflow is None:
        report_issues(printable(args.workflow), checked.issues, args.json)
        return EXIT_INVALID
    workflow = checked.workflow

    input_dirs = tuple(Path(d) for d in args.input_dir) or (path.parent, Path.cwd(), Path("input"))
    settings = RunSettings(
        output_dir=Path(args.out),
        input_dirs=input_dirs,
        allow_absolute_paths=True,
        workflow_json=workflow.to_json(indent=None),
        services=registry.services,
    )
    seed = args.seed if args.seed is not None else source.run_seed
    cancel = CancelToken()
    listener: Callable[[Event], None]
    display: TerminalProgress | None = None
    if args.json:
        listener = JsonLines(sys.stdout)
    else:
        display = TerminalProgress(sys.stderr)
        listener = display

    previous = signal.signal(signal.SIGINT, interrupt_handler(cancel))
    try:
        result = Executor(registry).run(
            workflow, settings=settings, seed=seed, cancel=cancel, listener=listener
        )
    finally:
        signal.signal(signal.SIGINT, previous)
        if display is not None:
            display.close()

    if not args.json:
        for file in result.files:
            print(file)
        for node_id, outputs in result.outputs.items():  # values shown by output nodes (ShowValue)
            for name, value in outputs.items():
                if isinstance(value, str | int | float) and not isinstance(value, bool):
                    print(f"{node_id}.{name}: {value}")
        if result.status == "failed" and result.error is not None:
            print(f"error: {result.error}", file=sys.stderr)
        elif result.status == "cancelled":
            print("cancelled: files saved before the interruption are kept", file=sys.stderr)
    return {"done": EXIT_OK, "failed": EXIT_FAILED, "cancelled": EXIT_INTERRUPTED}[result.status]


def report_issues(name: str, issues: list[Issue], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"event": "invalid", "issues": [i.to_dict() for i in issues]}), flush=True)
        return
    print(
        f"{name}: the workflow is not valid ({len(issues)} problem{'s' if len(issues) != 1 else ''}):",
        file=sys.stderr,
    )
    for issue in issues:
        print(f"  - {issue}", file=sys.stderr)


def interrupt_handler(
    cancel: CancelToken, saying: str = "cancelling..."
) -> Callable[[int, FrameType | None], None]:
    """A SIGINT handler: the first Ctrl-C cancels ``cancel`` (printing ``saying``), the second
    stops at once (KeyboardInterrupt)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if cancel.cancelled:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        cancel.cancel()
        print(f"\n{saying} (Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    return handler


class JsonLines:
    """Prints each event as one JSON line."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, event: Event) -> None:
        self.stream.write(json.dumps(event.to_dict(), default=str) + "\n")
        self.stream.flush()


class TerminalProgress:
    """A progress bar over the run's nodes and one over the running node's steps (on a terminal);
    plain lines otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.interactive = stream.isatty()
        self.total = 0
        self.done = 0
        self.bar: Any = None
        self.step_bar: Any = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.total = len(event.planned)
            if self.interactive:
                from tqdm import tqdm

                self.bar = tqdm(total=self.total, desc="run", unit="node", file=self.stream, leave=True)
        elif isinstance(event, NodeStarted):
            self._status(f"{event.node_type} ({event.node_id})")
        elif isinstance(event, NodeProgress):
            self._step(event)
        elif isinstance(event, NodeCached | NodeFinished):
            self.done += 1
            self._close_step()
            if self.bar is not None:
                self.bar.update(1)
            else:
                how = "cached" if isinstance(event, NodeCached) else f"done in {event.seconds:.2f}s"
                print(
                    f"[{self.done}/{self.total}] {event.node_type} ({event.node_id}) {how}",
                    file=self.stream,
                    flush=True,
                )
        elif isinstance(event, NodeFailed):
            self._close_step()

    def _status(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(text)

    def _step(self, event: NodeProgress) -> None:
        if not self.interactive:
            return
        from tqdm import tqdm

        if self.step_bar is None or self.step_bar.total != event.total:
            self._close_step()
            self.step_bar = tqdm(
                total=event.total, desc=f"  {event.node_id}", unit="step", file=self.stream, leave=False
            )
        self.step_bar.update(event.step - self.step_bar.n)

    def _close_step(self) -> None:
        if self.step_bar is not None:
            self.step_bar.close()
            self.step_bar = None

    def close(self) -> None:
        self._close_step()
        if self.bar is not None:
            self.bar.close()
            self.bar = None
