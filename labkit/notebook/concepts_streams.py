"""Redis Streams concepts, each shown on a scratch stream of its own (never the lab's
`bookings`): reclaiming a crashed consumer's entries with XAUTOCLAIM, a group's lag from
XINFO GROUPS, and trimming by MINID. Each function returns what Redis answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis

from labkit.text import as_text as _text

GROUP = "workers"


@contextlib.asynccontextmanager
async def scratch_stream(redis: Redis, concept: str, entries: int) -> AsyncIterator[tuple[str, list[str]]]:
    """A new stream with `entries` entries and the group `workers` at its start; deleted after."""
    stream = f"lesson:{concept}:{uuid.uuid4().hex[:6]}"
    ids = [_text(await redis.xadd(stream, {"n": n})) for n in range(entries)]
    await redis.xgroup_create(stream, GROUP, id="0")
    try:
        yield stream, ids
    finally:
        await redis.delete(stream)


async def _pending(redis: Redis, stream: str) -> list[dict[str, Any]]:
    rows = await redis.xpending_range(stream, GROUP, min="-", max="+", count=100)
    return [{"id": _text(r["message_id"]), "consumer": _text(r["consumer"]),
             "times_delivered": r["times_delivered"]} for r in rows]


async def claim_after_crash(redis: Redis, *, entries: int = 3, min_idle_ms: int = 300) -> dict[str, Any]:
    """Consumer `crashed` reads entries and never acks. Redis does not hand them to anyone by
    itself — after `min_idle_ms` they are still pending for `crashed` — until a live consumer
    runs XAUTOCLAIM; the delivery count then shows each entry's second delivery."""
    async with scratch_stream(redis, "autoclaim", entries) as (stream, ids):
        await redis.xreadgroup(GROUP, "crashed", {stream: ">"})
        await asyncio.sleep(min_idle_ms * 2 / 1000)
        before = await _pending(redis, stream)  # idle long enough, yet nobody took them
        _next, claimed, _deleted = await redis.xautoclaim(stream, GROUP, "rescuer", min_idle_ms, start_id="0-0")
        after = await _pending(redis, stream)
        await redis.xack(stream, GROUP, *[entry_id for entry_id, _fields in claimed])
        left = await _pending(redis, stream)
    return {"entries": ids, "pending_before_claim": before, "claimed": [_text(i) for i, _f in claimed],
            "pending_after_claim": after, "pending_after_ack": left}


async def group_lag(redis: Redis, *, entries: int = 10, read: int = 4, acked: int = 3) -> dict[str, Any]:
    """XINFO GROUPS per group: `lag` (entries not yet delivered to the group), `pending`
    (delivered, not acked) and `entries-read`."""
    async with scratch_stream(redis, "lag", entries) as (stream, _ids):
        reply = await redis.xreadgroup(GROUP, "reader", {stream: ">"}, count=read)
        delivered = [entry_id for entry_id, _fields in reply[0][1]]
        await redis.xack(stream, GROUP, *delivered[:acked])
        (info,) = await redis.xinfo_groups(stream)
    return {_text(k): v if isinstance(v, int) else _text(v) for k, v in info.items()
            if _text(k) in {"name", "lag", "pending", "entries-read", "last-delivered-id"}}


async def trim_by_minid(redis: Redis, *, old: int = 5, new: int = 5) -> dict[str, Any]:
    """XTRIM MINID drops every entry with an id below the given one: ids are times, so this
    trims by age (MAXLEN trims by count)."""
    async with scratch_stream(redis, "minid", old) as (stream, old_ids):
        new_ids = [_text(await redis.xadd(stream, {"n": n})) for n in range(new)]
        removed = await redis.xtrim(stream, minid=new_ids[0], approximate=False)
        kept = [_text(entry_id) for entry_id, _fields in await redis.xrange(stream)]
    return {"cut": new_ids[0], "old": old_ids, "new": new_ids, "removed": removed, "kept": kept}
