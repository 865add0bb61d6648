"""Executor overhead: per-node cost on a 200-node chain and a 50-node fan-out of cheap
nodes, a fully cached re-run, and a one-input change.

    .venv/bin/python bench/executor.py [--repeats 20]

Prints one JSON line per figure. The baseline, timed in the same run, calls the same
nodes' ``run`` directly in a loop (no planning, signatures, cache or events), so
``overhead_ms_per_node`` is what the executor adds per node. Goals (issue 2):
overhead under 0.5 ms per node, a cached re-run under 20 ms, and a one-input change
that re-executes only the affected nodes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from graph.executor import Executor  # noqa: E402
from graph.validate import validate  # noqa: E402
from graph.workflow import Link, Workflow  # noqa: E402
from nodes.base import CancelToken, Context, RunSettings  # noqa: E402
from nodes.registry import Registry, default_registry  # noqa: E402


def chain(length: int) -> dict[str, Any]:
    nodes: dict[str, Any] = {"n0": {"type": "Int", "inputs": {"value": 1}}}
    for i in range(1, length):
        nodes[f"n{i}"] = {
            "type": "IntMath",
            "inputs": {"a": {"node": f"n{i - 1}", "output": "value"}, "b": 1},
        }
    nodes["show"] = {"type": "ShowValue", "inputs": {"value": {"node": f"n{length - 1}", "output": "value"}}}
    return {"version": 1, "nodes": nodes}


def fan_out(width: int) -> dict[str, Any]:
    nodes: dict[str, Any] = {"src": {"type": "Int", "inputs": {"value": 1}}}
    for i in range(width):
        nodes[f"f{i}"] = {"type": "IntMath", "inputs": {"a": {"node": "src", "output": "value"}, "b": i}}
        nodes[f"show{i}"] = {"type": "ShowValue", "inputs": {"value": {"node": f"f{i}", "output": "value"}}}
    return {"version": 1, "nodes": nodes}


def direct(workflow: Workflow, registry: Registry, order: list[str]) -> None:
    """The baseline: each node's run called in order, inputs looked up by hand."""
    values: dict[str, dict[str, Any]] = {}
    token = CancelToken()
    settings = RunSettings()
    for node_id in order:
        entry = workflow.nodes[node_id]
        cls = registry.get(entry.type)
        assert cls is not None
        inputs = {}
        for spec in cls.inputs:
            value = entry.inputs.get(spec.name, spec.default)
            inputs[spec.name] = values[value.node][value.output] if isinstance(value, Link) else value
        ctx = Context(node_id, entry.type, "bench", 0, settings, token, lambda e: None)
        values[node_id] = cls().run(ctx, **inputs)


def median_seconds(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def emit(**figure: Any) -> None:
    print(json.dumps(figure), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    registry = default_registry()

    for name, data in (("chain_200", chain(200)), ("fan_out_50", fan_out(50))):
        checked = validate(data, registry)
        assert checked.ok and checked.workflow is not None, checked.issues
        workflow = checked.workflow
        count = len(workflow.nodes)
        order = list(workflow.nodes)
        if name == "chain_200":
            order = [f"n{i}" for i in range(200)] + ["show"]
        direct(workflow, registry, order)
        baseline = median_seconds(lambda: direct(workflow, registry, order), args.repeats)  # noqa: B023
        cold = median_seconds(lambda: Executor(registry).run(workflow, seed=0), args.repeats)  # noqa: B023
        emit(
            bench="executor",
            case=name,
            figure="uncached_run",
            nodes=count,
            ms=round(cold * 1e3, 3),
            baseline_ms=round(baseline * 1e3, 3),
            overhead_ms_per_node=round((cold - baseline) / count * 1e3, 4),
            ms_per_node=round(cold / count * 1e3, 4),
            ratio_to_baseline=round(cold / baseline, 2),
            goal_overhead_ms_per_node=0.5,
        )
        executor = Executor(registry)
        executor.run(workflow, seed=0)
        cached = median_seconds(lambda: executor.run(workflow, seed=0), args.repeats)  # noqa: B023
        rerun = executor.run(workflow, seed=0)
        emit(
            bench="executor",
            case=name,
            figure="cached_rerun",
            nodes=count,
            ms=round(cached * 1e3, 3),
            executed=len(rerun.executed),
            goal_ms=20,
        )

    data = chain(200)
    executor = Executor(registry)
    executor.run(validate(data, registry).workflow, seed=0)
    data["nodes"]["n150"]["inputs"]["b"] = 5
    changed = executor.run(validate(data, registry).workflow, seed=0)
    emit(
        bench="executor",
        case="chain_200",
        figure="one_input_change",
        changed_node="n150",
        executed=len(changed.executed),
        expected=200 - 150 + 1,
        cached=len(changed.cached),
    )


if __name__ == "__main__":
    main()
