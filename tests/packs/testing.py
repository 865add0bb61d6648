"""Nodes that exist only for tests: slow, failing and random ones."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from nodes import types as T
from nodes.base import Context, Input, Node, Output


class Sleep(Node):
    category = "testing"
    description = "Pass a value on after some steps of sleeping (checks for cancellation)."
    inputs = (
        Input("value", T.INT, default=0),
        Input("steps", T.INT, default=10, min=1, max=100000),
        Input("seconds_per_step", T.FLOAT, default=0.01, min=0.0, max=10.0),
    )
    outputs = (Output("value", T.INT),)

    def run(self, ctx: Context, value: int, steps: int, seconds_per_step: float) -> dict[str, Any]:
        for step in range(1, steps + 1):
            time.sleep(seconds_per_step)
            ctx.progress(step, steps)
        return {"value": value}


class SlowToStop(Node):
    category = "testing"
    description = "Steps until cancelled, then takes `stop_seconds` to stop (a trainer saving its work)."
    cancel_grace = 10.0
    inputs = (Input("stop_seconds", T.FLOAT, default=2.5, min=0.0, max=60.0),)
    outputs = (Output("value", T.INT),)

    def run(self, ctx: Context, stop_seconds: float) -> dict[str, Any]:
        for step in range(1, 100001):
            if ctx.cancel_token.cancelled:
                time.sleep(stop_seconds)
                ctx.check_cancelled()
            time.sleep(0.01)
            ctx.progress(step, 100000)
        return {"value": 0}


class Fail(Node):
    category = "testing"
    description = "Always fails, with the given message."
    inputs = (Input("value", T.INT, default=0), Input("message", T.STRING, default="boom"))
    outputs = (Output("value", T.INT),)

    def run(self, ctx: Context, value: int, message: str) -> dict[str, Any]:
        raise RuntimeError(message)


class RandomImage(Node):
    category = "testing"
    description = "Noise drawn from the run's seed."
    inputs = (Input("size", T.INT, default=8, min=1, max=256),)
    outputs = (Output("image", T.IMAGE),)

    def uses_run_seed(self, inputs: Any) -> bool:
        return True

    def run(self, ctx: Context, size: int) -> dict[str, Any]:
        return {"image": ctx.rng.random((1, size, size, 3), dtype=np.float32)}


class NoiseFromSeed(Node):
    category = "testing"
    description = "Noise drawn from a seed input."
    inputs = (Input("seed", T.INT, default=0, min=0), Input("size", T.INT, default=8, min=1, max=256))
    outputs = (Output("image", T.IMAGE),)

    def run(self, ctx: Context, seed: int, size: int) -> dict[str, Any]:
        rng = np.random.default_rng(seed)
        return {"image": rng.random((1, size, size, 3), dtype=np.float32)}


class BadOutputs(Node):
    category = "testing"
    description = "Returns the wrong outputs (a buggy node)."
    inputs = ()
    outputs = (Output("value", T.INT),)

    def run(self, ctx: Context) -> dict[str, Any]:
        return {"wrong": 1}


class SlowPreview(Node):
    category = "testing"
    description = "Make an image in steps, sending a small preview after each (like a sampler)."
    inputs = (
        Input("steps", T.INT, default=5, min=1, max=1000),
        Input("seconds_per_step", T.FLOAT, default=0.1, min=0.0, max=10.0),
        Input("size", T.INT, default=4, min=1, max=256),
    )
    outputs = (Output("image", T.IMAGE),)

    def run(self, ctx: Context, steps: int, seconds_per_step: float, size: int) -> dict[str, Any]:
        ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
        image = np.zeros((1, size, size, 3), dtype=np.float32)
        for step in range(1, steps + 1):
            image[0, ..., 0] = ramp[None, :]
            image[0, ..., 1] = ramp[:, None]
            image[0, ..., 2] = step / steps
            ctx.preview(image.copy())
            ctx.progress(step, steps)
            time.sleep(seconds_per_step)
        return {"image": image}


class HoldGil(Node):
    category = "testing"
    description = "Busy the CPU for some seconds in big-integer work that holds the GIL and ignores cancel."
    inputs = (
        Input("seconds", T.FLOAT, default=2.0, min=0.0, max=600.0),
        Input("digits", T.INT, default=400_000, min=1, max=10_000_000),
    )
    outputs = (Output("value", T.INT),)

    def run(self, ctx: Context, seconds: float, digits: int) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        rounds = 0
        while time.monotonic() < deadline:
            number = pow(7, digits)  # one C call: no other thread of this process runs meanwhile
            number = number * number
            rounds += 1
        return {"value": rounds}


class Crash(Node):
    category = "testing"
    description = "End its own process with a signal (a crash in native code, an out-of-memory kill)."
    inputs = (
        Input("signal", T.STRING, default="SIGSEGV", choices=("SIGSEGV", "SIGKILL", "SIGABRT", "exit")),
    )
    outputs = (Output("value", T.INT),)

    def run(self, ctx: Context, signal: str) -> dict[str, Any]:
        import os
        import signal as signals

        if signal == "exit":
            os._exit(3)
        os.kill(os.getpid(), getattr(signals, signal))
        time.sleep(10)  # the signal ends the process before this does
        return {"value": 0}


NODES = (Sleep, SlowToStop, Fail, RandomImage, NoiseFromSeed, BadOutputs, SlowPreview, HoldGil, Crash)
