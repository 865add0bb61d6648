"""The HTTP API under /api: jobs, events, cancelling, history, files and the token."""

from __future__ import annotations

import http.client
import json
import os
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
                {"seq": 1, "event": "job_finished", "job_id": ids[0], "status": "done", "error": None}
            ]
            assert client.get("/api/history", params={"status": "failed"}).json()["total"] == 0
    finally:
        queue.close()
        history.close()


def test_nodes_lists_the_registry(client: TestClient, registry: Registry) -> None:
    nodes = client.get("/api/nodes").json()
    assert nodes == json.loads(json.dumps(registry.describe()))
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
    """The studio as `serve` builds it: the page, the API and the login on one port."""
    from ui.studio import Session, StudioHandlers, build_blocks, launch

    history = History.in_output_folder(out)
    queue = JobQueue(Executor(registry), registry, lambda: RunSettings(output_dir=out), history)
    handlers = StudioHandlers(registry, queue.executor, queue.settings_factory, tmp_path, jobs=queue)
    demo = build_blocks(handlers)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    launch(
        demo,
        "127.0.0.1",
        port,
        token=TOKEN,
        prevent_thread_lock=True,
        api=api_router(queue, token=TOKEN, session_user=gradio_login_user(demo)),
    )
    try:
        status, _ = call("GET", f"{base}/api/queue")
        assert status == 401
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        status, posted = call("POST", f"{base}/api/jobs", {"workflow": noise_flow("api"), "seed": 1}, bearer)
        assert status == 201
        *_, (page_status, _, _) = handlers.run(json.dumps(noise_flow("page")), 2, Session())
        assert page_status.startswith("**Finished**")
        status, listed = call("GET", f"{base}/api/history", headers=bearer)
        assert status == 200 and sorted(j["source"] for j in listed["jobs"]) == ["api", "ui"]
        assert handlers.jobs is queue
        # the page's login cookie opens the API too
        form = urllib.parse.urlencode({"username": "studio", "password": TOKEN}).encode()
        with urllib.request.urlopen(f"{base}/login", data=form, timeout=WAIT) as response:
            cookies = [v.split(";")[0] for k, v in response.headers.items() if k.lower() == "set-cookie"]
        status, nodes = call("GET", f"{base}/api/nodes", headers={"Cookie": "; ".join(cookies)})
        assert status == 200 and any(node["type"] == "SaveImage" for node in nodes)
        page = urllib.request.Request(f"{base}/", headers={"Cookie": "; ".join(cookies)})
        with urllib.request.urlopen(page, timeout=WAIT) as response:
            assert "Workflow Studio" in response.read().decode("utf-8", "replace")
    finally:
        demo.close()
        queue.close(timeout=WAIT)
        history.close()


def test_docs_describe_every_route(jobs: JobQueue) -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text()
    for route in api_router(jobs).routes:
        path = route.path.replace("{job_id}", "{id}").replace("{path:path}", "{path}")  # type: ignore[attr-defined]
        for method in route.methods:  # type: ignore[attr-defined]
            assert f"`{method} {path}" in text, f"docs/api.md does not describe {method} {path}"


def test_history_panel_lists_runs_and_restores_one(jobs: JobQueue, client: TestClient) -> None:
    from ui.history import COLUMNS, HistoryPanel

    panel = HistoryPanel(lambda: jobs)
    assert panel.rows() == []
    job_id = client.post("/api/jobs", json={"workflow": noise_flow("restored"), "seed": 77}).json()["id"]
    finish(client, job_id)
    (row,) = panel.rows()
    assert len(row) == len(COLUMNS) and row[0] == job_id and row[1] == "done" and row[2] == "api"
    assert row[4] == "77" and row[5] == "restored_00001.png"
    rows, choices = panel.refresh()
    assert rows == [row] and choices["value"] == job_id
    text, seed, status = panel.restore(job_id)
    assert json.loads(text)["nodes"]["save"]["inputs"]["filename_prefix"] == "restored"
    assert seed == "77" and job_id in status
    _, _, status = panel.restore("nope")
    assert "no run" in status


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


def test_a_page_run_waits_its_turn_and_cancels_alone(
    jobs: JobQueue, client: TestClient, tmp_path: Path
) -> None:
    from ui.studio import Session, StudioHandlers

    handlers = StudioHandlers(jobs.registry, jobs.executor, jobs.settings_factory, tmp_path, jobs=jobs)
    slow = client.post("/api/jobs", json={"workflow": sleep_flow()}).json()["id"]
    wait_progress(client, slow)
    session = Session()
    updates = handlers.run(json.dumps(noise_flow("page")), 1, session)
    status, _, _ = next(updates)
    assert status == "**Waiting in the queue**: 1 job before this one…"
    assert session.job_id is not None and jobs.position(session.job_id) == 0
    assert handlers.cancel(session) == "**Cancelling…**"
    status, _, _ = list(updates)[-1]
    assert status == "**Cancelled** before it started."
    assert session.token is None and session.job_id is None
    assert client.get(f"/api/jobs/{slow}").json()["status"] == "running"
    client.post(f"/api/jobs/{slow}/cancel")
    assert finish(client, slow)["status"] == "cancelled"
