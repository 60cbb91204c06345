"""docker/compose.yaml runs the same brokers, versions and ports as `labkit infra up`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from labkit.infra.layout import kafka_nodes
from labkit.settings import KAFKA_VERSION, Settings

COMPOSE = Path(__file__).resolve().parents[2] / "docker" / "compose.yaml"


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    out = []
    for spec in service.get("ports", []):
        host, host_port, container_port = str(spec).split(":")
        out.append((host, int(host_port), int(container_port)))
    return out


def test_redis_matches_the_default_url(services) -> None:
    _, port = Settings().redis_host_port
    redis = services["redis"]
    assert redis["image"].split(":")[1].split(".")[0] == "7"
    assert published(redis) == [("127.0.0.1", port, port)]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert "--appendfsync everysec" in command
    assert "--maxmemory-policy noeviction" in command
    assert "profiles" not in redis


def test_single_kafka_matches_the_default_bootstrap(services) -> None:
    _, port = Settings().kafka_host_port
    kafka = services["kafka"]
    assert kafka["image"] == f"apache/kafka:{KAFKA_VERSION}"
    assert published(kafka) == [("127.0.0.1", port, port)]
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert f"PLAINTEXT://127.0.0.1:{port}" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    assert env["KAFKA_NUM_PARTITIONS"] == "6"
    assert len(env["CLUSTER_ID"]) == 22
    assert "profiles" not in kafka


def test_cluster_profile_uses_labkit_broker_ports(services) -> None:
    expected = [n.port for n in kafka_nodes(Settings(), brokers=3)]
    cluster = {name: s for name, s in services.items() if "cluster" in s.get("profiles", [])}
    assert sorted(cluster) == ["kafka-1", "kafka-2", "kafka-3"]
    ports = []
    for i, name in enumerate(sorted(cluster)):
        service = cluster[name]
        assert service["image"] == f"apache/kafka:{KAFKA_VERSION}"
        ((host, host_port, container_port),) = published(service)
        assert host == "127.0.0.1" and host_port == container_port
        ports.append(host_port)
        env = service["environment"]
        assert env["KAFKA_NODE_ID"] == str(i + 1)
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].count("@") == 3
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert f"PLAINTEXT://127.0.0.1:{host_port}" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert ports == expected == [9092, 9094, 9096]


def test_ui_profile_has_bull_board_kafbat_ui_and_redisinsight(services) -> None:
    ui = {name: s for name, s in services.items() if "ui" in s.get("profiles", [])}
    assert sorted(ui) == ["bull-board", "kafka-ui", "redisinsight"]
    assert ui["kafka-ui"]["image"].startswith("ghcr.io/kafbat/kafka-ui:")
    assert ui["redisinsight"]["image"].startswith("redis/redisinsight:")
    board = ui["bull-board"]
    context = COMPOSE.parent / board["build"]
    assert (context / "Dockerfile").is_file() and (context / "server.js").is_file()
    assert board["environment"]["LABKIT_REDIS_URL"] == f"redis://redis:{Settings().redis_host_port[1]}/0"


def test_every_image_is_pinned_to_an_exact_version(services) -> None:
    for name, service in services.items():
        _, _, tag = service["image"].rpartition(":")
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: {service['image']} is not pinned"


def test_kafka_keeps_its_log_dirs_on_its_volume(services) -> None:
    kafkas = {name: s for name, s in services.items() if s["image"].startswith("apache/kafka:")}
    assert sorted(kafkas) == ["kafka", "kafka-1", "kafka-2", "kafka-3"]
    for name, service in kafkas.items():
        log_dir = service["environment"]["KAFKA_LOG_DIRS"]
        mounts = {target: source for source, target, *_ in (str(v).split(":") for v in service["volumes"])}
        assert mounts.get(log_dir) == f"{name}-data", f"{name} writes {log_dir} outside its volume"


def test_brokers_have_healthchecks_and_uis_wait_for_them(services) -> None:
    for name in ("redis", "kafka", "kafka-1", "kafka-2", "kafka-3"):
        assert services[name]["healthcheck"]["test"], name
    waits = {name: s["depends_on"] for name, s in services.items() if "depends_on" in s}
    assert set(waits) == {"bull-board", "kafka-ui", "redisinsight"}
    for name, needs in waits.items():
        assert isinstance(needs, dict), f"{name}: a list does not wait for health"
        for dependency, how in needs.items():
            assert how == {"condition": "service_healthy"}, name
            assert "healthcheck" in services[dependency], dependency


def test_every_published_port_is_loopback_only(services) -> None:
    for name, service in services.items():
        for host, _, _ in published(service):
            assert host == "127.0.0.1", name
