"""Training datasets through the API: pictures with captions go into the input folder's
``datasets/<name>/``, are listed with their counts, and nothing unsafe gets in (other folders,
files that are not pictures, image bombs, overwrites, other sites, requests without the token)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from graph.executor import Executor
from nodes.base import RunSettings
from nodes.registry import Registry
from server.api import api_router
from server.datasets import MAX_CAPTION_CHARS, dataset_names
from server.folders import StudioFolders
from server.jobs import JobQueue
from tests.test_file_safety import bomb_png

REPO = Path(__file__).resolve().parents[1]
TOKEN = "dataset-token"


@pytest.fixture
def folders(tmp_path: Path) -> StudioFolders:
    return StudioFolders(
        input_dir=tmp_path / "input", library_dir=tmp_path / "library", examples_dir=REPO / "workflows"
    )


@pytest.fixture
def jobs(registry: Registry, tmp_path: Path, folders: StudioFolders) -> Iterator[JobQueue]:
    settings = lambda: RunSettings(output_dir=tmp_path / "out", input_dirs=(folders.input_dir,))  # noqa: E731
    queue = JobQueue(Executor(registry), registry, settings)
    yield queue
    queue.close(timeout=10)


def client_of(jobs: JobQueue, folders: StudioFolders | None, token: str | None = None) -> TestClient:
    app = FastAPI()
    app.include_router(api_router(jobs, token=token, folders=folders))
    return TestClient(app)


@pytest.fixture
def client(jobs: JobQueue, folders: StudioFolders) -> Iterator[TestClient]:
    with client_of(jobs, folders) as test_client:
        yield test_client


def png(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(client: TestClient, dataset: str, name: str, body: bytes, caption: str | None = None) -> Any:
    params = {"name": name} if caption is None else {"name": name, "caption": caption}
    return client.post(f"/api/datasets/{dataset}/files", params=params, content=body)


def error_of(answer: Any, status: int) -> str:
    assert answer.status_code == status, (answer.status_code, answer.text[:300])
    return answer.json()["error"]


def test_pictures_and_captions_are_saved_listed_and_described(
    client: TestClient, folders: StudioFolders
) -> None:
    assert client.get("/api/datasets").json() == {"datasets": []}
    answer = upload(client, "my-star", "s1.png", png(), "a photo of  <star>\n at the top")
    assert answer.status_code == 201, answer.text
    assert answer.json() == {"dataset": "my-star", "name": "s1.png", "caption": "s1.txt"}
    assert upload(client, "my-star", "s2.png", png((0, 90, 200))).json()["caption"] is None
    assert upload(client, "my-star", "s2.txt", b"a blue <star>").status_code == 201
    assert upload(client, "my-star", "s3.webp", png()).status_code == 201

    folder = folders.input_dir / "datasets" / "my-star"
    assert (folder / "s1.txt").read_text() == "a photo of <star> at the top"  # one line
    assert Image.open(folder / "s1.png").size == (8, 8)
    assert client.get("/api/datasets").json() == {
        "datasets": [{"name": "my-star", "pictures": 3, "captions": 2}]
    }
    described = client.get("/api/datasets/my-star").json()
    assert described == {
        "name": "my-star",
        "pictures": [
            {"name": "s1.png", "caption": "a photo of <star> at the top"},
            {"name": "s2.png", "caption": "a blue <star>"},
            {"name": "s3.webp", "caption": None},
        ],
    }
    # the pictures are served as the input folder's (the panel's thumbnails)
    assert client.get("/api/inputs/datasets/my-star/s1.png").content == (folder / "s1.png").read_bytes()
    # and the training nodes offer the dataset (pictures in it) in the page's node list
    assert dataset_names([folders.input_dir]) == ["my-star"]
    nodes = {n["type"]: n for n in client.get("/api/nodes").json()}
    for node_type in ("TrainLoRA", "TrainEmbedding"):
        spec = next(s for s in nodes[node_type]["inputs"] if s["name"] == "dataset")
        assert spec["choices"] == ["my-star"]
    assert error_of(client.get("/api/datasets/nothing-here"), 404).startswith("there is no dataset")


def test_nothing_is_overwritten(client: TestClient, folders: StudioFolders) -> None:
    first = png((10, 10, 10))
    assert upload(client, "set", "a.png", first, "first").status_code == 201
    again = upload(client, "set", "a.png", png((250, 250, 250)), "second")
    assert again.json() == {"dataset": "set", "name": "a_2.png", "caption": "a_2.txt"}
    folder = folders.input_dir / "datasets" / "set"
    assert (folder / "a.png").read_bytes() == first
    assert (folder / "a.txt").read_text() == "first"
    assert (folder / "a_2.txt").read_text() == "second"
    assert "not overwritten" in error_of(upload(client, "set", "a.txt", b"third"), 409)
    assert (folder / "a.txt").read_text() == "first"
    # a stray caption that would pair with the numbered picture: the picture is not kept either
    (folder / "b_2.txt").write_text("stray")
    (folder / "b.png").write_bytes(first)
    assert "already in the dataset" in error_of(upload(client, "set", "b.png", png(), "new"), 409)
    assert not (folder / "b_2.png").exists()


@pytest.mark.parametrize(
    ("dataset", "name"),
    [
        ("..", "a.png"),
        (".hidden", "a.png"),
        ("a..b", "a.png"),
        ("has space", "a.png"),
        ("x" * 65, "a.png"),
        ("ok", "../a.png"),
        ("ok", "sub/a.png"),
        ("ok", "..\\a.png"),
        ("ok", ".a.png"),
        ("ok", "a.exe"),
        ("ok", "a.gif"),
        ("ok", "a.json"),
    ],
)
def test_names_that_lead_elsewhere_or_are_not_dataset_files_are_refused(
    client: TestClient, folders: StudioFolders, dataset: str, name: str
) -> None:
    answer = upload(client, dataset, name, png())
    assert answer.status_code in (400, 404), (answer.status_code, answer.text)
    assert "error" in answer.json()
    assert not any(p.is_file() for p in folders.input_dir.parent.rglob("a.*"))
    assert not (folders.input_dir / "datasets" / "ok").exists()  # no folder made for a refused file


def test_links_leading_outside_the_input_folder_are_refused(
    client: TestClient, folders: StudioFolders, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (folders.input_dir / "datasets").mkdir(parents=True)
    os.symlink(outside, folders.input_dir / "datasets" / "linked")
    assert "outside the input folder" in error_of(upload(client, "linked", "a.png", png()), 403)
    assert "outside the input folder" in error_of(client.get("/api/datasets/linked"), 403)
    assert client.get("/api/datasets").json() == {"datasets": []}
    assert not list(outside.iterdir())


def test_files_that_are_not_pictures_or_text_are_refused(
    client: TestClient, folders: StudioFolders, tmp_path: Path
) -> None:
    assert "not an image" in error_of(upload(client, "set", "x.png", b"<html>"), 400)
    assert "empty" in error_of(upload(client, "set", "x.png", b""), 400)
    assert "too large to open safely" in error_of(
        upload(client, "set", "bomb.png", bomb_png(tmp_path / "b.png").read_bytes()), 400
    )
    assert "UTF-8" in error_of(upload(client, "set", "x.txt", b"\xff\xfe\x00bad"), 400)
    assert "NUL" in error_of(upload(client, "set", "y.txt", b"a\x00b"), 400)
    long_caption = "w" * (MAX_CAPTION_CHARS + 1)
    assert error_of(upload(client, "set", "z.txt", long_caption.encode()), 400)
    folder = folders.input_dir / "datasets" / "set"
    assert not folder.exists() or not list(folder.iterdir())


def test_the_routes_keep_the_api_rules(jobs: JobQueue, folders: StudioFolders) -> None:
    with client_of(jobs, folders, token=TOKEN) as guarded:
        assert guarded.get("/api/datasets").status_code == 401
        assert upload(guarded, "set", "a.png", png()).status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        evil = {**auth, "Origin": "https://evil.example"}
        answer = guarded.post("/api/datasets/set/files?name=a.png", content=png(), headers=evil)
        assert answer.status_code == 403
        answer = guarded.post("/api/datasets/set/files?name=a.png", content=png(), headers=auth)
        assert answer.status_code == 201
    with client_of(jobs, None) as bare:
        assert "no input folder" in error_of(bare.get("/api/datasets"), 404)
        assert "no input folder" in error_of(upload(bare, "set", "a.png", png()), 404)
