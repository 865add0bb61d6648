"""The signature cache: sizes, bounds by entries and bytes, LRU order, and how the executor uses it."""

from __future__ import annotations

import sys
import threading
from typing import Any

import numpy as np
import pytest

from graph.cache import Cache, CacheEntry, size_of
from graph.events import NodeCached, NodeFinished, RunFinished
from graph.executor import Executor
from nodes import types as T
from nodes.base import Context, Input, Node, Output
from tests.helpers import link, node, valid, workflow

KB = np.zeros(1000, dtype=np.uint8)  # 1000 bytes
ENTRY = 1000 + 64  # {"x": KB}: the array plus a dict's overhead


def outputs(nbytes: int = 1000, fill: int = 0) -> dict[str, Any]:
    return {"x": np.full(nbytes, fill, dtype=np.uint8)}


def held(cache: Cache, keys: Any) -> dict[str, int]:
    """What each key holds (the fill of its array), for the keys still cached."""
    found = {k: cache.get(k) for k in keys}
    return {k: int(e.outputs["x"][0]) for k, e in found.items() if e is not None}


# -- sizes ------------------------------------------------------------------------------


def test_size_of_counts_arrays_exactly_and_containers_with_overhead():
    assert size_of(KB) == 1000
    assert size_of(np.zeros((2, 3), dtype=np.float32)) == 24
    assert size_of("héllo") == 5 and size_of(b"abc") == 3 and size_of(bytearray(7)) == 7
    assert size_of({"a": KB, "b": KB}) == 2000 + 64
    assert size_of([KB, KB, KB]) == 3000 + 64
    assert size_of((KB,)) == 1000 + 64
    assert size_of({}) == 64 and size_of([]) == 64
    assert size_of(12345) == sys.getsizeof(12345)  # anything else: what Python says


def test_size_of_asks_a_value_that_knows_its_size():
    class Model:
        def cache_size(self) -> float:
            return 4096.7

    class NotCallable:
        cache_size = 10

    assert size_of(Model()) == 4096
    assert size_of(NotCallable()) == sys.getsizeof(NotCallable())
    assert size_of({"m": Model()}) == 4096 + 64


def test_size_of_looks_four_containers_deep_then_stops():
    nested: Any = KB
    for _ in range(4):
        nested = [nested]
    assert size_of(nested) == 1000 + 4 * 64  # the array at depth 4 is still counted
    deeper = [nested]  # the list holding the array is now at depth 4: Python's size for it
    assert size_of(deeper) == 4 * 64 + sys.getsizeof([KB])
    in_dicts: Any = KB
    for _ in range(4):
        in_dicts = {"k": in_dicts}
    assert size_of(in_dicts) == 1000 + 4 * 64
    assert size_of({"k": in_dicts}) == 4 * 64 + sys.getsizeof({"k": KB})
    mixed = {"a": [KB, {"b": (KB,)}]}
    assert size_of(mixed) == 2000 + 4 * 64
    loop: list[Any] = []
    loop.append(loop)
    assert size_of(loop) > 0  # a container holding itself ends


# -- get / put -----------------------------------------------------------------------------


def test_put_then_get_gives_the_same_outputs_and_files():
    cache = Cache()
    value = outputs()
    cache.put("sig", value, ["a.png", "b.png"])
    entry = cache.get("sig")
    assert isinstance(entry, CacheEntry)
    assert entry.outputs is value
    assert entry.files == ("a.png", "b.png")
    assert entry.size == ENTRY
    assert cache.get("other") is None
    assert len(cache) == 1 and cache.bytes == ENTRY
    with pytest.raises(AttributeError):
        entry.size = 0  # type: ignore[misc]  # an entry is frozen: its size stays what was counted


def test_default_bounds():
    cache = Cache()
    assert cache.max_entries == 512 and cache.max_bytes == 2 * 1024**3
    assert len(cache) == 0 and cache.bytes == 0


def test_bounded_by_entries_evicts_the_least_recently_used():
    cache = Cache(max_entries=3, max_bytes=10**9)
    for key in "abc":
        cache.put(key, {"v": key}, [])
    assert cache.get("a").outputs == {"v": "a"}  # a is now the most recent; b the least
    cache.put("d", {"v": "d"}, [])
    assert cache.get("b") is None
    assert {k: cache.get(k).outputs for k in "acd"} == {"a": {"v": "a"}, "c": {"v": "c"}, "d": {"v": "d"}}
    assert len(cache) == 3
    cache.put("e", {"v": "e"}, [])  # the gets above read a first: it is now the oldest
    assert cache.get("a") is None and cache.get("e").outputs == {"v": "e"}


def test_exactly_max_entries_fit():
    cache = Cache(max_entries=2, max_bytes=10**9)
    cache.put("a", {"v": 1}, [])
    cache.put("b", {"v": 2}, [])
    assert cache.get("a").outputs == {"v": 1} and cache.get("b").outputs == {"v": 2}
    one = Cache(max_entries=1, max_bytes=10**9)
    one.put("a", {"v": 1}, [])
    one.put("b", {"v": 2}, [])
    assert one.get("a") is None and one.get("b").outputs == {"v": 2} and len(one) == 1


def test_no_entries_allowed_stores_nothing():
    cache = Cache(max_entries=0)
    cache.put("a", {"v": 1}, [])
    assert cache.get("a") is None and len(cache) == 0 and cache.bytes == 0


def test_bounded_by_bytes_evicts_the_oldest_and_counts_exactly():
    cache = Cache(max_entries=100, max_bytes=3 * ENTRY)  # exactly three fit
    for fill, key in enumerate("abc", 1):
        cache.put(key, outputs(fill=fill), [])
    assert len(cache) == 3 and cache.bytes == 3 * ENTRY  # at the limit: nothing evicted
    cache.put("d", outputs(fill=4), [])
    assert held(cache, "abcd") == {"b": 2, "c": 3, "d": 4}
    assert cache.bytes == 3 * ENTRY and len(cache) == 3
    cache.put("big", outputs(2000, fill=9), [])  # needs room for 2064 bytes: two more go
    assert held(cache, "bcd") == {"d": 4} and cache.get("big").outputs["x"].size == 2000
    assert cache.bytes == ENTRY + 2064


def test_a_value_of_exactly_max_bytes_is_kept_and_one_byte_more_is_not():
    cache = Cache(max_entries=10, max_bytes=ENTRY)
    cache.put("fits", outputs(fill=7), [])
    assert held(cache, ["fits"]) == {"fits": 7} and cache.bytes == ENTRY
    cache.put("huge", outputs(1001), [])
    assert cache.get("huge") is None
    assert held(cache, ["fits"]) == {"fits": 7} and cache.bytes == ENTRY  # the too-big one evicted nothing


def test_putting_a_key_again_replaces_it_without_counting_twice():
    cache = Cache(max_entries=10, max_bytes=10**6)
    cache.put("a", outputs(), [])
    cache.put("a", outputs(), ["again.png"])
    assert len(cache) == 1 and cache.bytes == ENTRY
    assert cache.get("a").files == ("again.png",)
    cache.put("a", outputs(500), [])
    assert cache.bytes == 564 and cache.get("a").size == 564


def test_putting_a_key_again_makes_it_the_most_recent():
    cache = Cache(max_entries=2, max_bytes=10**6)
    cache.put("a", {"v": 1}, [])
    cache.put("b", {"v": 2}, [])
    cache.put("a", {"v": 3}, [])
    cache.put("c", {"v": 4}, [])
    assert cache.get("b") is None and cache.get("a").outputs == {"v": 3}


def test_a_key_put_again_too_big_loses_its_old_value():
    cache = Cache(max_entries=10, max_bytes=2 * ENTRY)
    cache.put("a", outputs(), [])
    cache.put("a", outputs(5000), [])
    assert cache.get("a") is None  # never the earlier value under a key put again
    assert len(cache) == 0 and cache.bytes == 0


def test_clear_empties_and_resets_the_byte_count():
    cache = Cache(max_entries=10, max_bytes=10**6)
    for key in "ab":
        cache.put(key, outputs(), [])
    cache.clear()
    assert len(cache) == 0 and cache.bytes == 0 and cache.get("a") is None
    cache.put("c", outputs(), [])
    assert cache.bytes == ENTRY


def test_threads_putting_at_once_keep_the_count_right():
    cache = Cache(max_entries=50, max_bytes=10**9)

    def fill(prefix: str) -> None:
        for i in range(200):
            cache.put(f"{prefix}{i % 80}", outputs(10 + i % 7), [])
            cache.get(f"{prefix}{(i * 7) % 80}")

    threads = [threading.Thread(target=fill, args=(p,)) for p in "abcd"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 50
    entries = [cache.get(f"{p}{i}") for p in "abcd" for i in range(80)]
    kept = [e for e in entries if e is not None]
    assert len(kept) == 50 and cache.bytes == sum(e.size for e in kept)


# -- the executor and the cache --------------------------------------------------------------


class FileWriter(Node):
    """Records a file (as SaveImage does) and passes its value on."""

    description = "Writes a file (testing)."
    inputs = (Input("value", T.INT, default=0),)
    outputs = (Output("value", T.INT),)

    def run(self, ctx: Context, value: int) -> dict[str, Any]:
        ctx.add_file(f"out/{value}.txt")
        return {"value": value}


class Unfingerprintable(Node):
    """Its outside state cannot be read (a file gone missing): never cached."""

    description = "Fingerprint raises (testing)."
    inputs = (Input("value", T.INT, default=0),)
    outputs = (Output("value", T.INT),)
    runs = 0

    def fingerprint(self, inputs: Any, settings: Any) -> str | None:
        raise OSError("the file went away")

    def run(self, ctx: Context, value: int) -> dict[str, Any]:
        type(self).runs += 1
        return {"value": value + type(self).runs}


class OutsideState(Node):
    """Reads state outside its inputs; the fingerprint says which."""

    description = "Fingerprinted by a class attribute (testing)."
    inputs = (Input("value", T.INT, default=0),)
    outputs = (Output("value", T.INT),)
    state = "one"

    def fingerprint(self, inputs: Any, settings: Any) -> str | None:
        return type(self).state

    def run(self, ctx: Context, value: int) -> dict[str, Any]:
        return {"value": value + len(type(self).state)}


class TwoOutputs(Node):
    description = "A value and its double (testing)."
    inputs = (Input("value", T.INT, default=0),)
    outputs = (Output("same", T.INT), Output("double", T.INT))

    def run(self, ctx: Context, value: int) -> dict[str, Any]:
        return {"same": value, "double": 2 * value}


def make_version(version: int) -> type[Node]:
    class Versioned(Node):
        type = "Versioned"
        description = "A node at some version (testing)."
        inputs = (Input("value", T.INT, default=0),)
        outputs = (Output("value", T.INT),)

        def run(self, ctx: Context, value: int) -> dict[str, Any]:
            return {"value": value * 10 + version}

    Versioned.version = version
    return Versioned


@pytest.fixture
def reg(registry):
    registry.add_all([FileWriter, Unfingerprintable, OutsideState, TwoOutputs])
    return registry


def test_cached_rerun_counts_and_events(reg):
    executor = Executor(reg)
    data = workflow(
        a=node("Int", value=2),
        w=node("FileWriter", value=link("a", "value")),
        show=node("ShowValue", value=link("w", "value")),
    )
    wf = valid(data, reg)
    first = executor.run(wf)
    assert first.executed == ["a", "w", "show"] and first.cached == []
    assert first.files == ["out/2.txt"]
    assert len(executor.cache) == 3
    events: list[Any] = []
    second = executor.run(wf, listener=events.append)
    assert second.executed == [] and second.cached == ["show"]
    assert second.outputs == {"show": first.outputs["show"]}
    finished = events[-1]
    assert isinstance(finished, RunFinished) and (finished.executed, finished.cached) == (0, 1)
    assert [e.node_id for e in events if isinstance(e, NodeCached)] == ["show"]
    # the file a cached node wrote is reported again, by the node that wrote it
    events.clear()
    only_writer = executor.run(wf, targets=["w"], listener=events.append)
    assert only_writer.cached == ["w"] and only_writer.files == ["out/2.txt"]
    (cached_event,) = [e for e in events if isinstance(e, NodeCached)]
    assert cached_event.files == ["out/2.txt"] and cached_event.node_type == "FileWriter"
    assert events[-1].cached == 1 and events[-1].executed == 0


def test_a_changed_input_reruns_below_it_and_serves_the_rest_from_the_cache(reg):
    executor = Executor(reg)
    data = workflow(
        a=node("Int", value=1),
        b=node("Int", value=10),
        sum=node("IntMath", a=link("a", "value"), b=link("b", "value")),
        show=node("ShowValue", value=link("sum", "value")),
    )
    executor.run(valid(data, reg))
    data["nodes"]["a"]["inputs"]["value"] = 5
    events: list[Any] = []
    result = executor.run(valid(data, reg), listener=events.append)
    assert result.executed == ["a", "sum", "show"] and result.cached == ["b"]
    assert result.outputs["show"]["text"] == "15"
    assert events[-1].executed == 3 and events[-1].cached == 1
    assert [type(e) for e in events].count(NodeFinished) == 3


def test_a_node_whose_fingerprint_fails_is_never_served_from_the_cache(reg):
    Unfingerprintable.runs = 0
    executor = Executor(reg)
    data = workflow(
        a=node("Int", value=1),
        u=node("Unfingerprintable", value=link("a", "value")),
        down=node("IntMath", a=link("u", "value"), b=100),
        show=node("ShowValue", value=link("down", "value")),
    )
    wf = valid(data, reg)
    texts = []
    for _ in range(3):
        result = executor.run(wf)
        assert result.status == "done", result.error
        texts.append(result.outputs["show"]["text"])
    assert texts == ["102", "103", "104"]  # a fresh run each time, downstream too
    assert result.executed == ["u", "down", "show"] and result.cached == ["a"]
    assert Unfingerprintable.runs == 3
    assert len(executor.cache) == 1  # only "a": nothing uncacheable was stored


def test_a_changed_fingerprint_reruns_the_node(reg):
    OutsideState.state = "one"
    executor = Executor(reg)
    wf = valid(
        workflow(o=node("OutsideState", value=1), show=node("ShowValue", value=link("o", "value"))), reg
    )
    assert executor.run(wf).outputs["show"]["text"] == "4"
    assert executor.run(wf).executed == []
    OutsideState.state = "three"
    result = executor.run(wf)
    assert result.executed == ["o", "show"] and result.outputs["show"]["text"] == "6"


def test_a_new_node_version_is_not_served_the_old_output(registry):
    cache = Cache()
    registry.add(make_version(1))
    wf = valid(
        workflow(v=node("Versioned", value=4), show=node("ShowValue", value=link("v", "value"))), registry
    )
    assert Executor(registry, cache).run(wf).outputs["show"]["text"] == "41"
    from nodes.registry import default_registry

    newer = default_registry()
    newer.add(make_version(2))
    result = Executor(newer, cache).run(wf)
    assert result.executed == ["v", "show"] and result.outputs["show"]["text"] == "42"


def test_an_input_left_out_and_its_default_written_share_a_signature(registry, executor):
    implicit = valid(
        workflow(m=node("IntMath", a=3), show=node("ShowValue", value=link("m", "value"))), registry
    )
    assert executor.run(implicit).outputs["show"]["text"] == "3"
    explicit = valid(
        workflow(
            m=node("IntMath", a=3, b=0, operation="add"), show=node("ShowValue", value=link("m", "value"))
        ),
        registry,
    )
    assert executor.run(explicit).executed == []


def test_which_output_is_linked_is_part_of_the_signature(reg):
    executor = Executor(reg)

    def wf(output: str):
        return valid(
            workflow(t=node("TwoOutputs", value=3), show=node("ShowValue", value=link("t", output))),
            reg,
        )

    first = executor.run(wf("same"))
    second = executor.run(wf("double"))
    assert first.outputs["show"]["text"] == "3" and second.outputs["show"]["text"] == "6"
    assert second.executed == ["show"] and second.cached == ["t"]


def test_executors_can_share_one_cache(registry):
    cache = Cache()
    wf = valid(workflow(a=node("Int", value=1), show=node("ShowValue", value=link("a", "value"))), registry)
    Executor(registry, cache).run(wf)
    result = Executor(registry, cache).run(wf)
    assert result.executed == [] and result.cached == ["show"]
    assert Executor(registry, Cache(max_entries=0)).run(wf).executed == ["a", "show"]


def test_an_empty_cache_given_is_used_not_replaced(registry):
    cache = Cache()
    executor = Executor(registry, cache)
    assert executor.cache is cache  # an empty Cache is falsy by len(); it must still be the one used
    executor.run(
        valid(workflow(a=node("Int", value=1), show=node("ShowValue", value=link("a", "value"))), registry)
    )
    assert len(cache) == 2
