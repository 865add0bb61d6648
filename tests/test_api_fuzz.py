"""Property-based tests of the studio's HTTP server: no request, however hostile, gets a 5xx.

Random JSON bodies, headers (Host, Origin, Last-Event-ID, Authorization,
Content-Length) and paths go to every /api route and to Gradio's own routes of one
studio served as ``serve`` serves it (page, Gradio API and /api on one port, behind
``server.guard``). After each run the server still answers and its history reads back.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graph.executor import Executor
from nodes.base import RunSettings
from nodes.registry import default_registry
from server.history import History
from server.jobs import JobQueue
from tests.conftest import TEST_PACK
from tests.test_api import TOKEN, raw, studio_server
from tests.test_jobs import WAIT

FUZZ = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

#: A workflow that runs at once (Int -> ShowValue); fuzzing puts values into it.
TINY: dict[str, Any] = {
    "version": 1,
    "nodes": {
        "a": {"type": "Int", "inputs": {"value": 2}},
        "s": {"type": "ShowValue", "inputs": {"value": {"node": "a", "output": "value"}}},
    },
}

# --- what requests are made of ----------------------------------------------------------------------

NASTY_TEXT = ["\ud800", "\udfff", "\x00", "²", "٣", "../../etc/passwd", ".studio", "%2e%2e", "😀" * 3, ""]
texts = st.text(max_size=12) | st.sampled_from(NASTY_TEXT)
numbers = (
    st.integers(-(2**80), 2**80)
    | st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**400])
    | st.floats()  # NaN and infinities included: json.dumps writes them as NaN / Infinity
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=16,
)


def quote(text: str, safe: str = "/") -> str:
    """Percent-encoded for a URL, lone surrogates included (as the bytes UTF-8 would give)."""
    return urllib.parse.quote(text.encode("utf-8", "surrogatepass"), safe=safe)


def _png_1px() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG_1PX = _png_1px()


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode("utf-8", "surrogatepass")


@st.composite
def workflow_bodies(draw: st.DrawFn) -> bytes:
    """A submission: the tiny workflow with one part replaced by a random value, or anything."""
    kind = draw(st.sampled_from(["input", "position", "metadata", "seed", "node", "top", "text", "bytes"]))
    workflow = json.loads(json.dumps(TINY))
    body: dict[str, Any] = {"workflow": workflow}
    value = draw(json_values)
    if kind == "input":
        workflow["nodes"]["a"]["inputs"]["value"] = value
    elif kind == "position":
        workflow["nodes"]["a"]["position"] = value
    elif kind == "metadata":
        workflow["metadata"] = value
    elif kind == "seed":
        body["seed"] = value
    elif kind == "node":
        workflow["nodes"][draw(texts)] = value
    elif kind == "top":
        return dumps(value)
    elif kind == "text":
        body["workflow"] = json.dumps(workflow).replace("2", json.dumps(value), 1)
    else:
        return draw(st.binary(max_size=64))
    return dumps(body)


def header_text(size: int = 24) -> st.SearchStrategy[bytes]:
    """Raw header bytes (Latin-1 as HTTP carries them, no line breaks)."""
    alphabet = st.integers(0x20, 0xFF).filter(lambda b: b != 0x7F).map(lambda b: bytes([b]))
    return st.lists(alphabet, max_size=size).map(b"".join)


@st.composite
def headers(draw: st.DrawFn, port: int) -> tuple[bytes, list[tuple[str, bytes]]]:
    """(Host, other headers): mostly what a client of this machine sends, often something hostile."""
    local = st.sampled_from([f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"]).map(str.encode)
    hostile = st.sampled_from([f"evil.example:{port}", "[::1", "a:b:c", ""]).map(str.encode) | header_text()
    host = draw(st.one_of(local, local, local, hostile))
    extra: list[tuple[str, bytes]] = []
    origins = st.sampled_from([f"http://127.0.0.1:{port}", "http://evil.example", "null", "http://[::1"])
    origin = draw(st.one_of(st.none(), st.none(), origins.map(str.encode) | header_text()))
    if origin is not None:
        extra.append(("Origin", origin))
    if draw(st.booleans()):
        last = st.sampled_from([b"\xb2", b"\xb9", b"-1", b"1" * 30]) | header_text(8)
        extra.append(("Last-Event-ID", draw(last)))
    if draw(st.booleans()):
        right = st.just(f"Bearer {TOKEN}".encode())
        token = draw(st.one_of(right, right, st.sampled_from([b"Bearer", b"Basic x"]) | header_text()))
        extra.append(("Authorization", token))
    return host, extra


ids = st.sampled_from(["nope", "%00", "..", "a" * 300]) | texts.map(lambda t: quote(t, safe=""))


@st.composite
def api_requests(draw: st.DrawFn, known: str) -> tuple[str, str, bytes | None]:
    """(method, path, body) on one of the /api routes."""
    job = draw(st.just(known) | ids)
    query_value = draw(st.sampled_from(["0", "-1", "10" * 20, "1e3", "nan", "²", "done,failed"]) | texts)
    query = quote(query_value, safe="")
    file_path = draw(
        st.sampled_from(
            ["x.png", ".studio/history.sqlite3", "%2e%2e/x.png", "a" * 300 + ".png", "//etc/passwd"]
        )
        | st.lists(texts, min_size=1, max_size=4).map(lambda p: "/".join(quote(t) for t in p))
    )
    name = draw(st.sampled_from(["mine", "..", ".hidden", "a" * 300, "x.json", "%00"]) | ids)
    return draw(
        st.sampled_from(
            [
                ("POST", "/api/jobs", None),
                ("GET", f"/api/jobs/{job}", None),
                ("GET", f"/api/jobs/{job}/events?after={query}&wait=0", None),
                ("GET", f"/api/jobs/{job}/events?after=0&wait={query}", None),
                ("GET", f"/api/jobs/{known}/stream?after={query}", None),
                ("POST", f"/api/jobs/{job}/cancel", None),
                ("GET", "/api/queue", None),
                ("GET", f"/api/history?offset={query}", None),
                ("GET", f"/api/history?limit={query}", None),
                ("GET", f"/api/history?status={query}", None),
                ("GET", f"/api/files/{file_path}", None),
                ("GET", "/api/nodes", None),
                ("GET", "/api/models", None),
                ("GET", "/api/sockets", None),
                ("GET", "/api/inputs", None),
                ("GET", f"/api/inputs/{file_path}", None),
                ("POST", f"/api/inputs?name={query}", draw(st.binary(max_size=64))),
                ("POST", f"/api/inputs?name={name}", draw(st.sampled_from([PNG_1PX, b"GIF89a", b""]))),
                ("GET", "/api/library", None),
                ("GET", f"/api/library/{name}", None),
                (
                    "PUT",
                    f"/api/library/{name}",
                    dumps({"workflow": draw(json_values), "overwrite": draw(st.booleans())}),
                ),
                ("PUT", f"/api/library/{name}", draw(workflow_bodies())),
                ("POST", f"/api/library/{name}/rename", dumps({"to": draw(json_values)})),
                ("DELETE", f"/api/library/{name}", None),
                ("GET", f"/api/examples/{name}", None),
                ("POST", "/api/validate", draw(workflow_bodies())),
                ("POST", f"/api/import?name={query}", draw(st.binary(max_size=200) | workflow_bodies())),
                ("GET", f"/api/jobs/{job}/preview?node={query}&index={query}", None),
            ]
        )
    )


@st.composite
def gradio_requests(draw: st.DrawFn, out: Path) -> tuple[str, str, bytes | None]:
    """(method, path, body) on Gradio's routes: page, config, info, files, queue."""
    name = draw(
        st.sampled_from(["shot.png", ".studio/history.sqlite3", "notes.txt", "../x.png", "a" * 300 + ".png"])
        | texts.map(quote)
    )
    join = {
        "data": draw(st.lists(json_values, max_size=3)),
        "fn_index": draw(st.integers(-2, 40) | st.sampled_from([2**70, None, "3", "x", 1.5, True])),
        "session_hash": draw(st.text("abcdef0123456789", min_size=1, max_size=12)),
    }
    return draw(
        st.sampled_from(
            [
                ("GET", "/", None),
                ("HEAD", "/", None),
                ("GET", "/config", None),
                ("GET", "/gradio_api/info", None),
                ("GET", f"/gradio_api/file={quote(str(out))}/{name}", None),
                ("GET", f"/gradio_api/file/{quote(str(out))}/{name}", None),
                ("GET", f"/gradio_api/file={name}", None),
                ("POST", "/gradio_api/queue/join", dumps(join)),
                (
                    "POST",
                    f"/gradio_api/{draw(st.sampled_from(['run', 'call', 'api']))}/{quote(name)}",
                    dumps(join),
                ),
                ("POST", "/gradio_api/queue/join", draw(workflow_bodies())),
            ]
        )
    )


# --- one studio for the module ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def queue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobQueue]:
    out = tmp_path_factory.mktemp("fuzz-out")
    (out / "shot.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (out / "notes.txt").write_text("not served")
    registry = default_registry()
    registry.add_pack(TEST_PACK)
    history = History.in_state_folder(tmp_path_factory.mktemp("fuzz-state"))
    jobs = JobQueue(Executor(registry), registry, lambda: RunSettings(output_dir=out), history)
    yield jobs
    jobs.close(timeout=WAIT)
    history.close()


@pytest.fixture(scope="module")
def known_job(queue: JobQueue) -> str:
    job = queue.submit(json.dumps(TINY), 1)
    queue.wait(job.id, WAIT)
    return job.id


@pytest.fixture(scope="module", params=[None, TOKEN], ids=["no-token", "token"])
def port(
    request: pytest.FixtureRequest, queue: JobQueue, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    examples = tmp_path_factory.mktemp("fuzz-examples")
    with studio_server(queue, examples, token=request.param, allowed_paths=(queue.output_dir,)) as served:
        yield served


def send(
    port: int, method: str, path: str, body: bytes | None, host: bytes, extra: list[tuple[str, bytes]]
) -> int:
    code, answer = raw(port, method, path, extra, body, host=host)
    assert code < 500, (method, path, host, extra, code, answer[:300])
    if 400 <= code < 500 and path.startswith("/api/") and method != "HEAD":
        error = json.loads(answer)
        assert isinstance(error, dict) and ("error" in error or "issues" in error), answer[:300]
    return code


def check_still_well(port: int, queue: JobQueue) -> None:
    """The server answers, and every job in the history reads back as strict JSON."""
    code, answer = raw(port, "GET", "/api/history?limit=500", [("Authorization", f"Bearer {TOKEN}")])
    assert code == 200, answer[:300]
    listed = json.loads(answer)
    assert listed["total"] == len(listed["jobs"]) or listed["total"] > 500
    assert queue.history is not None
    for record in queue.history.list(500):
        text = json.dumps(record.to_dict(), allow_nan=False, ensure_ascii=False)
        text.encode("utf-8")  # no NaN, no infinity, no lone surrogate was kept


# --- the properties ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_no_request_to_the_api_gets_a_server_error(port: int, queue: JobQueue, known_job: str) -> None:
    @FUZZ
    @given(data=st.data())
    def probe(data: st.DataObject) -> None:
        method, path, body = data.draw(api_requests(known_job))
        if method == "POST" and path == "/api/jobs":
            body = data.draw(workflow_bodies())
        host, extra = data.draw(headers(port))
        if body is not None and data.draw(st.booleans()):
            extra.append(
                ("Content-Length", data.draw(st.sampled_from([b"abc", b"\xb2", b"-1", b"0", b" 1"])))
            )
            send_with_length(port, method, path, body, host, extra)
        else:
            send(port, method, path, body, host, extra)

    probe()
    check_still_well(port, queue)


def send_with_length(
    port: int, method: str, path: str, body: bytes, host: bytes, extra: list[tuple[str, bytes]]
) -> None:
    """A body with a Content-Length that lies (never larger than the body: the server would wait)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", host)
        for name, value in extra:
            connection.putheader(name, value)
        try:
            connection.endheaders(body)
            response = connection.getresponse()
        except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
            return  # the HTTP layer refused the header and hung up, as it may
        assert response.status < 500, (path, extra, response.status)
        try:
            response.read()
        except (ConnectionResetError, BrokenPipeError):
            pass  # it answered (4xx) to a length it could not trust and hung up before the body ended
    finally:
        connection.close()


@pytest.mark.slow
def test_no_request_to_gradio_routes_gets_a_server_error(port: int, queue: JobQueue) -> None:
    @FUZZ
    @given(data=st.data())
    def probe(data: st.DataObject) -> None:
        method, path, body = data.draw(gradio_requests(queue.output_dir))
        host, extra = data.draw(headers(port))
        code = send(port, method, path, body, host, extra)
        if "history.sqlite3" in path or "notes.txt" in path:
            assert code in (401, 403, 404), (path, code)

    probe()
    check_still_well(port, queue)
