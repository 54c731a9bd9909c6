"""Run `cli.py serve` as its own process on a free port and wait until it answers: what the bench and the
real-server tests start, so both measure and check the same command a person runs."""

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

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(log: Path, *options: str, port: int | None = None, env: dict[str, str] | None = None,
          timeout: float = 120.0) -> tuple[str, subprocess.Popen]:
    """Start the server with extra `cli.py serve` options; (base URL, process) once /health answers. A server
    that exits or stays silent for `timeout` seconds raises RuntimeError with its log."""
    port = port or free_port()
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "cli.py", "serve", "--port", str(port), "--log-level", "warning",
                                 *options], cwd=REPO, env=env or os.environ.copy(), stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                return url, proc
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"cli.py serve did not start:\n{log.read_text()}")
        time.sleep(0.2)


@contextmanager
def server(log: Path, *options: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """`start`, then stop the server (SIGTERM, then SIGKILL) when the block ends."""
    url, proc = start(log, *options, env=env)
    try:
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
