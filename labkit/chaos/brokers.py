"""Faults on the lab's own loopback brokers, and the three-broker cluster some scenarios need.

Only processes `labkit infra up` started (found by their pid files and command lines) are
ever signalled: a broker labkit does not own is refused, never touched."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from kafka.errors import KafkaError

from labkit import kafka_admin, names, processes
from labkit.infra import brokers, kafka_server, redis_server
from labkit.infra.layout import Paths
from labkit.settings import Settings

CLUSTER_PORT_OFFSET = 100  # the cluster listens 100 ports above the lab's own Kafka


class NotOurs(RuntimeError):
    """The broker is not one `labkit infra up` started here: chaos will not signal it."""


def redis_pid(settings: Settings) -> int:
    pid = redis_server.managed_pid(settings)
    if pid is None:
        raise NotOurs(f"Redis at {settings.redis_url} was not started by `labkit infra up`")
    return pid


def kafka_pids(settings: Settings) -> dict[int, int]:
    """node id → pid of every live Kafka broker this lab started."""
    paths = Paths.of(settings)
    pids = {n.node_id: kafka_server.managed_pid(paths, n) for n in brokers.current_nodes(settings)}
    live = {node: pid for node, pid in pids.items() if pid is not None}
    if not live:
        raise NotOurs(f"no Kafka broker at {settings.kafka_bootstrap} was started by `labkit infra up`")
    return live


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    processes.wait_until(lambda: not processes.is_running(pid), timeout_s=10)


async def restart(settings: Settings, service: str) -> None:
    """Start again whatever of `service` is not running (Redis with its AOF, Kafka from its log)."""
    await anyio.to_thread.run_sync(lambda: brokers.up(settings, services=(service,)))


@asynccontextmanager
async def frozen(pid: int) -> AsyncIterator[None]:
    """SIGSTOP for the block's duration: the process holds its sockets and says nothing."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def leaders(settings: Settings, topic: str = names.TOPIC) -> dict[int, int]:
    """partition → leader node id (-1 while it has none), from the first broker that answers:
    kafka-python 3.0 keeps retrying the first bootstrap address, even when it was just killed.
    Addresses that refuse a connection go last, so a killed broker costs no 5 s timeout."""
    addresses = sorted(settings.kafka_bootstrap.split(","), key=lambda address: not _listening(address))
    for n, address in enumerate(addresses, start=1):
        try:
            with kafka_admin.admin_client(settings.with_(kafka_bootstrap=address),
                                          bootstrap_timeout_ms=5000, request_timeout_ms=5000) as admin:
                described = admin.describe_topics([topic])[0]
            return {p["partition_index"]: p["leader_id"] for p in described["partitions"]}
        except KafkaError:
            if n == len(addresses):
                raise
    raise ValueError("no Kafka bootstrap address")


def _listening(address: str) -> bool:
    host, _, port = address.strip().rpartition(":")
    return processes.port_open(host, int(port), timeout_s=0.2)


def cluster_settings(settings: Settings) -> Settings:
    """Three brokers on their own ports and LABKIT_HOME: the learner's lab stays untouched."""
    host, port = settings.kafka_host_port
    base = port + CLUSTER_PORT_OFFSET
    return settings.with_(
        kafka_bootstrap=",".join(f"{host}:{base + 2 * i}" for i in range(3)),
        home=settings.home / "chaos-cluster",
        kafka_quick_start=True,
        kafka_heap="-Xms64m -Xmx256m",  # three of them beside the lab's own broker
    )


async def start_cluster(settings: Settings) -> Settings:
    """Bring up three brokers (RF 3, min.insync.replicas 2) on their own ports and home."""
    three = cluster_settings(settings)
    await anyio.to_thread.run_sync(lambda: brokers.up(three, services=("kafka",), brokers=3))
    return three


async def stop_cluster(three: Settings, *, lost_quorum: bool = False) -> None:
    """Stop the cluster. One that `lost_quorum` is killed: a broker cannot shut down gracefully
    without its controllers and would only wait out the stop timeout."""
    with anyio.CancelScope(shield=True):
        if lost_quorum:
            for pid in kafka_pids(three).values():
                await anyio.to_thread.run_sync(kill, pid)
        await anyio.to_thread.run_sync(lambda: brokers.down(three, services=("kafka",)))


@asynccontextmanager
async def cluster(settings: Settings, kafka_brokers: int) -> AsyncIterator[Settings]:
    """The settings to run with: the lab's own, or a three-broker cluster for the block."""
    if kafka_brokers == 1:
        yield settings
        return
    three = await start_cluster(settings)
    try:
        yield three
    finally:
        await stop_cluster(three)
