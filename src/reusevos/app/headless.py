"""Driving the web app from a script: ``reusevos app`` in a child process on a free local port, and the flags that
run the system's Chromium headless and offline (for Playwright's ``executable_path``; no browser is downloaded).
``tests/test_app.py`` and ``scripts/app_screenshot.py`` use them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package: apt-get install -y chromium
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync")


@dataclass
class RunningApp:
    url: str  # http://127.0.0.1:PORT/
    process: subprocess.Popen
    log: Path  # its stdout and stderr


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_app(log: str | os.PathLike, threads: int | None = 1, timeout: float = 180) -> Iterator[RunningApp]:
    """``reusevos app`` on a free port of 127.0.0.1 (one OpenMP thread, ``--threads``), given once its page answers;
    stopped as Ctrl-C stops it at the end. Raises RuntimeError, with its log, when it stops or does not answer."""
    log = Path(log)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "reusevos", "app", "--port", str(free_port())]
    command += ["--threads", str(threads)] if threads else []
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        app = RunningApp(f"http://127.0.0.1:{command[command.index('--port') + 1]}/", process, log)
        _wait_for(app, timeout)
        yield app
    finally:
        process.terminate()  # SIGTERM: the command stops as on Ctrl-C and removes its files
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_for(app: RunningApp, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if app.process.poll() is not None:
            raise RuntimeError(f"reusevos app stopped (exit {app.process.returncode}): {app.log.read_text()}")
        try:
            with urllib.request.urlopen(app.url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"reusevos app did not answer at {app.url} within {timeout:.0f} s: {app.log.read_text()}")
