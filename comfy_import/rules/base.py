"""The types of the mapping table (:class:`Part`, :class:`Rule`) and the helpers that build its
entries (:func:`one`, :func:`same`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Warn = Callable[[str], None]
#: Turns a ComfyUI constant into ours; calls ``warn`` when the meaning changes.
ValueMap = Callable[[Any, Warn], Any]
#: Computes inputs of ours from several ComfyUI constants at once (sampler + scheduler...).
Adjust = Callable[[Mapping[str, Any], Warn], dict[str, Any]]


@dataclass(frozen=True)
class Part:
    """One studio node made from a ComfyUI node (most make one; some make several)."""

    type: str
    #: ComfyUI input name -> our input name.
    inputs: Mapping[str, str]
    #: Appended to the ComfyUI id to make ours ("" keeps it).
    suffix: str = ""
    #: Constants always set on this node.
    fixed: Mapping[str, Any] = field(default_factory=dict)
    #: Appended to the title.
    title_suffix: str = ""
    #: Links between the parts of one rule: our input -> (suffix of the part, its output).
    links: Mapping[str, tuple[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    """How one ComfyUI node type becomes studio nodes."""

    parts: tuple[Part, ...]
    #: ComfyUI output index -> (part suffix, our output name); ``None``: no equivalent.
    outputs: tuple[tuple[str, str] | None, ...]
    #: Translations of ComfyUI constants, by ComfyUI input name.
    values: Mapping[str, ValueMap] = field(default_factory=dict)
    #: ComfyUI inputs read by ``adjust`` or deliberately left out.
    consumed: frozenset[str] = frozenset()
    adjust: Adjust | None = None
    #: The order of ``widgets_values`` in ComfyUI's UI format.
    widgets: tuple[str, ...] = ()
    #: Picks another rule from the node's constants (``None``: keep this one).
    variant: Callable[[Mapping[str, Any]], Rule | None] | None = None


def one(
    type_: str,
    inputs: Mapping[str, str],
    outputs: tuple[str | None, ...],
    *,
    widgets: tuple[str, ...] = (),
    values: Mapping[str, ValueMap] | None = None,
    fixed: Mapping[str, Any] | None = None,
    consumed: tuple[str, ...] = (),
    adjust: Adjust | None = None,
) -> Rule:
    """A rule that makes a single node keeping the ComfyUI id."""
    return Rule(
        parts=(Part(type_, inputs, fixed=fixed or {}),),
        outputs=tuple(None if name is None else ("", name) for name in outputs),
        values=values or {},
        consumed=frozenset(consumed),
        adjust=adjust,
        widgets=widgets,
    )


def same(*names: str) -> dict[str, str]:
    """Inputs that keep their ComfyUI names."""
    return {name: name for name in names}


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
