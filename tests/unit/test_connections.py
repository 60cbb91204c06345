"""The lab's Redis clients pack commands with hiredis: the same bytes redis-py's own
asyncio packer sends, and the same refusal of what Redis cannot take."""

from __future__ import annotations

import pytest
from redis.asyncio import Connection, SSLConnection
from redis.exceptions import DataError

from labkit.connections import HiredisPackedConnection, redis_bytes_client, redis_client
from labkit.settings import Settings

COMMANDS = [
    ("EVALSHA", "abc", 2, "status:x", "history:x", "streams", 0.1 + 0.2, "", "é", b"\xff\x00"),
    ("XINFO CONSUMERS", "bookings", "booking-workers"),  # a two-word command name
    ("HINCRBYFLOAT", "latency", "sum", 1e-07),
    ("SET", "k", "v" * 10_000),  # longer than redis-py's buffer cutoff
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: str(c[0]))
def test_the_same_bytes_as_redis_py(command):
    assert b"".join(HiredisPackedConnection().pack_command(*command)) == b"".join(
        Connection().pack_command(*command))


@pytest.mark.parametrize("bad", [None, True, [1]])
def test_what_redis_cannot_take_is_refused_before_it_is_sent(bad):
    with pytest.raises(DataError):
        HiredisPackedConnection().pack_command("SET", "k", bad)


def test_the_lab_clients_use_it_and_a_tls_url_keeps_its_own_connection():
    plain = Settings.from_env().with_(redis_url="redis://127.0.0.1:6399/0")
    for client in (redis_client(plain), redis_bytes_client(plain)):
        assert client.connection_pool.connection_class is HiredisPackedConnection
    tls = redis_client(plain.with_(redis_url="rediss://127.0.0.1:6399/0"))
    assert tls.connection_pool.connection_class is SSLConnection
