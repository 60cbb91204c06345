"""Binder rehearsal: JupyterLab answers, the dashboard answers through jupyter-server-proxy, and a
kernel runs lesson 00 on the brokers binder/start launched in the background. The lab's peak
memory while lesson 00 runs is printed and written to build/binder/memory.json."""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path
from typing import Self

import psutil
import pytest

pytestmark = [pytest.mark.binder, pytest.mark.slow, pytest.mark.timeout(900)]

MEMORY_REPORT = Path(__file__).resolve().parents[2] / "build" / "binder" / "memory.json"
MEMORY_GOAL_MB = 1800  # Binder gives a user about 2 GB
SAMPLE_EVERY_S = 0.5
ROLES = (  # first match wins: a marker in the command line names what the process is
    ("kafka.Kafka", "kafka"), ("redis-server", "redis"), ("ipykernel_launcher", "kernel"),
    ("labkit.api.app", "api"), ("server.js", "bull-board"), ("papermill", "papermill"),
    ("jupyter-lab", "jupyter"), ("labkit", "worker"),
)
DRIVER = "papermill"  # runs the notebook in place of a browser: not part of the lab


def role(process: psutil.Process) -> str:
    command = " ".join(process.info["cmdline"] or [process.info["name"]])
    return next((name for marker, name in ROLES if marker in command), process.info["name"])


class PeakMemory(threading.Thread):
    """Every SAMPLE_EVERY_S, the summed RSS of the Binder user's processes (the whole lab)."""

    def __init__(self, user: str) -> None:
        super().__init__(daemon=True)
        self.user = user
        self.stopped = threading.Event()
        self.peak_mb = 0.0
        self.at_peak: list[dict[str, object]] = []

    def run(self) -> None:
        while not self.stopped.wait(SAMPLE_EVERY_S):
            rows = []
            for process in psutil.process_iter(["username", "cmdline", "name", "memory_info"]):
                if process.info["username"] == self.user and process.info["memory_info"] and role(process) != DRIVER:
                    rss_mb = process.info["memory_info"].rss / 2**20
                    rows.append({"pid": process.pid, "role": role(process), "rss_mb": round(rss_mb, 1)})
            total = sum(r["rss_mb"] for r in rows)
            if total > self.peak_mb:
                self.peak_mb, self.at_peak = total, rows

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.join()


@pytest.fixture(scope="module")
def dashboard_page(binder_lab):
    """The first visit starts `labkit api` behind the proxy, as a learner's launcher click does."""
    return binder_lab.get("lab-dashboard/dashboard")


def test_jupyterlab_answers_with_the_token(binder_lab) -> None:
    status = binder_lab.get("api/status")
    assert status.status_code == 200
    assert "started" in status.json()


def test_dashboard_and_its_api_answer_through_the_proxy(binder_lab, dashboard_page) -> None:
    assert dashboard_page.status_code == 200, dashboard_page.text[:500]
    assert "<title>Booking Queue Lab" in dashboard_page.text
    script = binder_lab.get("lab-dashboard/static/dashboard/dashboard.js")  # the page's relative URL
    assert script.status_code == 200 and "EventSource" in script.text
    queues = binder_lab.get("lab-dashboard/api/queues")
    assert queues.status_code == 200, queues.text[:500]
    assert set(queues.json()) == {"bullmq", "streams", "kafka"}


def test_a_kernel_runs_lesson_00_within_binder_memory(binder_lab, dashboard_page) -> None:
    # What a lesson does first: wait (visibly) for the brokers binder/start launched.
    binder_lab.run_ok("waiting for the brokers", "labkit", "infra", "up", timeout_s=240)
    executed = binder_lab.repo.parent / "00.out.ipynb"
    with PeakMemory(binder_lab.user) as memory:
        done = binder_lab.run(
            "papermill", "notebooks/00_welcome_and_setup.ipynb", str(executed),
            "--kernel", "python3", "--cwd", "notebooks", timeout_s=300,
        )
    assert done.returncode == 0, f"lesson 00 failed:\n{(done.stdout + done.stderr)[-3000:]}"
    by_role = Counter()
    for row in memory.at_peak:
        by_role[row["role"]] += row["rss_mb"]
    report = {
        "peak_mb": round(memory.peak_mb, 1),
        "goal_mb": MEMORY_GOAL_MB,
        "by_role_mb": {name: round(mb, 1) for name, mb in by_role.most_common()},
        "processes": sorted(memory.at_peak, key=lambda r: -r["rss_mb"]),
    }
    MEMORY_REPORT.parent.mkdir(parents=True, exist_ok=True)
    MEMORY_REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"Binder lab peak memory while lesson 00 runs: {report['peak_mb']} MB {report['by_role_mb']}")
    assert {"jupyter", "kernel", "redis", "kafka", "api"} <= set(by_role), by_role
    assert memory.peak_mb <= MEMORY_GOAL_MB, report
