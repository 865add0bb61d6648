"""The executor: plan what the output nodes need, run it in dependency order, cache by signature.

A run is demand-driven: starting from the output nodes, a node whose signature is
in the cache is served from it (its inputs are never evaluated); otherwise its
inputs are evaluated first. Lazy inputs are evaluated only when the node asks
for them, so a Switch runs only the branch it picks.

A node's signature hashes its type and version, its constant inputs (defaults
filled in), the signatures of the outputs linked into it, its fingerprint (state
outside the inputs, such as a file's time), and the run's seed when the node
says its output depends on it. So a changed input re-executes that node and
what depends on it, and a random value is never served stale. A node whose
fingerprint cannot be taken is uncacheable: it and everything downstream of it run
every time, and none of their outputs go into the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
import traceback
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from graph.cache import Cache
from graph.events import (
    Event,
    NodeCached,
    NodeFailed,
    NodeFinished,
    NodeStarted,
    RunFinished,
    RunStarted,
)
from graph.modes import ModePlan, effective_workflow
from graph.workflow import Link, Workflow
from nodes import types as T
from nodes.base import Cancelled, CancelToken, Context, Node, NodeInputError, RunSettings
from nodes.registry import Registry

log = logging.getLogger(__name__)

#: Run seeds stay below 2**53 so they survive a round trip through JavaScript.
MAX_SEED = 2**53 - 1

Listener = Callable[[Event], None]


@dataclass
class RunResult:
    run_id: str
    status: str  # "done" | "failed" | "cancelled"
    seed: int
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    error: NodeFailed | None = None


class _NodeFailure(Exception):
    """Ends a run as "failed": raised with the NodeFailed event that says where and why."""

    @property
    def event(self) -> NodeFailed:
        (event,) = self.args
        return event


def output_nodes(workflow: Workflow, registry: Registry) -> list[str]:
    """The workflow's output nodes, in file order (whatever their mode)."""
    return [nid for nid, e in workflow.nodes.items() if _cls(registry, e.type).output_node]


def _cls(registry: Registry, node_type: str) -> type[Node]:
    cls = registry.get(node_type)
    if cls is None:
        raise KeyError(f"unknown node type {node_type!r}: validate the workflow first")
    return cls


def link_graph(workflow: Workflow) -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_nodes_from(workflow.nodes)
    for node_id, entry in workflow.nodes.items():
        for value in entry.inputs.values():
            if isinstance(value, Link):
                graph.add_edge(value.node, node_id)
    return graph


def plan(workflow: Workflow, targets: Iterable[str]) -> list[str]:
    """Every node the targets need, in dependency order (lazy branches included)."""
    graph = link_graph(workflow)
    needed: set[str] = set()
    for target in targets:
        needed.add(target)
        needed |= nx.ancestors(graph, target)
    return list(nx.lexicographical_topological_sort(graph.subgraph(needed)))


class Executor:
    """Runs validated workflows. One executor keeps one cache; runs may go on in parallel threads."""

    def __init__(self, registry: Registry, cache: Cache | None = None) -> None:
        self.registry = registry
        self.cache = cache if cache is not None else Cache()

    def run(
        self,
        workflow: Workflow,
        *,
        settings: RunSettings | None = None,
        seed: int | None = None,
        cancel: CancelToken | None = None,
        listener: Listener | None = None,
        targets: Iterable[str] | None = None,
        run_id: str | None = None,
    ) -> RunResult:
        """Run ``workflow`` (already validated). Never raises for a failing node.

        Nodes find the run's services (model folders, model manager) as ``ctx.services``:
        those of ``settings``, or the registry's when no settings are given.

        Bypassed and muted nodes (graph/modes.py) do not run, nor do nodes that need a muted
        one; targets among them are dropped. A bypassed node's consumers read what it hands
        on directly, so their cache signatures are those of the value passed.
        """
        runnable, modes = effective_workflow(workflow, self.registry)
        wanted = list(targets) if targets is not None else output_nodes(workflow, self.registry)
        run = _Run(
            executor=self,
            workflow=runnable,
            settings=settings or RunSettings(services=self.registry.services),
            seed=secrets.randbelow(MAX_SEED + 1) if seed is None else seed,
            cancel=cancel or CancelToken(),
            listener=listener,
            run_id=run_id or uuid.uuid4().hex[:12],
            modes=modes,
        )
        return run.execute([t for t in wanted if t in runnable.nodes])


@dataclass
class _Run:
    executor: Executor
    workflow: Workflow
    settings: RunSettings
    seed: int
    cancel: CancelToken
    listener: Listener | None
    run_id: str
    modes: ModePlan = field(default_factory=ModePlan)
    signatures: dict[str, str] = field(default_factory=dict)
    #: Nodes never looked up in nor put into the cache: a failing fingerprint, or upstream of one.
    uncacheable: set[str] = field(default_factory=set)

    def emit(self, event: Event) -> None:
        if self.listener is None:
            return
        try:
            self.listener(event)
        except Exception:  # noqa: BLE001 - a broken listener must not stop the run
            log.exception("event listener failed on %s", event.kind)

    def execute(self, targets: list[str]) -> RunResult:
        start = time.perf_counter()
        result = RunResult(self.run_id, "done", self.seed)
        order = plan(self.workflow, targets)
        self.emit(
            RunStarted(
                self.run_id,
                seed=self.seed,
                planned=order,
                bypassed=list(self.modes.bypassed),
                muted=list(self.modes.muted),
                skipped=list(self.modes.skipped),
            )
        )
        values: dict[str, dict[str, Any]] = {}
        try:
            for node_id in order:
                self.signatures[node_id] = self.signature(node_id)
            self.evaluate(targets, values, result)
        except Cancelled:
            result.status = "cancelled"
        except _NodeFailure as failure:
            result.status = "failed"
            result.error = failure.event
            self.emit(failure.event)
        result.outputs = {t: values[t] for t in targets if t in values}
        self.emit(
            RunFinished(
                self.run_id,
                status=result.status,
                seconds=time.perf_counter() - start,
                executed=len(result.executed),
                cached=len(result.cached),
                error=str(result.error) if result.error else None,
            )
        )
        return result

    # -- signatures ---------------------------------------------------------------

    def signature(self, node_id: str) -> str:
        """The node's cache key; also marks it uncacheable when its state cannot be fingerprinted."""
        entry = self.workflow.nodes[node_id]
        cls = _cls(self.executor.registry, entry.type)
        constants = self.constants(node_id)
        parts: list[Any] = [entry.type, cls.version]
        links = []
        for name, value in sorted(entry.inputs.items()):
            if isinstance(value, Link):
                links.append([name, self.signatures[value.node], value.output])
                if value.node in self.uncacheable:
                    self.uncacheable.add(node_id)
        parts += [sorted(constants.items()), links]
        try:
            node = cls()
            parts.append(node.fingerprint(constants, self.settings))
            if node.uses_run_seed(constants):
                parts.append(["seed", self.seed])
        except Exception:  # noqa: BLE001 - a failing fingerprint means: do not cache
            self.uncacheable.add(node_id)
        text = json.dumps(parts, sort_keys=True, default=repr, separators=(",", ":"))
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()

    def constants(self, node_id: str) -> dict[str, Any]:
        """Constant inputs, with defaults filled in for those not given."""
        entry = self.workflow.nodes[node_id]
        cls = _cls(self.executor.registry, entry.type)
        out: dict[str, Any] = {}
        for spec in cls.inputs:
            value = entry.inputs.get(spec.name, None)
            if isinstance(value, Link):
                continue
            if spec.name not in entry.inputs or value is None:
                value = spec.default if spec.has_default else None
            out[spec.name] = value
        return out

    # -- evaluation ---------------------------------------------------------------

    def evaluate(self, targets: list[str], values: dict[str, dict[str, Any]], result: RunResult) -> None:
        stack = list(reversed(targets))
        while stack:
            node_id = stack[-1]
            if node_id in values:  # evaluated or served from the cache (maybe pushed twice): done
                stack.pop()
                continue
            self.cancel.raise_if_cancelled()
            entry = self.workflow.nodes[node_id]
            cls = _cls(self.executor.registry, entry.type)
            cached = (
                None if node_id in self.uncacheable else self.executor.cache.get(self.signatures[node_id])
            )
            if cached is not None:
                values[node_id] = cached.outputs
                result.cached.append(node_id)
                result.files.extend(cached.files)
                self.emit(NodeCached(self.run_id, node_id, entry.type, list(cached.files)))
                continue
            strict = [spec.name for spec in cls.inputs if not spec.lazy]
            missing = self.unevaluated(entry.inputs, strict, values)
            if missing:
                stack.extend(missing)
                continue
            inputs = self.resolve(node_id, cls, strict, values)
            node = self.instantiate(node_id, cls)
            lazy = [spec.name for spec in cls.inputs if spec.lazy]
            if lazy:
                wanted = [n for n in self.lazy_needed(node_id, node, inputs) if n in lazy]
                missing = self.unevaluated(entry.inputs, wanted, values)
                if missing:
                    stack.extend(missing)
                    continue
                inputs.update(self.resolve(node_id, cls, wanted, values))
                for name in lazy:
                    inputs.setdefault(name, None)
            values[node_id] = self.call(node_id, node, inputs, result)

    @staticmethod
    def unevaluated(inputs: dict[str, Any], names: list[str], values: dict[str, Any]) -> list[str]:
        missing = []
        for name in names:
            value = inputs.get(name)
            if isinstance(value, Link) and value.node not in values and value.node not in missing:
                missing.append(value.node)
        return list(reversed(missing))

    def instantiate(self, node_id: str, cls: type[Node]) -> Node:
        try:
            return cls()
        except Exception as exc:  # noqa: BLE001 - a node that cannot be made fails this run only
            raise _NodeFailure(self.failure(node_id, cls, exc)) from None

    def lazy_needed(self, node_id: str, node: Node, inputs: dict[str, Any]) -> list[str]:
        try:
            return list(node.lazy_inputs_needed(inputs))
        except Exception as exc:  # noqa: BLE001
            raise _NodeFailure(self.failure(node_id, node, exc)) from None

    def resolve(
        self, node_id: str, cls: type[Node], names: list[str], values: dict[str, dict[str, Any]]
    ) -> dict[str, Any]:
        entry = self.workflow.nodes[node_id]
        constants = self.constants(node_id)
        specs = {spec.name: spec for spec in cls.inputs}
        resolved: dict[str, Any] = {}
        for name in names:
            spec = specs[name]
            value = entry.inputs.get(name)
            if isinstance(value, Link):
                value = values[value.node][value.output]
                if spec.type in T.CONSTANT_TYPES and value is not None:
                    problem = spec.check(value, self.settings.services)
                    if problem:
                        failed = NodeFailed(
                            self.run_id, node_id, entry.type, f"the linked value {problem}", name
                        )
                        raise _NodeFailure(failed)
            else:
                value = constants[name]
            resolved[name] = value
        return resolved

    def call(self, node_id: str, node: Node, inputs: dict[str, Any], result: RunResult) -> dict[str, Any]:
        cls = type(node)
        self.emit(NodeStarted(self.run_id, node_id, cls.type, float(cls.cancel_grace)))
        ctx = Context(
            node_id=node_id,
            node_type=cls.type,
            run_id=self.run_id,
            seed=self.seed,
            settings=self.settings,
            cancel_token=self.cancel,
            emit=self.emit,
        )
        start = time.perf_counter()
        try:
            outputs = node.run(ctx, **inputs)
        except Cancelled:
            result.files.extend(ctx.files)
            raise
        except Exception as exc:  # noqa: BLE001 - any node failure ends this run only
            result.files.extend(ctx.files)
            raise _NodeFailure(self.failure(node_id, node, exc)) from None
        result.files.extend(ctx.files)
        expected = {o.name for o in cls.outputs}
        if not isinstance(outputs, dict) or set(outputs) != expected:
            got = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
            message = f"returned {got} instead of the outputs {sorted(expected)} (a bug in the node)"
            raise _NodeFailure(NodeFailed(self.run_id, node_id, cls.type, message))
        result.executed.append(node_id)
        if node_id not in self.uncacheable:
            self.executor.cache.put(self.signatures[node_id], outputs, ctx.files)
        self.emit(NodeFinished(self.run_id, node_id, cls.type, time.perf_counter() - start, list(ctx.files)))
        return outputs

    def failure(self, node_id: str, node: Node | type[Node], exc: Exception) -> NodeFailed:
        node_type = node.type
        details = "".join(traceback.format_exception(exc))
        if isinstance(exc, NodeInputError):
            return NodeFailed(self.run_id, node_id, node_type, exc.message, exc.input_name, details)
        message = _describe(lambda: str(exc)) or type(exc).__name__
        if not isinstance(exc, ValueError | OSError):
            message = f"{type(exc).__name__}: {message}"
        return NodeFailed(self.run_id, node_id, node_type, message, None, details)


def _describe(text: Callable[[], str]) -> str:
    """``text()``, or a note when describing the exception raised too (a broken ``__str__``)."""
    try:
        return text()
    except Exception as exc:  # noqa: BLE001 - the failure must still be reported
        return f"(the error could not be described: {type(exc).__name__})"
