"""The page's pure JavaScript modules (search, conversion, progress, seed control) under
node's own test runner: ``node --test ui/web/test/``. Skipped without node, except in CI."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "ui" / "web" / "test"


def test_the_page_modules_pass_their_own_tests() -> None:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail("node is missing; CI must run the page's module tests", pytrace=False)
        pytest.skip("node is missing (apt-get install -y nodejs npm)")
    files = sorted(TESTS.glob("*.test.mjs"))
    assert files, f"no *.test.mjs under {TESTS}"
    done = subprocess.run(
        [node, "--test", *map(str, files)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout, done.stdout[-3000:]
