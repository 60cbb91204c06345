"""One pipelined round trip for the Redis commands that many tasks queue in the same turn."""

from __future__ import annotations

import asyncio
import inspect
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError


class Coalescer:
    """One pipelined round trip for every command queued in the same event-loop turn.

    A worker with 16 bookings in flight changes 16 statuses, charges, counters at about the
    same moment; sent one by one they cost 16 sends, 16 reads and 16 trips through the
    client's connection pool — the lab's largest cost per booking at time_scale 0. Each
    caller still awaits its own reply, so its next step sees its write done.
    """

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._queued: list[tuple[Callable[[Any], Any], asyncio.Future]] = []
        self._flushes: set[asyncio.Task] = set()

    async def run(self, queue: Callable[[Any], Any]) -> Any:
        """`queue(pipe)` adds one command to the shared pipeline; returns that command's reply."""
        return await self._enqueue(queue)

    async def run_all(self, queues: Iterable[Callable[[Any], Any]]) -> list[Any]:
        """Several commands, sent in this order in the same round trip; their replies."""
        return await asyncio.gather(*map(self._enqueue, queues))  # futures: no task each

    def _enqueue(self, queue: Callable[[Any], Any]) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queued.append((queue, future))
        if len(self._queued) == 1:  # the first of this turn sends them all, one turn later
            flush = loop.create_task(self._flush())
            self._flushes.add(flush)
            flush.add_done_callback(self._flushes.discard)
        return future

    async def script(self, script: AsyncScript, *, keys: list, args: list) -> Any:
        """A registered Lua script, by its sha, in the shared round trip."""
        try:
            return await self.run(lambda pipe: pipe.evalsha(script.sha, len(keys), *keys, *args))
        except NoScriptError:  # the server forgot it (a restart): load it on this call
            return await script(keys=keys, args=args)

    async def _flush(self) -> None:
        batch, self._queued = self._queued, []
        try:
            pipe = self._redis.pipeline(transaction=False)
            for queue, _future in batch:
                queued = queue(pipe)
                if inspect.isawaitable(queued):
                    await queued
            replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # noqa: BLE001 - each caller gets the failure to handle
            replies = [exc] * len(batch)
        for (_queue, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its caller was cancelled
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)


_coalescers: weakref.WeakKeyDictionary[Redis, Coalescer] = weakref.WeakKeyDictionary()


def coalescer(redis: Redis) -> Coalescer:
    """The one coalescer of a client: every store on it shares the round trip."""
    if redis not in _coalescers:
        _coalescers[redis] = Coalescer(redis)
    return _coalescers[redis]
