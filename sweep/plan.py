"""The items of a sweep: every combination of the grid's values, the prompts and the seeds.

A :class:`Plan` is built once from the command line (:func:`make_plan`) and lists its items
lazily (a sweep may hold up to :data:`MAX_ITEMS`). Each :class:`Item` has a stable ``key``, a
short hash of its values and seed, so ``--resume`` finds it again even when the order of the
items changes. :meth:`Plan.build` turns an item into the workflow it runs: the base workflow
(with ``--set`` applied) plus the item's values, validated on its own so that one invalid item
fails alone.

Seeds: with ``--seeds``, an item's seed goes into every node's constant ``seed`` input (the
samplers' seeds, which decide the picture) and is also the run's seed, so an item draws what
``app.py run WORKFLOW --set NODE.seed=N --seed N`` draws. Without ``--seeds`` items keep the
workflow's own seed inputs and run with seed 0, so running the sweep again draws the same.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import product
from pathlib import Path
from typing import Any

from graph.issues import Issue
from graph.strict_json import printable_repr
from graph.validate import validate
from nodes import types as T
from nodes.registry import Registry
from sweep.affinity import models_of
from sweep.prompts import read_prompts
from sweep.targets import PlanError, Target, resolve, split_values

#: The most items one sweep may hold.
MAX_ITEMS = 1_000_000
#: Seeds stay below 2**53, as every seed of the studio does.
MAX_SEED = 2**53 - 1
#: Without --seeds, every item runs with this seed (so a rerun reproduces).
DEFAULT_RUN_SEED = 0
#: The input every sampler names its seed by.
SEED_INPUT = "seed"
#: The input output nodes name their files by; each item's files go in a folder of their own.
PREFIX_INPUT = "filename_prefix"


@dataclass(frozen=True)
class Axis:
    """One dimension of the sweep: an input (``s.cfg``) or the prompts, and the points it tries.

    Each point maps ``NODE.INPUT`` to a value (a prompts row may set several inputs at once);
    ``labels`` name the points on the contact sheet.
    """

    name: str
    points: tuple[Mapping[str, Any], ...]
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Item:
    """One run of the sweep: its values, its seed and where it sits on the axes."""

    index: int
    key: str
    values: dict[str, Any]
    #: The --seeds seed of this item; None without --seeds.
    seed: int | None
    #: The item's point on each axis, in the order of :attr:`Plan.axes`.
    coords: tuple[int, ...]

    @property
    def run_seed(self) -> int:
        """The seed the run gets (RunRequest.seed)."""
        return DEFAULT_RUN_SEED if self.seed is None else self.seed


@dataclass(frozen=True)
class BuiltItem:
    """An item made ready to run: its workflow (validated), or why it cannot run."""

    item: Item
    folder: str
    workflow_json: str | None
    models: frozenset[str]
    error: str | None


@dataclass
class Plan:
    """Every item of a sweep over one base workflow, listed lazily."""

    base: dict[str, Any]
    registry: Registry
    axes: tuple[Axis, ...]
    #: The --seeds seeds (ranges, so a long range is not listed); empty without --seeds.
    seeds: tuple[range, ...]
    #: Nodes whose constant seed input the item's seed replaces (with --seeds).
    seed_nodes: tuple[str, ...]
    #: Things worth telling the user (prompts skipped as repeats, ...).
    notes: list[str] = field(default_factory=list)

    @property
    def seeded(self) -> bool:
        return bool(self.seeds)

    def seed_list(self) -> Iterator[int]:
        for seeds in self.seeds:
            yield from seeds

    def __len__(self) -> int:
        count = math.prod(len(axis.points) for axis in self.axes)
        return count * (sum(len(r) for r in self.seeds) if self.seeds else 1)

    def items(self) -> Iterator[Item]:
        """Every item: grid values x prompts x seeds, the seeds changing fastest."""
        seeds: Sequence[int | None] = list(self.seed_list()) if self.seeds else [None]
        index = 0
        for coords in product(*(range(len(axis.points)) for axis in self.axes)):
            values: dict[str, Any] = {}
            for axis, at in zip(self.axes, coords, strict=True):
                values.update(axis.points[at])
            for seed in seeds:
                yield Item(index, item_key(values, seed, self.digest), values, seed, coords)
                index += 1

    @cached_property
    def digest(self) -> str:
        """A hash of what the base workflow computes (node types and inputs, after --set): items
        of a sweep whose workflow or --set changed get other keys, so --resume runs them again."""
        nodes = self.base.get("nodes", {})
        computes = {node_id: [entry.get("type"), entry.get("inputs", {})] for node_id, entry in nodes.items()}
        text = json.dumps(computes, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]

    def folder(self, item: Item) -> str:
        """The sub-folder of the output folder that holds the item's files."""
        width = len(str(max(len(self) - 1, 0)))
        return f"{item.index:0{width}d}-{item.key}"

    def build(self, item: Item) -> BuiltItem:
        """The item's workflow: the base with its values, seed and file folder, validated."""
        data = copy.deepcopy(self.base)
        nodes = data["nodes"]
        for name, value in item.values.items():
            node_id, _, input_name = name.rpartition(".")
            nodes[node_id].setdefault("inputs", {})[input_name] = value
        if item.seed is not None:
            for node_id in self.seed_nodes:
                nodes[node_id].setdefault("inputs", {})[SEED_INPUT] = item.seed
        folder = self.folder(item)
        self._prefix_files(nodes, folder)
        checked = validate(data, self.registry)
        if not checked.ok or checked.workflow is None:
            return BuiltItem(item, folder, None, frozenset(), describe_issues(checked.issues))
        workflow = checked.workflow
        return BuiltItem(
            item, folder, workflow.to_json(indent=None), models_of(workflow, self.registry), None
        )

    def _prefix_files(self, nodes: dict[str, Any], folder: str) -> None:
        for entry in nodes.values():
            cls = self.registry.get(str(entry.get("type")))
            spec = cls.input(PREFIX_INPUT) if cls is not None else None
            if spec is None or not spec.accepts_constant or not isinstance(entry.get("inputs"), dict):
                continue
            current = entry["inputs"].get(PREFIX_INPUT, spec.default if spec.has_default else None)
            if isinstance(current, str):
                entry["inputs"][PREFIX_INPUT] = f"{folder}/{current.strip()}"

    def base_issues(self) -> list[Issue]:
        """Problems of the base workflow that no item can escape (those on inputs the sweep does
        not set): a sweep with any of these is refused before it starts."""
        swept = {name for axis in self.axes for point in axis.points for name in point}
        if self.seeded:
            swept |= {f"{node_id}.{SEED_INPUT}" for node_id in self.seed_nodes}
        checked = validate(self.base, self.registry)
        return [
            issue
            for issue in checked.issues
            if issue.node_id is None or issue.input is None or f"{issue.node_id}.{issue.input}" not in swept
        ]


def describe_issues(issues: Sequence[Issue]) -> str:
    """The issues of an item's workflow as one line, each naming its node and input."""
    return "invalid item: " + "; ".join(str(issue) for issue in issues)


def item_key(values: Mapping[str, Any], seed: int | None, base: str = "") -> str:
    """A short stable hash of an item's values and seed, and of the base workflow's ``digest``
    (16 hex digits)."""
    text = json.dumps(
        {"base": base, "seed": seed, "values": values},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


# --- building a plan from the command line ------------------------------------------------------


def make_plan(
    base: dict[str, Any],
    registry: Registry,
    *,
    grid: Sequence[str] = (),
    seeds: str | None = None,
    prompts: Path | None = None,
    prompt_input: str | None = None,
) -> Plan:
    """The plan of a sweep over ``base`` (a parsed workflow with ``--set`` applied). Raises PlanError."""
    if not isinstance(base.get("nodes"), dict):
        raise PlanError("the workflow has no nodes to sweep over")
    axes: list[Axis] = [grid_axis(base, registry, text) for text in grid]
    notes: list[str] = []
    if prompts is not None:
        found = read_prompts(prompts, base, registry, prompt_input)
        notes.extend(found.notes)
        axes.append(prompt_axis(found.rows, found.targets))
    elif prompt_input is not None:
        raise PlanError("--prompt-input says where the prompts of --prompts go: give a --prompts FILE too")
    _no_overlap(axes)
    seed_ranges = parse_seeds(seeds) if seeds is not None else ()
    seed_nodes = seed_inputs(base, registry) if seed_ranges else ()
    if seed_ranges:
        if not seed_nodes:
            notes.append("--seeds: no node has a constant seed input; the seeds go to the run seed only")
        clash = sorted(
            {n for axis in axes for n in axis.points[0]} & {f"{s}.{SEED_INPUT}" for s in seed_nodes}
        )
        if clash:
            raise PlanError(
                f"{', '.join(clash)} is swept by --grid or --prompts and set by --seeds as well; "
                "use one of them"
            )
    plan = Plan(base, registry, tuple(axes), seed_ranges, seed_nodes, notes)
    count = len(plan)
    if count > MAX_ITEMS:
        sizes = " x ".join(str(len(a.points)) for a in axes)
        seeds_said = f" x {sum(len(r) for r in seed_ranges)} seeds" if seed_ranges else ""
        raise PlanError(
            f"the sweep has {count:,} items ({sizes or '1'}{seeds_said}); at most {MAX_ITEMS:,} are run "
            "at once: split it into several sweeps"
        )
    return plan


def grid_axis(data: dict[str, Any], registry: Registry, text: str) -> Axis:
    """The axis one ``--grid NODE.INPUT=V1,V2,...`` names, its values typed by the input."""
    said = f"--grid {printable_repr(text, 80)}"
    name, sep, raw = text.partition("=")
    if not sep:
        raise PlanError(f"{said}: write it as NODE.INPUT=V1,V2,..., e.g. --grid sampler.cfg=4,7.5")
    target = resolve(data, registry, name, said)
    try:
        written = split_values(raw)
        values = [target.typed(value) for value in written]
    except PlanError as exc:
        raise PlanError(f"{said}: {exc}") from None
    seen: list[Any] = []
    for value in values:
        if _same(value, seen):
            raise PlanError(f"{said}: {printable_repr(value)} is listed twice")
        seen.append(value)
    labels = tuple(word.strip() or _label(v) for word, v in zip(written, values, strict=True))
    return Axis(target.name, tuple({target.name: v} for v in values), labels)


def _same(value: Any, seen: list[Any]) -> bool:
    return any(type(value) is type(other) and value == other for other in seen)


def prompt_axis(rows: Sequence[Mapping[str, Any]], targets: Mapping[str, Target]) -> Axis:
    """The axis of a prompts file's rows, named by its single input or 'prompt'."""
    names = sorted({name for row in rows for name in row})
    if len(names) == 1 or (len({targets[n].node_id for n in names}) == 1 and _all_equal_rows(rows)):
        name = names[0] if len(names) == 1 else "prompt"
        labels = tuple(_label(next(iter(row.values()))) for row in rows)
    else:
        name = "prompt"
        labels = tuple(", ".join(f"{k}={_label(v)}" for k, v in row.items()) for row in rows)
    return Axis(name, tuple(dict(row) for row in rows), labels)


def _all_equal_rows(rows: Sequence[Mapping[str, Any]]) -> bool:
    """Every row sets its inputs to one same value (a prompt going to text_g and text_l)."""
    return all(len({json.dumps(v) for v in row.values()}) == 1 for row in rows)


def _label(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _no_overlap(axes: Sequence[Axis]) -> None:
    owner: dict[str, str] = {}
    for axis in axes:
        for name in {n for point in axis.points for n in point}:
            if name in owner:
                raise PlanError(
                    f"{name} is swept twice ({owner[name]} and {axis.name}); give its values once"
                )
            owner[name] = axis.name


def seed_inputs(data: dict[str, Any], registry: Registry) -> tuple[str, ...]:
    """The nodes whose ``seed`` input is a constant (or left to its default): what --seeds sets."""
    found = []
    for node_id, entry in data["nodes"].items():
        cls = registry.get(str(entry.get("type"))) if isinstance(entry, dict) else None
        spec = cls.input(SEED_INPUT) if cls is not None else None
        if spec is None or spec.type != T.INT or not spec.accepts_constant:
            continue
        value = entry.get("inputs", {}).get(SEED_INPUT) if isinstance(entry.get("inputs"), dict) else None
        if isinstance(value, dict):  # fed by a link: its source decides
            continue
        found.append(node_id)
    return tuple(found)


def parse_seeds(text: str) -> tuple[range, ...]:
    """``--seeds``: ``A-B`` (inclusive), a list ``1,5,9``, or both (``1-4,10``); 0 to 2**53-1, no repeats."""
    said = f"--seeds {printable_repr(text, 60)}"
    ranges: list[range] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise PlanError(f"{said}: an empty seed; write A-B or a list like 1,5,9")
        low, dash, high = part.partition("-")
        first, last = _seed(low, said), _seed(high, said) if dash else None
        if last is None:
            last = first
        if last < first:
            raise PlanError(f"{said}: {part} counts down; write the smaller seed first ({last}-{first})")
        ranges.append(range(first, last + 1))
    ordered = sorted(ranges, key=lambda r: r.start)
    for before, after in zip(ordered, ordered[1:], strict=False):
        if after.start < before.stop:
            raise PlanError(f"{said}: seed {after.start} is given twice")
    return tuple(ranges)


def _seed(text: str, said: str) -> int:
    text = text.strip()
    if not text.isascii() or not text.isdigit():
        raise PlanError(
            f"{said}: {printable_repr(text)} is not a seed: seeds are whole numbers from 0 to {MAX_SEED}"
        )
    if len(text.lstrip("0")) > len(str(MAX_SEED)) or int(text) > MAX_SEED:
        raise PlanError(f"{said}: {text} is too large: seeds go from 0 to {MAX_SEED}")
    return int(text)
