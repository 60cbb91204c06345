"""While the lessons run: the lab's peak memory (RSS of every process of the lab), the figure a
Binder session (about 2 GB) must fit. Written to build/notebooks/memory.json and printed at the
end of the run; README quotes it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import psutil
import pytest

from labkit.infra.layout import Paths
from labkit.settings import Settings

SAMPLE_EVERY_S = 0.5
OUT = Path(__file__).resolve().parents[2] / "build" / "notebooks" / "memory.json"


def lab_processes() -> list[psutil.Process]:
    """Everything this test run started (kernels, their worker pools, API servers), the
    brokers by their pid files, and any other `labkit worker` on this lab's home. Not the
    test process itself: it stands where a learner's JupyterLab server would be, and that
    one the Binder rehearsal measures (tests/binder)."""
    me = psutil.Process()
    found = {p.pid: p for p in me.children(recursive=True)}
    paths = Paths.of(Settings.from_env())
    for pid_file in paths.pids.glob("*.pid") if paths.pids.exists() else []:
        try:
            pid = int(pid_file.read_text().split()[0])
            found.setdefault(pid, psutil.Process(pid))
        except (ValueError, IndexError, psutil.Error):
            continue
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            if "worker" in (proc.info["cmdline"] or []) and (proc.info["environ"] or {}).get(
                "LABKIT_HOME"
            ) == str(paths.home):
                found.setdefault(proc.pid, proc)
        except psutil.Error:
            continue
    return list(found.values())


def kind(proc: psutil.Process) -> str:
    try:
        line = " ".join(proc.cmdline())
    except psutil.Error:
        return "gone"
    for word, name in (("kafka.Kafka", "kafka"), ("redis-server", "redis"), ("labkit worker", "worker"),
                       ("ipykernel", "kernel"), ("uvicorn", "api"),
                       ("labkit api", "api")):
        if word in line:
            return name
    return proc.name()


class PeakMemory:
    def __init__(self) -> None:
        self.peak_bytes = 0
        self.at_peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-memory", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            by_kind: dict[str, int] = {}
            for proc in lab_processes():
                try:
                    by_kind[kind(proc)] = by_kind.get(kind(proc), 0) + proc.memory_info().rss
                except psutil.Error:
                    continue
            total = sum(by_kind.values())
            if total > self.peak_bytes:
                self.peak_bytes, self.at_peak = total, by_kind

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def as_dict(self) -> dict[str, object]:
        mib = 1 << 20
        return {"peak_mib": round(self.peak_bytes / mib),
                "at_peak_mib": {k: round(v / mib) for k, v in sorted(self.at_peak.items())}}


@pytest.fixture(scope="session", autouse=True)
def peak_memory(request) -> Iterator[PeakMemory]:
    with PeakMemory() as sampler:
        yield sampler
    if sampler.peak_bytes:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(sampler.as_dict(), indent=2))
        request.config.stash[PEAK] = sampler.as_dict()


PEAK = pytest.StashKey[dict]()


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if PEAK in config.stash:
        terminalreporter.write_line(f"lab peak memory while the lessons ran: {config.stash[PEAK]}")
