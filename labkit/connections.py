"""Client factories, so every process connects the same way (TLS/auth come from the URL)."""

from __future__ import annotations

from redis.asyncio import Redis

from labkit.settings import Settings


def redis_client(settings: Settings) -> Redis:
    # decode_responses: lab state is text; hiredis parses replies when installed.
    return Redis.from_url(settings.redis_url, decode_responses=True, health_check_interval=30)


def redis_bytes_client(settings: Settings) -> Redis:
    """For messages from outside the lab: their bytes arrive as sent, UTF-8 or not."""
    return Redis.from_url(settings.redis_url, decode_responses=False, health_check_interval=30)
