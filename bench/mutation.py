"""Mutation testing of the engine core: do the tests notice when the code is broken?

    .venv/bin/python bench/mutation.py [--files graph/cache.py ...] [--per-file 60] [--seed 0]
        [--jobs 1] [--timeout SECONDS] [--tests FILE=TEST[,TEST...]] [--report PATH] [--list]

For each source file it makes mutants (one small change each: a comparison flipped or
moved across its boundary, ``and``/``or`` swapped, a number moved by one or a
true/false flipped, a statement deleted, a return value replaced by ``None`` or
negated), samples ``--per-file`` of them with ``--seed``, and runs, for each, only the
test files that cover that module (``COVERING_TESTS``, overridable with ``--tests``)
with ``pytest -x -q`` under a timeout. A mutant is *killed* when the tests fail,
*timeout* when they do not finish in time (also a detection), *survived* when they pass.

Prints one JSON line per file (mutants, killed, timeout, survived, score = detected /
mutants) and a total line, and writes the survivors (file, line, change, diff) to
``--report``.

Safety: the working tree is never written. Everything runs in a temporary copy of
the repository (the source and test folders copied; ``.venv`` and ``node_modules``
symlinked, ``.git`` and caches left out), one copy per job, removed at the end even
when interrupted (Ctrl-C or SIGTERM). Bytecode writing is off in the copy, so a
mutant never runs from a stale ``.pyc``.

Mutants are made on the source text (so the diff shows the real line) and each is
checked to parse to exactly the intended changed syntax tree; a site where that
check fails is skipped. Docstrings, type annotations, imports, definitions and
f-strings are not mutated, nor lines marked ``# pragma: no mutate``.
"""

from __future__ import annotations

import argparse
import ast
import copy
import difflib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: The test files that exercise each module: the only ones run against its mutants.
COVERING_TESTS: dict[str, tuple[str, ...]] = {
    "graph/cache.py": ("tests/test_cache.py", "tests/test_executor.py"),
    "graph/events.py": ("tests/test_events.py", "tests/test_executor.py", "tests/test_cache.py"),
    "graph/executor.py": ("tests/test_executor.py", "tests/test_cache.py"),
    "graph/workflow.py": (
        "tests/test_workflow_format.py",
        "tests/test_validate.py",
        "tests/test_validate_more.py",
    ),
    "graph/validate.py": (
        "tests/test_validate.py",
        "tests/test_validate_more.py",
        "tests/test_workflow_format.py",
    ),
    "graph/issues.py": ("tests/test_validate.py", "tests/test_validate_more.py"),
    "server/jobs.py": ("tests/test_jobs.py", "tests/test_worker.py", "tests/test_api.py"),
}
DEFAULT_FILES = (
    "graph/cache.py",
    "graph/events.py",
    "graph/executor.py",
    "graph/workflow.py",
    "graph/validate.py",
    "server/jobs.py",
)

#: Top-level entries symlinked into the copy (big, never mutated) or left out of it.
SYMLINKED = {".venv", "node_modules"}
LEFT_OUT = {
    ".git",
    ".hypothesis",
    ".pytest_cache",
    ".ruff_cache",
    "test-artifacts",
    "output",
    "input",
    "runs",
}
IGNORED_INSIDE = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".hypothesis")

NO_MUTATE = "pragma: no mutate"

# -- making mutants -------------------------------------------------------------------

#: A comparison's negation first, then the same comparison moved across its boundary.
COMPARE_SWAPS: dict[type[ast.cmpop], tuple[type[ast.cmpop], ...]] = {
    ast.Lt: (ast.GtE, ast.LtE),
    ast.LtE: (ast.Gt, ast.Lt),
    ast.Gt: (ast.LtE, ast.GtE),
    ast.GtE: (ast.Lt, ast.Gt),
    ast.Eq: (ast.NotEq,),
    ast.NotEq: (ast.Eq,),
    ast.Is: (ast.IsNot,),
    ast.IsNot: (ast.Is,),
    ast.In: (ast.NotIn,),
    ast.NotIn: (ast.In,),
}
SYMBOLS: dict[type[ast.AST], str] = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.In: "in",
    ast.NotIn: "not in",
    ast.And: "and",
    ast.Or: "or",
}
#: Statements never deleted: deleting them only breaks imports or names (always caught).
KEPT_STATEMENTS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Pass)
KEPT_STATEMENTS += (ast.Global, ast.Nonlocal)


@dataclass(frozen=True)
class Mutant:
    file: str  # relative to the repository
    site: int  # its index among all the file's mutants (stable for a given source)
    line: int
    description: str
    source: str  # the whole mutated file

    @property
    def ident(self) -> str:
        return f"{self.file}:{self.line}#{self.site}"

    def diff(self, original: str) -> str:
        lines = difflib.unified_diff(
            original.splitlines(keepends=True),
            self.source.splitlines(keepends=True),
            f"a/{self.file}",
            f"b/{self.file}",
            n=1,
        )
        return "".join(lines)


@dataclass
class _Site:
    """One change to make: ``replace`` builds the new node (or ``None`` for a deleted statement)."""

    node: ast.AST
    description: str
    replace: Callable[[ast.AST], ast.AST | None]
    text: Callable[[str], str]  # the new source text, given the node's old text


def _is_docstring(stmt: ast.stmt, parent: ast.AST) -> bool:
    body = getattr(parent, "body", None)
    return (
        isinstance(body, list)
        and body
        and body[0] is stmt
        and isinstance(parent, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Constant)
        and isinstance(stmt.value.value, str)
    )


def _is_type_checking(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test)


def _skipped_subtrees(tree: ast.AST) -> set[int]:
    """ids of nodes whose whole subtree is not mutated: annotations, f-strings, TYPE_CHECKING blocks."""
    roots: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arg | ast.AnnAssign) and node.annotation is not None:
            roots.append(node.annotation)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns is not None:
            roots.append(node.returns)
        if isinstance(node, ast.JoinedStr) or (isinstance(node, ast.stmt) and _is_type_checking(node)):
            roots.append(node)
    return {id(n) for root in roots for n in ast.walk(root)}


def _parents(tree: ast.AST) -> dict[int, ast.AST]:
    return {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _sites(tree: ast.Module, lines: list[str]) -> Iterator[_Site]:
    skipped = _skipped_subtrees(tree)
    parents = _parents(tree)
    for node in ast.walk(tree):
        if id(node) in skipped or not hasattr(node, "lineno"):
            continue
        if NO_MUTATE in lines[node.lineno - 1]:
            continue
        yield from _node_sites(node, parents.get(id(node)))


def _paren(node: ast.AST) -> str:
    return f"({ast.unparse(node)})"


def _node_sites(node: ast.AST, parent: ast.AST | None) -> Iterator[_Site]:
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            for new in COMPARE_SWAPS.get(type(op), ()):

                def replace(n: ast.AST, i: int = i, new: type[ast.cmpop] = new) -> ast.AST:
                    assert isinstance(n, ast.Compare)
                    n.ops[i] = new()
                    return n

                yield _Site(
                    node,
                    f"'{SYMBOLS[type(op)]}' -> '{SYMBOLS[new]}'",
                    replace,
                    lambda _old, node=node, replace=replace: _paren(replace(copy.deepcopy(node))),
                )
    elif isinstance(node, ast.BoolOp):
        new_op: type[ast.boolop] = ast.Or if isinstance(node.op, ast.And) else ast.And

        def swap(n: ast.AST, new_op: type[ast.boolop] = new_op) -> ast.AST:
            assert isinstance(n, ast.BoolOp)
            n.op = new_op()
            return n

        yield _Site(
            node,
            f"'{SYMBOLS[type(node.op)]}' -> '{SYMBOLS[new_op]}'",
            swap,
            lambda _old, node=node, swap=swap: _paren(swap(copy.deepcopy(node))),
        )
    elif isinstance(node, ast.Constant) and type(node.value) in (bool, int, float):
        value = node.value
        news = [not value] if isinstance(value, bool) else [value + 1, value - 1]
        for new in news:
            yield _Site(
                node,
                f"constant {value!r} -> {new!r}",
                lambda n, new=new: ast.parse(f"({new!r})", mode="eval").body,
                lambda _old, new=new: f"({new!r})",
            )
    elif isinstance(node, ast.Return) and node.value is not None:
        value = node.value
        if not (isinstance(value, ast.Constant) and value.value is None):
            yield _Site(value, "return value -> None", lambda n: ast.Constant(None), lambda _old: "None")
        if isinstance(value, ast.Compare | ast.BoolOp) or (
            isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.Not)
        ):
            yield _Site(
                value,
                "return value negated",
                lambda n: ast.UnaryOp(ast.Not(), n),
                lambda old: f"(not ({old}))",
            )
    if isinstance(node, ast.stmt) and not isinstance(node, KEPT_STATEMENTS) and parent is not None:
        if not _is_docstring(node, parent):
            kind = type(node).__name__.lower()
            yield _Site(node, f"{kind} statement deleted", lambda n: None, lambda _old: "pass")


def _intended_dump(tree: ast.Module, parents: dict[int, ast.AST], site: _Site) -> str:
    """The dump of ``tree`` with ``site`` applied (the tree is put back as it was)."""
    node = site.node
    parent = parents[id(node)]
    new = site.replace(copy.deepcopy(node))
    replacement = ast.Pass() if new is None else new
    for name, value in ast.iter_fields(parent):
        if isinstance(value, list) and any(v is node for v in value):
            k = next(i for i, v in enumerate(value) if v is node)
            value[k] = replacement
            try:
                return ast.dump(tree)
            finally:
                value[k] = node
        if value is node:
            setattr(parent, name, replacement)
            try:
                return ast.dump(tree)
            finally:
                setattr(parent, name, node)
    raise KeyError("node not found under its parent")


def _splice(source: str, node: ast.AST, text: str) -> str:
    """``source`` with ``node``'s text replaced (positions are UTF-8 byte offsets per line)."""
    lines = source.splitlines(keepends=True)
    start_line, end_line = node.lineno - 1, node.end_lineno - 1  # type: ignore[attr-defined]
    head = lines[start_line].encode()[: node.col_offset].decode()
    tail = lines[end_line].encode()[node.end_col_offset :].decode()  # type: ignore[attr-defined]
    return "".join(lines[:start_line]) + head + text + tail + "".join(lines[end_line + 1 :])


def make_mutants(file: str, source: str) -> list[Mutant]:
    """Every mutant of ``source`` whose text parses to exactly the intended change."""
    tree = ast.parse(source)
    parents = _parents(tree)
    sites = sorted(_sites(tree, source.splitlines()), key=lambda s: (s.node.lineno, s.node.col_offset))
    mutants = []
    for index, site in enumerate(sites):
        old_text = ast.get_source_segment(source, site.node) or ""
        try:
            mutated = _splice(source, site.node, site.text(old_text))
            if mutated == source or ast.dump(ast.parse(mutated)) != _intended_dump(tree, parents, site):
                continue  # the text does not say what was meant: leave this site out
        except (SyntaxError, ValueError, UnicodeDecodeError, KeyError):
            continue
        mutants.append(Mutant(file, index, site.node.lineno, site.description, mutated))
    return mutants


def sample(mutants: list[Mutant], n: int, seed: int, file: str) -> list[Mutant]:
    if n <= 0 or n >= len(mutants):
        return list(mutants)
    chosen = random.Random(f"{seed}:{file}").sample(mutants, n)
    return sorted(chosen, key=lambda m: m.site)


# -- running the tests ----------------------------------------------------------------


@dataclass
class Outcome:
    mutant: Mutant
    status: str  # "killed" | "survived" | "timeout" | "error"
    seconds: float
    detail: str = ""


@dataclass
class Workspace:
    """A throwaway copy of the repository where one job writes its mutants."""

    root: Path
    running: subprocess.Popen[bytes] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def create(cls, parent: Path, name: str) -> Workspace:
        root = parent / name
        root.mkdir()
        for entry in sorted(REPO.iterdir()):
            if entry.name in LEFT_OUT:
                continue
            if entry.name in SYMLINKED:
                (root / entry.name).symlink_to(entry)
            elif entry.is_dir():
                shutil.copytree(entry, root / entry.name, symlinks=True, ignore=IGNORED_INSIDE)
            else:
                shutil.copy2(entry, root / entry.name)
        return cls(root)

    def pytest(self, tests: list[str], timeout: float) -> tuple[str, float, str]:
        """Run ``tests`` here: ("passed" | "failed" | "timeout" | "no tests", seconds, output tail)."""
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=str(self.root))
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-o", "addopts="]
        start = time.perf_counter()
        proc = subprocess.Popen(
            [*command, *tests],
            cwd=self.root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a timeout kills what it started too
        )
        with self.lock:
            self.running = proc
        try:
            out, _ = proc.communicate(timeout=timeout)
            status = {0: "passed", 5: "no tests"}.get(proc.returncode, "failed")
        except subprocess.TimeoutExpired:
            self.kill()
            out, _ = proc.communicate()
            status = "timeout"
        finally:
            with self.lock:
                self.running = None
        tail = out.decode(errors="replace")[-2000:]
        return status, time.perf_counter() - start, tail

    def kill(self) -> None:
        with self.lock:
            proc = self.running
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def run_mutant(self, mutant: Mutant, original: str, tests: list[str], timeout: float) -> Outcome:
        path = self.root / mutant.file
        path.write_text(mutant.source, encoding="utf-8")
        try:
            status, seconds, tail = self.pytest(tests, timeout)
        finally:
            path.write_text(original, encoding="utf-8")
        verdict = {"failed": "killed", "passed": "survived", "timeout": "timeout"}.get(status, "error")
        return Outcome(mutant, verdict, seconds, tail if verdict == "error" else "")


def run_mutants(
    workspaces: list[Workspace], mutants: list[Mutant], original: str, tests: list[str], timeout: float
) -> list[Outcome]:
    """Test every mutant, one per workspace at a time; outcomes in site order."""
    queue = list(mutants)
    results: list[Outcome] = []
    lock = threading.Lock()

    def work(ws: Workspace) -> None:
        while True:
            with lock:
                if not queue:
                    return
                mutant = queue.pop(0)
            outcome = ws.run_mutant(mutant, original, tests, timeout)
            with lock:
                results.append(outcome)
                print(
                    f"  {outcome.status:8} {mutant.ident} {mutant.description}", file=sys.stderr, flush=True
                )

    pool = ThreadPoolExecutor(len(workspaces))
    try:
        for future in [pool.submit(work, ws) for ws in workspaces]:
            future.result()
    except BaseException:  # Ctrl-C or SIGTERM: stop the workers now, not after the queue
        with lock:
            queue.clear()
        for ws in workspaces:
            ws.kill()
        raise
    finally:
        pool.shutdown(wait=True)
    return sorted(results, key=lambda o: o.mutant.site)


def parse_test_overrides(items: list[str]) -> dict[str, tuple[str, ...]]:
    mapping = dict(COVERING_TESTS)
    for item in items:
        file, sep, tests = item.partition("=")
        if not sep or not tests:
            raise SystemExit(f"--tests wants FILE=TEST[,TEST...], got {item!r}")
        mapping[file.strip()] = tuple(t.strip() for t in tests.split(",") if t.strip())
    return mapping


def write_report(path: Path, outcomes: list[Outcome], originals: dict[str, str], args: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    left = [o for o in outcomes if o.status in ("survived", "error")]
    out = [f"# Surviving mutants\n\nCommand: `{args}`\n\n{len(left)} of {len(outcomes)} mutants left.\n"]
    for o in left:
        m = o.mutant
        out.append(f"\n## {m.file}:{m.line} {m.description} ({o.status}, {m.ident})\n\n```diff\n")
        out.append(m.diff(originals[m.file]))
        out.append("```\n")
        if o.detail:
            out.append(f"\npytest said:\n\n```\n{o.detail.strip()[-600:]}\n```\n")
    path.write_text("".join(out), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", nargs="+", default=list(DEFAULT_FILES), help="source files to mutate")
    parser.add_argument("--per-file", type=int, default=60, help="mutants sampled per file (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="mutants tested at once (one repo copy each)")
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds per mutant (default: 3x the clean run + 10)"
    )
    parser.add_argument(
        "--tests",
        action="append",
        default=[],
        metavar="FILE=TEST[,TEST...]",
        help="the test files to run for FILE's mutants (replaces COVERING_TESTS' entry)",
    )
    parser.add_argument("--report", type=Path, default=REPO / "test-artifacts" / "mutation-report.md")
    parser.add_argument("--list", action="store_true", help="only list the sampled mutants")
    args = parser.parse_args(argv)
    mapping = parse_test_overrides(args.tests)
    command = "bench/mutation.py " + " ".join(argv if argv is not None else sys.argv[1:])

    originals: dict[str, str] = {}
    plans: list[tuple[str, list[Mutant], int, list[str]]] = []
    for file in args.files:
        file = Path(file).resolve().relative_to(REPO).as_posix() if Path(file).is_absolute() else file
        source = (REPO / file).read_text(encoding="utf-8")
        originals[file] = source
        mutants = make_mutants(file, source)
        tests = [t for t in mapping.get(file, ()) if (REPO / t).exists()]
        missing = [t for t in mapping.get(file, ()) if not (REPO / t).exists()]
        if missing:
            print(f"{file}: no such test files, skipped: {missing}", file=sys.stderr)
        plans.append((file, sample(mutants, args.per_file, args.seed, file), len(mutants), tests))

    if args.list:
        for file, chosen, total, tests in plans:
            print(json.dumps({"file": file, "mutants": total, "sampled": len(chosen), "tests": tests}))
            for m in chosen:
                print(f"  {m.ident}  {m.description}")
        return 0

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    temp = Path(tempfile.mkdtemp(prefix="mutation-"))
    workspaces: list[Workspace] = []
    outcomes: list[Outcome] = []
    totals = {"mutants": 0, "killed": 0, "timeout": 0, "survived": 0, "error": 0}
    try:
        workspaces = [Workspace.create(temp, f"job{j}") for j in range(max(1, args.jobs))]
        for file, chosen, total, tests in plans:
            if not tests:
                print(json.dumps({"file": file, "error": "no covering test files (see --tests)"}))
                continue
            status, clean_seconds, tail = workspaces[0].pytest(tests, timeout=1800)
            if status != "passed":
                print(json.dumps({"file": file, "error": f"tests do not pass unmutated ({status})"}))
                print(tail, file=sys.stderr)
                continue
            timeout = args.timeout or 3 * clean_seconds + 10
            start = time.perf_counter()
            results = run_mutants(workspaces, chosen, originals[file], tests, timeout)
            outcomes += results
            counts = {
                k: sum(o.status == k for o in results) for k in ("killed", "timeout", "survived", "error")
            }
            detected = counts["killed"] + counts["timeout"]
            line = {"file": file, "mutants": len(results), "of": total, **counts}
            line.update(
                score=round(detected / len(results), 3) if results else None,
                tests=tests,
                clean_run_s=round(clean_seconds, 2),
                seconds=round(time.perf_counter() - start, 1),
            )
            print(json.dumps(line), flush=True)
            totals["mutants"] += len(results)
            for k, v in counts.items():
                totals[k] += v
    except KeyboardInterrupt:
        print("interrupted: removing the copies", file=sys.stderr)
        for ws in workspaces:
            ws.kill()
        return 130
    finally:
        for ws in workspaces:
            ws.kill()
        shutil.rmtree(temp, ignore_errors=True)
    detected = totals["killed"] + totals["timeout"]
    score = round(detected / totals["mutants"], 3) if totals["mutants"] else None
    print(json.dumps({"file": "TOTAL", **totals, "score": score, "seed": args.seed}))
    write_report(args.report, outcomes, originals, command)
    print(f"survivors written to {args.report}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
