"""Strict JSON: what a workflow may hold, and a reader that refuses the rest, saying what and where.

Python's ``json`` reads more than a workflow can hold: NaN and Infinity, numbers that
overflow a double (``1e400`` becomes infinity), whole numbers of any length (slow to
read and to compute with), strings with lone surrogates (``"\\ud800"``, which no UTF-8
writer can write back), and arrays nested until the interpreter runs out of stack.
Here every value must be

- a whole number of 64 bits, signed or not (:data:`INT_MIN` .. :data:`UINT_MAX`: what
  any input takes, and ComfyUI's seeds, which go up to 2**64 - 1, for the importer),
- a finite number (a double),
- text without lone surrogates (keys too),
- ``true``, ``false``, ``null``, or arrays and objects nested at most :data:`MAX_DEPTH` deep.

:func:`parse_json` reads text; :func:`find_problems` checks an already parsed value
(from Python callers), so both paths refuse the same things.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from nodes.types import INT_MIN

#: The largest whole number a file may hold (an INT input takes up to nodes.types.INT_MAX).
UINT_MAX = 2**64 - 1
#: How deeply arrays and objects may nest; the top level counts as one.
MAX_DEPTH = 64
#: Problems reported for one value; past these, only that there are more.
MAX_PROBLEMS = 20

JsonPath = tuple[str | int, ...]


@dataclass(frozen=True)
class JsonProblem:
    """One value JSON (as a workflow reads it) cannot hold, and where it is."""

    path: JsonPath
    message: str

    def __str__(self) -> str:
        where = format_path(self.path)
        return f"{where}: {self.message}" if where else self.message


class JsonValueError(ValueError):
    """Text or data holding values a workflow cannot hold; ``problems`` says each one and where."""

    def __init__(self, problems: list[JsonProblem], more: bool = False) -> None:
        text = "; ".join(str(p) for p in problems)
        if more:
            text += "; and more"
        super().__init__(text)
        self.problems = problems
        self.more = more


def parse_json(text: str) -> Any:
    """``json.loads`` that refuses what a workflow cannot hold (see the module's doc).

    Raises :class:`json.JSONDecodeError` for text that is not JSON, and
    :class:`JsonValueError` (a ``ValueError``) for values out of reach, naming
    where each one is.
    """
    value = load(text)
    problems, more = find_problems(value)
    if problems:
        raise JsonValueError(problems, more)
    return value


def load(text: str) -> Any:
    """Parse ``text``; values out of reach come back as markers that :func:`find_problems` reports.

    Refuses nesting beyond :data:`MAX_DEPTH` before parsing, so that no input can
    exhaust the stack.
    """
    _check_nesting(text)
    return json.loads(text, parse_constant=_constant, parse_float=_float, parse_int=_int)


class _OutOfReach:
    """A literal read from the text that a workflow cannot hold; said when reported, with its path."""

    __slots__ = ("literal", "why")

    def __init__(self, why: str, literal: str) -> None:
        self.why = why  # "constant", "float" or "int"
        self.literal = literal

    @property
    def message(self) -> str:
        if self.why == "constant":
            return f"{self.literal} is not a number JSON can hold"
        if self.why == "float":
            return f"{_shorten(self.literal)} is too large for a number (the largest is about 1.8e308)"
        digits = len(self.literal.lstrip("-"))
        if digits > 20:
            return f"a whole number of {digits} digits is {_BEYOND_64_BITS}"
        return f"the whole number {self.literal} is {_BEYOND_64_BITS}"


def _constant(name: str) -> _OutOfReach:
    return _OutOfReach("constant", name)


def _float(literal: str) -> float | _OutOfReach:
    number = float(literal)
    return _OutOfReach("float", literal) if math.isinf(number) else number


def _int(literal: str) -> int | _OutOfReach:
    if len(literal) > 21:  # 2**64 has 20 digits; longer literals are never read as numbers
        return _OutOfReach("int", literal)
    number = int(literal)
    return number if INT_MIN <= number <= UINT_MAX else _OutOfReach("int", literal)


_NOT_UTF8 = "which is not text UTF-8 can write"
_BEYOND_64_BITS = f"beyond the 64-bit range of whole numbers a file holds ({INT_MIN} to {UINT_MAX})"

# A string, possibly unterminated (it then runs to the end of the text); possessive
# quantifiers keep the scan linear on any input.
_STRINGS = re.compile(r'"(?:[^"\\]++|\\.)*+"?', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]++")
_BRACKET = re.compile(r"[\[\]{}]")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_CHUNK = 1 << 16


def _check_nesting(text: str) -> None:
    """Refuse arrays and objects nested deeper than :data:`MAX_DEPTH`, saying where.

    Every pass runs in C (regular expressions, ``str.count``, ``accumulate``), so even
    16 MB of brackets are judged in well under a second.
    """
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    brackets = _NOT_BRACKETS.sub("", _STRINGS.sub("", text))
    depth = 0
    for start in range(0, len(brackets), _CHUNK):
        depths = list(
            accumulate(map(_DEPTH_STEP.__getitem__, brackets[start : start + _CHUNK]), initial=depth)
        )
        if max(depths) > MAX_DEPTH:
            # the depth moves one step at a time, so it first exceeds the limit at its first MAX_DEPTH + 1
            index = start + depths.index(MAX_DEPTH + 1) - 1
            break
        depth = depths[-1]
    else:
        return
    blanked = _STRINGS.sub(lambda m: " " * (m.end() - m.start()), text)  # brackets keep their places
    position = _nth_bracket(blanked, index)
    line = text.count("\n", 0, position) + 1
    column = position - text.rfind("\n", 0, position)
    raise JsonValueError(
        [JsonProblem((), f"nested deeper than {MAX_DEPTH} levels at line {line}, column {column}")]
    )


def _nth_bracket(text: str, n: int) -> int:
    """Where the ``n``-th bracket (from 0) of ``text`` is."""
    start = 0
    while True:
        chunk = text[start : start + _CHUNK]
        count = sum(chunk.count(b) for b in "[]{}")
        if count > n:
            break
        n -= count
        start += _CHUNK
    for found in _BRACKET.finditer(text, start):
        if n == 0:
            return found.start()
        n -= 1
    raise AssertionError("unreachable: the bracket was counted")


# --- checking parsed values -------------------------------------------------------------------


def find_problems(value: Any, limit: int = MAX_PROBLEMS) -> tuple[list[JsonProblem], bool]:
    """The values in ``value`` a workflow cannot hold (the first ``limit``), and whether there are more.

    Walks without recursion, so a value nested however deep is answered.
    """
    problems: list[JsonProblem] = []
    for path, message in _walk(value):
        if len(problems) == limit:
            return problems, True
        problems.append(JsonProblem(path, message))
    return problems, False


class _Where:
    """A path as a chain of parents, made into a tuple only for a problem."""

    __slots__ = ("key", "parent")

    def __init__(self, parent: _Where | None, key: str | int) -> None:
        self.parent = parent
        self.key = key

    @staticmethod
    def path(where: _Where | None) -> JsonPath:
        keys: list[str | int] = []
        while where is not None:
            keys.append(where.key)
            where = where.parent
        return tuple(reversed(keys))


_CONTAINERS = (dict, list, tuple)


def _walk(value: Any) -> Iterator[tuple[JsonPath, str]]:
    problem = _problem(value)
    if problem is not None:
        yield (), problem
    if not isinstance(value, _CONTAINERS):
        return
    stack: list[tuple[Any, _Where | None, int]] = [(value, None, 1)]
    while stack:
        container, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            yield _Where.path(where), f"nested deeper than {MAX_DEPTH} levels"
            continue
        if isinstance(container, dict):
            items: Any = container.items()
            for key in container:
                if type(key) is not str:
                    yield (
                        _Where.path(where),
                        f"the key {json_repr(key)} is {_kind(key)}: keys must be text",
                    )
                elif not key.isascii() and has_lone_surrogate(key):
                    yield _Where.path(_Where(where, key)), f"the key holds a lone surrogate, {_NOT_UTF8}"
        else:
            items = enumerate(container)
        for key, child in items:
            kind = type(child)
            # the common cases first, by exact type; anything else takes the long way
            if kind is str:
                if child.isascii() or not has_lone_surrogate(child):
                    continue
            elif kind is int:
                if INT_MIN <= child <= UINT_MAX:
                    continue
            elif kind is float:
                if child - child == 0.0:  # NaN and the infinities give NaN
                    continue
            elif child is None or kind is bool:
                continue
            elif kind is dict or kind is list:
                stack.append((child, _Where(where, key), depth + 1))
                continue
            problem = _problem(child)
            if problem is not None:
                yield _Where.path(_Where(where, key)), problem
            elif isinstance(child, _CONTAINERS):
                stack.append((child, _Where(where, key), depth + 1))


def _problem(item: Any) -> str | None:
    """Why one value cannot be held, or ``None`` (containers are walked, not judged, here)."""
    if item is None or isinstance(item, (bool, *_CONTAINERS)):
        return None
    if isinstance(item, str):
        if has_lone_surrogate(item):
            return f"the text {json_repr(item)} holds a lone surrogate, {_NOT_UTF8}"
        return None
    if isinstance(item, int):
        return None if INT_MIN <= item <= UINT_MAX else f"{describe_number(item)} is {_BEYOND_64_BITS}"
    if isinstance(item, float):
        if math.isnan(item):
            return "NaN is not a number JSON can hold"
        if math.isinf(item):
            return f"{item} is too large for a number: numbers must be finite (at most about 1.8e308)"
        return None
    if isinstance(item, _OutOfReach):
        return item.message
    return f"{type(item).__name__} is not a JSON value"


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    return f"a {type(value).__name__}"


# --- saying values safely -------------------------------------------------------------------------


def has_lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds a surrogate code point (U+D800..U+DFFF) that UTF-8 cannot write."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def printable(text: str) -> str:
    """``text`` as UTF-8 can write it: bytes smuggled in by the file system or the command
    line (surrogate escapes) as ``\\xff``, other lone surrogates as ``\\ud800``."""
    if not has_lone_surrogate(text):
        return text
    out = []
    for char in text:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def json_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)``, short, and safe to write: never a lone surrogate or a huge number."""
    if isinstance(value, int) and not isinstance(value, bool):
        return describe_number(value)
    return _shorten(repr(value), limit)  # repr escapes lone surrogates and control characters


def printable_repr(value: Any, limit: int = 60) -> str:
    """:func:`json_repr` for text from the command line or the file system, where a byte that
    is not UTF-8 arrives as a surrogate escape: it shows as the byte (``\xff``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return describe_number(value)
    return _shorten(_SURROGATE_ESCAPE.sub(r"\\x\1", repr(value)), limit)


_SURROGATE_ESCAPE = re.compile(r"\\udc([89a-f][0-9a-f])")


def describe_number(value: int) -> str:
    """A whole number as a person reads it: itself, or its length when it is huge."""
    if value.bit_length() <= 200:
        return str(value)
    digits = int(value.bit_length() * math.log10(2)) + 1
    return f"a whole number of about {digits} digits"


def format_path(path: JsonPath) -> str:
    """``("nodes", "a", "inputs", "x", 0)`` as ``nodes.a.inputs.x[0]``."""
    parts: list[str] = []
    for key in path:
        if isinstance(key, int):
            parts.append(f"[{key}]")
        elif _PLAIN_KEY.fullmatch(key):
            parts.append(f".{key}" if parts else key)
        else:
            parts.append(f"[{json_repr(key, 40)}]")
    return "".join(parts)


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_\-]{1,40}")


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
