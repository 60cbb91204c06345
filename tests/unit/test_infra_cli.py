"""`labkit infra` error paths and reports that need no running broker."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labkit.infra import brokers, kafka_jars
from labkit.infra.cli import infra_app
from labkit.infra.errors import InfraError
from labkit.infra.progress import Progress

runner = CliRunner()


def free_port_pair() -> int:
    """A port p with p and p+1 both free (a Kafka broker and its controller)."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        with socket.socket() as nxt:
            try:
                nxt.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {
        "LABKIT_HOME": str(tmp_path / "lab"),
        "LABKIT_REDIS_URL": f"redis://127.0.0.1:{free_port_pair()}/0",
        "LABKIT_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port_pair()}",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("KAFKA_HOME", raising=False)
    return values


def one_line_error(output: str) -> str:
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("error: ")
    return lines[0]


def test_broker_count_must_be_1_or_3(env: dict[str, str]) -> None:
    result = runner.invoke(infra_app, ["up", "--kafka-brokers", "2"])
    assert result.exit_code == 1
    assert "1 or 3" in one_line_error(result.output)


def test_missing_java_says_how_to_install(env: dict[str, str], monkeypatch) -> None:
    monkeypatch.setenv("PATH", "")
    result = runner.invoke(infra_app, ["up", "kafka"])
    assert result.exit_code == 1
    assert "apt-get install -y openjdk-17-jre-headless" in one_line_error(result.output)


def test_old_java_is_refused(env: dict[str, str], monkeypatch) -> None:
    monkeypatch.setattr(kafka_jars.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(kafka_jars, "java_major", lambda java: 11)
    with pytest.raises(InfraError, match=r"Java 11; Kafka 4 needs Java 17\+"):
        kafka_jars.java_binary()


def test_missing_redis_server_says_how_to_install(env: dict[str, str], monkeypatch) -> None:
    monkeypatch.setenv("PATH", "")
    result = runner.invoke(infra_app, ["up", "redis"])
    assert result.exit_code == 1
    assert "apt-get install -y redis-server" in one_line_error(result.output)


def test_no_mvn_and_no_cache_is_a_clear_error(env: dict[str, str], tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(kafka_jars, "TARBALL_URLS", ("http://127.0.0.1:1/kafka-{v}.tgz",))
    monkeypatch.setattr(kafka_jars.shutil, "which", lambda name: None)
    said: list[str] = []
    with pytest.raises(InfraError, match="apt-get install -y maven.*KAFKA_HOME"):
        kafka_jars.resolve_libs("4.1.1", progress=Progress(doing=said.append))
    assert said == [f"downloading the Kafka 4.1.1 tarball (once; cached in {tmp_path}/empty-cache/labkit/kafka-4.1.1)"]


def test_busy_kafka_port_fails_before_starting_anything(env: dict[str, str], monkeypatch) -> None:
    monkeypatch.setattr(kafka_jars, "java_binary", lambda: "/usr/bin/java")
    monkeypatch.setattr(kafka_jars, "resolve_libs", lambda version: Path("/nonexistent"))
    port = int(env["LABKIT_KAFKA_BOOTSTRAP"].rsplit(":", 1)[1])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        result = runner.invoke(infra_app, ["up", "kafka"])
    assert result.exit_code == 1
    line = one_line_error(result.output)
    assert f"port {port} on 127.0.0.1" in line
    assert "LABKIT_KAFKA_BOOTSTRAP=127.0.0.1:<other port>" in line


def test_remote_hosts_are_not_started_locally(env: dict[str, str], monkeypatch) -> None:
    monkeypatch.setenv("LABKIT_REDIS_URL", "redis://redis.example.com:6379/0")
    result = runner.invoke(infra_app, ["up", "redis"])
    assert result.exit_code == 1
    assert "redis.example.com" in one_line_error(result.output)


def test_status_json_when_nothing_runs(env: dict[str, str]) -> None:
    result = runner.invoke(infra_app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    services = json.loads(result.stdout)["services"]
    assert [s["service"] for s in services] == ["redis", "kafka"]
    assert not any(s["healthy"] or s["managed"] for s in services)
    kafka_port = int(env["LABKIT_KAFKA_BOOTSTRAP"].rsplit(":", 1)[1])
    assert services[1]["port"] == kafka_port


def test_down_removes_stale_pid_files_and_signals_nobody(env: dict[str, str]) -> None:
    pids = Path(env["LABKIT_HOME"]) / "pids"
    pids.mkdir(parents=True)
    # pid 1 is alive but not ours: it must never be signalled.
    (pids / "redis.pid").write_text("1\n")
    (pids / "kafka-1.pid").write_text("1\n")
    result = runner.invoke(infra_app, ["down"])
    assert result.exit_code == 0, result.output
    assert "stale" in result.output
    assert not list(pids.iterdir())


def test_logs_without_a_lab(env: dict[str, str]) -> None:
    result = runner.invoke(infra_app, ["logs", "kafka"])
    assert result.exit_code == 0
    assert "no log files yet" in result.output


def test_up_is_exported_for_mounting() -> None:
    assert {c.name or c.callback.__name__ for c in infra_app.registered_commands} == {
        "up",
        "down",
        "status",
        "logs",
    }
    assert brokers.SERVICES == ("redis", "kafka")
