"""docker/compose.yaml runs the same brokers, versions and ports as `labkit infra up`."""

from __future__ import annotations

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


def test_ui_profile_has_bull_board_and_kafka_ui(services) -> None:
    ui = {name: s for name, s in services.items() if "ui" in s.get("profiles", [])}
    images = {s["image"].split(":")[0] for s in ui.values()}
    assert images == {"deadly0/bull-board", "provectuslabs/kafka-ui"}
    board = ui["bull-board"]
    assert board["environment"]["REDIS_HOST"] == "redis"
    assert board["environment"]["REDIS_PORT"] == str(Settings().redis_host_port[1])


def test_every_published_port_is_loopback_only(services) -> None:
    for name, service in services.items():
        for host, _, _ in published(service):
            assert host == "127.0.0.1", name
