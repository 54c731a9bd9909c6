"""A real `streamlit run` of the dashboard on a free port, for the browser suites that need a server of their own
(the access suite starts one per login mode; the concurrency suite one that many browsers share)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PAGE_TITLES = ("Audience", "Studio", "Campaign Lab", "Reward Tuning", "Settings")
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'  # the session's script run has finished


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 90
    while True:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"streamlit did not start:\n{log.read_text()}")
        time.sleep(0.5)


@contextmanager
def streamlit_server(log: Path, *options: str, port: int | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start the dashboard from the repository root with extra command-line `options` (such as
    `--secrets.files PATH`), using this process's environment (the session's ADLOOP_HOME); yields (url, process)."""
    port = port or free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
             # no file watcher: edits to the working tree during a run must not re-import modules (and models)
             "--server.fileWatcherType", "none", *options],
            cwd=REPO, env=os.environ.copy(), stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)
