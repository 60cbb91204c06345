"""Config rendering, port derivation and small helpers of labkit.infra — no brokers needed."""

from __future__ import annotations

import base64
import os
import socket
from pathlib import Path

import pytest

from labkit import kafka_admin, names, processes
from labkit.infra import kafka_jars, kafka_server, redis_server
from labkit.infra.errors import InfraError
from labkit.infra.layout import Paths, kafka_nodes
from labkit.kafka_admin import LAB_TOPICS
from labkit.settings import Settings


def settings(tmp_path: Path, *, kafka: str = "127.0.0.1:9092") -> Settings:
    return Settings.from_env(
        {"LABKIT_HOME": str(tmp_path / "lab"), "LABKIT_KAFKA_BOOTSTRAP": kafka}
    )


def props(text: str) -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")
    )


def test_single_broker_ports_follow_the_bootstrap(tmp_path: Path) -> None:
    (node,) = kafka_nodes(settings(tmp_path, kafka="127.0.0.1:19092"), brokers=1)
    assert (node.node_id, node.port, node.controller_port) == (1, 19092, 19093)
    assert node.host == "127.0.0.1"
    assert node.dir == (tmp_path / "lab" / "kafka" / "brokers-1" / "node-1").resolve()


def test_three_brokers_take_consecutive_port_pairs(tmp_path: Path) -> None:
    nodes = kafka_nodes(settings(tmp_path), brokers=3)
    assert [(n.node_id, n.port, n.controller_port) for n in nodes] == [
        (1, 9092, 9093),
        (2, 9094, 9095),
        (3, 9096, 9097),
    ]


@pytest.mark.parametrize("brokers", [0, 2, 4])
def test_other_broker_counts_are_refused(tmp_path: Path, brokers: int) -> None:
    with pytest.raises(ValueError, match="1, 3"):
        kafka_nodes(settings(tmp_path), brokers=brokers)


def test_single_node_properties(tmp_path: Path) -> None:
    nodes = kafka_nodes(settings(tmp_path), brokers=1)
    p = props(kafka_server.render_properties(nodes[0], nodes=nodes))
    assert p["process.roles"] == "broker,controller"
    assert p["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert p["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert p["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert p["auto.create.topics.enable"] == "false"
    assert p["group.initial.rebalance.delay.ms"] == "0"
    assert p["log.retention.check.interval.ms"] == "1000"
    assert p["group.min.session.timeout.ms"] == "1000"
    assert p["num.partitions"] == "6"
    assert p["offsets.topic.replication.factor"] == "1"
    assert p["transaction.state.log.min.isr"] == "1"
    assert p["log.dirs"] == str(nodes[0].data_dir)
    assert str(tmp_path) in p["log.dirs"]


def test_cluster_properties_replicate_internal_topics(tmp_path: Path) -> None:
    nodes = kafka_nodes(settings(tmp_path), brokers=3)
    p = props(kafka_server.render_properties(nodes[1], nodes=nodes))
    assert p["node.id"] == "2"
    assert p["controller.quorum.voters"] == ("1@127.0.0.1:9093,2@127.0.0.1:9095,3@127.0.0.1:9097")
    assert p["listeners"] == "PLAINTEXT://127.0.0.1:9094,CONTROLLER://127.0.0.1:9095"
    assert p["offsets.topic.replication.factor"] == "3"
    assert p["transaction.state.log.replication.factor"] == "3"
    assert p["transaction.state.log.min.isr"] == "2"
    assert p["min.insync.replicas"] == "2"


def test_cluster_id_is_a_kafka_uuid_and_kept(tmp_path: Path) -> None:
    cid = kafka_server.new_cluster_id()
    assert len(cid) == 22 and "=" not in cid
    assert len(base64.urlsafe_b64decode(cid + "==")) == 16
    first = kafka_server.cluster_id(tmp_path / "c")
    assert kafka_server.cluster_id(tmp_path / "c") == first


def test_redis_config(tmp_path: Path) -> None:
    paths = Paths.of(settings(tmp_path))
    conf = redis_server.render_config(port=16379, paths=paths).splitlines()
    for line in (
        "bind 127.0.0.1",
        "port 16379",
        "appendonly yes",
        "appendfsync everysec",
        "maxmemory 1gb",
        "maxmemory-policy noeviction",
        f"dir {paths.redis_dir}",
        f"logfile {paths.logs / 'redis.log'}",
        f"pidfile {paths.pids / 'redis.pid'}",
    ):
        assert line in conf


def test_everything_lives_under_home(tmp_path: Path) -> None:
    paths = Paths.of(settings(tmp_path))
    home = (tmp_path / "lab").resolve()
    for path in (
        paths.redis_dir,
        paths.redis_log,
        paths.redis_pid,
        paths.kafka_log(2),
        paths.kafka_pid(2),
    ):
        assert path.is_relative_to(home)


@pytest.mark.parametrize(
    ("text", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_392"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ("garbage", None),
    ],
)
def test_java_major(text: str, major: int | None) -> None:
    assert kafka_jars.parse_java_major(text) == major


def test_jar_cache_is_outside_the_repo(tmp_path: Path) -> None:
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    assert kafka_jars.cache_dir("4.1.1", env=env) == tmp_path / "cache/labkit/kafka-4.1.1/libs"


def test_jar_version_reads_the_broker_jar(tmp_path: Path) -> None:
    for name in ("kafka-clients-4.1.1.jar", "kafka_2.13-4.1.1.jar", "scala-library-2.13.16.jar"):
        (tmp_path / name).touch()
    assert kafka_jars.jar_version(tmp_path) == "4.1.1"
    assert kafka_jars.jar_version(tmp_path / "missing") is None


def test_kafka_home_without_jars_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InfraError, match="KAFKA_HOME"):
        kafka_jars.resolve_libs("4.1.1", env={"KAFKA_HOME": str(tmp_path)})


def test_cached_jars_need_no_download(tmp_path: Path) -> None:
    env = {"XDG_CACHE_HOME": str(tmp_path), "PATH": ""}
    libs = kafka_jars.cache_dir("9.9.9", env=env)
    libs.mkdir(parents=True)
    (libs / kafka_jars.MARKER).write_text(kafka_jars._pom_digest())
    assert kafka_jars.resolve_libs("9.9.9", env=env) == libs
    assert not kafka_jars.needs_download("9.9.9", env=env)
    (libs / kafka_jars.MARKER).write_text("filled by an older pom")
    assert kafka_jars.needs_download("9.9.9", env=env)


def test_busy_port_is_named_with_its_owner() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(InfraError, match=rf"port {port} on 127\.0\.0\.1 .*pid \d+") as info:
            processes.ensure_port_free("127.0.0.1", port, role="test", hint="pick another")
        assert "pick another" in str(info.value)
    processes.ensure_port_free("127.0.0.1", port, role="test", hint="-")


def test_pid_files_and_ownership(tmp_path: Path) -> None:
    pid_file = tmp_path / "pids" / "x.pid"
    processes.write_pid(pid_file, 12345)
    assert processes.read_pid(pid_file) == 12345
    processes.remove_pid(pid_file)
    assert processes.read_pid(pid_file) is None
    me = os.getpid()
    assert processes.is_running(me)
    assert processes.is_ours(me, "python")
    assert not processes.is_ours(me, "kafka.Kafka")
    assert not processes.is_ours(None)


def test_tail_returns_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(10_000)))
    assert processes.tail(log, lines=3) == ["line 9997", "line 9998", "line 9999"]
    assert processes.tail(tmp_path / "none.log", lines=3) == []


def test_lab_topics_follow_the_names_contract() -> None:
    assert LAB_TOPICS == (
        "bookings",
        "bookings.dlq",
        "bookings.retry.1",
        "bookings.retry.2",
        "bookings.retry.3",
    )
    assert names.KAFKA_PARTITIONS == 6
    assert names.QUEUE == "bookings" and names.BULLMQ_DLQ == "bookings-dlq"
    assert names.STREAM_DLQ == "bookings:dlq" and names.GROUP == "booking-workers"


def test_cluster_ids_never_start_with_a_dash() -> None:
    # kafka-storage's argument parser takes "-abc…" for an option: format fails (1 id in 64)
    assert not any(kafka_server.new_cluster_id().startswith("-") for _ in range(3000))


def test_broker_ids_is_none_when_nothing_answers() -> None:
    dead = Settings(kafka_bootstrap=f"127.0.0.1:{processes.free_port()}")
    assert kafka_admin.broker_ids(dead, timeout_s=0.5) is None


def test_a_tarball_must_match_apaches_published_sha512(tmp_path):
    import hashlib
    import io

    data = b"kafka jars, as downloaded"
    digest = hashlib.sha512(data).hexdigest()
    gpg_style = "kafka_2.13-4.1.1.tgz: " + " ".join(
        digest[i:i + 8].upper() for i in range(0, 128, 8)
    ).replace(" ", "\n                      ", 3)
    sha512sum_style = f"{digest}  kafka_2.13-4.1.1.tgz\n"
    for published in (gpg_style, sha512sum_style):
        assert kafka_jars.published_sha512(published) == digest
        kafka_jars.verify_sha512(io.BytesIO(data), published, name="tgz")  # no error
    with pytest.raises(ValueError, match="does not match"):
        kafka_jars.verify_sha512(io.BytesIO(data + b"!"), sha512sum_style, name="tgz")
    with pytest.raises(ValueError, match="no SHA-512"):
        kafka_jars.published_sha512("<html>not found</html>")


def test_redis_memory_warning_names_the_way_out():
    gib = 1 << 30
    assert redis_server.memory_warning(100 << 20, gib) is None
    near = redis_server.memory_warning(int(0.9 * gib), gib)
    assert near and "maxmemory 1024 MiB" in near and "LABKIT_RETENTION_S" in near
    assert redis_server.memory_warning(2 * gib, 0) and "no maxmemory" in redis_server.memory_warning(2 * gib, 0)


async def test_waiting_for_a_stable_group_outlasts_a_fresh_brokers_coordinator_election(tmp_path, monkeypatch):
    """A fresh broker answers the first question about a group with CoordinatorNotAvailable
    (retriable): one more "not yet", not the end of a scaling curve. Other errors still end it."""
    answers = [kafka_admin.kafka_errors.CoordinatorNotAvailableError(),
               kafka_admin.GroupView("PreparingRebalance", []),
               kafka_admin.GroupView("Stable", ["pid 1"])]

    def group_view(*_args):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(kafka_admin, "group_view", group_view)
    view = await kafka_admin.wait_for_stable_group(settings(tmp_path), members=1, poll_s=0.01)
    assert (view.state, view.members, answers) == ("Stable", ["pid 1"], [])

    answers[:] = [kafka_admin.kafka_errors.GroupAuthorizationFailedError()]
    with pytest.raises(kafka_admin.kafka_errors.GroupAuthorizationFailedError):
        await kafka_admin.wait_for_stable_group(settings(tmp_path), members=1, poll_s=0.01)
