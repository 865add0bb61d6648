"""Which model files a workflow loads: what the sweep scheduler matches workers by.

A worker keeps the models it loaded (its model manager is its own), so an item is best sent
to a worker that already holds the models the item names. The models are read from the
workflow itself: the constant values of every input that chooses among model files (a
loader's ``ckpt_name``, ``lora_name``, ``vae_name``, ...).
"""

from __future__ import annotations

from graph.workflow import Workflow
from nodes.registry import Registry


def models_of(workflow: Workflow, registry: Registry) -> frozenset[str]:
    """The model files ``workflow`` loads, as ``"INPUT=NAME"`` strings (empty when none).

    An input counts when its choices are listed from the model folders (a function, not a
    fixed list) and its value is a constant; node types the registry does not know are skipped.
    """
    found: set[str] = set()
    for entry in workflow.nodes.values():
        cls = registry.get(entry.type)
        if cls is None:
            continue
        for spec in cls.inputs:
            value = entry.inputs.get(spec.name)
            if callable(spec.choices) and isinstance(value, str) and value:
                found.add(f"{spec.name}={value}")
    return frozenset(found)
