"""Where the lab keeps things under LABKIT_HOME, and which ports each process gets (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from labkit.settings import Settings

LOOPBACK = "127.0.0.1"
ALLOWED_BROKERS = (1, 3)


@dataclass(frozen=True, kw_only=True)
class Paths:
    home: Path

    @classmethod
    def of(cls, settings: Settings) -> Paths:
        # Absolute, so command lines (our ownership markers) don't depend on the cwd.
        return cls(home=settings.home.expanduser().resolve())

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def pids(self) -> Path:
        return self.home / "pids"

    @property
    def redis_dir(self) -> Path:
        return self.home / "redis"

    @property
    def redis_conf(self) -> Path:
        return self.redis_dir / "redis.conf"

    @property
    def redis_log(self) -> Path:
        return self.logs / "redis.log"

    @property
    def redis_pid(self) -> Path:
        return self.pids / "redis.pid"

    @property
    def kafka_root(self) -> Path:
        return self.home / "kafka"

    def kafka_cluster_dir(self, brokers: int) -> Path:
        # One directory per topology: a 1-node and a 3-node cluster are different clusters
        # (different voters, cluster ids); switching must not corrupt either one's metadata.
        return self.kafka_root / f"brokers-{brokers}"

    def kafka_log(self, node_id: int) -> Path:
        return self.logs / f"kafka-{node_id}.log"

    def kafka_pid(self, node_id: int) -> Path:
        return self.pids / f"kafka-{node_id}.pid"

    def kafka_pid_files(self) -> list[Path]:
        return sorted(self.pids.glob("kafka-*.pid")) if self.pids.exists() else []


@dataclass(frozen=True, kw_only=True)
class KafkaNode:
    """One combined broker+controller process."""

    node_id: int
    host: str
    port: int
    controller_port: int
    dir: Path

    @property
    def properties(self) -> Path:
        return self.dir / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"


def kafka_nodes(settings: Settings, *, brokers: int) -> list[KafkaNode]:
    """Broker i (0-based) listens on base + 2i, its controller on base + 2i + 1."""
    if brokers not in ALLOWED_BROKERS:
        raise ValueError(f"--kafka-brokers must be one of {ALLOWED_BROKERS}, not {brokers}")
    _, base = settings.kafka_host_port
    cluster = Paths.of(settings).kafka_cluster_dir(brokers)
    return [
        KafkaNode(
            node_id=i + 1,
            host=LOOPBACK,
            port=base + 2 * i,
            controller_port=base + 2 * i + 1,
            dir=cluster / f"node-{i + 1}",
        )
        for i in range(brokers)
    ]


def running_broker_count(paths: Paths) -> int:
    """How many brokers the last `up` started (pid files left behind count, too)."""
    return len(paths.kafka_pid_files())
