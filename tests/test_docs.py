"""The examples in the docs are real: the workflow validates, the node registers and runs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from graph.validate import validate
from nodes.registry import Registry
from tests.helpers import run_node

DOCS = Path(__file__).resolve().parent.parent / "docs"


def code_blocks(name: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", (DOCS / name).read_text(), re.S)


def test_workflow_format_example_is_valid(registry):
    (example,) = code_blocks("workflow-format.md", "json")
    result = validate(example, registry)
    assert result.ok, [str(i) for i in result.issues]
    assert result.workflow.groups[0].title == "Negative"


def test_node_example_registers_and_runs():
    (source,) = code_blocks("nodes.md", "python")
    namespace: dict = {}
    exec(compile(source, "docs/nodes.md", "exec"), namespace)
    registry = Registry()
    registry.add_all(namespace["NODES"])
    posterize = registry.get("Posterize")
    image = np.linspace(0, 1, 12, dtype=np.float32).reshape(1, 2, 2, 3)
    out = run_node(posterize, image=image, levels=2)["image"]
    assert np.array_equal(out, np.round(image))


def test_every_test_the_security_page_names_exists():
    """docs/security.md says which test checks each promise: those tests must be there."""
    text = (DOCS / "security.md").read_text()
    tests = DOCS.parent / "tests"
    named_files = set(re.findall(r"`(tests/test_\w+\.py)", text))
    assert len(named_files) >= 10
    for name in named_files:
        assert (DOCS.parent / name).is_file(), name
    sources = "\n".join(path.read_text() for path in tests.glob("test_*.py"))
    named_tests = set(re.findall(r"::(test_\w+?)(?:_\*)?`", text))
    assert len(named_tests) >= 15
    for name in named_tests:
        assert f"def {name}" in sources, f"docs/security.md names {name}, which no test defines"


def test_the_import_page_maps_every_comfyui_type_the_importer_converts():
    from comfy_import import RULES

    text = (DOCS / "comfy-import.md").read_text()
    mapping = text[text.index("## Mapping") : text.index("### Samplers")]
    missing = [t for t in RULES if not re.search(rf"\b{re.escape(t)}\b", mapping)]
    assert not missing, f"docs/comfy-import.md's mapping table lacks {missing}"


def test_the_scale_page_names_every_flag_of_the_sweep_command(capsys):
    """docs/scale.md is the guide to `app.py sweep`: every flag its --help lists is explained there."""
    from app import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["sweep", "--help"])
    usage = capsys.readouterr().out.split("positional arguments")[0]  # lists every option once
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", usage))
    assert {"--grid", "--seeds", "--out", "--workers", "--ray", "--resume"} <= flags
    text = (DOCS / "scale.md").read_text()
    missing = sorted(flag for flag in flags if not re.search(rf"{re.escape(flag)}(?![\w-])", text))
    assert not missing, f"docs/scale.md does not mention {missing}"
