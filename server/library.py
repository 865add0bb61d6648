"""The workflow library: named workflows the page saves on the server, and the examples.

A workflow named ``NAME`` is the file ``LIBRARY/NAME.json`` (the folder is made on the
first save). Names are plain: a letter, digit or ``_`` first, then letters, digits,
spaces and ``. _ - ( ) +``, at most 100 characters, so a name never holds a folder
part and never starts with a dot. What is saved must read as a workflow file (format
version, nodes with a type and inputs: :func:`check_workflow_file`), but need not be
valid: an unfinished graph, or one with node types this studio lacks, is saved all
the same. Files are written whole or not at all (a temporary file, then a rename),
and a save never replaces another workflow unless asked to; a rename never does.

The examples are the repository's ``workflows/NAME.json``, read only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from graph.strict_json import JsonValueError, find_problems, parse_json
from graph.workflow import VersionError, Workflow, migrate

#: A workflow's name in the library (and an example's).
NAME_PATTERN = re.compile(r"[\w][\w .()+-]{0,99}")
#: A workflow file's suffix in the library and the examples folder.
SUFFIX = ".json"


class LibraryError(Exception):
    """A library request that cannot be done; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class NotAWorkflow(ValueError):
    """Data that does not read as a workflow file; the message says why."""


@dataclass(frozen=True)
class Saved:
    """A save's outcome: the name, and whether an existing workflow was replaced."""

    name: str
    replaced: bool


def check_name(name: str) -> str:
    """``name`` when it is a usable workflow name, else a 400 :class:`LibraryError`."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        shown = repr(name[:40]) if isinstance(name, str) else "that"
        raise LibraryError(
            400,
            f"{shown} is not a usable workflow name: start with a letter or digit, then letters, digits, "
            "spaces and . _ - ( ) +, at most 100 characters",
        )
    return name


def check_workflow_file(value: Any) -> dict[str, Any]:
    """A workflow (an object, or its JSON text) as a file of the current format, migrated from an
    older one; :class:`NotAWorkflow` when it is not one. The nodes are not validated: unknown node
    types, missing inputs and broken links are left for the page (and ``/api/validate``) to show."""
    if isinstance(value, str):
        try:
            value = parse_json(value)
        except RecursionError:
            raise NotAWorkflow("the workflow is nested too deep") from None
        except (JsonValueError, ValueError) as exc:
            raise NotAWorkflow(f"the workflow is not JSON the studio takes: {exc}") from None
    problems, _ = find_problems(value)
    if problems:
        raise NotAWorkflow(f"the workflow holds a value a workflow file may not: {problems[0]}")
    if not isinstance(value, dict):
        raise NotAWorkflow('a workflow is a JSON object with "version" and "nodes"')
    try:
        data = migrate(dict(value))
    except VersionError as exc:
        raise NotAWorkflow(str(exc)) from None
    try:
        Workflow.model_validate(data)
    except ValidationError as exc:
        raise NotAWorkflow(f"this is not a workflow file: {_first_error(exc)}") from None
    return data


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "it does not match the workflow format"
    error = errors[0]
    where = ".".join(str(part) for part in error.get("loc", ()))
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"{where}: {error.get('msg', 'invalid')}{more}" if where else f"{error.get('msg')}{more}"


class Library:
    """The named workflows in ``folder`` and the examples in ``examples``."""

    def __init__(self, folder: Path, examples: Path) -> None:
        self.folder = Path(folder)
        self.examples = Path(examples)

    # -- listing and reading ---------------------------------------------------------------

    def list(self) -> list[dict[str, Any]]:
        """Every saved workflow, the most recently changed first: name, modified (seconds since
        1970), size (bytes)."""
        found = []
        for path in self._files(self.folder):
            try:
                stat = path.stat()
            except OSError:
                continue
            found.append({"name": path.stem, "modified": stat.st_mtime, "size": stat.st_size})
        found.sort(key=lambda entry: (-entry["modified"], entry["name"]))
        return found

    def list_examples(self) -> list[dict[str, Any]]:
        """The examples by name, each with its ``metadata.description`` (``""`` without one)."""
        found = []
        for path in sorted(self._files(self.examples), key=lambda p: p.stem):
            description = ""
            with contextlib.suppress(OSError, ValueError, RecursionError):
                metadata = json.loads(path.read_text(encoding="utf-8")).get("metadata")
                if isinstance(metadata, dict) and isinstance(metadata.get("description"), str):
                    description = metadata["description"]
            found.append({"name": path.stem, "description": description})
        return found

    def read(self, name: str) -> Any:
        """A saved workflow, as it was saved."""
        missing = f"there is no workflow named {name!r} in the library"
        return self._read(self._path(self.folder, name), missing)

    def read_example(self, name: str) -> Any:
        return self._read(self._path(self.examples, name), f"there is no example named {name!r}")

    @staticmethod
    def _files(folder: Path) -> list[Path]:
        """The workflow files directly in ``folder`` (usable names, regular files inside it)."""
        if not folder.is_dir():
            return []
        root = folder.resolve()
        files = []
        for path in folder.iterdir():
            if path.suffix != SUFFIX or not NAME_PATTERN.fullmatch(path.stem):
                continue
            with contextlib.suppress(OSError):
                if path.is_file() and path.resolve().is_relative_to(root):
                    files.append(path)
        return files

    @staticmethod
    def _path(folder: Path, name: str) -> Path:
        return folder / f"{check_name(name)}{SUFFIX}"

    def _read(self, path: Path, missing: str) -> Any:
        try:
            inside = path.resolve().is_relative_to(path.parent.resolve())
            text = path.read_text(encoding="utf-8") if inside and path.is_file() else None
        except (OSError, UnicodeDecodeError) as exc:
            if isinstance(exc, FileNotFoundError):
                raise LibraryError(404, missing) from None
            raise LibraryError(422, f"{path.name} cannot be read: {exc}") from None
        if text is None:
            raise LibraryError(404, missing)
        try:
            return parse_json(text)
        except (JsonValueError, ValueError, RecursionError) as exc:
            raise LibraryError(422, f"{path.name} is not a JSON file the studio reads: {exc}") from None

    # -- changing ----------------------------------------------------------------------------

    def save(self, name: str, workflow: Any, *, overwrite: bool = False) -> Saved:
        """Save ``workflow`` (an object or its text, checked by :func:`check_workflow_file`) as
        ``name``; a 409 :class:`LibraryError` when the name is taken and ``overwrite`` is false."""
        target = self._path(self.folder, name)
        try:
            data = check_workflow_file(workflow)
        except NotAWorkflow as exc:
            raise LibraryError(400, str(exc)) from None
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        self.folder.mkdir(parents=True, exist_ok=True)
        temporary = self._temporary(text)
        try:
            if overwrite:
                if target.is_dir() and not target.is_symlink():
                    raise LibraryError(409, f"{target.name} in the library is a folder; choose another name")
                replaced = os.path.lexists(target)
                os.replace(temporary, target)  # replaces the entry itself: a link is never followed
                return Saved(name, replaced)
            try:
                _link(temporary, target)
            except FileExistsError:
                raise LibraryError(
                    409, f"a workflow named {name!r} exists: save with overwrite, or choose another name"
                ) from None
            return Saved(name, False)
        finally:
            temporary.unlink(missing_ok=True)

    def _temporary(self, text: str) -> Path:
        """A hidden temporary file in the library holding ``text``, written through to the disk."""
        path = self.folder / f".saving-{secrets.token_hex(8)}{SUFFIX}"
        with path.open("x", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        return path

    def rename(self, name: str, to: str) -> str:
        """Give a saved workflow another name: 404 when it is missing, 409 when ``to`` is taken."""
        source = self._path(self.folder, name)
        target = self._path(self.folder, to)
        if not source.is_file() or not self._inside(source):
            raise LibraryError(404, f"there is no workflow named {name!r} in the library")
        if source == target:
            return to
        try:
            _link(source, target)
        except FileExistsError:
            raise LibraryError(409, f"a workflow named {to!r} exists: choose another name") from None
        source.unlink(missing_ok=True)
        return to

    def delete(self, name: str) -> None:
        path = self._path(self.folder, name)
        if not os.path.lexists(path) or path.is_dir():
            raise LibraryError(404, f"there is no workflow named {name!r} in the library")
        path.unlink()

    def _inside(self, path: Path) -> bool:
        return path.resolve().is_relative_to(self.folder.resolve())


def _link(source: Path, target: Path) -> None:
    """A second name for ``source``; FileExistsError when ``target`` is taken, even by a file made
    meanwhile (a hard link is made only where the name is free). On a file system without hard
    links, the name is checked and then taken by a rename."""
    try:
        os.link(source, target, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError:
        if os.path.lexists(target):
            raise FileExistsError(str(target)) from None
        os.replace(source, target)
