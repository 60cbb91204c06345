"""Client factories, so every process connects the same way (TLS/auth come from the URL)."""

from __future__ import annotations

from redis.asyncio import Connection, Redis
from redis.connection import HiredisRespSerializer

from labkit.settings import Settings


class HiredisPackedConnection(Connection):
    """Commands packed by hiredis, as redis-py's synchronous client already does; the asyncio
    client packs in Python, argument by argument, and at time_scale 0 that was a tenth of a
    worker's time (every status change is a script call with 17 arguments). Same bytes on
    the wire, same errors for what cannot be sent (None, bool)."""

    _packer = HiredisRespSerializer()

    def pack_command(self, *args):
        return self._packer.pack(*args)


def redis_client(settings: Settings) -> Redis:
    # decode_responses: lab state is text; hiredis parses replies when installed.
    return _from_url(settings, decode_responses=True)


def redis_bytes_client(settings: Settings) -> Redis:
    """For messages from outside the lab: their bytes arrive as sent, UTF-8 or not."""
    return _from_url(settings, decode_responses=False)


def _from_url(settings: Settings, *, decode_responses: bool) -> Redis:
    # A rediss:// or unix:// URL names its own connection class, and the URL wins.
    return Redis.from_url(settings.redis_url, decode_responses=decode_responses, health_check_interval=30,
                          connection_class=HiredisPackedConnection)
