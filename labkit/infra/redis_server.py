"""Debian's redis-server as a background process owned by the lab."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import redis

from labkit import processes
from labkit.infra.errors import InfraError
from labkit.infra.layout import LOOPBACK, Paths
from labkit.infra.progress import QUIET, Progress
from labkit.settings import Settings

MAXMEMORY = "1gb"  # the lab's Redis; an external one keeps its own setting
MEMORY_WARN_SHARE = 0.8  # `infra status` warns past this share of maxmemory
UNBOUNDED_WARN_BYTES = 1 << 30  # …or past 1 GiB when Redis has no maxmemory
INSTALL_HINT = "apt-get install -y redis-server"


def find_binary(*, install: bool) -> str:
    """Path of redis-server; installs it with apt when asked and allowed (root + apt-get)."""
    found = shutil.which("redis-server")
    if found:
        return found
    can_install = os.geteuid() == 0 and shutil.which("apt-get") is not None
    if install and can_install:
        _apt_install("redis-server")
        found = shutil.which("redis-server")
        if found:
            return found
    offer = " (or rerun with --install / LABKIT_AUTO_INSTALL=1)" if can_install else ""
    raise InfraError(f"redis-server not found: run `{INSTALL_HINT}`{offer}")


POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


def _apt_install(package: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", package]
    # Without this the package's init script starts a system redis on 6379, which would
    # then squat the lab's port. policy-rc.d exit 101 = "don't start services" (Debian policy).
    own_policy = not POLICY_RC_D.exists()
    if own_policy:
        POLICY_RC_D.write_text("#!/bin/sh\nexit 101\n")
        POLICY_RC_D.chmod(0o755)
    try:
        if subprocess.run(cmd, env=env, check=False, capture_output=True).returncode != 0:
            # A fresh container has empty package lists; refresh once and retry.
            subprocess.run(["apt-get", "update"], env=env, check=False, capture_output=True)
            done = subprocess.run(cmd, env=env, check=False, capture_output=True, text=True)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["?"])[-1]
                raise InfraError(f"`apt-get install -y {package}` failed: {last}")
    finally:
        if own_policy:
            POLICY_RC_D.unlink(missing_ok=True)


def render_config(*, port: int, paths: Paths) -> str:
    """redis.conf for the lab: durable enough to survive a crash lesson, never evicting jobs."""
    return "\n".join(
        [
            f"bind {LOOPBACK}",
            f"port {port}",
            "protected-mode yes",
            "daemonize no",  # we own the process (pid file written by us and by redis)
            f"dir {paths.redis_dir}",
            f"logfile {paths.redis_log}",
            f"pidfile {paths.redis_pid}",
            "appendonly yes",
            "appendfsync everysec",
            # Queues must never lose jobs to eviction; a full Redis should fail loudly instead,
            # at a bound we chose rather than when the machine runs out (`infra status` warns).
            f"maxmemory {MAXMEMORY}",
            "maxmemory-policy noeviction",
            "save 60 1000",
            "",
        ]
    )


def marker(port: int) -> tuple[str, str]:
    # redis-server rewrites its title to "redis-server 127.0.0.1:<port>".
    return ("redis-server", f":{port}")


def managed_pid(settings: Settings) -> int | None:
    """Our redis-server's pid if it is still running, else None."""
    paths = Paths.of(settings)
    pid = processes.read_pid(paths.redis_pid)
    _, port = settings.redis_host_port
    return pid if processes.is_ours(pid, *marker(port)) else None


def check_port(settings: Settings) -> None:
    _, port = settings.redis_host_port
    processes.ensure_port_free(
        LOOPBACK,
        port,
        role="Redis",
        hint=f"set LABKIT_REDIS_URL=redis://{LOOPBACK}:<other port>/0",
    )


def start(settings: Settings, *, binary: str) -> int:
    paths = Paths.of(settings)
    _, port = settings.redis_host_port
    check_port(settings)
    for d in (paths.redis_dir, paths.logs, paths.pids):
        d.mkdir(parents=True, exist_ok=True)
    paths.redis_conf.write_text(render_config(port=port, paths=paths))
    pid = processes.spawn(
        [binary, str(paths.redis_conf)], log_path=paths.redis_log, cwd=paths.redis_dir
    ).pid  # it outlives this process: pid file and `infra down` own it from here
    processes.write_pid(paths.redis_pid, pid)
    return pid


def client(settings: Settings, *, timeout_s: float = 1.0) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )


def ping(settings: Settings) -> bool:
    try:
        with client(settings) as r:
            return bool(r.ping())
    except (redis.RedisError, OSError):
        return False


def memory(settings: Settings) -> tuple[int, int] | None:
    """(used bytes, maxmemory bytes — 0 when unbounded), or None when Redis does not answer."""
    try:
        with client(settings) as r:
            info = r.info("memory")
            return int(info["used_memory"]), int(info.get("maxmemory", 0))
    except (redis.RedisError, OSError, KeyError):
        return None


def memory_warning(used: int, limit: int) -> str | None:
    """Say so when Redis is near the point where it refuses writes (noeviction)."""
    bound = limit or UNBOUNDED_WARN_BYTES
    if used < MEMORY_WARN_SHARE * bound:
        return None
    what = f"{used / 2**20:.0f} MiB of maxmemory {limit / 2**20:.0f} MiB" if limit else (
        f"{used / 2**20:.0f} MiB with no maxmemory")
    return (f"Redis uses {what}: at maxmemory it refuses writes (noeviction). Let finished "
            "bookings expire (LABKIT_RETENTION_S), redrive or drop dead letters, or raise maxmemory.")


def version(settings: Settings) -> str | None:
    try:
        with client(settings) as r:
            return str(r.info("server").get("redis_version"))
    except (redis.RedisError, OSError):
        return None


def wait_healthy(
    settings: Settings, *, pid: int | None, timeout_s: float, progress: Progress = QUIET
) -> None:
    paths = Paths.of(settings)
    host, port = settings.redis_host_port
    progress.doing(f"waiting for Redis to answer PING on {host}:{port}")

    def ready() -> bool:
        if pid is not None and not processes.is_running(pid):
            raise InfraError(f"redis-server exited during startup; see {paths.redis_log}")
        return ping(settings)

    if not processes.wait_until(ready, timeout_s=timeout_s):
        raise InfraError(
            f"Redis did not answer PING on {host}:{port} within {timeout_s:g} s; "
            f"see {paths.redis_log}"
        )
    progress.done(f"redis healthy on {host}:{port}")
