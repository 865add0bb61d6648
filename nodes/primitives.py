"""Primitive values, arithmetic, a seed, a switch and a value display."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from nodes import types as T
from nodes.base import Context, Input, Node, NodeInputError, Output, show_value
from nodes.support import SEED_MAX


class Int(Node):
    category = "primitives"
    description = "A whole number to feed into other nodes."
    inputs = (Input("value", T.INT, default=0, accepts="constant"),)
    outputs = (Output("value", T.INT),)

    def run(self, ctx: Context, value: int) -> dict[str, Any]:
        return {"value": value}


class Float(Node):
    category = "primitives"
    description = "A number to feed into other nodes."
    inputs = (Input("value", T.FLOAT, default=0.0, accepts="constant"),)
    outputs = (Output("value", T.FLOAT),)

    def run(self, ctx: Context, value: float) -> dict[str, Any]:
        return {"value": float(value)}


class String(Node):
    category = "primitives"
    description = "A piece of text, such as a prompt."
    inputs = (Input("value", T.STRING, default="", multiline=True, accepts="constant"),)
    outputs = (Output("value", T.STRING),)

    def run(self, ctx: Context, value: str) -> dict[str, Any]:
        return {"value": value}


class Boolean(Node):
    category = "primitives"
    description = "A true/false value, for switches."
    inputs = (Input("value", T.BOOLEAN, default=False, accepts="constant"),)
    outputs = (Output("value", T.BOOLEAN),)

    def run(self, ctx: Context, value: bool) -> dict[str, Any]:
        return {"value": value}


class Seed(Node):
    category = "primitives"
    description = "A seed: fixed to a value, or random on every run (drawn from the run's seed)."
    inputs = (
        Input("mode", T.STRING, default="fixed", choices=("fixed", "random"), accepts="constant"),
        Input(
            "value",
            T.INT,
            default=0,
            min=0,
            max=SEED_MAX,
            accepts="constant",
            description="The seed used in fixed mode.",
        ),
    )
    outputs = (Output("seed", T.INT),)

    def uses_run_seed(self, inputs: Mapping[str, Any]) -> bool:
        return inputs.get("mode") == "random"

    def run(self, ctx: Context, mode: str, value: int) -> dict[str, Any]:
        if mode == "random":
            return {"seed": int(ctx.rng.integers(0, SEED_MAX, endpoint=True))}
        return {"seed": value}


_INT_OPS = ("add", "subtract", "multiply", "divide", "modulo", "min", "max", "power")


class IntMath(Node):
    category = "primitives/math"
    description = "Arithmetic on two whole numbers (division rounds down)."
    inputs = (
        Input("a", T.INT, default=0),
        Input("b", T.INT, default=0),
        Input("operation", T.STRING, default="add", choices=_INT_OPS, accepts="constant"),
    )
    outputs = (Output("value", T.INT),)

    def run(self, ctx: Context, a: int, b: int, operation: str) -> dict[str, Any]:
        # Inputs are 64-bit (validation and the executor check them); refuse anything else
        # before computing, so that no chain of powers can grow numbers without bound.
        for name, value in (("a", a), ("b", b)):
            if not T.int_in_range(value):
                raise NodeInputError(name, f"{show_value(value)} is {_BEYOND_64_BITS}")
        if operation in ("divide", "modulo") and b == 0:
            raise NodeInputError("b", f"cannot {operation} by zero; give b a value other than 0")
        if operation == "power":
            if b < 0 or b > 64:
                raise NodeInputError("b", "power needs an exponent from 0 to 64")
            # |a| >= 2**(bits - 1), so the result has at least (bits - 1) * b + 1 bits
            if abs(a) > 1 and (abs(a).bit_length() - 1) * b >= 64:
                raise NodeInputError("b", f"{a} to the power {b} is {_BEYOND_64_BITS}")
        result = {
            "add": lambda: a + b,
            "subtract": lambda: a - b,
            "multiply": lambda: a * b,
            "divide": lambda: a // b,
            "modulo": lambda: a % b,
            "min": lambda: min(a, b),
            "max": lambda: max(a, b),
            "power": lambda: a**b,
        }[operation]()  # at most 128 bits from 64-bit inputs
        if not T.int_in_range(result):
            raise NodeInputError("b", f"{operation} of {a} and {b} gives {result}, {_BEYOND_64_BITS}")
        return {"value": result}


_BEYOND_64_BITS = f"beyond the 64-bit range of whole numbers ({T.INT_MIN} to {T.INT_MAX})"


_FLOAT_OPS = ("add", "subtract", "multiply", "divide", "min", "max", "power")


class FloatMath(Node):
    category = "primitives/math"
    description = "Arithmetic on two numbers."
    inputs = (
        Input("a", T.FLOAT, default=0.0),
        Input("b", T.FLOAT, default=0.0),
        Input("operation", T.STRING, default="add", choices=_FLOAT_OPS, accepts="constant"),
    )
    outputs = (Output("value", T.FLOAT),)

    def run(self, ctx: Context, a: float, b: float, operation: str) -> dict[str, Any]:
        try:  # whole numbers (a FLOAT input takes them) are computed as doubles, so results stay finite
            a = float(a)
        except OverflowError:
            raise NodeInputError("a", f"{show_value(a)} is too large for a number") from None
        try:
            b = float(b)
        except OverflowError:
            raise NodeInputError("b", f"{show_value(b)} is too large for a number") from None
        if operation == "divide" and b == 0:
            raise NodeInputError("b", "cannot divide by zero; give b a value other than 0")
        try:
            result = {
                "add": lambda: a + b,
                "subtract": lambda: a - b,
                "multiply": lambda: a * b,
                "divide": lambda: a / b,
                "min": lambda: min(a, b),
                "max": lambda: max(a, b),
                "power": lambda: math.pow(a, b),
            }[operation]()
        except (OverflowError, ValueError) as exc:
            raise NodeInputError("b", f"{operation} of {a} and {b} has no finite result ({exc})") from None
        if not math.isfinite(result):
            raise NodeInputError("b", f"{operation} of {a} and {b} has no finite result")
        return {"value": float(result)}


class Switch(Node):
    category = "flow"
    description = "Pass on one of two inputs; only the chosen branch is computed."
    inputs = (
        Input("select", T.BOOLEAN, default=True, description="True picks on_true, false picks on_false."),
        Input("on_true", T.ANY, lazy=True, optional=True, accepts="both"),
        Input("on_false", T.ANY, lazy=True, optional=True, accepts="both"),
    )
    outputs = (Output("value", T.ANY),)

    def lazy_inputs_needed(self, inputs: Mapping[str, Any]) -> Sequence[str]:
        return ["on_true"] if inputs["select"] else ["on_false"]

    def run(self, ctx: Context, select: bool, on_true: Any, on_false: Any) -> dict[str, Any]:
        chosen = "on_true" if select else "on_false"
        value = on_true if select else on_false
        if value is None:
            raise NodeInputError(chosen, "the chosen branch is not connected; connect it or flip select")
        return {"value": value}


class ShowValue(Node):
    category = "output"
    description = "Show a value (a number, text, a seed) as a result of the run."
    output_node = True
    inputs = (Input("value", T.ANY, accepts="link"),)
    outputs = (Output("text", T.STRING),)

    def run(self, ctx: Context, value: Any) -> dict[str, Any]:
        shape = getattr(value, "shape", None)
        text = f"{type(value).__name__} of shape {tuple(shape)}" if shape is not None else repr(value)
        return {"text": text}


NODES = (Int, Float, String, Boolean, Seed, IntMath, FloatMath, Switch, ShowValue)
