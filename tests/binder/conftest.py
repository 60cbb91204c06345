"""A Binder rehearsal on this machine: build the environment the way repo2docker does and launch
JupyterLab through binder/start, as an unprivileged user, on free loopback ports.

repo2docker's steps, in its order: apt.txt (here: checked installed), a fresh venv of the
runtime.txt Python with binder/requirements.txt, postBuild in the repo, then
`binder/start jupyter lab ...`. The repo is HEAD (`git archive`), as Binder builds a commit.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
USER = "labkit-binder"  # owns every process of the rehearsal's lab, and nothing else
JUPYTER_READY_S = 90
# This machine's package index and CA bundle, which pip, Maven and npm need to reach registries.
MACHINE_SETTINGS = ("PIP_", "SSL_CERT_", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"  # what the unprivileged user sees (no root's pyenv)


@dataclass
class BinderLab:
    repo: Path
    venv: Path
    env: dict[str, str]
    base_url: str
    token: str
    user: str = USER

    def run(self, *argv: str, timeout_s: float, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command as the Binder user in the lab's environment; output kept for messages."""
        return subprocess.run(
            argv, cwd=cwd or self.repo, env=self.env, user=USER, group=USER, extra_groups=[],
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )

    def run_ok(self, step: str, *argv: str, timeout_s: float) -> None:
        done = self.run(*argv, timeout_s=timeout_s)
        assert done.returncode == 0, f"{step} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}"

    def get(self, path: str, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"token {self.token}"}
        return httpx.get(f"{self.base_url}/{path}", headers=headers, timeout=60, **kwargs)


def free_port_pair() -> int:
    """A free port whose successor is free too (a Kafka broker's controller uses port + 1)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue


@pytest.fixture(scope="session")
def binder_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        if os.geteuid() != 0:
            pytest.skip(f"the rehearsal needs root to create the user {USER!r}")
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", USER], check=True)
    return pwd.getpwnam(USER)


def check_apt_packages() -> None:
    packages = (REPO / "binder" / "apt.txt").read_text().split()
    missing = [p for p in packages if subprocess.run(["dpkg", "-s", p], check=False, capture_output=True).returncode]
    assert not missing, f"apt.txt packages not installed: {missing} (apt-get install them)"


def runtime_python(search_path: str) -> str:
    version = (REPO / "binder" / "runtime.txt").read_text().strip().removeprefix("python-")
    python = shutil.which(f"python{version}", path=search_path)
    assert python, f"runtime.txt asks for python{version}, which is not on {search_path}"
    return python


@pytest.fixture(scope="session")
def binder_lab(binder_user) -> Iterator[BinderLab]:
    check_apt_packages()
    work = Path(tempfile.mkdtemp(prefix="labkit-binder-"))
    repo, venv = work / "repo", work / "venv"
    repo.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(repo)], input=archive.stdout, check=True)
    shutil.chown(work, binder_user.pw_uid, binder_user.pw_gid)
    subprocess.run(["chown", "-R", f"{USER}:{USER}", str(work)], check=True)

    redis_port, kafka_port, jupyter_port = free_port_pair(), free_port_pair(), free_port_pair()
    env = {
        **{k: v for k, v in os.environ.items() if k.startswith(MACHINE_SETTINGS)},
        "HOME": binder_user.pw_dir, "USER": USER, "LANG": "C.UTF-8",
        "PATH": f"{venv}/bin:{SYSTEM_PATH}",
        "LABKIT_HOME": str(work / "lab"),
        "LABKIT_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "LABKIT_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}",
    }
    lab = BinderLab(repo, venv, env, f"http://127.0.0.1:{jupyter_port}", secrets.token_hex(16))
    jupyter = None
    try:
        lab.run_ok("venv", runtime_python(SYSTEM_PATH), "-m", "venv", str(venv), timeout_s=120)
        lab.run_ok("pip install", "pip", "install", "-q", "-r", "binder/requirements.txt", timeout_s=600)
        lab.run_ok("postBuild", "bash", "binder/postBuild", timeout_s=600)
        jupyter = subprocess.Popen(
            ["binder/start", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={jupyter_port}",
             f"--ServerApp.token={lab.token}", f"--ServerApp.root_dir={repo}"],
            cwd=repo, env=env, user=USER, group=USER, extra_groups=[], start_new_session=True,
            stdout=(work / "jupyter.log").open("wb"), stderr=subprocess.STDOUT,
        )
        wait_for_jupyter(lab, jupyter, work / "jupyter.log")
        yield lab
    finally:
        if (venv / "bin" / "labkit").exists():
            lab.run("labkit", "infra", "down", timeout_s=120)
        if jupyter is not None:
            stop_group(jupyter)
        end_user_processes()
        shutil.rmtree(work, ignore_errors=True)


def wait_for_jupyter(lab: BinderLab, jupyter: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + JUPYTER_READY_S
    while time.monotonic() < deadline:
        assert jupyter.poll() is None, f"jupyter lab exited:\n{log.read_text()[-3000:]}"
        try:
            if lab.get("api/status").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"JupyterLab did not answer in {JUPYTER_READY_S} s:\n{log.read_text()[-3000:]}")


def stop_group(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def end_user_processes() -> None:
    """Whatever the rehearsal's user still runs (a detached broker, a proxied server) is ours."""
    leftovers = [p for p in psutil.process_iter(["username"]) if p.info["username"] == USER]
    for process in leftovers:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(leftovers, timeout=10)
