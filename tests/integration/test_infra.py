"""`labkit infra` against real redis-server and Apache Kafka processes.

Every test runs the CLI as a subprocess with its own LABKIT_HOME and ports, so a learner's lab
on the default ports and `.lab/` is never touched.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from kafka import KafkaAdminClient, KafkaProducer

from labkit import kafka_admin, names, processes
from labkit.settings import Settings

pytestmark = [pytest.mark.redis, pytest.mark.kafka]

UP_TIMEOUT_S = 240
SMALL_HEAP = "-Xms128m -Xmx384m"  # what binder/start exports; not the default


def free_port_run(width: int) -> int:
    """A port p such that p .. p+width-1 are all free on loopback."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base = sock.getsockname()[1]
        if base + width > 65535:
            continue
        if all(processes.port_free("127.0.0.1", base + i) for i in range(width)):
            return base
    raise RuntimeError(f"no run of {width} free ports")


@dataclass(frozen=True)
class Lab:
    home: Path
    redis_port: int
    kafka_port: int

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LABKIT_")}
        env.update(
            LABKIT_HOME=str(self.home),
            LABKIT_REDIS_URL=f"redis://127.0.0.1:{self.redis_port}/0",
            LABKIT_KAFKA_BOOTSTRAP=f"127.0.0.1:{self.kafka_port}",
            LABKIT_KAFKA_HEAP=SMALL_HEAP,
        )
        return env

    def cli(self, *args: str, timeout_s: float = UP_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "labkit", "infra", *args],
            env=self.env,
            cwd=self.home.parent,
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    def status(self) -> list[dict]:
        done = self.cli("status", "--json", timeout_s=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["services"]

    def pids(self) -> list[int]:
        return [s["pid"] for s in self.status() if s["pid"] is not None]


def new_lab(tmp_path: Path, *, kafka_width: int) -> Lab:
    home = tmp_path / "lab"
    home.parent.mkdir(parents=True, exist_ok=True)
    return Lab(home=home, redis_port=free_port_run(1), kafka_port=free_port_run(kafka_width))


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    the_lab = new_lab(tmp_path_factory.mktemp("single"), kafka_width=2)
    ok(the_lab.cli("up"))
    try:
        yield the_lab
    finally:
        the_lab.cli("down", timeout_s=120)


def test_status_shows_both_brokers_healthy_on_our_ports(lab: Lab) -> None:
    services = lab.status()
    by_name = {s["service"]: s for s in services}
    assert by_name.keys() == {"redis", "kafka"}
    redis_row, kafka_row = by_name["redis"], by_name["kafka"]
    assert redis_row["healthy"] and redis_row["managed"]
    assert redis_row["version"].startswith("7.")
    assert redis_row["warning"] is None  # a fresh lab is far from maxmemory
    assert (redis_row["host"], redis_row["port"]) == ("127.0.0.1", lab.redis_port)
    assert kafka_row["healthy"] and kafka_row["managed"]
    assert kafka_row["version"].startswith("4.")
    assert (kafka_row["host"], kafka_row["port"]) == ("127.0.0.1", lab.kafka_port)
    assert kafka_row["controller_port"] == lab.kafka_port + 1
    assert all(processes.is_running(s["pid"]) for s in services)
    assert Path(kafka_row["log"]).is_relative_to(lab.home)


def test_kafka_runs_with_the_heap_from_the_setting(lab: Lab) -> None:
    kafka_row = next(s for s in lab.status() if s["service"] == "kafka")
    argv = processes.argv(kafka_row["pid"])
    assert argv[1:3] == SMALL_HEAP.split()
    assert "-Xmx512m" not in argv


def test_outside_clients_see_topics_and_pong(lab: Lab) -> None:
    admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{lab.kafka_port}")
    try:
        topics = {t["name"]: t for t in admin.describe_topics()}
    finally:
        admin.close()
    for topic in (names.TOPIC, names.TOPIC_DLQ, *names.RETRY_TOPICS):
        assert topic in topics
        assert len(topics[topic]["partitions"]) == names.KAFKA_PARTITIONS
    with redis.Redis(port=lab.redis_port) as r:
        assert r.ping() is True
        assert r.config_get("appendonly") == {"appendonly": "yes"}
        assert r.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert r.config_get("maxmemory") == {"maxmemory": str(1 << 30)}


def test_second_up_starts_nothing(lab: Lab) -> None:
    before = sorted(lab.pids())
    done = lab.cli("up")
    out = ok(done)
    assert "started" not in out
    assert "already running" in out
    assert sorted(lab.pids()) == before
    # Progress goes to stderr, one line per broker found healthy; stdout keeps the report.
    assert f"✓ redis healthy on 127.0.0.1:{lab.redis_port}" in done.stderr
    assert f"✓ kafka node 1 healthy on 127.0.0.1:{lab.kafka_port}" in done.stderr
    assert "healthy on" not in out


def test_logs_show_both_services(lab: Lab) -> None:
    out = ok(lab.cli("logs", "-n", "5", timeout_s=60))
    assert "redis.log" in out and "kafka-1.log" in out


def test_busy_kafka_port_is_refused_clearly(tmp_path: Path) -> None:
    other = new_lab(tmp_path, kafka_width=2)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", other.kafka_port))
        squatter.listen()
        done = other.cli("up")
    assert done.returncode != 0
    assert f"port {other.kafka_port}" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    # Checked before anything started: no pid files, no Redis on its port.
    assert not list(other.home.glob("pids/*.pid"))
    assert not processes.port_open("127.0.0.1", other.redis_port)


def test_down_leaves_no_processes(lab: Lab) -> None:
    # Runs last in this module: the shared lab is gone afterwards.
    pids = lab.pids()
    assert len(pids) == 2
    out = ok(lab.cli("down", timeout_s=120))
    assert out.count("stopped") == 2
    assert not any(processes.is_running(pid) for pid in pids)
    assert not list((lab.home / "pids").glob("*.pid"))
    assert all(s["pid"] is None and not s["healthy"] for s in lab.status())


@pytest.mark.slow
def test_three_broker_cluster_survives_losing_a_broker(tmp_path: Path) -> None:
    cluster = new_lab(tmp_path, kafka_width=6)
    try:
        out = ok(cluster.cli("up", "--kafka-brokers", "3"))
        assert out.count("started kafka node") == 3
        rows = [s for s in cluster.status() if s["service"] == "kafka"]
        ports = [cluster.kafka_port + 2 * i for i in range(3)]
        assert [r["port"] for r in rows] == ports
        assert all(r["healthy"] for r in rows)
        for port in ports:  # each broker answers on its own and sees all three
            alone = Settings(kafka_bootstrap=f"127.0.0.1:{port}")
            assert kafka_admin.broker_ids(alone) == {1, 2, 3}

        bootstrap = [f"127.0.0.1:{p}" for p in ports]
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            admin.create_topics(
                {"replicated": {"num_partitions": 3, "replication_factor": 3,
                                "configs": {"min.insync.replicas": "2"}}},
                wait_for_metadata=True,
            )  # fmt: skip
            lab_topic = {t["name"]: t for t in admin.describe_topics([names.TOPIC])}
            assert all(len(p["replica_nodes"]) == 3 for p in lab_topic[names.TOPIC]["partitions"])
        finally:
            admin.close()

        victim = rows[0]["pid"]
        os.kill(victim, signal.SIGKILL)
        assert processes.wait_until(lambda: not processes.is_running(victim), timeout_s=10)

        producer = KafkaProducer(bootstrap_servers=bootstrap[1:], acks="all")
        try:
            for i in range(20):
                meta = producer.send("replicated", key=b"k%d" % i, value=b"v").get(timeout=90)
                assert meta.offset >= 0
        finally:
            producer.close()

        live = [r["pid"] for r in rows[1:]]
        down = ok(cluster.cli("down", timeout_s=120))
        assert "kafka node 1: not running" in down
        assert not any(processes.is_running(pid) for pid in [victim, *live])
    finally:
        cluster.cli("down", timeout_s=120)
