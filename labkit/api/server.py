"""Run `labkit api` as a real uvicorn process on a free loopback port, for tests, notebooks and
measurements that want the whole HTTP stack rather than an in-process transport."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from labkit.settings import Settings


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@contextmanager
def api_process(settings: Settings, *, host: str = "127.0.0.1", port: int | None = None,
                ready_timeout_s: float = 30.0) -> Iterator[str]:
    """Start the API with `settings`, yield its base URL once it answers, stop it on exit."""
    port = port or free_port(host)
    log_dir = settings.home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"api-{port}.log"
    env = {**os.environ, **settings.env()}
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "labkit", "api", "--host", host, "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    base = f"http://{host}:{port}"
    try:
        _wait_until_up(base, process, log_path, ready_timeout_s)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _wait_until_up(base: str, process: subprocess.Popen, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"API exited with {process.returncode}:\n{log_path.read_text()[-2000:]}")
        try:
            # /openapi.json answers without touching a broker: "up" means the process serves.
            if httpx.get(f"{base}/openapi.json", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"API did not answer on {base} within {timeout_s:.0f}s")
