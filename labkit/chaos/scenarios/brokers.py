"""Faults on the brokers themselves: Redis kill -9 and AOF restart, a Kafka broker killed
while the API produces, dropped Redis connections and a frozen Kafka broker, and a leader
lost in a three-broker cluster."""

from __future__ import annotations

import time

import anyio
import httpx

from labkit.chaos import brokers
from labkit.chaos.run import Run, api

AOF_WINDOW_S = 2.0  # appendfsync everysec: up to ~1 s of acknowledged writes, plus the fsync itself


async def redis_restart_aof(run: Run) -> None:
    pid = brokers.redis_pid(run.lab.settings)
    async with anyio.create_task_group() as group:
        group.start_soon(run.feed, run.workload.bookings(run.bookings))
        await anyio.sleep(1.0)
        killed_at = time.time()
        brokers.kill(pid)
        run.explained_after = killed_at - AOF_WINDOW_S
        await anyio.sleep(1.0)
        await brokers.restart(run.lab.settings, "redis")
        await run.lab.redis.connection_pool.disconnect()  # its sockets died with the old server
        run.fault_over()
    run.note(f"Redis kill -9 while publishing, restarted from its AOF (everysec); a booking "
             f"accepted in the {AOF_WINDOW_S:.0f} s before the kill and then lost is counted "
             "as lost_explained")


async def kafka_broker_kill(run: Run) -> None:
    """Producing through the API while the only broker dies and comes back: the idempotent
    producer's retries must not write a booking twice."""
    (pid,) = brokers.kafka_pids(run.lab.settings).values()
    async with api(run.lab.settings) as base, httpx.AsyncClient(base_url=base, timeout=30) as client, \
            anyio.create_task_group() as group:
        group.start_soon(_post_all, run, client)
        await anyio.sleep(1.0)
        brokers.kill(pid)
        await anyio.sleep(2.0)
        await brokers.restart(run.lab.settings, "kafka")
        run.fault_over()
    run.note("the Kafka broker kill -9 and restarted while bookings are POSTed to the API")


async def _post_all(run: Run, client: httpx.AsyncClient, pause_s: float = 0.05) -> None:
    for booking in run.workload.bookings(run.bookings):
        await run.post(client, booking)
        await anyio.sleep(pause_s)


CLIENT_KILLS = 3


async def connection_drops(run: Run) -> None:
    freeze_s = max(5.0, min(20.0, run.bookings / 10))
    (kafka_pid, *_) = brokers.kafka_pids(run.lab.settings).values()
    async with anyio.create_task_group() as group:
        group.start_soon(run.feed, run.workload.bookings(run.bookings))
        for _ in range(CLIENT_KILLS):
            await anyio.sleep(0.5)
            await run.lab.redis.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        async with brokers.frozen(kafka_pid):
            await anyio.sleep(freeze_s)
        run.fault_over()
    run.note(f"CLIENT KILL of every Redis client {CLIENT_KILLS} times, then the Kafka broker "
             f"SIGSTOPped for {freeze_s:.0f} s")


async def kafka_leader_loss(run: Run) -> None:
    """Kill the leader of the busiest partitions, then two brokers at once (below
    min.insync.replicas: the Kafka lane refuses while the others go on), then heal."""
    settings = run.lab.settings
    statuses: list[int] = []
    async with api(settings) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
        third = run.workload.bookings(run.bookings)
        chunks = [third[i::3] for i in range(3)]
        before = brokers.leaders(settings)
        leader = max(set(before.values()), key=list(before.values()).count)
        async with anyio.create_task_group() as group:
            group.start_soon(_post_each, run, client, chunks[0], statuses)
            await anyio.sleep(0.5)
            brokers.kill(brokers.kafka_pids(settings)[leader])
        after = brokers.leaders(settings)
        await brokers.restart(settings, "kafka")
        survivors = list(brokers.kafka_pids(settings).items())
        for _node, pid in survivors[:2]:
            brokers.kill(pid)
        await _post_each(run, client, chunks[1], statuses)
        await brokers.restart(settings, "kafka")
        run.fault_over()
        await _post_each(run, client, chunks[2], statuses)
    run.figures["leaders_before"], run.figures["leaders_after"] = before, after
    run.figures["answers_with_two_down"] = statuses[len(chunks[0]):len(chunks[0]) + len(chunks[1])]
    run.note(f"leader {leader} of {list(before.values()).count(leader)} partitions killed "
             f"(leaders after: {after}); then two brokers down, then all three back")


async def _post_each(run: Run, client: httpx.AsyncClient, bookings, statuses: list[int]) -> None:
    for booking in bookings:
        statuses.append((await run.post(client, booking)).status)
