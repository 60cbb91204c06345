"""Lesson 10's experiments: a three-broker cluster's ISR and leader changes, acks=1 versus
acks=all below min.insync.replicas, and Redis persistence modes under kill -9 — each counted
by the chaos ledger's rule (what the client was told was written, against what survived)."""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from typing import Any

import anyio
import plotly.graph_objects as go
import redis
from kafka import KafkaProducer
from kafka.errors import KafkaError
from plotly.subplots import make_subplots

from labkit import kafka_admin, names, processes
from labkit.chaos import brokers
from labkit.infra import redis_server
from labkit.settings import Settings

AOF_MODES = {"none": ["--appendonly", "no", "--save", ""],
             "everysec": ["--appendonly", "yes", "--appendfsync", "everysec"],
             "always": ["--appendonly", "yes", "--appendfsync", "always"]}


def isr_table(settings: Settings, topic: str = names.TOPIC) -> list[dict[str, Any]]:
    """One row per partition: leader, replicas and the in-sync replicas right now."""
    with kafka_admin.admin_client(settings) as admin:
        described = admin.describe_topics([topic])[0]
    return [{"partition": p["partition_index"], "leader": p["leader_id"], "replicas": sorted(p["replica_nodes"]),
             "isr": sorted(p["isr_nodes"])} for p in sorted(described["partitions"], key=lambda p: p["partition_index"])]


async def kill_leader_and_watch(settings: Settings, *, records: int = 60, watch_s: float = 8.0) -> dict[str, Any]:
    """Produce steadily (acks=all), kill -9 the busiest leader a third of the way in, and
    sample leaders every 0.25 s: the leader change, the producer's slow sends, and whether
    every record was acknowledged once. The victim stays down (the next experiment needs
    one broker fewer; the cluster is thrown away at the end)."""
    before = brokers.leaders(settings)
    victim = max(set(before.values()), key=list(before.values()).count)
    producer = KafkaProducer(**settings.kafka_config(acks="all", enable_idempotence=True, retries=10))
    samples, sends = [], []
    t0 = time.monotonic()
    try:
        for n in range(records):
            if n == records // 3:
                brokers.kill(brokers.kafka_pids(settings)[victim])
            started = time.monotonic()
            await anyio.to_thread.run_sync(lambda n=n: producer.send(names.TOPIC, key=b"k%d" % n, value=b"x").get(30))
            sends.append({"t": started - t0, "send_s": time.monotonic() - started})
            samples.append({"t": time.monotonic() - t0, "leaders": brokers.leaders(settings)})
            await anyio.sleep(watch_s / records)
    finally:
        producer.close()
    return {"victim": victim, "before": before, "after": samples[-1]["leaders"], "samples": samples,
            "sends": sends, "acknowledged": len(sends)}


def acks_below_min_isr(settings: Settings) -> dict[str, str]:
    """Two brokers down: acks=1 is still acknowledged by the lone leader (a write one
    disk holds), acks=all is refused (NOT_ENOUGH_REPLICAS, or a timeout while the leader
    waits for replicas that are gone). The cluster is left as it is: it is thrown away next."""
    pids, leaders = brokers.kafka_pids(settings), brokers.leaders(settings)
    survivor = max(set(leaders.values()), key=list(leaders.values()).count)  # it leads partitions
    for node in set(pids) - {survivor}:
        brokers.kill(pids[node])
    partition = next(p for p, leader in leaders.items() if leader == survivor)
    answers = {}
    for acks in (1, "all"):
        # No retries: a refusal is the answer, and retrying a timeout only repeats it.
        producer = KafkaProducer(**settings.kafka_config(acks=acks, retries=0, request_timeout_ms=3000,
                                                         max_block_ms=5000))
        try:
            producer.send(names.TOPIC, value=b"x", partition=partition).get(10)
            answers[f"acks={acks}"] = "acknowledged"
        except KafkaError as exc:
            answers[f"acks={acks}"] = type(exc).__name__
        finally:
            with contextlib.suppress(KafkaError):  # a send still pending on a dead broker
                producer.close(timeout=2)
    return answers


def redis_persistence(mode: str, *, home: Path, writes_s: float = 1.5) -> dict[str, Any]:
    """A throwaway redis-server in `mode`; write as fast as it acknowledges, kill -9, start it
    again from its files, count which acknowledged writes survived."""
    data = home / "durability" / mode
    shutil.rmtree(data, ignore_errors=True)  # a fresh server: no earlier run's files
    data.mkdir(parents=True)
    port = processes.free_port()
    child = _redis(port, data, mode)
    acked = 0
    try:
        with redis.Redis(port=port) as client:
            deadline = time.monotonic() + writes_s
            while time.monotonic() < deadline:
                client.rpush("acked", acked)
                acked += 1
        child.kill()  # SIGKILL: no shutdown save, no final fsync
        child = _redis(port, data, mode)
        with redis.Redis(port=port) as client:
            survived = client.llen("acked")
    finally:
        processes.stop([child], timeout_s=10)
    return {"mode": mode, "acknowledged": acked, "survived": survived, "lost": acked - survived}


def _redis(port: int, data: Path, mode: str) -> processes.Child:
    binary = redis_server.find_binary(install=False)
    child = processes.spawn([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
                             *AOF_MODES[mode]], log_path=data.parent / f"{mode}.log")
    if not processes.wait_until(lambda: _answers(port), timeout_s=20, interval_s=0.1):
        raise RuntimeError(f"redis-server ({mode}) did not start on {port}")
    return child


def _answers(port: int) -> bool:
    try:
        with redis.Redis(port=port, socket_timeout=1) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


def leader_chart(watch: dict[str, Any]) -> go.Figure:
    """Top: each partition's leader over time (the change after the kill). Bottom: how long
    each acks=all send took (the producer's retries while leadership moved)."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True,
                        subplot_titles=("leader of each partition", "send time (s), acks=all"))
    for partition in sorted(watch["before"]):
        fig.add_scatter(x=[s["t"] for s in watch["samples"]], y=[s["leaders"][partition] for s in watch["samples"]],
                        mode="lines", name=f"partition {partition}", line_shape="hv", row=1, col=1)
    fig.add_scatter(x=[s["t"] for s in watch["sends"]], y=[s["send_s"] for s in watch["sends"]],
                    mode="markers", name="send", row=2, col=1)
    fig.update_layout(height=500, title=f"kill -9 of broker {watch['victim']}")
    return fig
