"""ComfyUI's HTTP protocol on the studio's server, driven by a ComfyUI client library.

``comfy_api_simplified`` (from PyPI) is the client: it posts API-format prompts to
``/prompt``, follows them over ``/ws``, reads ``/history`` and fetches pictures with
``/view``, as it does against ComfyUI. One studio (``app.py``, jobs in a worker
process) serves the module; the oracle for its pictures is a headless ``app.py run``
of the same prompt converted by the importer.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import io
import json
import logging
import os
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import websockets
from comfy_api_simplified import ComfyApiError, ComfyApiWrapper
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from starlette.websockets import WebSocketDisconnect

from cli.comfy import convert, read_prompt
from graph.executor import Executor
from nodes.base import RunSettings
from nodes.registry import Registry
from server.comfy import comfy_router
from server.jobs import JobQueue
from tests.test_studio_loopback import free_port

REPO = Path(__file__).resolve().parent.parent
WAIT = 240.0
PROMPT_TEXT = "a red circle at the top left and a blue square in the center"

pytestmark = pytest.mark.slow


def txt2img_prompt(seed: int = 5, steps: int = 4, prefix: str = "ComfyUI") -> dict[str, Any]:
    """A txt2img prompt as ComfyUI's "Save (API Format)" writes it, for the bundled toy checkpoint."""
    return {
        "3": {
            "inputs": {
                "seed": seed,
                "steps": steps,
                "cfg": 5.0,
                "sampler_name": "dpmpp_2m",
                "scheduler": "normal",
                "denoise": 1.0,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
            "class_type": "KSampler",
            "_meta": {"title": "KSampler"},
        },
        "4": {
            "inputs": {"ckpt_name": "toy-sd"},
            "class_type": "CheckpointLoaderSimple",
            "_meta": {"title": "Load Checkpoint"},
        },
        "5": {
            "inputs": {"width": 32, "height": 32, "batch_size": 1},
            "class_type": "EmptyLatentImage",
            "_meta": {"title": "Empty Latent Image"},
        },
        "6": {
            "inputs": {"text": PROMPT_TEXT, "clip": ["4", 1]},
            "class_type": "CLIPTextEncode",
            "_meta": {"title": "CLIP Text Encode (Prompt)"},
        },
        "7": {
            "inputs": {"text": "", "clip": ["4", 1]},
            "class_type": "CLIPTextEncode",
            "_meta": {"title": "CLIP Text Encode (Prompt)"},
        },
        "8": {
            "inputs": {"samples": ["3", 0], "vae": ["4", 2]},
            "class_type": "VAEDecode",
            "_meta": {"title": "VAE Decode"},
        },
        "9": {
            "inputs": {"filename_prefix": prefix, "images": ["8", 0]},
            "class_type": "SaveImage",
            "_meta": {"title": "Save Image"},
        },
    }


# --- one studio for the module -------------------------------------------------------------------------


class Studio:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, folder: Path) -> None:
        self.proc = proc
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.out = folder / "out"
        self.input = folder / "input"
        self.folder = folder

    def ws_url(self, client_id: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ws?clientId={client_id}"


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    """``app.py`` serving on a free port, in a folder of its own (its input/ is there)."""
    folder = tmp_path_factory.mktemp("comfy-studio")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "GRADIO_ANALYTICS_ENABLED": "False"}
    args = [sys.executable, str(REPO / "app.py"), "--port", str(port), "--out", str(folder / "out")]
    args += ["--state", str(folder / "state")]
    with (folder / "server.log").open("wb") as log_file:
        proc = subprocess.Popen(args, cwd=folder, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    studio = Studio(proc, port, folder)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{studio.base}/prompt", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None, (folder / "server.log").read_text()
            assert time.monotonic() < deadline, "the studio did not start"
            time.sleep(0.5)
        yield studio
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


async def messages_until(
    ws: Any, done: Callable[[dict[str, Any]], bool], frames: list[bytes] | None = None
) -> list[dict[str, Any]]:
    """The JSON messages up to and including the first that ``done`` accepts (binary ones into ``frames``)."""
    seen: list[dict[str, Any]] = []
    while True:
        raw = await asyncio.wait_for(ws.recv(), WAIT)
        if isinstance(raw, bytes):
            if frames is not None:
                frames.append(raw)
            continue
        message = json.loads(raw)
        seen.append(message)
        if done(message):
            return seen


def end_of(prompt_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: (
        m["type"] == "executing" and m["data"]["node"] is None and m["data"]["prompt_id"] == prompt_id
    )


def pixels(data: bytes | Path) -> np.ndarray:
    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
        return np.asarray(image.convert("RGB"))


# --- the tests ----------------------------------------------------------------------------------------------


def test_a_comfyui_client_gets_the_picture_a_headless_run_of_the_converted_prompt_draws(
    studio: Studio, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="comfy_api_simplified.comfy_api_wrapper")
    api = ComfyApiWrapper(studio.base)
    prompt = txt2img_prompt(seed=5)
    images = api.queue_and_wait_images(prompt, "Save Image")  # POST /prompt, /ws, /history, /view
    assert len(images) == 1
    ((name, served),) = images.items()
    assert name.startswith("ComfyUI_") and name.endswith(".png")

    messages = [r.msg for r in caplog.records if isinstance(r.msg, dict) and "type" in r.msg]
    kinds = [m["type"] for m in messages]
    assert kinds[0] == "status" and "sid" in messages[0]["data"]
    assert "execution_start" in kinds and "execution_success" in kinds
    sampler = [m["data"] for m in messages if m["type"] == "progress"]
    assert [(p["node"], p["value"], p["max"]) for p in sampler] == [("3", n, 4) for n in range(1, 5)]
    executing = [m["data"]["node"] for m in messages if m["type"] == "executing"]
    assert executing[-1] is None and executing.index("3") < executing.index("8") < executing.index("9")
    (executed,) = [m["data"] for m in messages if m["type"] == "executed"]
    assert executed["node"] == "9" and executed["output"]["images"][0]["filename"] == name

    conversion = convert(read_prompt(prompt), "test")
    converted = tmp_path / "converted.json"
    converted.write_text(json.dumps(conversion.workflow))
    headless = tmp_path / "headless"
    run = subprocess.run(
        [sys.executable, str(REPO / "app.py"), "run", str(converted), "--out", str(headless), "--seed", "5"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=WAIT,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    (drawn,) = headless.glob("*.png")
    expected = pixels(drawn)
    assert expected.std() > 5  # a picture, not a flat field
    assert np.array_equal(pixels(served), expected)

    prompt_id = _last_prompt_id(studio)
    entry = api.get_history(prompt_id)[prompt_id]
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert entry["prompt"][1] == prompt_id and entry["prompt"][2] == prompt and entry["prompt"][4] == ["9"]


def _last_prompt_id(studio: Studio) -> str:
    history = requests.get(f"{studio.base}/history", timeout=30).json()
    return list(history)[-1]


def test_progress_and_previews_over_the_websocket_in_comfyuis_order(studio: Studio) -> None:
    api = ComfyApiWrapper(studio.base)

    async def scenario() -> tuple[str, list[dict[str, Any]], list[bytes]]:
        frames: list[bytes] = []
        async with websockets.connect(studio.ws_url("watcher")) as ws:
            body = {"prompt": txt2img_prompt(seed=9, steps=3), "client_id": "watcher"}
            body["extra_data"] = {"preview_method": "auto"}
            answer = requests.post(f"{studio.base}/prompt", json=body, timeout=60).json()
            assert answer["node_errors"] == {} and isinstance(answer["number"], int)
            seen = await messages_until(ws, end_of(answer["prompt_id"]), frames)
        return answer["prompt_id"], seen, frames

    prompt_id, seen, frames = asyncio.run(scenario())
    mine = [m for m in seen if m["data"].get("prompt_id") == prompt_id]
    kinds = [m["type"] for m in mine]
    assert kinds[0] == "execution_start"
    assert kinds.index("execution_start") < kinds.index("progress") < kinds.index("executed")
    assert kinds[-2:] == ["execution_success", "executing"]
    assert [m["data"]["value"] for m in mine if m["type"] == "progress"] == [1, 2, 3]
    assert frames, "no preview frame came"
    for frame in frames:
        assert struct.unpack(">II", frame[:8]) == (1, 2)  # a preview image, PNG
        with Image.open(io.BytesIO(frame[8:])) as preview:
            assert preview.format == "PNG" and min(preview.size) >= 1
    assert api.get_history(prompt_id)[prompt_id]["prompt"][3]["preview_method"] == "auto"


def test_a_bad_prompt_gets_comfyuis_400_naming_the_node(studio: Studio) -> None:
    api = ComfyApiWrapper(studio.base)
    unknown = txt2img_prompt()
    unknown["10"] = {"class_type": "FancyUpscale", "inputs": {"image": ["8", 0], "factor": 2}}
    unknown["11"] = {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "up"}}
    with pytest.raises(ComfyApiError, match="400"):
        api.queue_prompt(unknown)
    answer = requests.post(f"{studio.base}/prompt", json={"prompt": unknown}, timeout=60)
    assert answer.status_code == 400
    body = answer.json()
    assert set(body["error"]) == {"type", "message", "details", "extra_info"}
    assert body["node_errors"]["10"]["class_type"] == "FancyUpscale"
    assert "FancyUpscale" in body["node_errors"]["10"]["errors"][0]["message"]
    assert body["node_errors"]["11"]["errors"][0]["extra_info"]["input_name"] == "images"

    invalid = txt2img_prompt()
    invalid["3"]["inputs"]["steps"] = -2
    invalid["4"]["inputs"]["ckpt_name"] = "no-such-model.safetensors"
    body = requests.post(f"{studio.base}/prompt", json={"prompt": invalid}, timeout=60).json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert set(body["node_errors"]) == {"3", "4"}
    assert body["node_errors"]["3"]["class_type"] == "KSampler"
    assert body["node_errors"]["3"]["errors"][0]["extra_info"]["input_name"] == "steps"
    assert body["node_errors"]["4"]["class_type"] == "CheckpointLoaderSimple"

    for bad in ({"prompt": "not a graph"}, {"workflow": {}}):
        answer = requests.post(f"{studio.base}/prompt", json=bad, timeout=60)
        assert answer.status_code == 400 and answer.json()["error"]["type"] == "invalid_prompt"


def test_interrupt_cancels_the_running_prompt_and_the_queue_deletes_a_waiting_one(studio: Studio) -> None:
    api = ComfyApiWrapper(studio.base)

    async def scenario() -> tuple[str, str, list[dict[str, Any]], dict[str, Any]]:
        async with websockets.connect(studio.ws_url("stopper")) as ws:
            long_id = api.queue_prompt(txt2img_prompt(steps=1000, prefix="long"), "stopper")["prompt_id"]
            waiting = api.queue_prompt(txt2img_prompt(steps=2, prefix="waiting"), "stopper")["prompt_id"]
            started = lambda m: m["type"] == "progress" and m["data"]["prompt_id"] == long_id  # noqa: E731
            before = await messages_until(ws, started)
            queue = api.get_queue()
            assert [item[1] for item in queue["queue_running"]] == [long_id]
            assert [item[1] for item in queue["queue_pending"]] == [waiting]
            number, _, prompt, extra, outputs = queue["queue_pending"][0]
            assert isinstance(number, int) and prompt["3"]["class_type"] == "KSampler"
            assert extra["client_id"] == "stopper" and outputs == ["9"]
            assert api.get_queue_size_before(waiting) == 1
            assert requests.post(f"{studio.base}/queue", json={"delete": [waiting]}, timeout=30).ok
            api.interrupt()
            seen = before + await messages_until(ws, end_of(long_id))
        return long_id, waiting, seen, api.get_queue()

    long_id, waiting, seen, queue = asyncio.run(scenario())
    (stopped,) = [m["data"] for m in seen if m["type"] == "execution_interrupted"]
    assert (
        stopped["prompt_id"] == long_id and stopped["node_id"] == "3" and stopped["node_type"] == "KSampler"
    )
    progress = [m["data"]["value"] for m in seen if m["type"] == "progress"]
    assert progress and max(progress) < 1000
    assert queue == {"queue_running": [], "queue_pending": []}
    entry = api.get_history(long_id)[long_id]
    assert entry["status"]["status_str"] == "error" and entry["status"]["studio_status"] == "cancelled"
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    assert api.get_history(waiting)[waiting]["status"]["studio_status"] == "cancelled"
    assert not list(studio.out.glob("waiting*"))  # deleted before it ran


def test_upload_image_never_overwrites_unless_asked(studio: Studio, tmp_path: Path) -> None:
    api = ComfyApiWrapper(studio.base)
    first, second = tmp_path / "one" / "dot.png", tmp_path / "two" / "dot.png"
    for path, color in ((first, (255, 0, 0)), (second, (0, 0, 255))):
        path.parent.mkdir()
        Image.new("RGB", (8, 6), color).save(path)
    assert api.upload_image(first, "uploads") == {"name": "dot.png", "subfolder": "uploads", "type": "input"}
    again = api.upload_image(second, "uploads")
    assert again["name"] == "dot_2.png"
    assert pixels(studio.input / "uploads" / "dot.png")[0, 0].tolist() == [255, 0, 0]
    assert api.get_image("dot_2.png", "uploads", "input") == second.read_bytes()

    with second.open("rb") as file:
        answer = requests.post(
            f"{studio.base}/upload/image",
            files={"image": ("dot.png", file)},
            data={"subfolder": "uploads", "overwrite": "true"},
            timeout=30,
        )
    assert answer.json() == {"name": "dot.png", "subfolder": "uploads", "type": "input"}
    assert pixels(studio.input / "uploads" / "dot.png")[0, 0].tolist() == [0, 0, 255]

    refused = [
        ({"image": ("notes.png", b"not a picture")}, {}, 400),
        ({"image": ("dot.png", second.read_bytes())}, {"subfolder": "../escape"}, 400),
        ({"image": ("dot.png", second.read_bytes())}, {"subfolder": "/tmp"}, 400),
        ({"image": ("../dot.png", second.read_bytes())}, {}, 400),
        ({"image": ("dot.png", second.read_bytes())}, {"type": "output"}, 403),
        ({"picture": ("dot.png", second.read_bytes())}, {}, 400),
    ]
    for files, data, status in refused:
        answer = requests.post(f"{studio.base}/upload/image", files=files, data=data, timeout=30)
        assert answer.status_code == status, (files, data, answer.text)
        assert "error" in answer.json()
    assert not (studio.folder / "escape").exists() and not (studio.out / "dot.png").exists()


def test_view_serves_only_pictures_from_the_output_and_input_folders(studio: Studio) -> None:
    studio.out.mkdir(exist_ok=True)
    (studio.out / "notes.txt").write_text("secret")
    (studio.out / "outside.png").symlink_to(studio.folder / "server.log")
    Image.new("RGB", (4, 4)).save(studio.folder / "state" / "beside.png")
    cases = [
        ({"filename": "../state/beside.png"}, 400),
        ({"filename": "beside.png", "subfolder": "../state"}, 400),
        ({"filename": "beside.png", "subfolder": str(studio.folder / "state")}, 400),
        ({"filename": "beside.png", "subfolder": "..%2fstate"}, 403),  # a name starting with "."
        ({"filename": "notes.txt"}, 403),
        ({"filename": "outside.png"}, 403),
        ({"filename": "history.sqlite3", "subfolder": ".studio"}, 403),
        ({"filename": "beside.png", "type": "temp"}, 404),
        ({"filename": "beside.png", "type": "state"}, 400),
        ({"filename": "nothing.png"}, 404),
    ]
    for params, status in cases:
        answer = requests.get(f"{studio.base}/view", params=params, timeout=30)
        assert answer.status_code == status, (params, answer.text)
        assert "error" in answer.json()
    raw = http.client.HTTPConnection("127.0.0.1", studio.port, timeout=30)
    raw.request("GET", "/view?filename=..%2F..%2Fstate%2Fbeside.png")
    assert raw.getresponse().status == 400


def _handshake(
    studio: Studio, host: str | None = None, origin: str | None = None, auth: str | None = None
) -> int:
    """The status a websocket upgrade of /ws gets (101: accepted)."""
    connection = http.client.HTTPConnection("127.0.0.1", studio.port, timeout=30)
    try:
        connection.putrequest("GET", "/ws?clientId=probe", skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", host or f"127.0.0.1:{studio.port}")
        connection.putheader("Upgrade", "websocket")
        connection.putheader("Connection", "Upgrade")
        connection.putheader("Sec-WebSocket-Key", base64.b64encode(os.urandom(16)).decode())
        connection.putheader("Sec-WebSocket-Version", "13")
        for name, value in (("Origin", origin), ("Authorization", auth)):
            if value is not None:
                connection.putheader(name, value)
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


def test_a_foreign_host_or_origin_is_refused_on_prompt_and_on_the_websocket(studio: Studio) -> None:
    here = f"127.0.0.1:{studio.port}"
    assert _handshake(studio) == 101
    assert _handshake(studio, origin=f"http://{here}") == 101
    assert _handshake(studio, host=f"rebound.example:{studio.port}") == 403
    assert _handshake(studio, origin="http://evil.example") == 403
    assert _handshake(studio, origin="null") == 403

    body = json.dumps({"prompt": txt2img_prompt(steps=1)}).encode()
    for headers in ({"Host": f"rebound.example:{studio.port}"}, {"Origin": "http://evil.example"}):
        connection = http.client.HTTPConnection("127.0.0.1", studio.port, timeout=30)
        connection.putrequest("POST", "/prompt", skip_host=True)
        connection.putheader("Host", headers.get("Host", here))
        if "Origin" in headers:
            connection.putheader("Origin", headers["Origin"])
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        assert response.status == 403, headers
        assert "error" in json.loads(response.read())
        connection.close()
    assert (
        requests.get(f"{studio.base}/queue", headers={"Host": "rebound.example"}, timeout=30).status_code
        == 403
    )


def test_object_info_describes_the_comfyui_classes_the_importer_converts(studio: Studio) -> None:
    api = ComfyApiWrapper(studio.base)
    info = api.get_object_info("KSampler")["KSampler"]
    required = info["input"]["required"]
    assert set(required) >= {
        "model",
        "seed",
        "steps",
        "cfg",
        "sampler_name",
        "scheduler",
        "positive",
        "negative",
        "latent_image",
        "denoise",
    }
    assert required["model"] == ["MODEL"] and required["latent_image"] == ["LATENT"]
    kind, options = required["steps"]
    assert kind == "INT" and options["min"] == 1 and options["default"] >= 1
    assert "euler" in required["sampler_name"][0] and "karras" in required["scheduler"][0]
    assert info["output"] == ["LATENT"] and info["name"] == "KSampler" and info["output_node"] is False
    everything = api.get_object_info()
    assert {"CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "SaveImage"} <= set(everything)
    assert "toy-sd" in everything["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
    assert everything["CheckpointLoaderSimple"]["output"] == ["MODEL", "CLIP", "VAE"]
    assert everything["SaveImage"]["output_node"] is True
    assert api.get_object_info("NoSuchNode") == {}
    assert api.get_system_stats()["system"]["os"] == sys.platform
    assert isinstance(api.get_embeddings(), list)


# --- the token, on a server of the routes alone (no model runs) ------------------------------------------

TOKEN = "comfy-s3cret"


@pytest.fixture
def token_client(registry: Registry, tmp_path: Path) -> Iterator[TestClient]:
    queue = JobQueue(Executor(registry), registry, lambda: RunSettings(output_dir=tmp_path))
    app = FastAPI()
    app.include_router(comfy_router(queue, token=TOKEN))
    try:
        with TestClient(app) as client:
            yield client
    finally:
        queue.close(timeout=30)


def test_with_a_token_every_route_and_the_websocket_need_it(token_client: TestClient) -> None:
    basic = "Basic " + base64.b64encode(f"studio:{TOKEN}".encode()).decode()
    wrong = "Basic " + base64.b64encode(b"studio:guess").decode()
    assert token_client.get("/queue").status_code == 401
    assert token_client.get("/queue", headers={"Authorization": wrong}).status_code == 401
    assert token_client.get("/queue", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert token_client.get("/queue", headers={"Authorization": basic}).status_code == 200
    assert token_client.post("/prompt", json={"prompt": txt2img_prompt()}).status_code == 401
    with pytest.raises(WebSocketDisconnect) as refused:
        with token_client.websocket_connect("/ws?clientId=x"):
            pass
    assert refused.value.code == 1008
    foreign = {"Authorization": f"Bearer {TOKEN}", "Origin": "http://evil.example"}
    with pytest.raises(WebSocketDisconnect):
        with token_client.websocket_connect("/ws?clientId=x", headers=foreign):
            pass
    with token_client.websocket_connect("/ws?clientId=x", headers={"Authorization": basic}) as ws:
        assert ws.receive_json() == {
            "type": "status",
            "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "x"},
        }


def test_the_docs_describe_every_comfyui_route(registry: Registry, tmp_path: Path) -> None:
    text = (REPO / "docs" / "api.md").read_text()
    queue = JobQueue(Executor(registry), registry, lambda: RunSettings(output_dir=tmp_path))
    try:
        for route in comfy_router(queue).routes:
            methods = getattr(route, "methods", None) or {"WEBSOCKET"}
            for method in methods:
                shown = "GET" if method == "WEBSOCKET" else method
                assert f"`{shown} {route.path}" in text, (
                    f"docs/api.md does not describe {method} {route.path}"
                )
    finally:
        queue.close(timeout=30)
