"""Apache Kafka in KRaft mode: combined broker+controller JVMs owned by the lab."""

from __future__ import annotations

import base64
import subprocess
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from labkit import kafka_admin, processes
from labkit.infra.errors import InfraError
from labkit.infra.layout import KafkaNode, Paths
from labkit.infra.progress import QUIET, Progress
from labkit.settings import Settings

LOG4J2 = Path(__file__).with_name("log4j2.properties")
MAIN_CLASS = "kafka.Kafka"


def new_cluster_id() -> str:
    """What `kafka-storage random-uuid` prints: 16 random bytes, URL-safe base64, no padding,
    and (like Kafka's Uuid.randomUuid) never a leading '-' that a command line takes for an option."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def cluster_id(cluster_dir: Path) -> str:
    """One id per topology, kept on disk so every node (and every later `up`) agrees."""
    path = cluster_dir / "cluster.id"
    if path.exists():
        return path.read_text().strip()
    cluster_dir.mkdir(parents=True, exist_ok=True)
    cid = new_cluster_id()
    path.write_text(cid + "\n")
    return cid


def render_properties(node: KafkaNode, *, nodes: Sequence[KafkaNode]) -> str:
    rf = min(3, len(nodes))
    voters = ",".join(f"{n.node_id}@{n.host}:{n.controller_port}" for n in nodes)
    props = {
        "process.roles": "broker,controller",
        "node.id": node.node_id,
        # Static voters: the quorum is fixed by config, so formatting needs no --standalone.
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://{node.host}:{node.port},CONTROLLER://{node.host}:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{node.host}:{node.port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": node.data_dir,
        "num.partitions": 6,
        "offsets.topic.replication.factor": rf,
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": min(2, rf),
        "min.insync.replicas": min(2, rf),
        "default.replication.factor": rf,
        # labkit creates its topics on purpose; typos must fail, not invent topics (a lesson).
        "auto.create.topics.enable": "false",
        # Lab-speed rebalances: no 3 s join delay, and consumers may use short sessions.
        "group.initial.rebalance.delay.ms": 0,
        # A short-retention topic visibly loses old segments within seconds (the retention
        # lesson), not after the 5-minute default check; the lab's own topics keep theirs.
        "log.retention.check.interval.ms": 1000,
        "group.min.session.timeout.ms": 1000,
        # Lab-speed failover: a killed broker is fenced (its partitions get new leaders) after
        # 4 s without heartbeats, not the 9 s default (lessons 10, chaos kafka-leader-loss).
        "broker.session.timeout.ms": 4000,
        "broker.heartbeat.interval.ms": 500,
        "log.retention.hours": 168,
        "log.segment.bytes": 64 * 1024 * 1024,
    }
    lines = ["# written by `labkit infra up` on every start; edits are overwritten"]
    lines += [f"{key}={value}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def marker(node: KafkaNode) -> tuple[str, str]:
    # The properties path lives under this lab's home, so another lab's broker never matches.
    return (MAIN_CLASS, str(node.properties))


def managed_pid(paths: Paths, node: KafkaNode) -> int | None:
    pid = processes.read_pid(paths.kafka_pid(node.node_id))
    return pid if processes.is_ours(pid, *marker(node)) else None


def _classpath(libs: Path) -> str:
    return f"{libs}/*"


def format_storage(*, java: str, libs: Path, nodes: Sequence[KafkaNode], cluster: str) -> None:
    """Format each node's log dir once (meta.properties present means done); in parallel."""
    todo = [n for n in nodes if not (n.data_dir / "meta.properties").exists()]

    def run(node: KafkaNode) -> subprocess.CompletedProcess[str]:
        cmd = [
            java, "-Xmx256m", "-cp", _classpath(libs), f"-Dlog4j2.configurationFile={LOG4J2}",
            "kafka.tools.StorageTool", "format", f"--cluster-id={cluster}", "-c", str(node.properties),
        ]  # fmt: skip
        return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)

    with ThreadPoolExecutor(max_workers=max(1, len(todo))) as pool:
        for node, done in zip(todo, pool.map(run, todo)):
            if done.returncode != 0:
                out = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
                raise InfraError(
                    f"formatting Kafka storage for node {node.node_id} failed: "
                    f"{out[-1] if out else 'no output'} (dir {node.data_dir})"
                )


def start(*, java: str, libs: Path, node: KafkaNode, paths: Paths, jvm_flags: Sequence[str]) -> int:
    """Start one node; `jvm_flags` are settings.kafka_jvm_flags (heap, JIT, GC)."""
    cmd = [
        java, *jvm_flags, "-Djava.awt.headless=true",
        "-cp", _classpath(libs), f"-Dlog4j2.configurationFile={LOG4J2}",
        MAIN_CLASS, str(node.properties),
    ]  # fmt: skip
    # It outlives this process: pid file and `infra down` own it from here.
    pid = processes.spawn(cmd, log_path=paths.kafka_log(node.node_id), cwd=node.dir).pid
    processes.write_pid(paths.kafka_pid(node.node_id), pid)
    return pid


def healthy(node: KafkaNode) -> bool:
    """The broker answers metadata and lists itself: registered with the quorum and unfenced."""
    ids = kafka_admin.broker_ids(Settings(kafka_bootstrap=node.bootstrap))  # this node alone
    return ids is not None and node.node_id in ids


def wait_healthy(
    *,
    nodes: Sequence[KafkaNode],
    pids: dict[int, int | None],
    paths: Paths,
    timeout_s: float,
    progress: Progress = QUIET,
) -> None:
    pending = list(nodes)
    started = time.monotonic()

    def ready() -> bool:
        for node in list(pending):
            pid = pids.get(node.node_id)
            if pid is not None and not processes.is_running(pid):
                log = paths.kafka_log(node.node_id)
                last = _last_error(log)
                raise InfraError(
                    f"Kafka node {node.node_id} exited during startup{last}; see {log}"
                )
            if healthy(node):
                pending.remove(node)
                progress.done(f"kafka node {node.node_id} healthy on {node.bootstrap}")
        waiting = ", ".join(f"node {n.node_id} ({n.bootstrap})" for n in pending)
        progress.doing(f"waiting for Kafka {waiting} to join the quorum: "
                       f"{time.monotonic() - started:.0f} s")
        return not pending

    if not processes.wait_until(ready, timeout_s=timeout_s, interval_s=0.3):
        node = pending[0]
        raise InfraError(
            f"Kafka broker {node.node_id} did not answer metadata on {node.bootstrap} within "
            f"{timeout_s:g} s; see {paths.kafka_log(node.node_id)}"
        )


def _last_error(log: Path) -> str:
    for line in reversed(processes.tail(log, lines=200)):
        if "ERROR" in line or "Exception" in line:
            return f" ({line.strip()[:200]})"
    return ""
