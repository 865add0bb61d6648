"""The executor: planning, the signature cache, lazy inputs, events, cancellation, failures."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from graph.cache import Cache
from graph.events import (
    NodeCached,
    NodeFailed,
    NodeFinished,
    NodeProgress,
    NodeStarted,
    RunFinished,
    RunStarted,
)
from graph.executor import Executor, plan
from nodes.base import CancelToken
from tests.helpers import link, node, valid, workflow


def chain(length: int, start: int = 1) -> dict:
    """Int -> IntMath(+1) x length -> ShowValue."""
    nodes = {"n0": node("Int", value=start)}
    for i in range(1, length + 1):
        nodes[f"n{i}"] = node("IntMath", a=link(f"n{i - 1}", "value"), b=1, operation="add")
    nodes["show"] = node("ShowValue", value=link(f"n{length}", "value"))
    return workflow(**nodes)


def test_runs_in_dependency_order_and_computes(registry, executor):
    wf = valid(chain(5, start=10), registry)
    result = executor.run(wf)
    assert result.status == "done"
    assert result.outputs["show"]["text"] == "15"
    assert result.executed == ["n0", "n1", "n2", "n3", "n4", "n5", "show"]


def test_runs_only_what_output_nodes_need(registry, executor):
    data = chain(2)
    data["nodes"]["orphan"] = node("IntMath", a=1, b=2)
    data["nodes"]["orphan_parent"] = node("Int", value=3)
    data["nodes"]["orphan"]["inputs"]["a"] = link("orphan_parent", "value")
    wf = valid(data, registry)
    assert "orphan" not in plan(wf, ["show"])
    result = executor.run(wf)
    assert "orphan" not in result.executed and "orphan_parent" not in result.executed


def test_unchanged_rerun_executes_nothing(registry, executor):
    wf = valid(chain(4), registry)
    first = executor.run(wf)
    second = executor.run(wf)
    assert len(first.executed) == 6
    assert second.executed == []
    assert second.cached == ["show"]  # served from the cache without evaluating its inputs
    assert second.outputs == first.outputs


def test_one_input_change_reexecutes_only_that_node_and_downstream(registry, executor):
    data = chain(6)
    executor.run(valid(data, registry))
    data["nodes"]["n3"]["inputs"]["b"] = 100
    result = executor.run(valid(data, registry))
    assert result.executed == ["n3", "n4", "n5", "n6", "show"]
    assert result.outputs["show"]["text"] == str(1 + 6 + 99)


def test_separate_executors_share_nothing(registry):
    wf = valid(chain(2), registry)
    Executor(registry).run(wf)
    assert len(Executor(registry).run(wf).executed) == 4


def test_cache_is_bounded_by_entries_lru():
    cache = Cache(max_entries=2, max_bytes=10**9)
    cache.put("a", {"v": 1}, [])
    cache.put("b", {"v": 2}, [])
    assert cache.get("a") is not None  # a is now most recent
    cache.put("c", {"v": 3}, [])
    assert cache.get("b") is None
    assert cache.get("a") is not None and cache.get("c") is not None
    assert len(cache) == 2


def test_cache_is_bounded_by_bytes_lru():
    cache = Cache(max_entries=100, max_bytes=3500)  # 3 entries of ~1 kB fit
    for key in "abcd":
        cache.put(key, {"x": np.zeros(1000, dtype=np.uint8)}, [])
    assert cache.get("a") is None
    assert all(cache.get(k) is not None for k in "bcd")
    assert cache.bytes <= 3500
    cache.put("huge", {"x": np.zeros(5000, dtype=np.uint8)}, [])
    assert cache.get("huge") is None  # larger than the whole budget: not stored
    assert cache.get("d") is not None


def test_random_seed_node_is_never_served_stale(registry, executor):
    data = workflow(
        seed=node("Seed", mode="random"),
        show=node("ShowValue", value=link("seed", "seed")),
    )
    wf = valid(data, registry)
    values = {executor.run(wf).outputs["show"]["text"] for _ in range(5)}
    assert len(values) == 5  # a new draw every run
    same_seed = {executor.run(wf, seed=42).outputs["show"]["text"] for _ in range(2)}
    assert len(same_seed) == 1  # the run seed fixes the draw


def test_fixed_seed_stays_cached_across_run_seeds(registry, executor):
    wf = valid(
        workflow(
            seed=node("Seed", mode="fixed", value=7), show=node("ShowValue", value=link("seed", "seed"))
        ),
        registry,
    )
    executor.run(wf, seed=1)
    assert executor.run(wf, seed=2).executed == []


def test_same_seed_gives_bit_identical_outputs(registry):
    data = workflow(
        seed=node("Seed", mode="random"),
        noise=node("NoiseFromSeed", seed=link("seed", "seed"), size=16),
        rand=node("RandomImage", size=16),
        a=node("PreviewImage", images=link("noise", "image")),
        b=node("PreviewImage", images=link("rand", "image")),
    )
    wf = valid(data, registry)
    one = Executor(registry).run(wf, seed=1234)
    two = Executor(registry).run(wf, seed=1234)
    other = Executor(registry).run(wf, seed=1235)
    for key in ("a", "b"):
        assert np.array_equal(one.outputs[key]["images"], two.outputs[key]["images"])
        assert not np.array_equal(one.outputs[key]["images"], other.outputs[key]["images"])


def test_switch_evaluates_only_the_chosen_branch(registry, executor):
    data = workflow(
        good=node("Int", value=5),
        bad=node("Fail", message="the other branch ran"),
        switch=node("Switch", select=True, on_true=link("good", "value"), on_false=link("bad", "value")),
        show=node("ShowValue", value=link("switch", "value")),
    )
    result = executor.run(valid(data, registry))
    assert result.status == "done", result.error
    assert result.outputs["show"]["text"] == "5"
    assert "bad" not in result.executed

    data["nodes"]["switch"]["inputs"]["select"] = False
    result = executor.run(valid(data, registry))
    assert result.status == "failed"
    assert result.error is not None and result.error.node_id == "bad"


def test_switch_select_from_a_link(registry, executor):
    data = workflow(
        flag=node("Boolean", value=False),
        t=node("Int", value=1),
        f=node("Int", value=2),
        switch=node(
            "Switch", select=link("flag", "value"), on_true=link("t", "value"), on_false=link("f", "value")
        ),
        show=node("ShowValue", value=link("switch", "value")),
    )
    result = executor.run(valid(data, registry))
    assert result.outputs["show"]["text"] == "2"
    assert "t" not in result.executed


def test_events_are_typed_and_in_order(registry, executor):
    data = workflow(
        slow=node("Sleep", value=3, steps=3, seconds_per_step=0.0),
        show=node("ShowValue", value=link("slow", "value")),
    )
    events = []
    executor.run(valid(data, registry), listener=events.append)
    kinds = [type(e) for e in events]
    assert kinds == [
        RunStarted,
        NodeStarted,
        NodeProgress,
        NodeProgress,
        NodeProgress,
        NodeFinished,
        NodeStarted,
        NodeFinished,
        RunFinished,
    ]
    steps = [(e.step, e.total) for e in events if isinstance(e, NodeProgress)]
    assert steps == [(1, 3), (2, 3), (3, 3)]
    assert events[-1].status == "done" and events[-1].executed == 2
    cached_events = []
    executor.run(valid(data, registry), listener=cached_events.append)
    assert [type(e) for e in cached_events] == [RunStarted, NodeCached, RunFinished]
    assert all(e.to_dict()["event"] for e in events)


def test_failing_node_names_node_and_cause_and_executor_goes_on(registry, executor):
    data = workflow(
        one=node("Int", value=1),
        fail=node("Fail", value=link("one", "value"), message="out of paint"),
        show=node("ShowValue", value=link("fail", "value")),
    )
    events = []
    result = executor.run(valid(data, registry), listener=events.append)
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.node_id == "fail" and result.error.node_type == "Fail"
    assert "out of paint" in str(result.error)
    assert any(isinstance(e, NodeFailed) for e in events)
    assert executor.run(valid(chain(2), registry)).status == "done"


def test_input_error_names_the_input(registry, executor):
    data = workflow(
        a=node("IntMath", a=1, b=0, operation="divide"), show=node("ShowValue", value=link("a", "value"))
    )
    result = executor.run(valid(data, registry))
    assert result.status == "failed"
    assert result.error.input == "b"
    assert "zero" in result.error.message


def test_linked_value_out_of_range_fails_with_the_input_named(registry, executor):
    data = workflow(
        size=node("Int", value=0),
        img=node("EmptyImage", width=link("size", "value"), height=8),
        show=node("PreviewImage", images=link("img", "image")),
    )
    result = executor.run(valid(data, registry))
    assert result.status == "failed"
    assert result.error.node_id == "img" and result.error.input == "width"
    assert "minimum" in result.error.message


def test_buggy_node_outputs_are_reported(registry, executor):
    data = workflow(bad=node("BadOutputs"), show=node("ShowValue", value=link("bad", "value")))
    result = executor.run(valid(data, registry))
    assert result.status == "failed" and "bug in the node" in result.error.message


def test_cancel_mid_node_stops_the_run(registry, executor):
    data = workflow(
        slow=node("Sleep", steps=1000, seconds_per_step=0.005),
        show=node("ShowValue", value=link("slow", "value")),
    )
    token = CancelToken()

    def listener(event):
        if isinstance(event, NodeProgress) and event.step == 3:
            token.cancel()

    events = []
    result = executor.run(
        valid(data, registry), cancel=token, listener=lambda e: (events.append(e), listener(e))
    )
    assert result.status == "cancelled"
    assert max(e.step for e in events if isinstance(e, NodeProgress)) == 3
    assert events[-1].status == "cancelled"


def test_cancelling_one_run_leaves_another_running(registry, executor):
    data = workflow(
        slow=node("Sleep", value=9, steps=40, seconds_per_step=0.005),
        show=node("ShowValue", value=link("slow", "value")),
    )
    wf_a = valid(data, registry)
    data["nodes"]["slow"]["inputs"]["value"] = 10  # a different signature, no cache sharing
    wf_b = valid(data, registry)
    token_a, token_b = CancelToken(), CancelToken()
    results = {}
    started = threading.Event()

    def run(name, wf, token):
        def listener(event):
            if isinstance(event, NodeProgress):
                started.set()

        results[name] = executor.run(wf, cancel=token, listener=listener)

    threads = [
        threading.Thread(target=run, args=("a", wf_a, token_a)),
        threading.Thread(target=run, args=("b", wf_b, token_b)),
    ]
    for t in threads:
        t.start()
    assert started.wait(5)
    token_a.cancel()
    for t in threads:
        t.join(10)
    assert results["a"].status == "cancelled"
    assert results["b"].status == "done"
    assert results["b"].outputs["show"]["text"] == "10"


def test_broken_listener_does_not_stop_the_run(registry, executor):
    def listener(event):
        raise RuntimeError("listener bug")

    assert executor.run(valid(chain(2), registry), listener=listener).status == "done"


@pytest.mark.parametrize("targets", [["n1"], ["n2", "n1"]])
def test_explicit_targets(registry, executor, targets):
    result = executor.run(valid(chain(3), registry), targets=targets)
    assert set(result.outputs) == set(targets)
    assert "n3" not in result.executed
