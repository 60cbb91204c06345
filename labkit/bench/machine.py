"""What every result is recorded with: the machine and the versions that produced it."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

from redis.asyncio import Redis

from labkit.settings import KAFKA_VERSION

CLIENTS = ("redis", "hiredis", "bullmq", "kafka-python", "confluent-kafka", "fpdf2", "labkit")


async def describe(redis: Redis) -> dict:
    server = await redis.info("server")
    return {
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),  # a shared machine is busy: read ratios, not absolutes
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "redis": server.get("redis_version"),
        "kafka": KAFKA_VERSION,
        "clients": {name: _version(name) for name in CLIENTS},
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
