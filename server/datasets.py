"""Concept-training datasets in the input folder: upload, list and describe them.

A dataset is a folder ``datasets/<name>/`` under the studio's input folder holding pictures
and, beside each, an optional caption with the same stem (``cat1.png`` + ``cat1.txt``), as
the trainer (training/concept.py) and the TrainLoRA / TrainEmbedding nodes read them. The
page's Train panel uploads pictures one request at a time, each with its caption (typed in
the panel or read from a ``.txt`` the user picked); scripts may send a ``.txt`` on its own.

Rules, as for the input folder's other uploads (server/inputs.py): names are plain (no folder
parts, nothing hidden, no ``..``), pictures are opened with Pillow before they are kept (image
bombs refused), nothing is ever overwritten (a picture whose name is taken gets a number, a
caption whose name is taken is refused), a folder reached through a symbolic link that leads
outside the input folder is refused, and sizes are limited (bytes per picture, characters per
caption, pictures per dataset). The routes sit on the ``/api`` router behind its token and
same-origin checks (server/api.py).

Routes:

- ``GET /api/datasets``: ``{"datasets": [{"name", "pictures", "captions"}]}``
- ``GET /api/datasets/{dataset}``: ``{"name", "pictures": [{"name", "caption"}]}``
- ``POST /api/datasets/{dataset}/files?name=FILE[&caption=TEXT]``: the body is a picture (its
  caption, if given, is saved beside it) or, for ``FILE.txt``, a caption's UTF-8 text;
  ``201 {"dataset", "name", "caption"}``. The dataset folder is made on the first upload.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from server.answers import ApiError, SafeJSONResponse, read_body
from server.folders import StudioFolders
from server.inputs import InputRefused, check_name, save_bytes

#: The folder under the input folder that holds the datasets.
DATASETS_DIR = "datasets"
#: Picture types a dataset takes (those the trainer reads).
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
CAPTION_SUFFIX = ".txt"
#: Largest picture taken, in bytes.
MAX_PICTURE_BYTES = 32 * 1024 * 1024
#: Longest caption, in characters (CLIP reads 77 tokens; this leaves room for long ones).
MAX_CAPTION_CHARS = 2000
#: Most pictures one dataset may hold.
MAX_PICTURES = 500
#: Most datasets listed.
MAX_LISTED = 200

_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")


class DatasetRefused(ValueError):
    """A request about a dataset that cannot be done; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def check_dataset_name(name: str) -> str:
    """``name`` when it can name a dataset folder (letters, digits, ``_ . + -``, at most 64,
    not starting with a dot), else :class:`DatasetRefused`."""
    name = str(name or "").strip()
    if not name:
        raise DatasetRefused(400, "give the dataset a name")
    if not _DATASET_NAME.match(name) or ".." in name:
        raise DatasetRefused(
            400,
            f"{name[:80]!r} cannot name a dataset: use letters, digits, '_', '-', '.' or '+' "
            "(at most 64, starting with a letter or digit)",
        )
    return name


def datasets_root(input_dir: Path) -> Path:
    """``input_dir/datasets``, checked to lie inside the input folder (links followed)."""
    root = Path(input_dir) / DATASETS_DIR
    if os.path.lexists(root) and not root.resolve().is_relative_to(Path(input_dir).resolve()):
        raise DatasetRefused(403, "the input folder's 'datasets' leads outside it; make it a real folder")
    return root


def dataset_folder(input_dir: Path, name: str, *, create: bool = False) -> Path:
    """The folder of dataset ``name`` (made when ``create``); :class:`DatasetRefused` when the
    name is unusable, the folder is missing (404) or it leads outside the input folder."""
    name = check_dataset_name(name)
    root = datasets_root(input_dir)
    folder = root / name
    if create and not os.path.lexists(folder):
        folder.mkdir(parents=True, exist_ok=True)
    if not folder.is_dir():
        raise DatasetRefused(404, f"there is no dataset {name!r}; upload pictures into it first")
    if not folder.resolve().is_relative_to(Path(input_dir).resolve()):
        raise DatasetRefused(403, f"dataset {name!r} leads outside the input folder; make it a real folder")
    return folder


def _pictures(folder: Path) -> list[Path]:
    return sorted(
        path
        for path in folder.iterdir()
        if path.suffix.lower() in PICTURE_SUFFIXES and not path.name.startswith(".") and path.is_file()
    )


def read_caption(picture: Path) -> str | None:
    """The caption beside a picture (same stem, ``.txt``), or None when there is none."""
    caption = picture.with_suffix(CAPTION_SUFFIX)
    if not caption.is_file():
        return None
    try:
        return caption.read_text(encoding="utf-8", errors="replace")[:MAX_CAPTION_CHARS].strip()
    except OSError:
        return None


def list_datasets(input_dir: Path) -> list[dict[str, Any]]:
    """Every dataset: its name, how many pictures it holds and how many of them have a caption."""
    root = datasets_root(input_dir)
    if not root.is_dir():
        return []
    found = []
    base = Path(input_dir).resolve()
    for folder in sorted(root.iterdir()):
        if not folder.is_dir() or not _DATASET_NAME.match(folder.name):
            continue
        if not folder.resolve().is_relative_to(base):
            continue
        pictures = _pictures(folder)
        captions = sum(1 for picture in pictures if picture.with_suffix(CAPTION_SUFFIX).is_file())
        found.append({"name": folder.name, "pictures": len(pictures), "captions": captions})
        if len(found) >= MAX_LISTED:
            break
    return found


def dataset_names(input_dirs: list[Path] | tuple[Path, ...]) -> list[str]:
    """The names of the datasets in the input folders that hold a picture (first folder first):
    the choices a training node's ``dataset`` input offers."""
    names: dict[str, None] = {}
    for folder in input_dirs:
        try:
            for entry in list_datasets(Path(folder)):
                if entry["pictures"]:
                    names.setdefault(entry["name"], None)
        except (DatasetRefused, OSError):
            continue
    return list(names)


def describe_dataset(input_dir: Path, name: str) -> dict[str, Any]:
    """A dataset's pictures with their captions (``None`` where a picture has none)."""
    folder = dataset_folder(input_dir, name)
    pictures = [{"name": p.name, "caption": read_caption(p)} for p in _pictures(folder)]
    return {"name": folder.name, "pictures": pictures}


def check_caption(text: str) -> str:
    """A caption as it is saved: one line of text, at most :data:`MAX_CAPTION_CHARS` characters."""
    if "\x00" in text:
        raise DatasetRefused(400, "a caption is text: it may not hold NUL characters")
    text = " ".join(text.split())
    if len(text) > MAX_CAPTION_CHARS:
        raise DatasetRefused(400, f"the caption is longer than {MAX_CAPTION_CHARS} characters; shorten it")
    return text


def _write_new(path: Path, text: str) -> None:
    """Write ``text`` into a file that must not exist yet (``O_EXCL``: never follows a link)."""
    try:
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        raise DatasetRefused(
            409, f"{path.name!r} is already in the dataset; captions are not overwritten"
        ) from None
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(text)


def add_file(
    input_dir: Path, dataset: str, filename: str, data: bytes, caption: str | None = None
) -> dict[str, Any]:
    """Save an uploaded picture (with its caption, if given) or a ``.txt`` caption into a dataset.

    A picture whose name is taken gets a number (``cat_2.png``) and its caption that stem; a
    caption file whose name is taken is refused (409). The answer names what was saved.
    """
    check_dataset_name(dataset)
    if Path(str(filename)).suffix.lower() == CAPTION_SUFFIX:
        if caption is not None:
            raise DatasetRefused(400, "a caption file carries its text in the body, not in 'caption'")
        name = _check_file_name(filename, (CAPTION_SUFFIX,))
        try:
            text = check_caption(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise DatasetRefused(400, f"{name!r} is not UTF-8 text") from None
        folder = dataset_folder(input_dir, dataset, create=True)
        _write_new(folder / name, text)
        return {"dataset": folder.name, "name": name, "caption": name}
    name = _check_file_name(filename, PICTURE_SUFFIXES)
    text = check_caption(caption) if caption is not None else None
    folder = dataset_folder(input_dir, dataset, create=True)
    if len(_pictures(folder)) >= MAX_PICTURES:
        raise DatasetRefused(400, f"dataset {folder.name!r} holds {MAX_PICTURES} pictures, the most it may")
    try:
        saved = save_bytes(folder, data, name)
    except InputRefused as exc:
        raise DatasetRefused(400, str(exc)) from None
    caption_name = None
    if text:
        caption_path = saved.with_suffix(CAPTION_SUFFIX)
        try:
            _write_new(caption_path, text)
        except DatasetRefused:
            saved.unlink(missing_ok=True)
            raise DatasetRefused(
                409, f"{caption_path.name!r} is already in the dataset; rename the picture or remove it"
            ) from None
        caption_name = caption_path.name
    return {"dataset": folder.name, "name": saved.name, "caption": caption_name}


def _check_file_name(filename: str, suffixes: tuple[str, ...]) -> str:
    try:
        return check_name(filename, suffixes)
    except InputRefused as exc:
        message = str(exc).replace("is not an image file", "is not a file a dataset takes")
        raise DatasetRefused(400, message) from None


class DatasetApi:
    """The dataset routes' handlers over the page's folders (without them: ``404``)."""

    def __init__(self, folders: StudioFolders | None) -> None:
        self.folders = folders

    def _input_dir(self) -> Path:
        if self.folders is None:
            raise ApiError(404, "this server has no input folder")
        return self.folders.input_dir

    async def _call(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await run_in_threadpool(call, *args, **kwargs)
        except DatasetRefused as exc:
            raise ApiError(exc.status, exc.message) from None

    async def list(self) -> dict[str, Any]:
        return {"datasets": await self._call(list_datasets, self._input_dir())}

    async def get(self, dataset: str) -> dict[str, Any]:
        return await self._call(describe_dataset, self._input_dir(), dataset)

    async def upload(
        self,
        dataset: str,
        request: Request,
        name: str = Query(..., max_length=255, description="the file's name"),
        caption: str | None = Query(None, max_length=MAX_CAPTION_CHARS, description="the picture's caption"),
    ) -> SafeJSONResponse:
        input_dir = self._input_dir()
        raw = await read_body(request, MAX_PICTURE_BYTES)
        saved = await self._call(add_file, input_dir, dataset, name, raw, caption)
        return SafeJSONResponse(saved, status_code=201)


def add_dataset_routes(router: APIRouter, folders: StudioFolders | None) -> None:
    """The dataset routes on the ``/api`` router (before its catch-all)."""
    api = DatasetApi(folders)
    router.add_api_route("/datasets", api.list, methods=["GET"])
    router.add_api_route("/datasets/{dataset}", api.get, methods=["GET"])
    router.add_api_route(
        "/datasets/{dataset}/files", api.upload, methods=["POST"], status_code=201, response_model=None
    )
