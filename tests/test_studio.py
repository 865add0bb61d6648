"""The studio's server side of the page: it serves the bundled page on the studio's own
terms (login with a token, only this machine's Host without one), and the page's files
come through Gradio's guarded file route. The page itself is tested in a browser
(tests/test_browser.py) and its routes in tests/test_studio_api.py."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import pytest

from graph.executor import Executor
from nodes.base import RunSettings
from nodes.registry import default_registry
from server.folders import StudioFolders
from ui import page as page_module
from ui.serve import StudioServer, serve

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(tmp_path: Path, token: str | None = None) -> tuple[StudioServer, int]:
    registry = default_registry()
    folders = StudioFolders(tmp_path / "input", tmp_path / "library", REPO / "workflows")
    port = _free_port()
    server = serve(
        "127.0.0.1",
        port,
        registry,
        Executor(registry),
        lambda: RunSettings(output_dir=tmp_path / "out", input_dirs=(tmp_path / "input",)),
        folders,
        token,
        state_dir=tmp_path / "state",
        block=False,
    )
    assert server is not None
    return server, port


@pytest.fixture
def studio(tmp_path: Path) -> Iterator[int]:
    server, port = _start(tmp_path)
    try:
        yield port
    finally:
        server.close()


def _get(port: int, path: str, host: str | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("GET", path, skip_host=True)
        connection.putheader("Host", host or f"127.0.0.1:{port}")
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_the_page_loads_the_bundle_through_the_guarded_file_route(studio: int) -> None:
    if not page_module.bundle_built():
        if os.environ.get("CI"):
            pytest.fail("the page's bundle is missing: setup.sh must build it", pytrace=False)
        pytest.skip("the page's bundle is not built (bash setup.sh)")
    code, body = _get(studio, "/config")
    assert code == 200
    config = body.decode("utf-8", "replace")
    scripts = re.findall(r"gradio_api/file=([^\"\\]+?studio\.js)\?v=", config)
    assert scripts, "the page's head does not load the bundle"
    code, script = _get(studio, f"/gradio_api/file={scripts[0]}")
    assert code == 200 and b"WorkflowStudio" in script
    # the bundle's folder serves page files only: never a hidden file or another kind
    folder = Path(scripts[0]).parent
    assert _get(studio, f"/gradio_api/file={folder}/.built")[0] == 403
    assert _get(studio, f"/gradio_api/file={folder}/../../page.py")[0] in (403, 404)


def test_without_the_bundle_the_page_says_how_to_build_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(page_module, "SCRIPT", tmp_path / "missing.js")
    assert not page_module.bundle_built()
    server, port = _start(tmp_path)
    try:
        code, body = _get(port, "/config")
        assert code == 200 and "bash setup.sh" in body.decode("utf-8", "replace")
    finally:
        server.close()


def test_the_page_answers_only_to_this_machine_without_a_token(studio: int) -> None:
    """DNS rebinding: a name of another site that resolves to 127.0.0.1 gets nothing."""
    for path in ("/", "/config", "/gradio_api/info", "/api/queue", "/api/library"):
        code, body = _get(studio, path, f"rebound.example:{studio}")
        assert code == 403 and "localhost" in json.loads(body)["error"], path
        assert _get(studio, path, f"localhost:{studio}")[0] == 200, path


def test_with_a_token_the_page_needs_a_login(tmp_path: Path) -> None:
    server, port = _start(tmp_path, token="s3cret")
    base = f"http://127.0.0.1:{port}"
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/config", timeout=10)
        assert refused.value.code == 401

        def login(password: str) -> int:
            form = urllib.parse.urlencode({"username": "studio", "password": password}).encode()
            try:
                with urllib.request.urlopen(f"{base}/login", data=form, timeout=10) as response:
                    return response.status
            except urllib.error.HTTPError as exc:
                return exc.code

        assert login("wrong") == 400
        assert login("s3cret") == 200
        with pytest.raises(urllib.error.HTTPError) as no_token:
            urllib.request.urlopen(f"{base}/api/library", timeout=10)
        assert no_token.value.code == 401
    finally:
        server.close()
