"""Background processes the lab owns — brokers, workers, the API — started, watched and stopped
in one way: pid files, ownership checks, ports, waiting, stopping, restart pauses, log tails."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from labkit.infra.errors import InfraError

LOG_ROTATE_BYTES = 20 * 1024 * 1024


# ---- pid files -------------------------------------------------------------------------------


def write_pid(path: Path, pid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{pid}\n")


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def remove_pid(path: Path) -> None:
    path.unlink(missing_ok=True)


@contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """One `up`/`down` at a time per lab (a notebook and `make` may race)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ---- process identity ------------------------------------------------------------------------


def is_running(pid: int) -> bool:
    """True for a live process; a zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.Error:  # no such process, or not ours to see
        return False


def argv(pid: int) -> list[str]:
    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []


def cmdline(pid: int) -> str:
    return " ".join(argv(pid))


def is_ours(pid: int | None, *markers: str) -> bool:
    """The pid is alive and its command line still carries every marker (pids get reused)."""
    if pid is None or not is_running(pid):
        return False
    line = cmdline(pid)
    return all(marker in line for marker in markers)


# ---- ports -----------------------------------------------------------------------------------


def port_open(host: str, port: int, *, timeout_s: float = 0.5) -> bool:
    """Something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def port_free(host: str, port: int) -> bool:
    """We could bind host:port right now (nobody listens and nothing holds it)."""
    if port_open(host, port):
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the kernel picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def listener_pid(port: int) -> int | None:
    """Best effort: the pid listening on a TCP port (None when unknown or not ours to see)."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.Error:
        return None
    return next(
        (c.pid for c in connections
         if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid),
        None,
    )  # fmt: skip


def describe_pid(pid: int | None) -> str:
    if pid is None:
        return "pid unknown; try `ss -ltnp`"
    try:
        name = psutil.Process(pid).name()
    except psutil.Error:
        name = "?"
    return f"pid {pid}, {name}"


def ensure_port_free(host: str, port: int, *, role: str, hint: str) -> None:
    """Fail with one line naming the port and its owner if we cannot bind it."""
    if port_free(host, port):
        return
    owner = describe_pid(listener_pid(port))
    raise InfraError(
        f"port {port} on {host} ({role}) is in use by another program ({owner}); stop it or {hint}"
    )


# ---- starting, waiting, stopping -------------------------------------------------------------


def rotate_log(path: Path) -> None:
    """Keep logs small across many `up`s: one previous generation, then drop."""
    if path.exists() and path.stat().st_size > LOG_ROTATE_BYTES:
        path.replace(path.with_name(path.name + ".1"))


@dataclass(eq=False)
class Child:
    """A process this one started and holds: its pid, its log, and its exit code once reaped."""

    process: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def exit_code(self) -> int | None:
        return self.process.poll()

    def kill(self) -> None:
        """kill -9 and reap: no cleanup, no goodbye."""
        if self.alive:
            self.process.kill()
        self.process.wait()

    def tail(self, lines: int) -> list[str]:
        return tail(self.log_path, lines=lines)


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Child:
    """Start a background process logging to `log_path`, in its own session: a Ctrl-C in the
    shell or notebook does not reach it; whoever holds the Child stops it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    rotate_log(log_path)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=None if env is None else dict(env),
            start_new_session=True,
            close_fds=True,
        )
    return Child(process, log_path)


def stop(children: Sequence[Child], *, timeout_s: float) -> dict[int, str]:
    """Graceful, side by side: SIGTERM the live ones, SIGKILL whoever outlives timeout_s, and
    reap them all (their exit codes stay readable)."""
    how = terminate([c.pid for c in children if c.alive], timeout_s=timeout_s)
    for child in children:
        child.process.wait()
    return how


@dataclass
class Backoff:
    """Pauses between tries: `first_s`, doubling up to `max_s`. A run that lasted `max_s` or
    longer counts as a recovery, so the next failure starts again from `first_s`."""

    first_s: float = 0.5
    max_s: float = 10.0
    _next_s: float = field(init=False, default=0.0)

    def pause_after(self, ran_s: float) -> float:
        """The pause before the next try, given how long the failed run lasted."""
        if not self._next_s or ran_s >= self.max_s:
            self._next_s = self.first_s
        pause = self._next_s
        self._next_s = min(pause * 2, self.max_s)
        return pause


def wait_until(
    predicate: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.25
) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def terminate(pids: Sequence[int], *, timeout_s: float) -> dict[int, str]:
    """SIGTERM all at once (brokers shut down in parallel), SIGKILL whoever outlives timeout_s."""
    how: dict[int, str] = {}
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
            how[pid] = "SIGTERM"
        except ProcessLookupError:
            how[pid] = "already gone"
    wait_until(
        lambda: not any(is_running(pid) for pid in pids), timeout_s=timeout_s, interval_s=0.1
    )
    for pid in pids:
        if is_running(pid):
            try:
                os.kill(pid, signal.SIGKILL)
                how[pid] = f"SIGKILL after {timeout_s:g} s"
            except ProcessLookupError:
                pass
    wait_until(lambda: not any(is_running(pid) for pid in pids), timeout_s=5, interval_s=0.1)
    return how


def tail(path: Path, *, lines: int) -> list[str]:
    """The last `lines` lines of a file without reading all of a big log."""
    if not path.exists():
        return []
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        block = 8192
        data = b""
        while size > 0 and data.count(b"\n") <= lines:
            step = min(block, size)
            size -= step
            fh.seek(size)
            data = fh.read(step) + data
    return data.decode(errors="replace").splitlines()[-lines:] if lines > 0 else []
