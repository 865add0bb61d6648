"""``GET /view`` and ``POST /upload/image``: pictures out of the output folder, into the input folder.

Files are served only from the output folder (and the input folder for
``type=input``) under the rules of ``/api/files`` (:func:`server.files.output_file`:
no absolute paths, ``..``, hidden parts or links leading out, pictures and
videos only). Uploads go only into the input folder, at most two folders deep,
checked as the page checks them (a plain name, a picture that can be read) and
never over an existing file unless ``overwrite`` asks.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from fastapi import Query, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from server.answers import ApiError
from server.files import FileRefused, output_file
from server.jobs import JobQueue

#: Largest upload taken by ``/upload/image``.
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
#: Deepest subfolder an upload may name (LoadImage lists files three levels down).
MAX_UPLOAD_DEPTH = 2
#: Headers of a served file: never sniffed into a page, never run as one.
_SERVED_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cache-Control": "no-cache",
}


class ComfyFiles:
    """The file routes over the queue's output folder and the settings' first input folder."""

    def __init__(self, jobs: JobQueue) -> None:
        self.jobs = jobs

    def input_dir(self) -> Path:
        dirs = self.jobs.settings_factory().input_dirs
        if not dirs:
            raise ApiError(404, "this studio has no input folder")
        return Path(dirs[0])

    def view(
        self,
        filename: str = Query(..., max_length=1024),
        subfolder: str = Query("", max_length=1024),
        type: str = Query("output", max_length=20),  # noqa: A002 - ComfyUI's parameter name
    ) -> FileResponse:
        if type == "output":
            root = self.jobs.output_dir
        elif type == "input":
            root = self.input_dir()
        elif type == "temp":
            raise ApiError(404, "the studio keeps no temp folder: previews come over the websocket")
        else:
            raise ApiError(400, "type must be output or input")
        if not filename or "/" in filename or "\\" in filename:
            raise ApiError(400, "filename must be a plain file name; put folders in subfolder")
        try:
            target = output_file(root, f"{subfolder.rstrip('/')}/{filename}" if subfolder else filename)
        except FileRefused as exc:
            raise ApiError(exc.status, exc.message.replace("output folder", f"{type} folder")) from None
        return FileResponse(target, headers=_SERVED_HEADERS)

    async def upload_image(self, request: Request) -> dict[str, Any]:
        declared = request.headers.get("content-length", "").strip()
        if not (declared.isascii() and declared.isdecimal()):
            raise ApiError(411, "send the upload with a Content-Length")
        if int(declared) > MAX_UPLOAD_BYTES:
            raise ApiError(413, f"the upload is larger than {MAX_UPLOAD_BYTES // 2**20} MB")
        try:
            form = await request.form(max_files=1, max_fields=16)
        except Exception as exc:  # noqa: BLE001 - multipart's errors have no common base worth naming
            raise ApiError(400, f"send the picture as multipart/form-data: {exc}") from None
        try:
            image = form.get("image")
            if not isinstance(image, UploadFile) or not image.filename:
                raise ApiError(400, 'send the picture as the multipart file field "image"')
            kind = str(form.get("type") or "input")
            if kind != "input":
                raise ApiError(
                    403, f"uploads go into the input folder only (type 'input', not {kind[:20]!r})"
                )
            overwrite = str(form.get("overwrite") or "").strip().lower() in ("true", "1", "yes")
            subfolder = str(form.get("subfolder") or "")
            saved, parts = await run_in_threadpool(
                self._save, image.file, image.filename, subfolder, overwrite
            )
        finally:
            await form.close()
        return {"name": saved.name, "subfolder": "/".join(parts), "type": "input"}

    def _save(self, file: BinaryIO, name: str, subfolder: str, overwrite: bool) -> tuple[Path, list[str]]:
        """Save an upload as the page does: checked name and picture, never over a file unless asked."""
        from server.inputs import InputRefused, check_name, save_upload

        try:
            name = check_name(name)
            parts = _subfolder_parts(subfolder)
        except InputRefused as exc:
            raise ApiError(400, str(exc)) from None
        folder = self._folder(parts)
        with tempfile.TemporaryDirectory(prefix="studio-upload-") as scratch:
            staged = Path(scratch) / name
            with staged.open("wb") as out:
                shutil.copyfileobj(file, out)
            try:
                saved = save_upload(folder, staged, name)
            except InputRefused as exc:
                raise ApiError(400, str(exc)) from None
        if overwrite and saved.name != name:
            target = folder / name
            if target.is_dir() and not target.is_symlink():
                return saved, parts  # a folder is never replaced: the picture keeps its new name
            os.replace(saved, target)  # replaces the entry itself (a link is never followed)
            saved = target
        return saved, parts

    def _folder(self, parts: list[str]) -> Path:
        """The upload's folder inside the input folder, made if missing.

        Checked before it is made as well as after: a link inside the input folder
        must not get folders made where it leads.
        """
        root = self.input_dir().resolve()
        folder = root.joinpath(*parts)
        if not folder.resolve().is_relative_to(root):
            raise ApiError(403, "that subfolder leads outside the input folder")
        folder.mkdir(parents=True, exist_ok=True)
        if not folder.resolve().is_relative_to(root):
            raise ApiError(403, "that subfolder leads outside the input folder")
        return folder


def _subfolder_parts(subfolder: str) -> list[str]:
    """An upload's subfolder as checked parts (no '..', hidden or odd names, at most two levels)."""
    from server.inputs import InputRefused

    text = subfolder.replace("\\", "/").strip()
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        raise InputRefused("subfolder must be a folder inside the input folder, not an absolute path")
    parts = [part for part in text.split("/") if part.strip()]
    for part in parts:
        if part in (".", "..") or part.startswith(".") or not re.match(r"^[\w][\w .()+-]*$", part):
            raise InputRefused(f"subfolder part {part[:40]!r} is not a usable folder name")
    if len(parts) > MAX_UPLOAD_DEPTH:
        raise InputRefused(f"subfolder may be at most {MAX_UPLOAD_DEPTH} folders deep")
    return parts
