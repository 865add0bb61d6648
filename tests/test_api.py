"""The HTTP API under /api: jobs, events, cancelling, history, files and the token."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from graph.executor import Executor
from nodes.base import RunSettings
from nodes.registry import Registry
from server.api import api_router, gradio_login_user
from server.history import History
from server.jobs import JobQueue
from tests.test_jobs import WAIT, noise_flow, sleep_flow

TOKEN = "s3cret-token"


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


@pytest.fixture
def jobs(registry: Registry, out: Path) -> Iterator[JobQueue]:
    history = History.in_output_folder(out)
    queue = JobQueue(Executor(registry), registry, lambda: RunSettings(output_dir=out), history)
    yield queue
    queue.close(timeout=WAIT)
    history.close()


def make_client(jobs: JobQueue, token: str | None = None) -> TestClient:
    app = FastAPI()
    app.include_router(api_router(jobs, token=token))
    return TestClient(app)


@pytest.fixture
def client(jobs: JobQueue) -> Iterator[TestClient]:
    with make_client(jobs) as test_client:
        yield test_client


def finish(client: TestClient, job_id: str) -> dict[str, Any]:
    """Long-poll the job's events until it ends; its final state."""
    seen = 0
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        batch = client.get(f"/api/jobs/{job_id}/events", params={"after": seen, "wait": 5}).json()
        seen = batch[-1]["seq"] if batch else seen
        if any(entry["event"] == "job_finished" for entry in batch):
            return client.get(f"/api/jobs/{job_id}").json()
    raise AssertionError(f"job {job_id} did not end in {WAIT} s")


def wait_progress(client: TestClient, job_id: str) -> None:
    seen = 0
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        batch = client.get(f"/api/jobs/{job_id}/events", params={"after": seen, "wait": 2}).json()
        if any(entry["event"] == "node_progress" for entry in batch):
            return
        seen = batch[-1]["seq"] if batch else seen
    raise AssertionError(f"job {job_id} made no progress in {WAIT} s")


# --- a real server on loopback ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def live(jobs: JobQueue) -> Iterator[str]:
    """The API alone, served by uvicorn on 127.0.0.1 and a free port; its base URL."""
    app = FastAPI()
    app.include_router(api_router(jobs))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(WAIT)


def call(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def raw_get(base: str, path: str) -> tuple[int, bytes]:
    """GET a path exactly as written (no client-side clean-up of '..')."""
    parts = urllib.parse.urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=WAIT)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# --- jobs ---------------------------------------------------------------------------------------------


def test_twenty_jobs_posted_at_once_all_finish(live: str, out: Path) -> None:
    def post(n: int) -> tuple[int, Any]:
        return call("POST", f"{live}/api/jobs", {"workflow": noise_flow(f"many{n:02d}"), "seed": n})

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(post, range(20)))
    assert [code for code, _ in answers] == [201] * 20
    ids = [body["id"] for _, body in answers]
    assert len(set(ids)) == 20
    for n, job_id in enumerate(ids):
        deadline = time.monotonic() + WAIT
        seen = 0
        while time.monotonic() < deadline:
            code, batch = call("GET", f"{live}/api/jobs/{job_id}/events?after={seen}&wait=5")
            assert code == 200
            seen = batch[-1]["seq"] if batch else seen
            if any(entry["event"] == "job_finished" for entry in batch):
                break
        code, job = call("GET", f"{live}/api/jobs/{job_id}")
        assert job["status"] == "done", job
        assert job["seed"] == n and len(job["outputs"]) == 1 and (out / job["outputs"][0]).is_file()
    code, listed = call("GET", f"{live}/api/history?limit=100")
    assert code == 200 and listed["total"] == 20 and {j["id"] for j in listed["jobs"]} == set(ids)


def test_post_and_follow_a_job(client: TestClient, out: Path) -> None:
    answer = client.post("/api/jobs", json={"workflow": noise_flow("one"), "seed": 5})
    assert answer.status_code == 201
    job_id = answer.json()["id"]
    assert answer.headers["location"] == f"/api/jobs/{job_id}"
    job = finish(client, job_id)
    assert job["status"] == "done" and job["seed"] == 5 and job["source"] == "api"
    assert job["outputs"] == ["one_00001.png"]
    assert job["workflow"]["nodes"]["save"]["inputs"]["filename_prefix"] == "one"
    assert job["nodes_planned"] == 2 and job["nodes_executed"] == 2 and job["nodes_cached"] == 0
    # the workflow may come as text too
    text = json.dumps(sleep_flow(value=3, steps=1, seconds=0.0))
    again = finish(client, client.post("/api/jobs", json={"workflow": text}).json()["id"])
    assert again["status"] == "done" and again["results"] == {"show": {"text": "3"}}


def test_event_stream_runs_until_the_job_ends(client: TestClient) -> None:
    job_id = client.post("/api/jobs", json={"workflow": noise_flow("streamed"), "seed": 1}).json()["id"]
    with client.stream("GET", f"/api/jobs/{job_id}/stream") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        text = stream.read().decode()
    blocks = [block for block in text.split("\n\n") if block.strip()]
    data = [
        json.loads(line[len("data: ") :])
        for b in blocks
        for line in b.splitlines()
        if line.startswith("data: ")
    ]
    kinds = [entry["event"] for entry in data]
    assert kinds[0] == "job_queued" and kinds[-1] == "job_finished" and "run_started" in kinds
    assert blocks[0].startswith("id: 1\nevent: job_queued\n")
    # resuming after the last id gives nothing more, and ends at once
    with client.stream("GET", f"/api/jobs/{job_id}/stream", headers={"Last-Event-ID": str(len(data))}) as s:
        assert s.read() == b""


def test_invalid_workflow_is_422_with_issues(client: TestClient) -> None:
    broken = {
        "version": 1,
        "nodes": {
            "d": {"type": "IntMath", "inputs": {"a": "two", "b": 0}},
            "s": {"type": "ShowValue", "inputs": {"value": {"node": "d", "output": "value"}}},
        },
    }
    answer = client.post("/api/jobs", json={"workflow": broken})
    assert answer.status_code == 422
    issues = answer.json()["issues"]
    assert any(i["node_id"] == "d" and i["input"] == "a" and i["node_type"] == "IntMath" for i in issues)
    assert all({"code", "message", "text", "hint"} <= set(i) for i in issues)
    answer = client.post("/api/jobs", json={"workflow": "{ nope"})
    assert answer.status_code == 422 and "not valid JSON" in answer.json()["issues"][0]["text"]
    assert client.post("/api/jobs", json={"workflow": noise_flow("x"), "seed": "abc"}).status_code == 422
    assert client.get("/api/queue").json() == {"running": [], "queued": []}


def test_bad_requests_get_plain_errors(client: TestClient) -> None:
    cases = [
        (client.post("/api/jobs", content=b"{"), 400),
        (client.post("/api/jobs", json={"seed": 1}), 400),
        (client.post("/api/jobs", json={"workflow": noise_flow("x"), "extra": 1}), 400),
        (client.get("/api/jobs/nope"), 404),
        (client.get("/api/jobs/nope/events"), 404),
        (client.get("/api/jobs/nope/stream"), 404),
        (client.post("/api/jobs/nope/cancel"), 404),
        (client.get("/api/history", params={"limit": "many"}), 400),
        (client.get("/api/history", params={"offset": -1}), 400),
    ]
    for answer, code in cases:
        assert answer.status_code == code, (answer.request.url, answer.text)
        body = answer.json()
        assert isinstance(body, dict) and set(body) == {"error"} and "Traceback" not in body["error"]


# --- cancelling ------------------------------------------------------------------------------------


def test_cancel_a_running_job_only(client: TestClient, out: Path) -> None:
    slow = client.post("/api/jobs", json={"workflow": sleep_flow()}).json()["id"]
    others = [
        client.post("/api/jobs", json={"workflow": noise_flow(f"o{n}"), "seed": n}).json()["id"]
        for n in range(2)
    ]
    wait_progress(client, slow)
    answer = client.post(f"/api/jobs/{slow}/cancel")
    assert answer.status_code == 202 and answer.json()["cancel"] == "stopping"
    assert finish(client, slow)["status"] == "cancelled"
    for n, job_id in enumerate(others):
        job = finish(client, job_id)
        assert job["status"] == "done" and job["outputs"] == [f"o{n}_00001.png"]
    answer = client.post(f"/api/jobs/{slow}/cancel")
    assert answer.status_code == 409 and "already ended" in answer.json()["error"]


def test_cancel_a_queued_job_before_it_starts(client: TestClient) -> None:
    slow = client.post("/api/jobs", json={"workflow": sleep_flow()}).json()["id"]
    queued = client.post("/api/jobs", json={"workflow": noise_flow("never")}).json()["id"]
    wait_progress(client, slow)
    line = client.get("/api/queue").json()
    assert [j["id"] for j in line["running"]] == [slow]
    assert [(j["id"], j["position"]) for j in line["queued"]] == [(queued, 0)]
    assert client.get(f"/api/jobs/{queued}").json()["position"] == 0
    answer = client.post(f"/api/jobs/{queued}/cancel")
    assert answer.status_code == 200 and answer.json() == {
        "id": queued,
        "status": "cancelled",
        "cancel": "removed",
    }
    job = client.get(f"/api/jobs/{queued}").json()
    assert job["status"] == "cancelled" and job["started"] is None and job["outputs"] == []
    assert client.get(f"/api/jobs/{slow}").json()["status"] == "running"
    client.post(f"/api/jobs/{slow}/cancel")
    assert finish(client, slow)["status"] == "cancelled"


# --- history, nodes ----------------------------------------------------------------------------------


def test_history_pages_and_survives_a_restart(registry: Registry, out: Path) -> None:
    history = History.in_output_folder(out)
    queue = JobQueue(Executor(registry), registry, lambda: RunSettings(output_dir=out), history)
    with make_client(queue) as client:
        ids = [
            client.post("/api/jobs", json={"workflow": noise_flow(f"h{n}"), "seed": n}).json()["id"]
            for n in range(3)
        ]
        for job_id in ids:
            finish(client, job_id)
        page = client.get("/api/history", params={"limit": 2, "offset": 1}).json()
        assert page["total"] == 3 and page["limit"] == 2 and page["offset"] == 1
        assert [j["id"] for j in page["jobs"]] == [ids[1], ids[0]]  # newest first
        assert "workflow" not in page["jobs"][0]
    queue.close()
    history.close()

    history = History.in_output_folder(out)
    queue = JobQueue(Executor(registry), registry, lambda: RunSettings(output_dir=out), history)
    try:
        with make_client(queue) as client:
            assert client.get("/api/history").json()["total"] == 3
            old = client.get(f"/api/jobs/{ids[0]}").json()
            assert old["status"] == "done" and old["outputs"] == ["h0_00001.png"] and old["seed"] == 0
            assert client.get(f"/api/jobs/{ids[0]}/events").json() == [
                {
                    "seq": 1,
                    "event": "job_finished",
                    "job_id": ids[0],
                    "status": "done",
                    "error": None,
                    "outputs": ["h0_00001.png"],
                    "results": {},
                }
            ]
            assert client.get("/api/history", params={"status": "failed"}).json()["total"] == 0
    finally:
        queue.close()
        history.close()


def test_nodes_lists_the_registry(client: TestClient, registry: Registry) -> None:
    """As `app.py nodes --json` lists it, and LoadImage's path offers the input folder's pictures."""
    nodes = client.get("/api/nodes").json()
    described = json.loads(json.dumps(registry.describe()))
    for node in described:
        if node["type"] == "LoadImage":
            node["inputs"][0].update(choices=[], file_list=True)  # the input folder is empty
    assert nodes == described
    assert any(node["type"] == "Sleep" for node in nodes)


# --- files --------------------------------------------------------------------------------------------


def test_files_serves_outputs_and_refuses_the_rest(live: str, out: Path, tmp_path: Path) -> None:
    code, answer = call("POST", f"{live}/api/jobs", {"workflow": noise_flow("pics/shot"), "seed": 2})
    assert code == 201
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        code, job = call("GET", f"{live}/api/jobs/{answer['id']}")
        if job["status"] != "queued" and job["status"] != "running":
            break
        time.sleep(0.05)
    assert job["outputs"] == ["pics/shot_00001.png"]
    with urllib.request.urlopen(f"{live}/api/files/pics/shot_00001.png", timeout=WAIT) as response:
        assert response.headers["content-type"] == "image/png"
        assert response.read() == (out / "pics" / "shot_00001.png").read_bytes()

    secret = tmp_path / "secret.txt"
    secret.write_text("not for you")
    (out / "leak.txt").symlink_to(secret)
    (out / "elsewhere").symlink_to(tmp_path, target_is_directory=True)
    refused = {
        "/api/files/../secret.txt": 400,
        "/api/files/pics/../../secret.txt": 400,
        "/api/files/%2e%2e/secret.txt": 400,
        "/api/files/%2E%2E%2Fsecret.txt": 400,
        "/api/files/pics/%2e%2e/%2e%2e/secret.txt": 400,
        "/api/files//etc/passwd": 400,
        "/api/files/%2Fetc%2Fpasswd": 400,
        "/api/files/leak.txt": 403,
        "/api/files/elsewhere/secret.txt": 403,
        "/api/files/.studio/history.sqlite3": 403,
        "/api/files/missing.png": 404,
        "/api/files/pics": 404,
    }
    for path, expected in refused.items():
        code, body = raw_get(live, path)
        assert code == expected, (path, code, body)
        assert set(json.loads(body)) == {"error"}, (path, body)


# --- access -------------------------------------------------------------------------------------------


def test_token_is_required_when_set(jobs: JobQueue) -> None:
    with make_client(jobs, token=TOKEN) as client:
        for method, path in [
            ("GET", "/api/queue"),
            ("GET", "/api/nodes"),
            ("POST", "/api/jobs"),
            ("GET", "/api/files/x.png"),
        ]:
            answer = client.request(method, path)
            assert answer.status_code == 401 and "token" in answer.json()["error"]
            assert answer.headers["www-authenticate"] == "Bearer"
        wrong = client.get("/api/queue", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = client.get("/api/queue", headers={"Authorization": f"Bearer {TOKEN}"})
        assert right.status_code == 200
        posted = client.post(
            "/api/jobs", json={"workflow": noise_flow("t")}, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert posted.status_code == 201


def test_posts_from_other_sites_are_refused(client: TestClient) -> None:
    answer = client.post(
        "/api/jobs", json={"workflow": noise_flow("x")}, headers={"Origin": "http://evil.example"}
    )
    assert answer.status_code == 403 and "other sites" in answer.json()["error"]
    same = client.post(
        "/api/jobs", json={"workflow": noise_flow("x")}, headers={"Origin": "http://testserver"}
    )
    assert same.status_code == 201


def test_page_and_api_share_one_server_queue_and_history(
    registry: Registry, out: Path, tmp_path: Path
) -> None:
    """The studio as `serve` builds it: the page, the API and the login on one port. The page
    runs workflows through /api (source "ui"), so its jobs and scripts' share one queue."""
    from ui.page import build_page
    from ui.serve import launch

    history = History.in_output_folder(out)
    queue = JobQueue(Executor(registry), registry, lambda: RunSettings(output_dir=out), history)
    page = build_page()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    launch(
        page,
        "127.0.0.1",
        port,
        token=TOKEN,
        prevent_thread_lock=True,
        api=api_router(queue, token=TOKEN, session_user=gradio_login_user(page)),
    )
    try:
        status, _ = call("GET", f"{base}/api/queue")
        assert status == 401
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        status, posted = call("POST", f"{base}/api/jobs", {"workflow": noise_flow("api"), "seed": 1}, bearer)
        assert status == 201
        # the page's login cookie opens the API too
        form = urllib.parse.urlencode({"username": "studio", "password": TOKEN}).encode()
        with urllib.request.urlopen(f"{base}/login", data=form, timeout=WAIT) as response:
            cookies = [v.split(";")[0] for k, v in response.headers.items() if k.lower() == "set-cookie"]
        cookie = {"Cookie": "; ".join(cookies)}
        page_run = {"workflow": noise_flow("page"), "seed": 2, "source": "ui"}
        status, from_page = call("POST", f"{base}/api/jobs", page_run, cookie)
        assert status == 201
        for job_id in (posted["id"], from_page["id"]):
            assert queue.wait(job_id, WAIT).status == "done"  # type: ignore[union-attr]
        status, listed = call("GET", f"{base}/api/history", headers=bearer)
        assert status == 200 and sorted(j["source"] for j in listed["jobs"]) == ["api", "ui"]
        status, nodes = call("GET", f"{base}/api/nodes", headers=cookie)
        assert status == 200 and any(node["type"] == "SaveImage" for node in nodes)
        request = urllib.request.Request(f"{base}/", headers=cookie)
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            assert "Workflow Studio" in response.read().decode("utf-8", "replace")
    finally:
        page.close()
        queue.close(timeout=WAIT)
        history.close()


def test_docs_describe_every_route(jobs: JobQueue) -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text()
    for route in api_router(jobs).routes:
        if not route.include_in_schema:  # type: ignore[attr-defined]
            continue  # the answer for paths that are no route
        path = route.path.replace("{job_id}", "{id}").replace("{path:path}", "{path}")  # type: ignore[attr-defined]
        for method in route.methods:  # type: ignore[attr-defined]
            assert f"`{method} {path}" in text, f"docs/api.md does not describe {method} {path}"


def test_without_a_token_only_localhost_is_answered_when_asked(jobs: JobQueue) -> None:
    app = FastAPI()
    app.include_router(api_router(jobs, local_only=True))
    for base, code in [
        ("http://localhost:7860", 200),
        ("http://127.0.0.1:7860", 200),
        ("http://[::1]:7860", 200),
        ("http://rebound.example:7860", 403),
    ]:
        with TestClient(app, base_url=base) as client:
            answer = client.get("/api/queue")
            assert answer.status_code == code, base
    with TestClient(app, base_url="http://rebound.example") as client:
        assert "localhost" in client.get("/api/nodes").json()["error"]


def test_a_page_run_waits_its_turn_and_cancels_alone(jobs: JobQueue, client: TestClient) -> None:
    slow = client.post("/api/jobs", json={"workflow": sleep_flow()}).json()["id"]
    wait_progress(client, slow)
    page = client.post("/api/jobs", json={"workflow": noise_flow("page"), "source": "ui"}).json()
    assert page["status"] == "queued" and page["position"] == 0
    (waiting,) = client.get("/api/queue").json()["queued"]
    assert waiting["id"] == page["id"] and waiting["source"] == "ui"
    cancelled = client.post(f"/api/jobs/{page['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["cancel"] == "removed"
    assert client.get(f"/api/jobs/{slow}").json()["status"] == "running"
    client.post(f"/api/jobs/{slow}/cancel")
    assert finish(client, slow)["status"] == "cancelled"
    assert client.get(f"/api/jobs/{page['id']}").json()["status"] == "cancelled"


# --- the whole server behind one guard (issue #15) -----------------------------------------------------


@contextlib.contextmanager
def studio_server(
    queue: JobQueue,
    folder: Path | None = None,
    token: str | None = None,
    allowed_paths: tuple[Path, ...] = (),
) -> Iterator[int]:
    """The page, Gradio's API and /api as ``serve`` launches them on 127.0.0.1; the port. With
    ``folder``, the page's routes work on ``FOLDER/input``, ``FOLDER/library`` and the examples."""
    from server.folders import StudioFolders
    from ui.page import build_page
    from ui.serve import launch

    demo = build_page()
    port = free_port()
    folders = None
    if folder is not None:
        examples = Path(__file__).resolve().parent.parent / "workflows"
        folders = StudioFolders(folder / "input", folder / "library", examples)
    router = api_router(
        queue,
        token=token,
        session_user=gradio_login_user(demo),
        local_only=not token,
        bound_host="127.0.0.1",
        folders=folders,
    )
    launch(
        demo,
        "127.0.0.1",
        port,
        token=token,
        allowed_paths=allowed_paths,
        prevent_thread_lock=True,
        api=router,
    )
    try:
        yield port
    finally:
        demo.close()


def raw(
    port: int,
    method: str,
    path: str,
    headers: list[tuple[str, str | bytes]] = (),  # type: ignore[assignment]
    body: bytes | None = None,
    host: str | bytes | None = None,
) -> tuple[int, bytes]:
    """One request exactly as written: any Host, raw header bytes, no clean-up of the path."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", host if host is not None else f"127.0.0.1:{port}")
        for name, value in headers:
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Type", "application/json")
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


JOIN = json.dumps({"data": [], "fn_index": 0, "session_hash": "probe0000"}).encode()


def test_every_route_refuses_a_host_that_is_not_this_machine(jobs: JobQueue, tmp_path: Path) -> None:
    with studio_server(jobs, tmp_path) as port:
        probes = [
            ("GET", "/", None),
            ("HEAD", "/", None),
            ("GET", "/config", None),
            ("GET", "/gradio_api/info", None),
            ("GET", "/openapi.json", None),
            ("GET", "/assets/index.js", None),
            ("GET", "/theme.css", None),
            ("GET", "/gradio_api/queue/data?session_hash=probe0000", None),
            ("POST", "/gradio_api/queue/join", JOIN),
            ("GET", "/api/queue", None),
            ("POST", "/api/jobs", json.dumps({"workflow": noise_flow("rebound")}).encode()),
            ("GET", "/api/library", None),
            ("GET", "/api/models", None),
            ("POST", "/api/import?name=x.json", json.dumps(noise_flow("rebound")).encode()),
        ]
        for host in [f"evil.example:{port}", "evil.example", "127.0.0.1.evil.example", "", "[::2]:80"]:
            for method, path, body in probes:
                code, answer = raw(port, method, path, body=body, host=host)
                assert code == 403, (host, method, path, code, answer[:200])
                if method != "HEAD":
                    assert "localhost" in json.loads(answer)["error"], (host, path)
        for host in [
            f"127.0.0.1:{port}",
            f"localhost:{port}",
            "LOCALHOST",
            f"127.8.9.10:{port}",
            f"[::1]:{port}",
        ]:
            code, answer = raw(port, "GET", "/config", host=host)
            assert code == 200, (host, answer[:200])
            assert raw(port, "GET", "/api/queue", host=host)[0] == 200, host
    assert client_history_total(jobs) == 0  # nothing ran through the rebound queue


def client_history_total(jobs: JobQueue) -> int:
    assert jobs.history is not None
    return jobs.history.count()


def test_pages_of_other_sites_cannot_post_anywhere(jobs: JobQueue, tmp_path: Path) -> None:
    evil = [("Origin", "http://evil.example")]
    with studio_server(jobs, tmp_path) as port:
        for origin in [
            "http://evil.example",
            "null",
            f"http://127.0.0.1:{port + 1}",
            f"http://localhost:{port}",
        ]:
            code, answer = raw(port, "POST", "/gradio_api/queue/join", [("Origin", origin)], JOIN)
            assert code == 403 and "other sites" in json.loads(answer)["error"], (origin, code, answer)
        assert raw(port, "POST", "/login", evil, b"username=studio&password=x")[0] == 403
        assert (
            raw(port, "POST", "/api/jobs", evil, json.dumps({"workflow": noise_flow("x")}).encode())[0] == 403
        )
        # the page's own requests, and requests without an Origin, go through
        code, _ = raw(port, "POST", "/gradio_api/queue/join", [("Origin", f"http://127.0.0.1:{port}")], JOIN)
        assert code != 403
        assert (
            raw(
                port,
                "POST",
                "/gradio_api/queue/join",
                [("Origin", f"http://localhost:{port}")],
                JOIN,
                host=f"localhost:{port}",
            )[0]
            != 403
        )
        assert raw(port, "GET", "/config", evil)[0] == 200  # reading is left to the browser's CORS rules
    # with a token: any Host (the token guards), but still no posts from other sites
    with studio_server(jobs, tmp_path, token=TOKEN) as port:
        bearer = ("Authorization", f"Bearer {TOKEN}")
        code, _ = raw(port, "GET", "/api/queue", [bearer], host=f"studio.lan:{port}")
        assert code == 200
        assert raw(port, "GET", "/config", host=f"studio.lan:{port}")[0] == 401
        form = b"username=studio&password=" + TOKEN.encode()
        headers = [("Origin", "http://evil.example"), ("Content-Type", "application/x-www-form-urlencoded")]
        assert raw(port, "POST", "/login", headers, form, host=f"studio.lan:{port}")[0] == 403
        same = [
            ("Origin", f"http://studio.lan:{port}"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ]
        assert raw(port, "POST", "/login", same, form, host=f"studio.lan:{port}")[0] == 200
        body = json.dumps({"workflow": noise_flow("x")}).encode()
        assert raw(port, "POST", "/api/jobs", [bearer, *evil], body, host=f"studio.lan:{port}")[0] == 403


def test_gradio_file_routes_serve_only_pictures_never_hidden_files(jobs: JobQueue, tmp_path: Path) -> None:
    out = jobs.output_dir
    legacy = out / ".studio" / "history.sqlite3"
    legacy.parent.mkdir(parents=True, exist_ok=True)
    legacy.write_bytes(b"SQLite format 3\x00 the old history")
    (out / "shot.png").write_bytes(b"\x89PNG\r\n\x1a\n picture")
    (out / "notes.txt").write_text("not a picture")
    (out / ".hidden.png").write_bytes(b"\x89PNG\r\n\x1a\n hidden")
    (out / "alias.png").symlink_to(legacy)
    with studio_server(jobs, tmp_path, allowed_paths=(out,)) as port:
        base = str(out.resolve())
        assert raw(port, "GET", f"/gradio_api/file={base}/shot.png")[0] == 200
        quoted = urllib.parse.quote
        refused = [
            f"/gradio_api/file={base}/.studio/history.sqlite3",
            f"/gradio_api/file/{base}/.studio/history.sqlite3",
            f"/gradio_api/file={quoted(base)}/%2Estudio/history.sqlite3",
            f"/gradio_api/file={quoted(base)}%2F.studio%2Fhistory.sqlite3",
            f"/gradio_api/file={base}/.studio/history.sqlite3?name=x.png",
            f"/gradio_api/file={base}/pics/../.studio/history.sqlite3",
            f"/gradio_api/file={base}/notes.txt",
            f"/gradio_api/file={base}/NOTES.TXT",
            f"/gradio_api/file={base}/.hidden.png",
            f"/gradio_api/file={base}/alias.png",
            "/gradio_api/file=http://127.0.0.1:9/x.png",
            "/gradio_api/file=/etc/passwd",
        ]
        for path in refused:
            for host in (f"127.0.0.1:{port}",):
                code, answer = raw(port, "GET", path, host=host)
                assert code == 403, (path, code, answer[:100])
                assert b"SQLite" not in answer and set(json.loads(answer)) == {"error"}, path
            assert raw(port, "HEAD", path)[0] == 403, path
        # the page loads, with the bundle it fetches through the file route
        code, page = raw(port, "GET", "/")
        assert code == 200
        scripts = re.findall(
            r'(gradio_api/file=[^"?]+\.(?:js|css|json))(?=[?"])', page.decode("utf-8", "replace")
        )
        code, config = raw(port, "GET", "/config")
        scripts += re.findall(
            r"(gradio_api/file=[^\"?\\]+\.(?:js|css|json))(?=[?\"\\])", config.decode("utf-8", "replace")
        )
        from ui.page import bundle_built

        assert scripts or not bundle_built()
        for script in scripts:
            assert raw(port, "GET", "/" + script)[0] == 200, script


def test_the_history_moves_out_of_the_output_folder(registry: Registry, out: Path, tmp_path: Path) -> None:
    from server.history import LEGACY_HISTORY_FILE, JobRecord

    old = History.in_output_folder(out)  # where older studios kept it
    old.add(
        JobRecord(id="kept", status="done", source="api", submitted=1.0, workflow="{}", outputs=["a.png"])
    )
    old.add(JobRecord(id="cut", status="running", source="ui", submitted=2.0, workflow="{}"))
    old.close()
    assert (out / LEGACY_HISTORY_FILE).is_file()

    state = tmp_path / "state"
    moved = History.in_state_folder(state, legacy_output_dir=out)
    try:
        assert moved.path == state / "history.sqlite3" and moved.path.is_file()
        assert [r.id for r in moved.list()] == ["cut", "kept"]
        assert moved.get("kept").outputs == ["a.png"]  # type: ignore[union-attr]
        assert moved.get("cut").status == "interrupted" and moved.interrupted == ["cut"]  # type: ignore[union-attr]
        assert not (out / ".studio").exists()  # nothing of the state is left beside the outputs
        moved.add(JobRecord(id="new", status="done", source="api", submitted=3.0, workflow="{}"))
    finally:
        moved.close()
    again = History.in_state_folder(state, legacy_output_dir=out)
    try:
        assert again.count() == 3 and again.interrupted == []
    finally:
        again.close()


def test_the_state_folder_is_never_inside_the_output_folder(
    registry: Registry, out: Path, tmp_path: Path
) -> None:
    from server.folders import StudioFolders
    from server.history import StateFolderRefused, default_state_dir
    from ui.serve import serve

    default = default_state_dir(out)
    assert out.resolve() not in default.parents and default != out.resolve()
    assert default_state_dir(out) == default and default_state_dir(tmp_path / "other") != default
    for inside in (out, out / "state", out / "a" / "b"):
        with pytest.raises(StateFolderRefused, match="must not be inside the output folder"):
            serve(
                "127.0.0.1",
                free_port(),
                registry,
                Executor(registry),
                lambda: RunSettings(output_dir=out),
                StudioFolders(tmp_path / "input", tmp_path / "library", tmp_path),
                None,
                state_dir=inside,
            )
    assert not (out / "history.sqlite3").exists() and not (out / "state").exists()


def _body(workflow_json: str, extra: str = "") -> bytes:
    """A raw request body: ``{"workflow": WORKFLOW_JSON EXTRA}``, written by hand."""
    return ('{"workflow": ' + workflow_json + extra + "}").encode()


#: A tiny workflow as text; ``%s`` takes more of node 'a', then more of the workflow.
TINY = (
    '{"version": 1, "nodes": {"a": {"type": "Int", "inputs": {"value": 2}%s}, '
    '"s": {"type": "ShowValue", "inputs": {"value": {"node": "a", "output": "value"}}}}%s}'
)


def assert_json_4xx(answer: Any, what: str) -> None:
    assert 400 <= answer.status_code < 500, (what, answer.status_code, answer.text[:300])
    body = answer.json()
    assert isinstance(body, dict) and ("error" in body or "issues" in body), (what, body)
    assert "Traceback" not in answer.text, what


def test_hostile_bodies_and_queries_get_json_4xx(jobs: JobQueue) -> None:
    app = FastAPI()
    app.include_router(api_router(jobs))
    sampler = json.loads((Path(__file__).resolve().parent.parent / "workflows" / "txt2img.json").read_text())
    text = json.dumps({"workflow": sampler})
    assert re.search(r'"cfg": [0-9.]+', text)
    bodies = {
        "100k deep": b'{"workflow": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "100k deep objects": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        "metadata 900 deep": _body(TINY % ("", ', "metadata": ' + '{"a":' * 900 + "1" + "}" * 900)),
        "lone surrogate": _body(TINY % ("", ', "metadata": {"x": "\\ud800"}')),
        "lone surrogate key": _body(TINY % ("", ', "metadata": {"\\udfff": 1}')),
        "not UTF-8": b'{"workflow": "\xff\xfe"}',
        "cfg 1e400": re.sub(r'"cfg": [0-9.]+', '"cfg": 1e400', text).encode(),
        "cfg 10^400": re.sub(r'"cfg": [0-9.]+', '"cfg": 1' + "0" * 400, text).encode(),
        "cfg object": re.sub(r'"cfg": [0-9.]+', '"cfg": {"a": 1e400}', text).encode(),
        "cfg text": re.sub(r'"cfg": [0-9.]+', '"cfg": "1e400"', text).encode(),
        "seed 10^400": _body(TINY % ("", ""), ', "seed": 1' + "0" * 400),
    }
    with TestClient(app, raise_server_exceptions=False) as client:
        for what, body in bodies.items():
            assert_json_4xx(client.post("/api/jobs", content=body), what)
        for query in [
            {"offset": 10**20},
            {"offset": 2**63},
            {"limit": 10**20},
            {"status": ",".join(f"s{n}" for n in range(3000))},
            {"status": "done,\x00"},
        ]:
            assert_json_4xx(client.get("/api/history", params=query), str(query)[:60])
        assert client.get("/api/history", params={"offset": 2**63 - 1}).json()["jobs"] == []
        assert client.get("/api/history", params={"status": "done,failed,done"}).status_code == 200
        assert_json_4xx(client.get("/api/files/" + "a" * 300 + ".png"), "long file name")
        assert_json_4xx(client.get("/api/files/" + "a/" * 3000 + "b.png"), "long path")
        assert_json_4xx(client.get("/api/jobs/x/events", params={"after": 10**30}), "after")
        for method, path in [("GET", "/api/jobs//events"), ("DELETE", "/api/jobs/x"), ("GET", "/api/nope")]:
            answer = client.request(method, path)
            assert answer.status_code == 404 and "no route" in answer.json()["error"], path
        assert client.get("/api/history").json()["total"] == 0  # nothing was queued


def test_nan_and_infinity_in_a_raw_body_are_refused(client: TestClient) -> None:
    for what, body in {
        "NaN position": _body(TINY % (', "position": [NaN, 1]', "")),
        "Infinity position": _body(TINY % (', "position": [1, -Infinity]', "")),
        "NaN metadata": _body(TINY % ("", ', "metadata": {"x": NaN}')),
        "Infinity metadata": _body(TINY % ("", ', "metadata": {"x": [Infinity]}')),
        "NaN seed": _body(TINY % ("", ""), ', "seed": NaN'),
    }.items():
        answer = client.post("/api/jobs", content=body)
        assert answer.status_code == 400, (what, answer.text)
        assert "not JSON" in answer.json()["error"], what
    assert client.get("/api/history").json()["total"] == 0
    # the same workflow without them runs, and its stored form resubmits
    job_id = client.post("/api/jobs", content=_body(TINY % (', "position": [1, 2]', ""))).json()["id"]
    stored = finish(client, job_id)["workflow"]
    assert client.post("/api/jobs", json={"workflow": stored}).status_code == 201


def test_last_event_id_that_is_not_a_plain_number_is_ignored(live: str, jobs: JobQueue) -> None:
    job = jobs.submit(json.dumps(noise_flow("resume")), 1)
    jobs.wait(job.id, WAIT)
    port = int(live.rsplit(":", 1)[1])
    for value in [b"\xb2", b"\xb9", "٣".encode(), b"-1", b"1e3", b"9" * 40, b""]:
        code, body = raw(port, "GET", f"/api/jobs/{job.id}/stream", [("Last-Event-ID", value)])
        assert code == 200, (value, body[:200])
        assert b"event: job_finished" in body, value
    code, body = raw(port, "GET", f"/api/jobs/{job.id}/stream", [("Last-Event-ID", b"1")])
    assert code == 200 and b"id: 1\n" not in body and b"job_finished" in body


def test_unexpected_errors_are_json_500_without_traceback(
    jobs: JobQueue, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(jobs, "list_queue", broken)
    monkeypatch.setattr(jobs, "lookup", broken)
    app = FastAPI()
    app.include_router(api_router(jobs))
    with TestClient(app, raise_server_exceptions=False) as client:
        for answer in (client.get("/api/queue"), client.get("/api/jobs/abc")):
            assert answer.status_code == 500
            assert set(answer.json()) == {"error"} and "secret" not in answer.text
            assert answer.headers["content-type"] == "application/json"
    assert "secret internals" in caplog.text  # the server's log has it


def test_api_files_serve_only_pictures(client: TestClient, out: Path) -> None:
    (out / "shot.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (out / "notes.txt").write_text("text")
    (out / "page.html").write_text("<script>alert(1)</script>")
    assert client.get("/api/files/shot.png").status_code == 200
    for name in ("notes.txt", "page.html"):
        answer = client.get(f"/api/files/{name}")
        assert answer.status_code == 403 and "pictures" in answer.json()["error"], name


def test_calls_of_handlers_the_page_lacks_are_json_4xx(jobs: JobQueue, tmp_path: Path) -> None:
    """Gradio answers these with a plain-text 500 (a KeyError inside); the guard answers first.
    The page has no event handlers at all (it talks to /api), so every call is one it lacks."""
    with studio_server(jobs, tmp_path) as port:
        probes = [
            ("/gradio_api/queue/join", {"data": [], "fn_index": 10**21, "session_hash": "0"}, 404),
            ("/gradio_api/queue/join", {"data": [], "fn_index": -1, "session_hash": "0"}, 404),
            ("/gradio_api/queue/join", {"data": [], "fn_index": "999", "session_hash": "0"}, 404),
            ("/gradio_api/queue/join", {"data": [], "fn_index": 0, "session_hash": "0"}, 404),
            ("/gradio_api/run/predict", {"data": []}, 404),
            ("/gradio_api/run/nope", {"data": []}, 404),
            ("/gradio_api/run/restore", {"data": ["x"]}, 404),
            ("/gradio_api/api/nope/", {"data": [], "fn_index": 999}, 404),
        ]
        for path, body, expected in probes:
            code, answer = raw(port, "POST", path, body=json.dumps(body).encode())
            assert code == expected and "event handler" in json.loads(answer)["error"], (
                path,
                code,
                answer,
            )
        for path in ("/gradio_api/call/nope", "/gradio_api/call/v2/nope", "/gradio_api/call/restore/abc"):
            code, answer = raw(port, "POST" if path.count("/") == 3 else "GET", path, body=JOIN)
            assert code == 404 and "/api" in json.loads(answer)["error"], (path, code, answer)
        code, answer = raw(port, "POST", "/gradio_api/queue/join", body=b'{"data": [], "fn_index": \xff}')
        assert code == 400 and set(json.loads(answer)) == {"error"}
        lone = b'{"workflow": {"metadata": ["\\ud9bc"]}}'
        code, answer = raw(port, "POST", "/gradio_api/queue/join", body=lone)
        assert code == 400 and set(json.loads(answer)) == {"error"}


def test_answers_render_even_with_values_json_lacks(jobs: JobQueue, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stored value JSON cannot hold (infinity, a lone surrogate) never makes an answer fail."""
    odd = {"id": "odd", "status": "done", "score": float("inf"), "note": "\ud800", "nested": [float("nan")]}
    monkeypatch.setattr(jobs, "lookup", lambda job_id: dict(odd))
    monkeypatch.setattr(jobs, "position", lambda job_id: None)
    app = FastAPI()
    app.include_router(api_router(jobs))
    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.get("/api/jobs/odd")
        assert answer.status_code == 200
        body = json.loads(answer.content)
        assert body["id"] == "odd" and body["note"] == "\ud800"
        assert body["score"] in (None, "inf") and body["nested"] in ([None], ["nan"])
