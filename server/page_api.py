"""The routes the studio's page needs besides jobs: the input folder (LoadImage's pictures,
uploads, painted masks), the workflow library and the examples, checking and importing
workflows, the node types with the pictures they can load, and the checkpoints.

:class:`PageApi` holds the handlers; :func:`add_page_routes` puts them on the ``/api``
router (server/api.py), behind the same checks as every route there.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from graph.validate import validate
from nodes import types as T
from server.answers import SERVED_HEADERS, ApiError, SafeJSONResponse, only_keys, read_body, read_json
from server.datasets import dataset_names
from server.files import FileRefused
from server.folders import StudioFolders
from server.importing import ImportRefused, import_file
from server.inputs import InputRefused, input_picture, list_images, save_bytes
from server.jobs import JobQueue
from server.library import Library, LibraryError
from server.model_info import ModelCatalog

#: Largest picture taken by ``POST /api/inputs``.
MAX_UPLOAD_BYTES = 64 * 1024 * 1024


class PageApi:
    """The page's handlers over the job queue (its registry, services and run settings)
    and ``folders`` (without them, the folder routes answer ``404``)."""

    def __init__(self, jobs: JobQueue, folders: StudioFolders | None = None) -> None:
        self.jobs = jobs
        self.folders = folders
        self.library = Library(folders.library_dir, folders.examples_dir) if folders is not None else None
        self.model_catalog = ModelCatalog()

    def nodes(self) -> list[dict[str, Any]]:
        """Every node type; inputs naming a picture in the input folder list those there."""
        described = self.jobs.registry.describe()
        pictures: list[str] | None = None
        for node in described:
            for spec in node["inputs"]:
                if spec.get("input_file"):
                    pictures = list_images(self._input_dirs()) if pictures is None else pictures
                    spec["choices"] = list(pictures)
                    spec["file_list"] = True
                elif spec.get("dataset_folder"):  # training nodes: the datasets (server/datasets.py)
                    datasets = dataset_names(self._input_dirs())
                    if datasets:  # none yet: the name is typed
                        spec["choices"] = datasets
        return described

    @staticmethod
    def sockets() -> dict[str, Any]:
        """The socket types' colours (nodes/types.py), so the page draws links as declared."""
        return {"colors": dict(T.COLORS)}

    def models(self) -> dict[str, Any]:
        return self.model_catalog.answer(self.jobs.registry.services)

    # -- checking and importing workflows ------------------------------------------------------

    async def validate(self, request: Request) -> dict[str, Any]:
        body = only_keys(await read_json(request), ("workflow",), (), '{"workflow": {...} or "text"}')
        checked = await run_in_threadpool(validate, body["workflow"], self.jobs.registry)
        return {"valid": checked.ok, "issues": [issue.to_dict() for issue in checked.issues]}

    async def import_(
        self, request: Request, name: str = Query("", max_length=1024, description="the file's name, shown")
    ) -> dict[str, Any]:
        raw = await read_body(request)
        try:
            imported = await run_in_threadpool(import_file, raw, name)
        except ImportRefused as exc:
            raise ApiError(400, str(exc)) from None
        return imported.to_dict()

    # -- the input folder -----------------------------------------------------------------

    def _input_dirs(self) -> list[Path]:
        """Where LoadImage finds pictures: the input folder first, then the run settings' input
        folders (the studio adds the examples', whose workflows load ``assets/...``)."""
        folders = [self.folders.input_dir] if self.folders is not None else []
        folders += [Path(folder) for folder in self.jobs.settings_factory().input_dirs]
        unique: dict[Path, Path] = {}
        for folder in folders:
            unique.setdefault(folder.resolve(), folder)
        return list(unique.values())

    def _input_dir(self) -> Path:
        if self.folders is None:
            raise ApiError(404, "this server has no input folder")
        return self.folders.input_dir

    def inputs(self) -> dict[str, Any]:
        self._input_dir()
        return {"files": list_images(self._input_dirs())}

    async def upload(
        self, request: Request, name: str = Query(..., max_length=255, description="the picture's file name")
    ) -> JSONResponse:
        folder = self._input_dir()
        raw = await read_body(request, MAX_UPLOAD_BYTES)
        try:
            saved = await run_in_threadpool(save_bytes, folder, raw, name)
        except InputRefused as exc:
            raise ApiError(400, str(exc)) from None
        return SafeJSONResponse({"name": saved.name}, status_code=201)

    def input_file(self, path: str) -> FileResponse:
        """A picture LoadImage would read: from the first input folder that has it."""
        missing = FileRefused(404, f"there is no picture {path[:200]!r} in the input folder")
        for folder in [self._input_dir(), *self._input_dirs()[1:]]:
            try:
                return FileResponse(input_picture(folder, path), headers=SERVED_HEADERS)
            except FileRefused as exc:
                if exc.status != 404:
                    raise ApiError(exc.status, exc.message) from None
        raise ApiError(missing.status, missing.message)

    # -- the workflow library and the examples ---------------------------------------------------

    def _library(self) -> Library:
        if self.library is None:
            raise ApiError(404, "this server has no workflow library folder")
        return self.library

    async def _in_library(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await run_in_threadpool(call, *args, **kwargs)
        except LibraryError as exc:
            raise ApiError(exc.status, exc.message) from None

    async def library_list(self) -> dict[str, Any]:
        library = self._library()
        workflows = await self._in_library(library.list)
        examples = await self._in_library(library.list_examples)
        return {"workflows": workflows, "examples": examples}

    async def library_get(self, name: str) -> Any:
        return await self._in_library(self._library().read, name)

    async def library_put(self, name: str, request: Request) -> JSONResponse:
        library = self._library()
        body = only_keys(
            await read_json(request),
            ("workflow",),
            ("overwrite",),
            '{"workflow": {...} or "text", "overwrite": false}',
        )
        overwrite = body.get("overwrite", False)
        if not isinstance(overwrite, bool):
            raise ApiError(400, "overwrite must be true or false")
        saved = await self._in_library(library.save, name, body["workflow"], overwrite=overwrite)
        return SafeJSONResponse(
            {"name": saved.name, "replaced": saved.replaced}, status_code=200 if saved.replaced else 201
        )

    async def library_rename(self, name: str, request: Request) -> dict[str, Any]:
        library = self._library()
        body = only_keys(await read_json(request), ("to",), (), '{"to": "new name"}')
        if not isinstance(body["to"], str):
            raise ApiError(400, "to must be the new name, as text")
        return {"name": await self._in_library(library.rename, name, body["to"])}

    async def library_delete(self, name: str) -> dict[str, Any]:
        await self._in_library(self._library().delete, name)
        return {"name": name, "deleted": True}

    async def example(self, name: str) -> Any:
        if self.folders is None:
            raise ApiError(404, "this server has no examples folder")
        return await self._in_library(self._library().read_example, name)


def add_page_routes(router: APIRouter, page: PageApi) -> None:
    """The page's routes on the ``/api`` router."""
    router.add_api_route("/nodes", page.nodes, methods=["GET"])
    router.add_api_route("/models", page.models, methods=["GET"])
    router.add_api_route("/sockets", page.sockets, methods=["GET"])
    router.add_api_route("/validate", page.validate, methods=["POST"])
    router.add_api_route("/import", page.import_, methods=["POST"])
    router.add_api_route("/inputs", page.inputs, methods=["GET"])
    router.add_api_route("/inputs", page.upload, methods=["POST"], status_code=201, response_model=None)
    router.add_api_route("/inputs/{path:path}", page.input_file, methods=["GET"], response_model=None)
    router.add_api_route("/library", page.library_list, methods=["GET"])
    router.add_api_route("/library/{name}", page.library_get, methods=["GET"])
    router.add_api_route("/library/{name}", page.library_put, methods=["PUT"], response_model=None)
    router.add_api_route("/library/{name}", page.library_delete, methods=["DELETE"])
    router.add_api_route("/library/{name}/rename", page.library_rename, methods=["POST"])
    router.add_api_route("/examples/{name}", page.example, methods=["GET"])
