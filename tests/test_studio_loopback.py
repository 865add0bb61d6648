"""``app.py`` (the studio) listens on loopback only unless told otherwise.

Answering on 127.0.0.1 proves nothing: a server bound to 0.0.0.0 answers there too. So
the test reads the addresses the process listens on (``/proc/net/tcp``) and tries a second
loopback address (127.0.0.2, which Linux routes to ``lo`` but a 127.0.0.1 socket does not
take). A control run with ``--host 0.0.0.0`` shows both checks can tell the difference.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROC_TCP = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))

pytestmark = pytest.mark.skipif(not PROC_TCP[0].exists(), reason="reads Linux's /proc/net/tcp")


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a socket listening on ``port`` (any process)."""
    found = set()
    for table in PROC_TCP:
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            address, _, port_hex = local.partition(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            # the kernel prints each 32-bit word in host (little-endian) order
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(str(ipaddress.ip_address(words)))
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def start_studio(tmp_path: Path, port: int, *host: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "GRADIO_ANALYTICS_ENABLED": "False"}
    args = [sys.executable, str(REPO / "app.py"), *host, "--port", str(port), "--out", str(tmp_path / "out")]
    return subprocess.Popen(
        args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )


def wait_until_serving(proc: subprocess.Popen[str], port: int) -> None:
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                assert response.status == 200
            return
        except OSError:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the studio did not start"
            time.sleep(0.5)


@pytest.mark.parametrize(
    ("host", "loopback_only"),
    [((), True), (("--host", "0.0.0.0"), False)],
    ids=["default", "control-0.0.0.0"],
)
def test_the_studio_listens_on_loopback_only_by_default(tmp_path, host, loopback_only):
    port = free_port()
    proc = start_studio(tmp_path, port, *host)
    try:
        wait_until_serving(proc, port)
        addresses = listening_addresses(port)
        assert addresses, "nothing listens on the port"
        if loopback_only:
            assert all(ipaddress.ip_address(a).is_loopback for a in addresses), addresses
            assert not answers("127.0.0.2", port)  # another loopback address: not this socket's
        else:
            assert "0.0.0.0" in addresses
            assert answers("127.0.0.2", port)  # the probe above can see a wider binding
    finally:
        proc.terminate()
        proc.wait(30)
