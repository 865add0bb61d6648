"""The node API: how a node declares its inputs and outputs, and what it gets when it runs.

A node is a class::

    class ImageInvert(Node):
        category = "image/adjust"
        description = "Turn every colour into its opposite."
        inputs = (Input("image", IMAGE),)
        outputs = (Output("image", IMAGE),)

        def run(self, ctx: Context, image: np.ndarray) -> dict[str, Any]:
            return {"image": 1.0 - image}

The executor calls ``run`` with every input resolved to a value (constants as
written in the workflow or filled from defaults, links replaced by the upstream
node's output) and a :class:`Context` for progress, previews, cancellation and
random numbers. ``run`` returns a dict with one entry per declared output.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from models.services import Services
from nodes import types as T

if TYPE_CHECKING:
    import numpy as np

    from graph.events import Event


class _NoDefault:
    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Any = _NoDefault()

Accepts = Literal["both", "link", "constant"]


@dataclass(frozen=True)
class Input:
    """One input of a node.

    ``accepts`` says whether the input takes a constant written in the workflow,
    a link from another node, or both; it defaults to ``both`` for the constant
    types (STRING, INT, FLOAT, BOOLEAN) and ``link`` for the rest. An input is
    required unless it has a default or is ``optional`` (then it is ``None``
    when not given). A ``lazy`` input is evaluated only when the node asks for
    it (see :meth:`Node.lazy_inputs_needed`). An ``input_file`` input names a picture in the
    input folder. ``choices`` may be a function of the
    services (:class:`models.services.Services`), so a list that changes (model files on
    disk) is read afresh each time, from the model folders of whoever asks.
    """

    name: str
    type: str
    default: Any = NO_DEFAULT
    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: Sequence[str] | Callable[[Services], Sequence[str]] | None = None
    multiline: bool = False
    optional: bool = False
    accepts: Accepts | None = None
    lazy: bool = False
    description: str = ""
    #: The value names a picture in the input folder: the studio page offers the pictures
    #: there (``input_file`` in :meth:`describe`; the API fills ``choices`` with them).
    input_file: bool = False
    #: The value names a dataset (a folder of pictures with captions) in the input folder's
    #: ``datasets/``: the page's API fills ``choices`` with them (server/datasets.py).
    dataset_folder: bool = False

    @property
    def accepts_link(self) -> bool:
        return self.resolved_accepts in ("both", "link")

    @property
    def accepts_constant(self) -> bool:
        return self.resolved_accepts in ("both", "constant")

    @property
    def resolved_accepts(self) -> Accepts:
        if self.accepts is not None:
            return self.accepts
        return "both" if self.type in T.CONSTANT_TYPES else "link"

    @property
    def has_default(self) -> bool:
        return self.default is not NO_DEFAULT

    @property
    def required(self) -> bool:
        return not self.has_default and not self.optional

    def current_choices(self, services: Services | None = None) -> list[str] | None:
        """The choices as they are now; ``None`` when the input has none.

        Choices that are a function (model files) are listed from ``services``, which such an
        input needs: without them it is a TypeError (a caller's mistake, never a user's).
        """
        if self.choices is None:
            return None
        if not callable(self.choices):
            return list(self.choices)
        if services is None:
            raise TypeError(f"input {self.name!r} lists its choices from the services: pass them")
        return list(self.choices(services))

    def check(self, value: Any, services: Services | None = None) -> str | None:
        """Why ``value`` is not acceptable for this input, or ``None`` when it is (choices that
        are a function are listed from ``services``)."""
        return check_value(self, value, services)

    def describe(self, services: Services | None = None) -> dict[str, Any]:
        """The input as the UI and the API show it (choices that are a function listed from ``services``)."""
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.has_default:
            out["default"] = self.default
        for key in ("min", "max", "step"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        choices = self.current_choices(services)
        if choices is not None:
            out["choices"] = choices
        out.update(
            multiline=self.multiline,
            optional=self.optional,
            required=self.required,
            accepts=self.resolved_accepts,
            lazy=self.lazy,
            description=self.description,
        )
        if self.input_file:
            out["input_file"] = True
        if self.dataset_folder:
            out["dataset_folder"] = True
        return out


@dataclass(frozen=True)
class Output:
    """One output of a node."""

    name: str
    type: str
    description: str = ""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "description": self.description}


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a true/false value"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else repr(number)


def show_value(value: Any, limit: int = 60) -> str:
    """A value as a message shows it: short, never a huge number written out or a lone surrogate."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > 200:
            return f"of about {int(value.bit_length() * math.log10(2)) + 1} digits"
        return str(value)
    text = repr(value)  # repr escapes lone surrogates and control characters
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_value(spec: Input, value: Any, services: Services | None = None) -> str | None:
    """Check a constant (or a resolved primitive) against an input's type and constraints.

    An INT is a 64-bit signed whole number, a FLOAT a finite double (whole numbers
    given for one must fit a double), a STRING text UTF-8 can write. Choices that are a
    function are listed from ``services`` (see :meth:`Input.current_choices`).
    """
    kind = spec.type
    if kind == T.INT:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"expects a whole number, got {_type_name(value)} {show_value(value)}"
        if not T.int_in_range(value):
            return (
                f"the whole number {show_value(value)} is beyond the 64-bit range "
                f"({T.INT_MIN} to {T.INT_MAX})"
            )
    elif kind == T.FLOAT:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"expects a number, got {_type_name(value)} {show_value(value)}"
        if isinstance(value, int) and not -T.FLOAT_MAX <= value <= T.FLOAT_MAX:
            return f"the number {show_value(value)} is too large (the largest is about 1.8e308)"
        if not math.isfinite(value):
            return f"expects a finite number, got {value!r}"
    elif kind == T.BOOLEAN:
        if not isinstance(value, bool):
            return f"expects true or false, got {_type_name(value)} {show_value(value)}"
    elif kind == T.STRING:
        if not isinstance(value, str):
            return f"expects text, got {_type_name(value)} {show_value(value)}"
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return (
                    f"the text {show_value(value)} holds a lone surrogate, which is not text UTF-8 can write"
                )
    elif kind != T.ANY:
        return f"takes a {kind} from a link, not a constant"
    if kind in (T.INT, T.FLOAT):
        if spec.min is not None and value < spec.min:
            return f"{show_value(value)} is below the minimum {_fmt(spec.min)}"
        if spec.max is not None and value > spec.max:
            return f"{show_value(value)} is above the maximum {_fmt(spec.max)}"
    choices = spec.current_choices(services)
    if choices is not None and value not in choices:
        shown = ", ".join(repr(c) for c in choices[:12])
        more = f" and {len(choices) - 12} more" if len(choices) > 12 else ""
        if not choices:
            return f"{show_value(value)} is not available: there is nothing to choose from"
        return f"{show_value(value)} is not one of the choices: {shown}{more}"
    return None


class NodeInputError(Exception):
    """Raised by a node when an input's value cannot be used; names the input."""

    def __init__(self, input_name: str, message: str) -> None:
        super().__init__(message)
        self.input_name = input_name
        self.message = message


class Cancelled(Exception):
    """Raised inside a run when its cancel token was set."""


class CancelToken:
    """Cancels one run. Thread-safe; cancelling one token never touches another run."""

    def __init__(self) -> None:
        import threading

        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled()


@dataclass
class RunSettings:
    """What a run needs to know about its surroundings (chosen by the CLI or the server)."""

    output_dir: Path = Path("output")
    input_dirs: tuple[Path, ...] = (Path("input"),)
    allow_absolute_paths: bool = True
    workflow_json: str | None = None  # the workflow as saved, embedded into output images
    #: The model folders and the model manager (shared by every run handed the same services).
    services: Services = field(default_factory=Services)


@dataclass
class Context:
    """Handed to :meth:`Node.run`: everything a node may use besides its inputs."""

    node_id: str
    node_type: str
    run_id: str
    seed: int
    settings: RunSettings
    cancel_token: CancelToken
    emit: Callable[[Event], None]
    files: list[str] = field(default_factory=list)
    _rng: Any = None

    @property
    def services(self) -> Services:
        """The run's services: model folders and the model manager (see models/services.py)."""
        return self.settings.services

    @property
    def rng(self) -> np.random.Generator:
        """A random generator seeded by the run's seed and this node's id.

        The same run seed gives the same numbers to the same node, on any machine.
        A node that uses it must say so (:meth:`Node.uses_run_seed`).
        """
        if self._rng is None:
            import numpy as np

            self._rng = np.random.default_rng([self.seed, zlib.crc32(self.node_id.encode())])
        return self._rng

    def check_cancelled(self) -> None:
        """Call between steps of long work: raises :class:`Cancelled` if the run was cancelled."""
        self.cancel_token.raise_if_cancelled()

    def progress(self, step: int, total: int, metrics: Mapping[str, float] | None = None) -> None:
        """Report step ``step`` of ``total`` done, with the step's figures by name (``{"loss": ...}``;
        a figure that is not a finite number is left out); raises :class:`Cancelled` if the run was
        cancelled."""
        self.cancel_token.raise_if_cancelled()
        self.report_progress(step, total, metrics)

    def report_progress(self, step: int, total: int, metrics: Mapping[str, float] | None = None) -> None:
        """:meth:`progress` without the cancel check: for a callback inside work that must not be
        interrupted mid-step (a trainer that sees the cancel itself and saves before it stops)."""
        from graph.events import NodeProgress

        kept = {name: float(v) for name, v in (metrics or {}).items() if math.isfinite(float(v))}
        self.emit(NodeProgress(self.run_id, self.node_id, step=step, total=total, metrics=kept))

    def preview(self, image: Any) -> None:
        """Show an intermediate IMAGE (batch, height, width, 3) while the node works."""
        from graph.events import NodePreview

        self.emit(NodePreview(run_id=self.run_id, node_id=self.node_id, image=image))

    def add_file(self, path: Path | str) -> None:
        """Record a file this node wrote, so listeners can show it."""
        self.files.append(str(path))

    def find_input_file(self, input_name: str, name: str) -> Path:
        """Resolve a file name given in an input against the run's input folders."""
        return find_input_file(self.settings, input_name, name)


def find_input_file(settings: RunSettings, input_name: str, name: str) -> Path:
    """Resolve a file name against the input folders; absolute paths only where allowed.

    A relative name must stay inside its input folder with every symbolic link followed,
    and no part of it may start with a dot (``..``, hidden files and folders such as
    ``.studio``). An absolute path is taken as given where the settings allow it (the
    command line), and refused elsewhere (the studio and the server). The path returned
    has its links resolved, so the file read is the one checked.
    """
    if not name:
        raise NodeInputError(input_name, "no file given: choose or type a file name")
    path = Path(name).expanduser()
    if path.is_absolute():
        if not settings.allow_absolute_paths:
            raise NodeInputError(
                input_name, f"{name!r} points outside the input folder; give a name inside it"
            )
        if path.is_file():
            return path
        raise NodeInputError(input_name, f"file {name!r} does not exist")
    if any(part.startswith(".") for part in path.parts):
        or_absolute = " (or an absolute path)" if settings.allow_absolute_paths else ""
        raise NodeInputError(
            input_name,
            f"{name!r} has a part starting with a dot ('..' points outside the input folder, and "
            f"hidden files are not read); give a name inside it without such parts{or_absolute}",
        )
    for folder in settings.input_dirs:
        candidate = Path(folder) / path
        if candidate.is_file():
            resolved = candidate.resolve()
            if not resolved.is_relative_to(Path(folder).resolve()):
                raise NodeInputError(
                    input_name,
                    f"{name!r} leads outside the input folder through a symbolic link; "
                    "copy the file inside it instead",
                )
            return resolved
    where = ", ".join(str(d) for d in settings.input_dirs)
    raise NodeInputError(input_name, f"file {name!r} not found in {where}; check the name")


class Node:
    """Base class of every node. Subclasses set the class attributes and ``run``."""

    #: The name used in workflow files. Defaults to the class name.
    type: ClassVar[str] = ""
    #: The name people read in the page (search, node titles); ``None``: the type split into
    #: words (:func:`words_of`). Set it to the name ComfyUI users know the node by. Like ``type``,
    #: it is not inherited: a subclass is another node and gets a name of its own.
    display_name: ClassVar[str | None] = None
    #: Bump when inputs or behaviour change; add an entry to ``input_migrations``.
    version: ClassVar[int] = 1
    category: ClassVar[str] = "misc"
    description: ClassVar[str] = ""
    inputs: ClassVar[tuple[Input, ...]] = ()
    outputs: ClassVar[tuple[Output, ...]] = ()
    #: An output node is what a run is for (saving, previewing); the plan starts from them.
    output_node: ClassVar[bool] = False
    #: ``{n: f}`` turns the inputs of a node saved at version ``n`` into those of version ``n + 1``.
    input_migrations: ClassVar[Mapping[int, Callable[[dict[str, Any]], dict[str, Any]]]] = {}
    #: Seconds this node may take, after a cancel, to stop cleanly (a training node finishing its
    #: step and saving what it learnt), on top of the worker's usual grace before it stops the process.
    cancel_grace: ClassVar[float] = 0.0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("type"):
            cls.type = cls.__name__

    def run(self, ctx: Context, **inputs: Any) -> dict[str, Any]:
        raise NotImplementedError

    def lazy_inputs_needed(self, inputs: Mapping[str, Any]) -> Sequence[str]:
        """Which lazy inputs to evaluate, given the values of the non-lazy ones."""
        return [spec.name for spec in self.inputs if spec.lazy]

    def uses_run_seed(self, inputs: Mapping[str, Any]) -> bool:
        """True when the output depends on the run's seed (``ctx.rng`` / ``ctx.seed``)."""
        return False

    def fingerprint(self, inputs: Mapping[str, Any], settings: RunSettings) -> str | None:
        """State outside the inputs that the output depends on (a file's size and time).

        Gets the constant inputs only (links are covered by their upstream signatures).
        """
        return None

    @classmethod
    def input(cls, name: str) -> Input | None:
        return next((spec for spec in cls.inputs if spec.name == name), None)

    @classmethod
    def output(cls, name: str) -> Output | None:
        return next((spec for spec in cls.outputs if spec.name == name), None)

    @classmethod
    def readable_name(cls) -> str:
        """The name people read: the class's own :attr:`display_name`, else the type split into words."""
        return cls.__dict__.get("display_name") or words_of(cls.type)

    @classmethod
    def describe(cls, services: Services | None = None, aliases: Sequence[str] = ()) -> dict[str, Any]:
        """The node as the UI and the API show it; inputs whose choices are a function (model
        files) list them from ``services``. ``aliases`` are other names search finds it by (the
        registry gives ComfyUI's: comfy_import/display_names.py)."""
        return {
            "type": cls.type,
            "display_name": cls.readable_name(),
            "aliases": sorted(set(aliases)),
            "version": cls.version,
            "category": cls.category,
            "description": cls.description,
            "output_node": cls.output_node,
            "inputs": [spec.describe(services) for spec in cls.inputs],
            "outputs": [spec.describe() for spec in cls.outputs],
        }


_WORD_BREAK = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def words_of(type_name: str) -> str:
    """A type name split into words, acronyms kept whole: ``VAEDecode`` -> ``VAE Decode``,
    ``CLIPTextEncodeSDXL`` -> ``CLIP Text Encode SDXL``, ``ModelMergeSD1`` -> ``Model Merge SD1``."""
    return _WORD_BREAK.sub(" ", type_name).replace("_", " ").strip()


class NodeDefinitionError(Exception):
    """A node class declares something inconsistent (a pack author's mistake)."""


def check_definition(cls: type[Node]) -> None:
    """Catch declaration mistakes when a pack is registered, not when a user runs it."""
    where = f"node {cls.type} ({cls.__module__}.{cls.__qualname__})"
    if not cls.description:
        raise NodeDefinitionError(f"{where}: needs a one-line description")
    display_name = cls.__dict__.get("display_name")
    if display_name is not None and (not isinstance(display_name, str) or not display_name.strip()):
        raise NodeDefinitionError(f"{where}: display_name must be a non-empty text (or left out)")
    if not isinstance(cls.version, int) or cls.version < 1:
        raise NodeDefinitionError(f"{where}: version must be a whole number from 1")
    for group, specs in (("input", cls.inputs), ("output", cls.outputs)):
        names = [spec.name for spec in specs]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise NodeDefinitionError(f"{where}: {group} names repeat: {sorted(dupes)}")
        for name in names:
            if not name.isidentifier():
                raise NodeDefinitionError(f"{where}: {group} name {name!r} must be an identifier")
    for spec in cls.inputs:
        if spec.accepts_constant and spec.type not in T.CONSTANT_TYPES and spec.type != T.ANY:
            raise NodeDefinitionError(
                f"{where}: input {spec.name!r} of type {spec.type} cannot take a constant"
            )
        if spec.has_default and spec.default is not None and spec.accepts_constant:
            if callable(spec.choices):
                continue  # the list is only known at run time
            problem = check_value(spec, spec.default)
            if problem:
                raise NodeDefinitionError(f"{where}: default of {spec.name!r} {problem}")
    bad = [v for v in cls.input_migrations if not 1 <= v < cls.version]
    if bad:
        raise NodeDefinitionError(f"{where}: input_migrations for versions {bad} out of 1..{cls.version - 1}")
