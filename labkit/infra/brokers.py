"""The lab's brokers as a whole: bring up, stop, and report on Redis + Kafka."""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import asdict, dataclass
from pathlib import Path

from kafka.errors import KafkaError

from labkit import kafka_admin, processes
from labkit.infra import kafka_jars, kafka_server, redis_server
from labkit.infra.errors import InfraError
from labkit.infra.layout import (
    ALLOWED_BROKERS,
    LOOPBACK,
    KafkaNode,
    Paths,
    kafka_nodes,
    running_broker_count,
)
from labkit.infra.progress import QUIET, Progress
from labkit.settings import KAFKA_VERSION, Settings

SERVICES = ("redis", "kafka")
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
REDIS_TIMEOUT_S = 20.0
REDIS_STOP_S = 15.0
KAFKA_STOP_S = 30.0


@dataclass(frozen=True, kw_only=True)
class ServiceStatus:
    service: str
    host: str
    port: int
    healthy: bool
    managed: bool = False  # started by this lab's `infra up` (vs. something reachable we don't own)
    node_id: int | None = None
    version: str | None = None
    controller_port: int | None = None
    pid: int | None = None
    log: str | None = None
    warning: str | None = None  # e.g. Redis close to maxmemory

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class UpReport:
    started: tuple[str, ...]
    already_running: tuple[str, ...]
    topics: kafka_admin.TopicReport | None
    brokers: int
    seconds: float


# ---- which Kafka topology is ours right now --------------------------------------------------


def current_nodes(settings: Settings) -> list[KafkaNode]:
    """The nodes the last `up` started (by pid files), or [] when none were."""
    count = running_broker_count(Paths.of(settings))
    return kafka_nodes(settings, brokers=count) if count in ALLOWED_BROKERS else []


def _live(settings: Settings, nodes: list[KafkaNode]) -> dict[int, int]:
    paths = Paths.of(settings)
    live = {n.node_id: kafka_server.managed_pid(paths, n) for n in nodes}
    return {node_id: pid for node_id, pid in live.items() if pid is not None}


def _require_local(host: str, *, service: str, variable: str) -> None:
    if host not in LOCAL_HOSTS:
        raise InfraError(
            f"{variable} points at {host}, not this machine; `labkit infra up` runs local "
            f"brokers only: unset {variable} or run `labkit infra up` without {service}"
        )


# ---- up --------------------------------------------------------------------------------------


def up(
    settings: Settings,
    *,
    services: Collection[str] = SERVICES,
    brokers: int | None = None,
    install: bool = False,
    timeout_s: float = 120.0,
    progress: Progress = QUIET,
) -> UpReport:
    """Start what is missing, wait until every broker answers, create the lab topics."""
    with processes.exclusive(_lock(settings)):
        return _up(
            settings,
            services=services,
            brokers=brokers,
            install=install,
            timeout_s=timeout_s,
            progress=progress,
        )


def _lock(settings: Settings) -> Path:
    return Paths.of(settings).home / ".infra.lock"


def _up(
    settings: Settings,
    *,
    services: Collection[str],
    brokers: int | None,
    install: bool,
    timeout_s: float,
    progress: Progress,
) -> UpReport:
    t0 = time.monotonic()
    paths = Paths.of(settings)
    started: list[str] = []
    already: list[str] = []

    # -- decide and check everything before starting anything, so a failure leaves no debris.
    want_redis = "redis" in services
    redis_pid = redis_binary = None
    if want_redis:
        host, _ = settings.redis_host_port
        _require_local(host, service="redis", variable="LABKIT_REDIS_URL")
        redis_pid = redis_server.managed_pid(settings)
        if redis_pid is None:
            processes.remove_pid(paths.redis_pid)
            redis_server.check_port(settings)
            redis_binary = redis_server.find_binary(install=install)

    want_kafka = "kafka" in services
    nodes: list[KafkaNode] = []
    kafka_pids: dict[int, int | None] = {}
    to_start: list[KafkaNode] = []
    java = libs = None
    if want_kafka:
        host, _ = settings.kafka_host_port
        _require_local(host, service="kafka", variable="LABKIT_KAFKA_BOOTSTRAP")
        previous = current_nodes(settings)
        live = _live(settings, previous)
        if live and brokers is not None and brokers != len(previous):
            raise InfraError(
                f"Kafka is running with {len(previous)} broker(s); run `labkit infra down` "
                f"before `labkit infra up --kafka-brokers {brokers}`"
            )
        if not live:
            for pid_file in paths.kafka_pid_files():
                processes.remove_pid(pid_file)
        brokers = len(previous) if live else (brokers or 1)
        nodes = kafka_nodes(settings, brokers=brokers)
        kafka_pids = {n.node_id: live.get(n.node_id) for n in nodes}
        to_start = [n for n in nodes if kafka_pids[n.node_id] is None]
        hint = f"set LABKIT_KAFKA_BOOTSTRAP={LOOPBACK}:<other port>"
        for node in to_start:  # cheap checks first, before a possible jar download
            processes.ensure_port_free(
                LOOPBACK, node.port, role=f"Kafka broker {node.node_id}", hint=hint
            )
            processes.ensure_port_free(
                LOOPBACK,
                node.controller_port,
                role=f"Kafka controller {node.node_id}, broker port + 1",
                hint=hint,
            )
        if to_start:
            java = kafka_jars.java_binary()
            fresh = kafka_jars.needs_download(KAFKA_VERSION)
            libs = kafka_jars.resolve_libs(KAFKA_VERSION, progress=progress)
            if fresh:
                progress.done(f"Kafka {KAFKA_VERSION} jars cached in {libs}")

    # -- start
    if want_redis:
        if redis_pid is None:
            redis_pid = redis_server.start(settings, binary=redis_binary or "redis-server")
            started.append(f"redis (pid {redis_pid})")
        else:
            already.append(f"redis (pid {redis_pid})")
    if to_start:
        assert java is not None and libs is not None
        cluster_dir = paths.kafka_cluster_dir(brokers or 1)
        cid = kafka_server.cluster_id(cluster_dir)
        for node in to_start:
            node.data_dir.mkdir(parents=True, exist_ok=True)
            node.properties.write_text(kafka_server.render_properties(node, nodes=nodes))
        kafka_server.format_storage(java=java, libs=libs, nodes=to_start, cluster=cid)
        for node in to_start:
            pid = kafka_server.start(
                java=java, libs=libs, node=node, paths=paths, jvm_flags=settings.kafka_jvm_flags
            )
            kafka_pids[node.node_id] = pid
            started.append(f"kafka node {node.node_id} (pid {pid}, {node.bootstrap})")
    for node in nodes:
        if node not in to_start:
            already.append(f"kafka node {node.node_id} (pid {kafka_pids[node.node_id]})")

    # -- wait until each one really answers
    if want_redis:
        redis_server.wait_healthy(
            settings, pid=redis_pid, timeout_s=REDIS_TIMEOUT_S, progress=progress
        )
    report_topics = None
    if want_kafka:
        kafka_server.wait_healthy(
            nodes=nodes, pids=kafka_pids, paths=paths, timeout_s=timeout_s, progress=progress
        )
        progress.doing("creating the lab topics")
        local = settings.with_(
            kafka_bootstrap=",".join(n.bootstrap for n in nodes), kafka_options={}
        )
        try:
            report_topics = kafka_admin.ensure_topics(local, replication_factor=min(3, len(nodes)))
        except KafkaError as exc:
            raise InfraError(
                f"Kafka answers but creating the lab topics failed: {exc!r}; "
                f"see {paths.kafka_log(nodes[0].node_id)}"
            ) from None
    return UpReport(
        started=tuple(started),
        already_running=tuple(already),
        topics=report_topics,
        brokers=len(nodes),
        seconds=time.monotonic() - t0,
    )


# ---- down ------------------------------------------------------------------------------------


def down(settings: Settings, *, services: Collection[str] = SERVICES) -> list[str]:
    """Stop what `up` started (and nothing else); returns one line per thing done."""
    with processes.exclusive(_lock(settings)):
        return _down(settings, services=services)


def _down(settings: Settings, *, services: Collection[str]) -> list[str]:
    paths = Paths.of(settings)
    done: list[str] = []
    targets: list[tuple[str, Path, int, float]] = []  # (label, pid file, pid, stop timeout)
    if "kafka" in services:
        nodes = {n.node_id: n for n in current_nodes(settings)}
        for pid_file in paths.kafka_pid_files():
            pid = processes.read_pid(pid_file)
            node_id = int(pid_file.stem.split("-")[-1]) if pid_file.stem[6:].isdigit() else None
            node = nodes.get(node_id) if node_id is not None else None
            if (
                node is not None
                and pid is not None
                and processes.is_ours(pid, *kafka_server.marker(node))
            ):
                targets.append((f"kafka node {node_id}", pid_file, pid, KAFKA_STOP_S))
            else:
                processes.remove_pid(pid_file)
                done.append(f"kafka node {node_id}: not running (removed stale pid file)")
    if "redis" in services:
        pid = processes.read_pid(paths.redis_pid)
        _, port = settings.redis_host_port
        if pid is not None and processes.is_ours(pid, *redis_server.marker(port)):
            targets.append(("redis", paths.redis_pid, pid, REDIS_STOP_S))
        elif paths.redis_pid.exists():
            processes.remove_pid(paths.redis_pid)
            done.append("redis: not running (removed stale pid file)")
    if targets:
        timeout_s = max(t[3] for t in targets)
        how = processes.terminate([t[2] for t in targets], timeout_s=timeout_s)
        for label, pid_file, pid, _ in targets:
            processes.remove_pid(pid_file)
            done.append(f"stopped {label} (pid {pid}, {how.get(pid, 'SIGTERM')})")
    return done


# ---- status ----------------------------------------------------------------------------------


def status(settings: Settings) -> list[ServiceStatus]:
    return [_redis_status(settings), *_kafka_status(settings)]


def _redis_status(settings: Settings) -> ServiceStatus:
    host, port = settings.redis_host_port
    pid = redis_server.managed_pid(settings)
    version = redis_server.version(settings)
    used = redis_server.memory(settings) if version is not None else None
    return ServiceStatus(
        service="redis",
        version=version,
        host=host,
        port=port,
        pid=pid,
        managed=pid is not None,
        healthy=version is not None,
        log=str(Paths.of(settings).redis_log) if pid is not None else None,
        warning=redis_server.memory_warning(*used) if used else None,
    )


def _kafka_status(settings: Settings) -> list[ServiceStatus]:
    paths = Paths.of(settings)
    nodes = current_nodes(settings)
    if not nodes:
        # Nothing of ours: report whatever LABKIT_KAFKA_BOOTSTRAP reaches (maybe external).
        host, port = settings.kafka_host_port
        answers = _external_kafka_answers(settings)
        return [ServiceStatus(service="kafka", host=host, port=port, healthy=answers)]
    rows = []
    for node in nodes:
        pid = kafka_server.managed_pid(paths, node)
        rows.append(
            ServiceStatus(
                service="kafka",
                node_id=node.node_id,
                version=_kafka_version(pid),
                host=node.host,
                port=node.port,
                controller_port=node.controller_port,
                pid=pid,
                managed=pid is not None,
                healthy=pid is not None and kafka_server.healthy(node),
                log=str(paths.kafka_log(node.node_id)),
            )
        )
    return rows


def _kafka_version(pid: int | None) -> str | None:
    """The version of the jars the running broker actually loaded (its -cp)."""
    if pid is None:
        return None
    args = processes.argv(pid)
    if "-cp" not in args or args.index("-cp") + 1 >= len(args):
        return None
    classpath = args[args.index("-cp") + 1]
    return kafka_jars.jar_version(Path(classpath.removesuffix("*")))


def _external_kafka_answers(settings: Settings) -> bool:
    try:
        return bool(kafka_admin.broker_ids(settings, timeout_s=3.0))
    except (ValueError, TypeError):  # TLS/SASL options kafka-python refuses
        return False


def log_files(settings: Settings, service: str) -> list[Path]:
    paths = Paths.of(settings)
    if service == "redis":
        return [paths.redis_log]
    return sorted(paths.logs.glob("kafka-*.log")) if paths.logs.exists() else []
