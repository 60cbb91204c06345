"""Run `labkit api` as a real uvicorn process on a free loopback port, for tests, notebooks and
measurements that want the whole HTTP stack rather than an in-process transport."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from labkit import processes
from labkit.processes import free_port
from labkit.settings import Settings

STOP_TIMEOUT_S = 15.0


@contextmanager
def api_process(settings: Settings, *, host: str = "127.0.0.1", port: int | None = None,
                ready_timeout_s: float = 30.0) -> Iterator[str]:
    """Start the API with `settings`, yield its base URL once it answers, stop it on exit."""
    port = port or free_port(host)
    child = processes.spawn(
        [sys.executable, "-m", "labkit", "api", "--host", host, "--port", str(port)],
        log_path=settings.home / "logs" / f"api-{port}.log", env={**os.environ, **settings.env()},
    )
    base = f"http://{host}:{port}"
    try:
        if not processes.wait_until(lambda: _answers(base, child), timeout_s=ready_timeout_s,
                                    interval_s=0.1):
            raise TimeoutError(f"API did not answer on {base} within {ready_timeout_s:.0f}s")
        yield base
    finally:
        processes.stop([child], timeout_s=STOP_TIMEOUT_S)


def _answers(base: str, child: processes.Child) -> bool:
    if not child.alive:
        log = "\n".join(child.tail(40))
        raise RuntimeError(f"API exited with {child.exit_code}:\n{log}")
    try:
        # /openapi.json answers without touching a broker: "up" means the process serves.
        return httpx.get(f"{base}/openapi.json", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
