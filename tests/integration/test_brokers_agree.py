"""After the lanes drain, the brokers' own views agree with the lab's stats — read with
tools that are not labkit: Redis' XINFO, Kafka's consumer-groups command, Node's bullmq."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from labkit import names
from labkit.infra.kafka_jars import resolve_libs
from labkit.settings import KAFKA_VERSION, LANES
from labkit.status import State
from labkit.workload import Workload

pytestmark = [pytest.mark.redis, pytest.mark.kafka]
NODE_TOOLS = Path(__file__).resolve().parents[2] / "tools" / "bull-board"


@pytest.fixture
async def drained(lab):
    """Twenty bookings through every lane, all finished, workers stopped."""
    workload = Workload(seed=11)
    bookings = workload.bookings(20)
    await lab.stock(workload.rooms)
    await lab.publish(bookings)
    async with lab.workers(count=1, concurrency=4):
        states = await lab.wait_for([b.bookingId for b in bookings], timeout_s=120)
    for lane in LANES:
        assert set(states[lane].values()) == {State.COMPLETED}
    return bookings


async def test_streams_group_has_nothing_pending_and_no_lag(lab, drained):
    [group] = [g for g in await lab.redis.xinfo_groups(names.STREAM) if g["name"] == names.GROUP]
    assert group["pending"] == 0
    assert group["lag"] == 0
    stats = await lab.backend("streams").stats()
    assert (stats.lag, stats.detail["pending"]) == (0, 0)


async def test_kafka_group_lag_is_zero_by_kafkas_own_tool(lab, drained, settings):
    libs = resolve_libs(KAFKA_VERSION)
    described = (await asyncio.to_thread(
        subprocess.run,
        ["java", "-cp", f"{libs}/*", "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
         "--bootstrap-server", settings.kafka_bootstrap, "--describe", "--group", names.GROUP],
        capture_output=True, text=True, timeout=120, check=True,
    )).stdout
    rows = [line.split() for line in described.splitlines() if line.startswith(names.GROUP)]
    header = next(line.split() for line in described.splitlines() if "LAG" in line.split())
    lag_col, topic_col = header.index("LAG"), header.index("TOPIC")
    topics = {row[topic_col] for row in rows}
    assert names.TOPIC in topics
    assert all(row[lag_col] in ("0", "-") for row in rows), described
    assert (await lab.backend("kafka").stats()).lag == 0


async def test_node_bullmq_reads_the_labs_queue(lab, drained, settings):
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "Node.js and npm are needed to read the queue with Node's bullmq"
    if not (NODE_TOOLS / "node_modules" / "bullmq").exists():
        await asyncio.to_thread(subprocess.run, [npm, "install", "--no-audit", "--no-fund", "--silent"],
                                cwd=NODE_TOOLS, check=True, timeout=300)
    host, port = settings.redis_host_port
    job_id = f"job-{drained[0].bookingId}"
    script = f"""
      const {{ Queue }} = require('bullmq');
      (async () => {{
        const q = new Queue('{names.QUEUE}', {{ connection: {{ host: '{host}', port: {port} }} }});
        const counts = await q.getJobCounts('completed', 'failed', 'wait', 'active');
        const job = await q.getJob('{job_id}');
        console.log(JSON.stringify({{ counts, name: job.name, data: job.data,
                                      progress: job.progress, state: await job.getState() }}));
        await q.close();
      }})();
    """
    out = (await asyncio.to_thread(subprocess.run, [node, "-e", script], cwd=NODE_TOOLS,
                                   capture_output=True, text=True, timeout=60, check=True)).stdout
    seen = json.loads(out)
    python_counts = await lab.backend("bullmq").queue().getJobCounts("completed", "failed", "wait", "active")
    assert seen["counts"] == python_counts
    assert seen["counts"]["completed"] == len(drained)
    assert seen["name"] == names.BULLMQ_JOB_NAME
    assert seen["data"]["data"]["bookingId"] == drained[0].bookingId
    assert (seen["progress"], seen["state"]) == (100, "completed")
