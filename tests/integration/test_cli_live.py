"""`labkit` as a learner runs it (a subprocess) against this suite's brokers."""

from __future__ import annotations

import json
import os
import sys

import anyio
import pytest

from labkit import processes
from labkit.cli import PUBLISH_BATCH

pytestmark = [pytest.mark.redis, pytest.mark.timeout(240)]


async def labkit(settings, *args: str, **env: str):
    return await anyio.run_process(
        [sys.executable, "-m", "labkit", *args],
        env={**os.environ, **settings.env(), **env},
        check=False,
    )


async def test_stats_json_stays_parseable_when_kafka_is_down(lab, settings):
    dead = f"127.0.0.1:{processes.free_port()}"
    done = await labkit(settings, "stats", "--json", LABKIT_KAFKA_BOOTSTRAP=dead)
    assert done.returncode == 1
    result = json.loads(done.stdout)  # stdout holds the JSON only
    assert list(result) == ["bullmq", "streams", "kafka"]
    assert result["kafka"]["lane"] == "kafka"
    assert dead in result["kafka"]["error"]
    assert result["streams"]["waiting"] == 0 and "error" not in result["streams"]
    assert done.stderr.decode().startswith("error: kafka lane: kafka is down")


@pytest.mark.streams
async def test_publish_in_batches_publishes_every_booking(lab, settings):
    count = 2 * PUBLISH_BATCH + 7  # two full batches and a short one
    done = await labkit(settings, "publish", "-b", "streams", "--count", str(count))
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().startswith(f"streams: published {count} ")
    assert (await lab.stats(["streams"]))["streams"].waiting == count
