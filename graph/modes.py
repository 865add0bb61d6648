"""Node modes: what bypassed and muted nodes mean for a run.

A node's ``mode`` (graph/workflow.py) is absent for an active node, ``"bypass"`` or ``"mute"``:

- a **bypassed** node does not run; each of its outputs hands on the first *given* input of
  the output's socket type, in the node type's declared input order (a link, or a constant
  typed on the node), as ComfyUI does. An output with no such input to hand on is a *gap*:
  an issue when a node that runs uses it;
- a **muted** node does not run, nor does any node with a required input that comes from
  it (through links and bypassed nodes, transitively): those are *skipped*. An optional
  input (or one with a default) that comes from a muted or skipped node is treated as not
  given.

:func:`analyse` works on parsed node entries, before or after validation: links to nodes or
outputs that do not exist and loops are tolerated here (validation reports them).
:func:`effective_workflow` is what the executor runs: the nodes that run, with every link
through a bypassed node rewritten to what it hands on, so cache signatures see the value
passed and not the bypassed node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from graph.workflow import Link, NodeEntry, Workflow
from nodes.base import Node
from nodes.registry import Registry

BYPASS = "bypass"
MUTE = "mute"


@dataclass(frozen=True)
class Passed:
    """A constant handed on by a bypassed node (typed on it, so known before the run)."""

    value: Any


@dataclass(frozen=True)
class Gap:
    """A bypassed node's output with no input of its type to hand on."""

    node: str
    output: str
    type: str


#: What a link resolves to through bypassed nodes: a link to a node that is not bypassed,
#: a constant, or a gap.
Resolved = Link | Passed | Gap


@dataclass(frozen=True)
class NeedsGap:
    """An input of a node that runs whose value would come through a gap."""

    node: str
    input: str
    gap: Gap


@dataclass
class ModePlan:
    """The outcome of :func:`analyse`: which nodes do not run, and why."""

    #: Nodes whose mode is "bypass", in file order.
    bypassed: list[str] = field(default_factory=list)
    #: Nodes whose mode is "mute", in file order.
    muted: list[str] = field(default_factory=list)
    #: Active nodes that do not run because a required input comes from a muted node.
    skipped: list[str] = field(default_factory=list)
    #: Inputs of running nodes fed through a bypassed output with nothing to hand on.
    gaps: list[NeedsGap] = field(default_factory=list)

    @property
    def not_running(self) -> set[str]:
        """Every node that does not run: bypassed, muted and skipped."""
        return {*self.bypassed, *self.muted, *self.skipped}


def analyse(entries: Mapping[str, NodeEntry], registry: Registry) -> ModePlan:
    """Which nodes of ``entries`` do not run, and the gaps running nodes would meet.

    Entries of unknown types are treated as active and left alone (validation reports them).
    """
    return _Analysis(entries, registry).plan()


def resolve(link: Link, entries: Mapping[str, NodeEntry], registry: Registry) -> Resolved:
    """What ``link`` carries once the bypassed nodes on its way hand their inputs on."""
    return _Analysis(entries, registry).resolve(link)


def effective_workflow(workflow: Workflow, registry: Registry) -> tuple[Workflow, ModePlan]:
    """The workflow the executor runs: only the nodes that run, links through bypassed nodes
    rewritten to what those hand on, and inputs that come from muted nodes left out."""
    analysis = _Analysis(workflow.nodes, registry)
    modes = analysis.plan()
    if not modes.bypassed and not modes.muted:
        return workflow, modes
    gone = modes.not_running
    nodes: dict[str, NodeEntry] = {}
    for node_id, entry in workflow.nodes.items():
        if node_id in gone:
            continue
        inputs: dict[str, Any] = {}
        for name, value in entry.inputs.items():
            if not isinstance(value, Link):
                inputs[name] = value
                continue
            found = analysis.resolve(value)
            if isinstance(found, Passed):
                inputs[name] = found.value
            elif isinstance(found, Link) and found.node not in gone:
                inputs[name] = found
            # else: from a muted node (an optional input: not given) or a gap (refused by validation)
        nodes[node_id] = entry.model_copy(update={"inputs": inputs})
    return workflow.model_copy(update={"nodes": nodes}), modes


class _Analysis:
    """One pass over a workflow's entries; results are memoised per node."""

    def __init__(self, entries: Mapping[str, NodeEntry], registry: Registry) -> None:
        self.entries = entries
        self.registry = registry
        self._dead: dict[str, bool] = {}

    def cls(self, node_id: str) -> type[Node] | None:
        entry = self.entries.get(node_id)
        return None if entry is None else self.registry.get(entry.type)

    def plan(self) -> ModePlan:
        modes = ModePlan()
        for node_id, entry in self.entries.items():
            if entry.mode == BYPASS:
                modes.bypassed.append(node_id)
            elif entry.mode == MUTE:
                modes.muted.append(node_id)
            elif self.dead(node_id):
                modes.skipped.append(node_id)
            else:
                modes.gaps.extend(self.gaps_of(node_id))
        return modes

    def gaps_of(self, node_id: str) -> list[NeedsGap]:
        found = []
        for name, value in self.entries[node_id].inputs.items():
            if isinstance(value, Link):
                resolved = self.resolve(value)
                if isinstance(resolved, Gap):
                    found.append(NeedsGap(node_id, name, resolved))
        return found

    def resolve(self, link: Link) -> Resolved:
        seen: set[str] = set()
        while True:
            entry = self.entries.get(link.node)
            if entry is None or entry.mode != BYPASS or link.node in seen:
                return link  # not bypassed (or missing, or a loop: validation reports those)
            seen.add(link.node)
            handed = self.handed_on(link.node, link.output)
            if handed is None:
                return link  # an output the node does not have: validation reports it
            if not isinstance(handed, Link):
                return handed
            link = handed

    def handed_on(self, node_id: str, output_name: str) -> Resolved | None:
        """What a bypassed node's output hands on: its first given input of the output's type."""
        cls = self.cls(node_id)
        output = cls.output(output_name) if cls is not None else None
        if cls is None or output is None:
            return None
        inputs = self.entries[node_id].inputs
        for spec in cls.inputs:
            if spec.type != output.type:
                continue
            value = inputs.get(spec.name)
            if isinstance(value, Link):
                return value
            if value is not None:
                return Passed(value)
        return Gap(node_id, output_name, output.type)

    def dead(self, node_id: str) -> bool:
        """Whether a node does not run for want of a muted node (muted nodes themselves included)."""
        if node_id in self._dead:
            return self._dead[node_id]
        self._dead[node_id] = False  # a loop stops here (validation reports it)
        entry = self.entries.get(node_id)
        dead = entry is not None and entry.mode == MUTE
        cls = self.cls(node_id)
        if entry is not None and not dead and cls is not None:
            for spec in cls.inputs:
                value = entry.inputs.get(spec.name)
                if spec.required and isinstance(value, Link) and self.from_muted(value):
                    dead = True
                    break
        self._dead[node_id] = dead
        return dead

    def from_muted(self, link: Link) -> bool:
        """Whether ``link`` carries the output of a muted node, or of one skipped for want of one."""
        resolved = self.resolve(link)
        return isinstance(resolved, Link) and resolved.node in self.entries and self.dead(resolved.node)
