"""What a sweep changes: ``NODE.INPUT`` names resolved against a workflow, and values typed for them.

A sweep sets constant inputs of the workflow's nodes, item by item. Every name the user gives
(``--grid s.cfg=...``, a prompts file's columns, ``--prompt-input``) is resolved here once,
with errors that name what was given, what is wrong and what would work. Values written on the
command line or in a text file are typed by the input they go to (cli/run.py's ``convert``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cli.run import OverrideError, constant_input, convert
from graph.strict_json import printable, printable_repr
from graph.workflow import Link
from nodes import types as T
from nodes.registry import Registry


class PlanError(Exception):
    """A sweep that cannot be planned; the message says what was given and what to change."""


@dataclass(frozen=True)
class Target:
    """One constant input a sweep sets: node id, input name and the input's type."""

    node_id: str
    input: str
    type: str

    @property
    def name(self) -> str:
        """``NODE.INPUT``, as the user writes it and the manifest records it."""
        return f"{self.node_id}.{self.input}"

    def typed(self, raw: str) -> Any:
        """``raw`` (text from the command line or a file) as a value of this input's type."""
        try:
            return convert(raw, self.type)
        except OverrideError as exc:
            raise PlanError(f"{self.name} {exc}") from None

    def coerced(self, value: Any) -> Any:
        """A value read from JSON, made to fit the input: text is typed as on the command line,
        a whole number for a FLOAT input becomes a float (so 7 and 7.0 are the same item)."""
        if isinstance(value, str) and self.type != T.STRING:
            return self.typed(value)
        if self.type == T.FLOAT and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value


def resolve(data: dict[str, Any], registry: Registry, text: str, said: str) -> Target:
    """The constant input ``text`` (``NODE.INPUT``) names in the workflow ``data``.

    ``said`` is how the error messages quote what the user wrote (``--grid 's.cfg=1,2'``).
    Refused: an unknown node or input, an input that only takes a link, and an input the
    workflow feeds from a link (sweep the value where it comes from instead).
    """
    node_id, dot, name = text.strip().rpartition(".")
    if not dot or not node_id or not name:
        raise PlanError(f"{said}: name an input as NODE.INPUT, e.g. sampler.cfg")
    try:
        entry, _, spec = constant_input(data, registry, node_id, name, said)
    except OverrideError as exc:
        raise PlanError(str(exc)) from None
    current = entry.get("inputs", {}).get(name) if isinstance(entry.get("inputs"), dict) else None
    if _is_link(current):
        source = f"{current['node']}.{current['output']}"
        raise PlanError(
            f"{said}: input {name!r} of node {node_id!r} is fed by a link from {printable(source)}; "
            f"sweep the value where it comes from (an input of node {printable_repr(current['node'])})"
        )
    return Target(node_id, name, spec.type)


def _is_link(value: Any) -> bool:
    if isinstance(value, Link):
        return True
    return isinstance(value, dict) and set(value) == {"node", "output"}


def split_values(text: str) -> list[str]:
    """A comma-separated list of values, as ``--grid`` takes them.

    Spaces around a value are dropped. A value in double or single quotes is taken as it is
    (commas and spaces included); outside quotes a backslash makes the next character literal
    (``\\,`` is a comma inside a value). An empty value outside quotes is refused: write ``""``
    for empty text.
    """
    values: list[str] = []
    current: list[str] = []
    quoted = False  # the current value was written in quotes
    index = 0
    while index <= len(text):
        char = text[index] if index < len(text) else ","
        if char == ",":
            value = "".join(current) if quoted else "".join(current).strip()
            if not value and not quoted:
                raise PlanError(
                    f"an empty value in {printable_repr(text, 80)}: remove the extra comma, "
                    'or write "" for empty text'
                )
            values.append(value)
            current, quoted = [], False
            index += 1
        elif char in "\"'" and not "".join(current).strip() and not quoted:
            end = text.find(char, index + 1)
            if end < 0:
                raise PlanError(f"{printable_repr(text, 80)}: the quote {char} opened here is not closed")
            current, quoted = [text[index + 1 : end]], True
            index = end + 1
            rest = len(text) - len(text[index:].lstrip(" "))
            if rest < len(text) and text[rest] != ",":
                raise PlanError(
                    f"{printable_repr(text, 80)}: a quoted value must be followed by a comma or the end"
                )
            index = rest
        elif char == "\\" and index + 1 < len(text):
            current.append(text[index + 1])
            index += 2
        else:
            if quoted:
                raise PlanError(f"{printable_repr(text, 80)}: a quoted value must be followed by a comma")
            current.append(char)
            index += 1
    return values
