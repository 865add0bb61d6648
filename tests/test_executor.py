"""The executor: planning, the signature cache, lazy inputs, events, cancellation, failures."""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from graph.events import (
    NodeCached,
    NodeFailed,
    NodeFinished,
    NodeProgress,
    NodeStarted,
    RunFinished,
    RunStarted,
)
from graph.executor import MAX_SEED, Executor, RunResult, output_nodes, plan
from nodes import types as T
from nodes.base import CancelToken, Context, Input, Node, Output, RunSettings
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


# -- failures never escape a run ------------------------------------------------------------


class LazyBroken(Node):
    description = "Its lazy_inputs_needed raises (testing)."
    inputs = (Input("value", T.INT, default=0, lazy=True),)
    outputs = (Output("value", T.INT),)

    def lazy_inputs_needed(self, inputs: Any) -> list[str]:
        raise RuntimeError("cannot decide")

    def run(self, ctx: Context, value: int) -> dict[str, Any]:
        return {"value": value}


class LazyNotAList(LazyBroken):
    type = "LazyNotAList"
    description = "Its lazy_inputs_needed returns a number (testing)."

    def lazy_inputs_needed(self, inputs: Any) -> Any:
        return 3


class Unmakeable(Node):
    description = "Its constructor raises (testing)."
    inputs = (Input("value", T.INT, default=0),)
    outputs = (Output("value", T.INT),)

    def __init__(self) -> None:
        raise RuntimeError("no way to build me")


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("cannot even say what went wrong")


class RaisesBadStr(Node):
    description = "Raises an exception whose str() raises (testing)."
    inputs = (Input("value", T.INT, default=0),)
    outputs = (Output("value", T.INT),)

    def run(self, ctx: Context, value: int) -> dict[str, Any]:
        raise BadStr()


class Raises(Node):
    description = "Raises the exception class named (testing)."
    inputs = (Input("kind", T.STRING, default="RuntimeError"), Input("message", T.STRING, default="bad"))
    outputs = (Output("value", T.INT),)

    def run(self, ctx: Context, kind: str, message: str) -> dict[str, Any]:
        ctx.add_file("written-before-failing.png")
        raise {
            "RuntimeError": RuntimeError,
            "ValueError": ValueError,
            "OSError": OSError,
            "KeyError": KeyError,
        }[kind](message)


class WritesThenCancelled(Node):
    description = "Writes a file, then finds its run cancelled (testing)."
    inputs = ()
    outputs = (Output("value", T.INT),)

    def run(self, ctx: Context) -> dict[str, Any]:
        ctx.add_file("partial.png")
        ctx.check_cancelled()
        return {"value": 1}


class Spy(Node):
    """Records what the executor handed it: its fingerprint's inputs and the context's settings."""

    description = "Records its fingerprint inputs and settings (testing)."
    inputs = (
        Input("linked", T.INT, default=0),
        Input("constant", T.INT, default=5),
        Input("optional", T.INT, optional=True),
    )
    outputs = (Output("value", T.INT),)
    seen: ClassVar[list[Any]] = []

    def fingerprint(self, inputs: Any, settings: Any) -> str | None:
        Spy.seen.append(("fingerprint", dict(inputs), settings))
        return None

    def run(self, ctx: Context, linked: int, constant: int, optional: int | None) -> dict[str, Any]:
        Spy.seen.append(("run", {"linked": linked, "constant": constant, "optional": optional}, ctx.settings))
        return {"value": linked + constant}


@pytest.fixture
def extra(registry):
    registry.add_all([LazyBroken, LazyNotAList, Unmakeable, RaisesBadStr, Raises, WritesThenCancelled, Spy])
    return registry


def one_node(type_: str, **inputs: Any) -> dict:
    return workflow(n=node(type_, **inputs), show=node("ShowValue", value=link("n", "value")))


@pytest.mark.parametrize("type_", ["LazyBroken", "LazyNotAList"])
def test_a_failing_lazy_inputs_needed_fails_the_run_naming_the_node(extra, type_):
    events: list[Any] = []
    data = workflow(
        one=node("Int", value=1),
        n=node(type_, value=link("one", "value")),
        show=node("ShowValue", value=link("n", "value")),
    )
    result = Executor(extra).run(valid(data, extra), listener=events.append)
    assert result.status == "failed"
    assert result.error.node_id == "n" and result.error.node_type == type_
    expected = "cannot decide" if type_ == "LazyBroken" else "not iterable"
    assert expected in result.error.message and "Traceback" in result.error.details
    assert isinstance(events[-2], NodeFailed) and events[-2].node_id == "n"
    assert events[-1].status == "failed" and "'n'" in events[-1].error
    assert result.executed == []  # the lazy input was never asked for


def test_a_node_that_cannot_be_constructed_fails_the_run(extra):
    result = Executor(extra).run(valid(one_node("Unmakeable"), extra))
    assert result.status == "failed" and result.error.node_id == "n"
    assert result.error.message == "RuntimeError: no way to build me"


def test_an_exception_that_cannot_be_described_still_fails_the_run(extra):
    result = Executor(extra).run(valid(one_node("RaisesBadStr"), extra))
    assert result.status == "failed" and result.error.node_id == "n"
    assert result.error.message == "BadStr: (the error could not be described: RuntimeError)"


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("RuntimeError", "RuntimeError: bad"),
        ("KeyError", "KeyError: 'bad'"),
        ("ValueError", "bad"),  # a plain statement about the value: no class name
        ("OSError", "bad"),
    ],
)
def test_failure_messages(extra, kind, message):
    result = Executor(extra).run(valid(one_node("Raises", kind=kind), extra))
    assert result.status == "failed"
    assert result.error.message == message and result.error.input is None
    assert str(result.error) == f"node 'n' (Raises): {message}"
    assert result.files == ["written-before-failing.png"]  # what it wrote before failing is reported


def test_an_empty_message_is_replaced_by_the_exception_name(extra):
    assert Executor(extra).run(valid(one_node("Raises", message=""), extra)).error.message == (
        "RuntimeError: RuntimeError"
    )
    assert Executor(extra).run(
        valid(one_node("Raises", kind="ValueError", message=""), extra)
    ).error.message == ("ValueError")


def test_files_written_before_a_cancel_are_reported(extra):
    token = CancelToken()

    def listener(event: Any) -> None:
        if isinstance(event, NodeStarted) and event.node_id == "n":
            token.cancel()

    result = Executor(extra).run(
        valid(one_node("WritesThenCancelled"), extra), cancel=token, listener=listener
    )
    assert result.status == "cancelled" and result.files == ["partial.png"]


def test_a_cancelled_token_stops_before_the_next_node(registry, executor):
    token = CancelToken()
    token.cancel()
    events: list[Any] = []
    result = executor.run(valid(chain(2), registry), cancel=token, listener=events.append)
    assert result.status == "cancelled" and result.executed == [] and result.outputs == {}
    assert [type(e) for e in events] == [RunStarted, RunFinished]

    token = CancelToken()

    def stop_after_first(event: Any) -> None:
        if isinstance(event, NodeFinished):
            token.cancel()

    result = executor.run(valid(chain(3, start=50), registry), cancel=token, listener=stop_after_first)
    assert result.status == "cancelled" and result.executed == ["n0"]


# -- what a node is handed -------------------------------------------------------------------


def test_fingerprint_gets_constants_with_defaults_and_run_gets_everything(extra):
    Spy.seen.clear()
    settings = RunSettings(output_dir=Path("elsewhere"))
    data = workflow(
        one=node("Int", value=3),
        n=node("Spy", linked=link("one", "value")),
        show=node("ShowValue", value=link("n", "value")),
    )
    result = Executor(extra).run(valid(data, extra), settings=settings)
    assert result.outputs["show"]["text"] == "8"
    (fingerprinted,) = [s for s in Spy.seen if s[0] == "fingerprint"]
    assert fingerprinted[1] == {"constant": 5, "optional": None}  # no linked input; defaults filled
    assert fingerprinted[2] is settings
    (ran,) = [s for s in Spy.seen if s[0] == "run"]
    assert ran[1] == {"linked": 3, "constant": 5, "optional": None} and ran[2] is settings


def test_a_null_constant_takes_the_default(extra):
    Spy.seen.clear()
    from graph.workflow import Workflow

    wf = Workflow.model_validate(
        {"version": 1, "nodes": {"n": {"type": "Spy", "inputs": {"constant": None, "linked": 1}}}}
    )
    result = Executor(extra).run(wf, targets=["n"])
    assert result.status == "done", result.error
    assert result.outputs["n"]["value"] == 6


def test_settings_default_when_not_given(extra):
    Spy.seen.clear()
    Executor(extra).run(valid(one_node("Spy"), extra))
    (ran,) = [s for s in Spy.seen if s[0] == "run"]
    assert isinstance(ran[2], RunSettings) and ran[2].output_dir == Path("output")


def test_run_ids_and_seeds(registry, executor):
    wf = valid(chain(1), registry)
    events: list[Any] = []
    given = executor.run(wf, run_id="my-run", seed=0, listener=events.append)
    assert given.run_id == "my-run" and given.seed == 0
    assert {e.run_id for e in events} == {"my-run"}
    assert events[0].seed == 0 and events[0].planned == ["n0", "n1", "show"]
    made = {executor.run(wf).run_id for _ in range(3)}
    assert len(made) == 3 and all(len(r) == 12 and int(r, 16) >= 0 for r in made)
    assert MAX_SEED == 9007199254740991  # JavaScript's Number.MAX_SAFE_INTEGER
    seeds = [executor.run(wf).seed for _ in range(20)]
    assert all(0 <= s <= MAX_SEED for s in seeds) and len(set(seeds)) == 20


def test_the_plan_is_every_ancestor_in_a_stable_order(registry):
    data = workflow(
        b=node("Int", value=1),
        a=node("Int", value=2),
        m=node("IntMath", a=link("a", "value"), b=link("b", "value")),
        show=node("ShowValue", value=link("m", "value")),
        other=node("ShowValue", value=link("a", "value")),
    )
    wf = valid(data, registry)
    assert plan(wf, ["show"]) == ["a", "b", "m", "show"]
    assert plan(wf, ["other"]) == ["a", "other"]
    assert plan(wf, ["show", "other"]) == ["a", "b", "m", "other", "show"]
    assert output_nodes(wf, registry) == ["show", "other"]


def test_an_unknown_node_type_is_a_programming_error(registry, executor):
    from graph.workflow import Workflow

    wf = Workflow.model_validate({"version": 1, "nodes": {"x": {"type": "Nope", "inputs": {}}}})
    with pytest.raises(KeyError, match="validate the workflow first"):
        executor.run(wf, targets=["x"])


def test_a_linked_value_of_a_constant_type_is_checked_but_null_passes(registry, executor):
    ok = valid(
        workflow(
            size=node("Int", value=8),
            img=node("EmptyImage", width=link("size", "value"), height=8),
            show=node("PreviewImage", images=link("img", "image")),
        ),
        registry,
    )
    result = executor.run(ok)
    assert result.status == "done" and result.outputs["show"]["images"].shape[1:3] == (8, 8)


def test_a_run_result_is_a_plain_dataclass_with_empty_defaults():
    result = RunResult("r", "done", 3)
    assert (result.outputs, result.files, result.executed, result.cached, result.error) == (
        {},
        [],
        [],
        [],
        None,
    )
    assert RunResult("s", "done", 3).outputs is not result.outputs
    # the worker processes send results back with some outputs left out, through dataclasses.replace
    trimmed = dataclasses.replace(result, outputs={"n": {}})
    assert trimmed.outputs == {"n": {}} and trimmed.run_id == "r" and result.outputs == {}


class DictFingerprint(Node):
    """Fingerprints its outside state as a dict, built in whatever order (as from a scan of files)."""

    description = "Fingerprint is a dict (testing)."
    inputs = ()
    outputs = (Output("value", T.INT),)
    state: ClassVar[list[tuple[str, int]]] = []

    def fingerprint(self, inputs: Any, settings: Any) -> Any:
        return {"files": dict(DictFingerprint.state)}

    def run(self, ctx: Context) -> dict[str, Any]:
        return {"value": sum(v for _, v in DictFingerprint.state)}


def test_a_fingerprint_is_compared_by_content_not_key_order(registry, executor):
    registry.add(DictFingerprint)
    wf = valid(
        workflow(n=node("DictFingerprint"), show=node("ShowValue", value=link("n", "value"))), registry
    )
    DictFingerprint.state = [("a.png", 1), ("b.png", 2)]
    assert executor.run(wf).executed == ["n", "show"]
    DictFingerprint.state = [("b.png", 2), ("a.png", 1)]
    assert executor.run(wf).executed == []
    DictFingerprint.state = [("b.png", 5), ("a.png", 1)]
    result = executor.run(wf)
    assert result.executed == ["n", "show"] and result.outputs["show"]["text"] == "6"


def test_listener_failures_are_logged_and_no_listener_is_no_failure(registry, executor, caplog):
    with caplog.at_level(logging.ERROR, logger="graph.executor"):
        assert executor.run(valid(chain(1), registry)).status == "done"
    assert caplog.records == []

    def listener(event: Any) -> None:
        raise RuntimeError("listener bug")

    with caplog.at_level(logging.ERROR, logger="graph.executor"):
        assert executor.run(valid(chain(1, start=9), registry), listener=listener).status == "done"
    messages = [r.getMessage() for r in caplog.records]
    assert (
        "event listener failed on run_started" in messages
        and "event listener failed on run_finished" in messages
    )
    assert all(r.exc_info is not None for r in caplog.records)


def test_a_node_two_others_need_runs_once(registry, executor):
    """d needs b and c, b needs c too: c is asked for twice before it has run."""
    data = workflow(
        c=node("Int", value=4),
        b=node("IntMath", a=link("c", "value"), b=1),
        d=node("IntMath", a=link("b", "value"), b=link("c", "value"), operation="multiply"),
        show=node("ShowValue", value=link("d", "value")),
    )
    events: list[Any] = []
    result = executor.run(valid(data, registry), listener=events.append)
    assert result.outputs["show"]["text"] == "20"
    assert sorted(result.executed) == ["b", "c", "d", "show"] and result.cached == []
    assert [e.node_id for e in events if isinstance(e, NodeStarted)].count("c") == 1
    assert not any(isinstance(e, NodeCached) for e in events)


def test_a_cancel_after_the_last_node_finished_still_ends_done(registry, executor):
    token = CancelToken()

    def listener(event: Any) -> None:
        if isinstance(event, NodeFinished) and event.node_id == "show":
            token.cancel()

    result = executor.run(valid(chain(2), registry), cancel=token, listener=listener)
    assert result.status == "done" and result.outputs["show"]["text"] == "3"
