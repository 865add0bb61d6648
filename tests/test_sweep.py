"""Sweeps, piece by piece: the plan of items, prompt files, the manifest, the contact sheet, and
the ``sweep`` command over in-process workers (tests/test_sweep_cli.py runs it end to end)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import app
import cli.sweep
from graph.executor import Executor
from graph.workflow import parse_json
from nodes.base import RunSettings
from nodes.registry import Registry, default_registry
from server.worker import ThreadRunner
from sweep.grid import MIN_CELL, Sheet, draw_sheet, plan_sheets, write_sheets
from sweep.manifest import Manifest, done_keys, item_record, read_manifest
from sweep.plan import MAX_ITEMS, Plan, make_plan, parse_seeds
from sweep.prompts import positive_prompt_inputs
from sweep.scheduler import Scheduler
from sweep.targets import PlanError, split_values
from tests.conftest import TEST_PACK
from tests.helpers import link, node, workflow

REPO = Path(__file__).resolve().parent.parent
TXT2IMG = REPO / "workflows" / "txt2img.json"


@pytest.fixture(scope="module")
def reg() -> Registry:
    registry = default_registry()
    registry.add_pack(TEST_PACK)
    return registry


@pytest.fixture(scope="module")
def txt2img() -> dict[str, Any]:
    return parse_json(TXT2IMG.read_text())


def noise_workflow() -> dict[str, Any]:
    """Noise drawn from a seed input, saved: its pictures are known without running anything."""
    return workflow(
        n=node("NoiseFromSeed", seed=5, size=4),
        save=node("SaveImage", images=link("n", "image"), filename_prefix="noise"),
    )


def expected_noise(seed: int, size: int) -> np.ndarray:
    pixels = np.random.default_rng(seed).random((size, size, 3), dtype=np.float32)
    return (np.clip(pixels, 0, 1) * 255 + 0.5).astype(np.uint8)


# --- values on the command line -------------------------------------------------------------------


def test_grid_values_split_on_commas_with_quotes_and_escapes() -> None:
    assert split_values("3, 5 ,7.5") == ["3", "5", "7.5"]
    assert split_values('"a, b", c') == ["a, b", "c"]
    assert split_values("'it, is' ,x") == ["it, is", "x"]
    assert split_values(r"a\, b,c") == ["a, b", "c"]
    assert split_values("it's,ok") == ["it's", "ok"]
    assert split_values('"",x') == ["", "x"]


@pytest.mark.parametrize("text", ["a,,b", "a,", '"open, x', '"a"b'])
def test_grid_values_that_cannot_be_split_are_refused(text: str) -> None:
    with pytest.raises(PlanError):
        split_values(text)


def test_seeds_are_ranges_or_lists_within_bounds() -> None:
    assert [s for r in parse_seeds("1-3") for s in r] == [1, 2, 3]
    assert [s for r in parse_seeds("1,5,9") for s in r] == [1, 5, 9]
    assert [s for r in parse_seeds("0-1, 7") for s in r] == [0, 1, 7]
    assert list(parse_seeds(f"{2**53 - 1}")[0]) == [2**53 - 1]
    for bad, said in [
        ("3-1", "counts down"),
        ("1-3,2", "given twice"),
        (str(2**53), "too large"),
        ("-1", "not a seed"),
        ("x", "not a seed"),
        ("1,,2", "empty"),
    ]:
        with pytest.raises(PlanError, match=said):
            parse_seeds(bad)


# --- the plan -------------------------------------------------------------------------------------


def test_every_combination_is_an_item_with_the_seeds_changing_fastest(reg: Registry, txt2img: dict) -> None:
    plan = make_plan(txt2img, reg, grid=["s.cfg=3,7.5", "s.steps=2,4,6"], seeds="10-11")
    items = list(plan.items())
    assert len(plan) == len(items) == 2 * 3 * 2
    assert [i.index for i in items] == list(range(12))
    assert items[0].values == {"s.cfg": 3.0, "s.steps": 2} and items[0].seed == 10
    assert items[1].values == {"s.cfg": 3.0, "s.steps": 2} and items[1].seed == 11
    assert items[2].values == {"s.cfg": 3.0, "s.steps": 4}
    assert {(i.values["s.cfg"], i.values["s.steps"], i.seed) for i in items} == {
        (c, s, seed) for c in (3.0, 7.5) for s in (2, 4, 6) for seed in (10, 11)
    }
    assert all(isinstance(i.values["s.cfg"], float) and isinstance(i.values["s.steps"], int) for i in items)
    assert len({i.key for i in items}) == 12


def test_keys_depend_on_values_and_seed_not_on_order(reg: Registry, txt2img: dict) -> None:
    one = make_plan(txt2img, reg, grid=["s.cfg=3,7.5", "s.steps=2,4"], seeds="1-2")
    other = make_plan(txt2img, reg, grid=["s.steps=4,2", "s.cfg=7.5, 3"], seeds="2,1")
    keyed = {i.key: (tuple(sorted(i.values.items())), i.seed) for i in one.items()}
    assert keyed == {i.key: (tuple(sorted(i.values.items())), i.seed) for i in other.items()}
    assert [i.key for i in one.items()] != [i.key for i in other.items()]  # same items, other order
    assert all(len(key) == 16 and int(key, 16) >= 0 for key in keyed)


def test_keys_change_with_what_the_workflow_computes_not_with_its_layout(
    reg: Registry, txt2img: dict
) -> None:
    keys = {i.key for i in make_plan(txt2img, reg, grid=["s.cfg=3,7.5"]).items()}
    moved = json.loads(json.dumps(txt2img))
    moved["nodes"]["s"]["position"] = [999, 999]  # dragged on the canvas: the same items
    assert {i.key for i in make_plan(moved, reg, grid=["s.cfg=3,7.5"]).items()} == keys
    changed = json.loads(json.dumps(txt2img))
    changed["nodes"]["s"]["inputs"]["steps"] = 3  # as --set s.steps=3 would: other items
    assert not {i.key for i in make_plan(changed, reg, grid=["s.cfg=3,7.5"]).items()} & keys


def test_an_item_is_the_base_workflow_with_its_values_seed_and_own_folder(
    reg: Registry, txt2img: dict
) -> None:
    base = json.loads(json.dumps(txt2img))
    base["nodes"]["s"]["inputs"]["steps"] = 3  # as --set s.steps=3 would
    plan = make_plan(base, reg, grid=["s.cfg=3,7.5"], seeds="7-8")
    item = list(plan.items())[3]
    built = plan.build(item)
    assert built.error is None and built.workflow_json is not None
    nodes = json.loads(built.workflow_json)["nodes"]
    assert nodes["s"]["inputs"]["cfg"] == 7.5 and nodes["s"]["inputs"]["seed"] == 8 == item.run_seed
    assert nodes["s"]["inputs"]["steps"] == 3
    assert nodes["save"]["inputs"]["filename_prefix"] == f"3-{item.key}/txt2img" == f"{built.folder}/txt2img"
    assert nodes["pos"]["inputs"]["text"] == txt2img["nodes"]["pos"]["inputs"]["text"]
    assert built.models == frozenset({"ckpt_name=toy-sd"})
    assert base == json.loads(json.dumps(base))  # the base itself is left as it was
    assert base["nodes"]["s"]["inputs"]["seed"] == 42


def test_without_seeds_items_keep_the_workflows_seeds_and_run_with_seed_0(
    reg: Registry, txt2img: dict
) -> None:
    plan = make_plan(txt2img, reg, grid=["s.cfg=3,4"])
    items = list(plan.items())
    assert [i.seed for i in items] == [None, None] and [i.run_seed for i in items] == [0, 0]
    assert json.loads(plan.build(items[0]).workflow_json or "")["nodes"]["s"]["inputs"]["seed"] == 42


def test_an_invalid_item_fails_alone_naming_node_and_input(reg: Registry, txt2img: dict) -> None:
    plan = make_plan(txt2img, reg, grid=["s.steps=0,2"])
    bad, good = (plan.build(i) for i in plan.items())
    assert bad.workflow_json is None and bad.error is not None
    assert "'s'" in bad.error and "'steps'" in bad.error
    assert good.error is None and good.workflow_json is not None
    assert plan.base_issues() == []  # nothing wrong that every item shares


def test_a_base_problem_outside_the_sweep_is_reported_before_it_starts(reg: Registry, txt2img: dict) -> None:
    base = json.loads(json.dumps(txt2img))
    base["nodes"]["lat"]["inputs"]["width"] = -5
    issues = make_plan(base, reg, grid=["s.cfg=3,4"]).base_issues()
    assert [(i.node_id, i.input) for i in issues] == [("lat", "width")]
    base["nodes"]["s"]["inputs"]["cfg"] = -1.0  # swept: each item sets it
    assert [(i.node_id, i.input) for i in make_plan(base, reg, grid=["s.cfg=3"]).base_issues()] == [
        ("lat", "width")
    ]


@pytest.mark.parametrize(
    ("grid", "said"),
    [
        (["x.cfg=1,2"], "there is no node 'x' (nodes: ck, d, lat, neg, pos, s, save)"),
        (["s.cfgg=1,2"], "Sampler node 's' has no input 'cfgg' (inputs: model, positive"),
        (["s.model=a,b"], "takes a MODEL link, not a value"),
        (["s.cfg=1,x"], "s.cfg expects a number, got 'x'"),
        (["s.steps=1.5"], "s.steps expects a whole number"),
        (["s.cfg=1,1.0"], "1.0 is listed twice"),
        (["s.cfg"], "write it as NODE.INPUT=V1,V2"),
        (["s.cfg=1", "s.cfg=2"], "s.cfg is swept twice"),
    ],
)
def test_grid_errors_name_what_was_given(reg: Registry, txt2img: dict, grid: list[str], said: str) -> None:
    with pytest.raises(PlanError) as caught:
        make_plan(txt2img, reg, grid=grid)
    assert said in str(caught.value)


def test_a_grid_over_a_linked_input_says_where_its_value_comes_from(reg: Registry) -> None:
    data = workflow(
        p=node("Sleep", value=4), n=node("NoiseFromSeed", seed=link("p", "value")), out=node("PreviewImage")
    )
    with pytest.raises(PlanError, match="fed by a link from p.value"):
        make_plan(data, reg, grid=["n.seed=1,2"])


def test_seeds_and_a_grid_over_the_same_seed_input_are_refused(reg: Registry, txt2img: dict) -> None:
    with pytest.raises(PlanError, match="s.seed is swept by --grid or --prompts and set by --seeds"):
        make_plan(txt2img, reg, grid=["s.seed=1,2"], seeds="1-2")


def test_a_sweep_of_more_than_a_million_items_is_refused(reg: Registry, txt2img: dict) -> None:
    with pytest.raises(PlanError, match="1,000,002 items .*at most 1,000,000"):
        make_plan(txt2img, reg, grid=["s.cfg=3,4"], seeds="0-500000")
    assert len(make_plan(txt2img, reg, grid=["s.cfg=3,4"], seeds="1-500000")) == MAX_ITEMS


# --- prompts files --------------------------------------------------------------------------------


def test_the_positive_prompt_is_found_through_the_samplers_link(reg: Registry, txt2img: dict) -> None:
    assert [t.name for t in positive_prompt_inputs(txt2img, reg)] == ["pos.text"]


def test_a_text_file_gives_one_prompt_per_line_to_the_positive_prompt(
    reg: Registry, txt2img: dict, tmp_path: Path
) -> None:
    path = tmp_path / "prompts.txt"
    path.write_text("# shapes\na red circle\n\n  a blue square  \n# done\na red circle\n")
    plan = make_plan(txt2img, reg, prompts=path, seeds="1-2")
    assert [i.values for i in plan.items()] == [{"pos.text": "a red circle"}] * 2 + [
        {"pos.text": "a blue square"}
    ] * 2
    assert plan.axes[0].name == "pos.text" and plan.axes[0].labels == ("a red circle", "a blue square")
    assert plan.notes == [f"{path}: line 6 repeats line 2; skipped"]
    other = make_plan(txt2img, reg, prompts=path, prompt_input="neg.text")
    assert [i.values for i in other.items()] == [{"neg.text": "a red circle"}, {"neg.text": "a blue square"}]


def test_a_text_file_needs_a_prompt_to_go_to(reg: Registry, tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_text("a cat\n")
    with pytest.raises(PlanError, match="no sampler's 'positive' input .* --prompt-input NODE.INPUT"):
        make_plan(noise_workflow(), reg, prompts=path)
    with pytest.raises(PlanError, match="takes INT, not text"):
        make_plan(noise_workflow(), reg, prompts=path, prompt_input="n.seed")


def test_a_csv_file_sets_its_columns_typed_by_their_inputs(
    reg: Registry, txt2img: dict, tmp_path: Path
) -> None:
    path = tmp_path / "prompts.csv"
    path.write_text('pos.text,s.cfg\n"a cat, sitting",4\na dog,7.5\n\n')
    plan = make_plan(txt2img, reg, prompts=path, grid=["s.steps=2,3"])
    assert [i.values for i in plan.items()] == [
        {"s.steps": s, "pos.text": p, "s.cfg": c}
        for s in (2, 3)
        for p, c in (("a cat, sitting", 4.0), ("a dog", 7.5))
    ]
    assert plan.axes[1].name == "prompt"
    assert plan.axes[1].labels == ("pos.text=a cat, sitting, s.cfg=4.0", "pos.text=a dog, s.cfg=7.5")
    path.write_text("pos.text,s.cfg\na cat\n")
    with pytest.raises(PlanError, match="line 2: 1 values for 2 columns"):
        make_plan(txt2img, reg, prompts=path)


def test_a_jsonl_file_maps_inputs_to_values(reg: Registry, txt2img: dict, tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"pos.text": "a cat", "s.cfg": 4}\n\n{"pos.text": "a dog", "s.cfg": "7.5"}\n')
    plan = make_plan(txt2img, reg, prompts=path)
    assert [i.values for i in plan.items()] == [
        {"pos.text": "a cat", "s.cfg": 4.0},
        {"pos.text": "a dog", "s.cfg": 7.5},
    ]
    path.write_text('{"pos.text": "a cat"}\n[1]\n')
    with pytest.raises(PlanError, match="line 2: write an object"):
        make_plan(txt2img, reg, prompts=path)
    path.write_text('{"pos.txt": "a cat"}\n')
    with pytest.raises(PlanError, match="has no input 'txt'"):
        make_plan(txt2img, reg, prompts=path)


def test_prompts_files_of_other_kinds_or_empty_are_refused(
    reg: Registry, txt2img: dict, tmp_path: Path
) -> None:
    (tmp_path / "p.md").write_text("a cat\n")
    with pytest.raises(PlanError, match=r"use a \.txt"):
        make_plan(txt2img, reg, prompts=tmp_path / "p.md")
    (tmp_path / "p.txt").write_text("# nothing\n\n")
    with pytest.raises(PlanError, match="holds no prompts"):
        make_plan(txt2img, reg, prompts=tmp_path / "p.txt")


# --- the manifest ---------------------------------------------------------------------------------


def _record(key: str, status: str = "done", index: int = 0) -> dict[str, Any]:
    return {"key": key, "index": index, "status": status, "values": {}, "files": []}


def test_manifest_lines_are_whole_json_even_from_many_threads(tmp_path: Path) -> None:
    path = tmp_path / "manifest.jsonl"
    with Manifest.open(path) as manifest:

        def write(worker: int) -> None:
            for n in range(50):
                manifest.write(_record(f"{worker}-{n}", index=n) | {"error": "x" * 5000})

        threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        manifest.write_summary({"done": 200})
    lines = path.read_text().splitlines()
    assert len(lines) == 201 and all(isinstance(json.loads(line), dict) for line in lines)
    contents = read_manifest(path)
    assert len(contents.records) == 200 and contents.summaries == [{"done": 200}]


def test_a_torn_last_line_is_ignored_and_cut_off_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "manifest.jsonl"
    whole = json.dumps(_record("a")) + "\n" + json.dumps({"summary": {"done": 1}}) + "\n"
    path.write_text(whole + '{"key": "b", "status": "do')
    contents = read_manifest(path)
    assert [r["key"] for r in contents.records] == ["a"] and contents.torn_bytes > 0
    assert done_keys(path) == {"a"}
    with Manifest.open(path) as manifest:
        manifest.write(_record("b"))
    assert path.read_text() == whole + json.dumps(_record("b"), ensure_ascii=False) + "\n"


def test_a_broken_line_before_the_last_is_an_error_naming_it(tmp_path: Path) -> None:
    from sweep.manifest import ManifestError

    path = tmp_path / "manifest.jsonl"
    path.write_text(json.dumps(_record("a")) + "\nnot json\n" + json.dumps(_record("b")) + "\n")
    with pytest.raises(ManifestError, match="line 2"):
        read_manifest(path)


def test_done_keys_are_those_whose_last_record_is_done(tmp_path: Path) -> None:
    path = tmp_path / "manifest.jsonl"
    lines = [_record("a", "failed"), _record("a"), _record("b"), _record("c", "failed"), {"summary": {}}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert done_keys(path) == {"a", "b"}
    assert done_keys(tmp_path / "missing.jsonl") == set()


def test_item_records_name_files_relative_to_the_output_folder(tmp_path: Path) -> None:
    record = item_record(
        key="k",
        index=3,
        values={"s.cfg": 4.0},
        seed=1,
        status="done",
        error=None,
        files=[str(tmp_path / "3-k" / "img_00001.png")],
        out_dir=tmp_path,
        worker="worker-0",
        attempts=1,
        started=1.0,
        finished=2.5,
        seconds=1.5,
    )
    assert record["files"] == ["3-k/img_00001.png"]
    assert set(record) == {
        "key", "index", "values", "seed", "status", "error", "files", "outputs",
        "worker", "attempts", "started", "finished", "seconds",
    }  # fmt: skip


# --- the contact sheet ----------------------------------------------------------------------------


def _picture(path: Path, color: tuple[int, int, int], size: int = 32) -> Path:
    pixels = np.zeros((size, size, 3), dtype=np.uint8)
    pixels[:] = color
    pixels[0, 0] = (255, 255, 255)  # a marker pixel: scaled by nearest, it becomes a block
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def _has_ink(image: Image.Image, box: tuple[int, int, int, int]) -> bool:
    pixels = np.asarray(image.crop(box).convert("L"))
    return bool((pixels < 100).any())


def test_a_sheet_has_a_labelled_cell_per_combination(tmp_path: Path) -> None:
    colors = {(r, c): (40 * r + 60, 90 * c, 200 - 50 * c) for r in range(2) for c in range(3)}
    cells: dict[tuple[int, int], Path | str] = {
        at: _picture(tmp_path / f"{at[0]}{at[1]}.png", color) for at, color in colors.items()
    }
    cells[(1, 2)] = "failed"
    sheet = Sheet("seed 1", "s.cfg", ["3", "7.5"], "s.steps", ["2", "4", "8"], cells)
    image = draw_sheet(sheet)
    grey = np.asarray(image)
    found = {}
    for at, color in colors.items():
        where = np.argwhere((grey == color).all(axis=-1))
        found[at] = where
        if at != (1, 2):
            assert len(where) >= MIN_CELL * MIN_CELL - 16 * 16, at  # scaled up 4x to 128 px
    assert len(found[(1, 2)]) == 0  # the failed item has a grey tile instead
    assert (grey == (150, 150, 150)).all(axis=-1).sum() > MIN_CELL * MIN_CELL // 2
    tops = {at: where.min(axis=0) for at, where in found.items() if len(where)}
    assert tops[(0, 0)][0] == tops[(0, 1)][0] < tops[(1, 0)][0]  # rows go down
    assert tops[(0, 0)][1] == tops[(1, 0)][1] < tops[(0, 1)][1] < tops[(0, 2)][1]  # columns go right
    row_y, col_x = tops[(0, 0)]
    assert image.width >= 3 * MIN_CELL and image.height >= 2 * MIN_CELL
    for col in range(3):  # a label above each column, one left of each row
        x = tops[(0, min(col, 1))][1] + (col - min(col, 1)) * (tops[(0, 1)][1] - col_x)
        assert _has_ink(image, (x, row_y - 30, x + MIN_CELL, row_y - 2)), col
    for row in range(2):
        y = row_y + row * (tops[(1, 0)][0] - row_y)
        assert _has_ink(image, (0, y, col_x - 2, y + MIN_CELL)), row
    marker = np.asarray(image)[row_y : row_y + 4, col_x : col_x + 4]
    assert (marker == 255).all()  # nearest scaling: one pixel became a 4x4 block


def test_a_sweep_with_several_seeds_draws_one_sheet_per_seed(reg: Registry, tmp_path: Path) -> None:
    plan = make_plan(noise_workflow(), reg, grid=["n.size=4,8"], seeds="1-2")
    latest = {}
    for item in plan.items():
        name = f"{plan.folder(item)}/noise_00001.png"
        _picture(tmp_path / name, (item.seed * 100, item.values["n.size"] * 10, 0))
        latest[item.key] = {"key": item.key, "status": "done", "files": [name]}
    failed = next(plan.items())
    latest[failed.key] = {"key": failed.key, "status": "failed", "files": []}
    sheets = plan_sheets(plan, latest, tmp_path)
    assert set(sheets) == {"grid-seed1.png", "grid-seed2.png"}
    assert sheets["grid-seed1.png"].cells[(0, 0)] == "failed"
    assert sheets["grid-seed2.png"].column_labels == ["4", "8"]
    written = write_sheets(sheets, tmp_path)
    assert all(Image.open(p).width >= 2 * MIN_CELL for p in written)
    single = plan_sheets(make_plan(noise_workflow(), reg, grid=["n.size=4,8"]), {}, tmp_path)
    assert list(single) == ["grid.png"] and set(single["grid.png"].cells.values()) == {"not run"}
    three = make_plan(noise_workflow(), reg, grid=["n.size=4,8", "n.seed=1,2"], prompts=None)
    assert len(plan_sheets(three, {}, tmp_path)) == 1
    assert plan_sheets(Plan(noise_workflow(), reg, (), (), ()), {}, tmp_path) == {}


# --- the command, over workers in this process ----------------------------------------------------


@pytest.fixture
def thread_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """``app.py sweep`` runs its items on threads of this process instead of worker processes."""

    def scheduler(args: Any, registry: Registry, out_dir: Path, items: int) -> Scheduler:
        def settings() -> RunSettings:
            return RunSettings(output_dir=out_dir)

        workers = min(items, args.workers or 1)
        runners = []
        for _ in range(workers):
            registry = default_registry()
            registry.add_pack(TEST_PACK)
            runners.append(ThreadRunner(Executor(registry), settings))
        return Scheduler(runners, [f"thread-{n}" for n in range(workers)])

    monkeypatch.setattr(cli.sweep, "_scheduler", scheduler)


def _sweep(tmp_path: Path, *extra: str, data: dict[str, Any] | None = None) -> int:
    path = tmp_path / "flow.json"
    path.write_text(json.dumps(data or noise_workflow()))
    return app.main(["--pack", TEST_PACK, "sweep", str(path), "--out", str(tmp_path / "out"), *extra])


def _lines(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]


@pytest.mark.usefixtures("thread_workers")
def test_the_command_writes_each_item_and_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _sweep(tmp_path, "--grid", "n.size=4,6", "--seeds", "3-5", "--workers", "2", "--json") == 0
    lines = _lines(tmp_path)
    items, summary = lines[:-1], lines[-1]["summary"]
    assert len(items) == 6 and all(r["status"] == "done" for r in items)
    for record in items:
        size, seed = record["values"]["n.size"], record["seed"]
        (file,) = record["files"]
        assert file.startswith(f"{record['index']}-{record['key']}/noise")
        assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / file)), expected_noise(seed, size))
        assert record["worker"] in ("thread-0", "thread-1") and record["attempts"] == 1
    assert {(r["values"]["n.size"], r["seed"]) for r in items} == {(s, n) for s in (4, 6) for n in (3, 4, 5)}
    assert summary["items"] == 6 and summary["done"] == 6 and summary["failed"] == 0
    assert sorted(w["name"] for w in summary["workers"]) == ["thread-0", "thread-1"]
    assert sum(w["items"] for w in summary["workers"]) == 6
    out = capsys.readouterr()
    assert [json.loads(line) for line in out.out.splitlines()] == lines  # --json: the manifest's lines
    assert "6 done, 0 failed" in out.err
    assert "[6/6] done item" in out.err and "items/s, ETA" in out.err  # progress, one line per item
    assert {p.name for p in (tmp_path / "out").glob("grid*.png")} == {f"grid-seed{n}.png" for n in (3, 4, 5)}


@pytest.mark.usefixtures("thread_workers")
def test_set_applies_to_every_item_and_runs_repeat_without_seeds(tmp_path: Path) -> None:
    assert _sweep(tmp_path, "--grid", "n.size=3,5", "--set", "n.seed=9") == 0
    items = [r for r in _lines(tmp_path) if "key" in r]
    assert [r["seed"] for r in items] == [0, 0]  # the run seed without --seeds
    for record in items:
        picture = np.asarray(Image.open(tmp_path / "out" / record["files"][0]))
        assert np.array_equal(picture, expected_noise(9, record["values"]["n.size"]))
    assert (tmp_path / "out" / "grid.png").exists()


@pytest.mark.usefixtures("thread_workers")
def test_an_invalid_or_failing_item_fails_alone(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _sweep(tmp_path, "--grid", "n.size=0,4") == 1
    first, second = (r for r in _lines(tmp_path) if "key" in r)
    assert first["status"] == "failed" and "node 'n'" in first["error"] and "input 'size'" in first["error"]
    assert second["status"] == "done"
    assert "1 done, 1 failed" in capsys.readouterr().err


@pytest.mark.usefixtures("thread_workers")
def test_resume_runs_only_the_items_not_done(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _sweep(tmp_path, "--grid", "n.size=4,5,6", "--seeds", "1-2") == 0
    path = tmp_path / "out" / "manifest.jsonl"
    kept = path.read_text().splitlines()[:2]  # as if stopped after two items, mid-way into a third
    path.write_text("\n".join(kept) + '\n{"key": "0123", "sta')
    assert _sweep(tmp_path, "--grid", "n.size=4,5,6", "--seeds", "1-2") == 2  # it asks for --resume
    assert "pass --resume" in capsys.readouterr().err
    assert _sweep(tmp_path, "--seeds", "2,1", "--grid", "n.size=6,5,4", "--resume") == 0  # any order
    assert "resuming: 2 of 6 items are done already" in capsys.readouterr().err
    records = [r for r in _lines(tmp_path) if "key" in r]
    assert len(records) == 6 and sorted(r["key"] for r in records) == sorted({r["key"] for r in records})
    assert _lines(tmp_path)[-1]["summary"]["skipped"] == 2
    assert _lines(tmp_path)[-1]["summary"]["done"] == 4


def test_bad_arguments_exit_with_2_and_say_why(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _sweep(tmp_path, "--grid", "n.sizes=1,2") == 2
    assert "NoiseFromSeed node 'n' has no input 'sizes'" in capsys.readouterr().err
    assert _sweep(tmp_path, "--seeds", "5-1") == 2
    assert "counts down" in capsys.readouterr().err
    broken = noise_workflow()
    broken["nodes"]["n"]["inputs"]["size"] = "big"
    assert _sweep(tmp_path, "--seeds", "1-2", data=broken) == 2
    assert "'size'" in capsys.readouterr().err
    assert not (tmp_path / "out" / "manifest.jsonl").exists()
