"""labkit.processes: the one way the lab starts, stops and waits for its processes."""

from __future__ import annotations

import os
import signal
import socket
import sys

from labkit import processes


def python(code: str, tmp_path, name: str = "child") -> processes.Child:
    return processes.spawn([sys.executable, "-c", code], log_path=tmp_path / f"{name}.log")


def test_a_child_logs_to_its_file_and_reports_its_exit_code(tmp_path):
    child = python("print('one'); print('two'); raise SystemExit(3)", tmp_path)
    assert processes.wait_until(lambda: not child.alive, timeout_s=10, interval_s=0.05)
    assert child.exit_code == 3
    assert child.tail(1) == ["two"]


def waiting_child(tmp_path, on_sigterm: str) -> processes.Child:
    """A child that says "ready" once its SIGTERM handler is in place, then sleeps."""
    code = (
        "import signal, sys, time\n"
        f"signal.signal(signal.SIGTERM, {on_sigterm})\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    child = python(code, tmp_path)
    assert processes.wait_until(lambda: child.tail(1) == ["ready"], timeout_s=10, interval_s=0.05)
    return child


def test_stop_lets_a_child_finish_gracefully(tmp_path):
    child = waiting_child(tmp_path, "lambda *_: (print('bye', flush=True), sys.exit(0))")
    how = processes.stop([child], timeout_s=10)
    assert how == {child.pid: "SIGTERM"}
    assert child.exit_code == 0
    assert child.tail(1) == ["bye"]


def test_stop_kills_a_child_that_ignores_sigterm(tmp_path):
    child = waiting_child(tmp_path, "signal.SIG_IGN")
    how = processes.stop([child], timeout_s=0.5)
    assert how[child.pid].startswith("SIGKILL")
    assert child.exit_code == -signal.SIGKILL


def test_kill_is_immediate_and_reaped(tmp_path):
    child = python("import time; time.sleep(60)", tmp_path)
    child.kill()
    assert not child.alive
    assert child.exit_code == -signal.SIGKILL
    assert not processes.is_running(child.pid)


def test_free_port_can_be_bound(tmp_path):
    port = processes.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_a_long_run():
    backoff = processes.Backoff(first_s=0.5, max_s=4.0)
    assert [backoff.pause_after(0.1) for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert backoff.pause_after(4.0) == 0.5  # it ran long enough: a new outage
    assert backoff.pause_after(0.1) == 1.0


def test_an_exited_child_not_yet_reaped_counts_as_gone(tmp_path):
    child = python("pass", tmp_path)
    assert processes.wait_until(lambda: not processes.is_running(child.pid), timeout_s=10, interval_s=0.05)
    assert child.exit_code == 0  # reaped only now: it was a zombie while is_running said gone


def test_argv_reads_a_live_process_and_nothing_of_a_gone_one(tmp_path):
    code = "import time; time.sleep(60)"
    child = python(code, tmp_path)
    assert processes.argv(child.pid) == [sys.executable, "-c", code]
    assert processes.is_ours(child.pid, "time.sleep(60)")
    child.kill()
    assert processes.argv(child.pid) == []
    assert not processes.is_ours(child.pid, "time.sleep(60)")


def test_a_listening_port_is_not_free_and_names_its_owner():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert processes.listener_pid(port) == os.getpid()
        assert not processes.port_free("127.0.0.1", port)
        name = processes.describe_pid(os.getpid()).removeprefix(f"pid {os.getpid()}, ")
        assert name != "?" and name in processes.cmdline(os.getpid())
    assert processes.listener_pid(port) is None
