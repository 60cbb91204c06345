"""Redis Streams: XADD, one consumer group, XREADGROUP/XACK, retries through the PEL.

How retries work here (there is no broker-side scheduler):
- A worker heartbeats its in-flight entries (XCLAIM … JUSTID resets their idle time
  without counting a delivery), so a busy entry never looks abandoned.
- A failed entry stays pending and is handed to the parking consumer `retry` (again JUSTID),
  its due time in a sorted set: the earliest due retries come first, whatever their ids.
- An entry of any other consumer idle longer than `stale_after_s` belongs to a dead worker:
  each consumer's pending list is asked on its own, so no retry backlog hides it.
- Due entries are taken with XCLAIM, which counts the delivery: the delivery count is the
  attempt (read with XPENDING; XAUTOCLAIM's reply has no delivery counts).
- Nothing is trimmed at publish: workers now and then trim entries every group is done
  with (XTRIM MINID), and forget consumers of workers long gone (XGROUP DELCONSUMER).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import anyio
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from labkit import keys, names
from labkit.backends.base import Backend, DeadLetter, LaneStats, Verdict, booking_id_of, preserved
from labkit.connections import redis_bytes_client
from labkit.tasks import task_group
from labkit.text import as_text as _s

log = logging.getLogger(__name__)
RETRY_CONSUMER = "retry"
RETRY_DUE_KEY = keys.STREAMS_RETRY_DUE  # sorted set: parked entry id, scored by due time (epoch s)
STREAM_MAXLEN = 100_000  # above this length a worker trims what every group has finished
DLQ_MAXLEN = 10_000  # the newest letters kept (approximately): the learner's evidence
HOUSEKEEPING_S = 30.0  # how often a worker trims the stream and forgets gone consumers
CONSUMER_GONE_MS = 10 * 60_000  # a consumer silent this long with nothing pending is forgotten
BLOCK_MS = 200
JOB_FIELD = b"job"
# The letter, then the ack, or neither: a script stops at its first error, where MULTI would
# still ack an entry whose letter failed (WRONGTYPE, OOM) and lose it.
_DEAD_LETTER = """
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'job', ARGV[3], 'reason', ARGV[4],
  'attempts', ARGV[5], 'source', ARGV[1])
redis.call('XACK', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
"""


@dataclass(frozen=True)
class Entry:
    """One stream entry as delivered: its fields are raw bytes, whoever XADDed them."""

    id: str
    fields: dict[bytes, bytes]

    @property
    def job(self) -> bytes | None:
        return self.fields.get(JOB_FIELD)


class StreamsBackend(Backend):
    lane = "streams"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._raw: Redis | None = None

    @property
    def raw(self) -> Redis:
        """Reads work entries: the shared client decodes replies, and one non-UTF-8 field
        would then fail every read of the group instead of one message."""
        if self._raw is None:
            self._raw = redis_bytes_client(self.settings)
        return self._raw

    async def close(self) -> None:
        if self._raw is not None:
            await self._raw.aclose()
            self._raw = None

    async def setup(self) -> None:
        try:
            # id 0: entries published before the first worker started are processed too.
            await self.redis.xgroup_create(names.STREAM, names.GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _publish(self, messages: list[tuple[str, str, str]], **options: Any) -> list[str]:
        """`maxlen`: trim the stream toward that length afterwards, as far as it is safe."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id, _key, payload in messages:
            pipe.xadd(names.STREAM, {"job": payload, "jobId": job_id})
        ids = [_s(i) for i in await pipe.execute()]
        if options.get("maxlen") is not None:
            await self.trim(options["maxlen"])
        return ids

    async def trim(self, maxlen: int = STREAM_MAXLEN) -> int:
        """Trim a stream longer than `maxlen`, but only entries every group has read and
        acked (MAXLEN would delete work nobody has seen). Returns how many went."""
        if await self.redis.xlen(names.STREAM) <= maxlen:
            return 0
        floor = await self._finished_below()
        if floor is None:
            return 0
        return await self.redis.xtrim(names.STREAM, minid=floor, approximate=True)

    async def _finished_below(self) -> str | None:
        """The id below which every group has acked every entry; None without a group
        (a group created later, at id 0, will want them all)."""
        groups = await self.redis.xinfo_groups(names.STREAM)
        if not groups:
            return None
        floors = []
        for group in groups:
            ms, seq = _s(group["last-delivered-id"]).split("-")
            floors.append((int(ms), int(seq) + 1))  # just above what it has read
            oldest = (await self.redis.xpending(names.STREAM, group["name"]))["min"]
            if oldest:
                ms, seq = _s(oldest).split("-")
                floors.append((int(ms), int(seq)))
        ms, seq = min(floors)
        return f"{ms}-{seq}"

    async def forget_gone_consumers(self, idle_ms: int = CONSUMER_GONE_MS) -> list[str]:
        """Delete the group's consumers silent for `idle_ms` with nothing pending: workers
        that are gone (each run names a new one). The parking consumer stays."""
        gone = [
            _s(c["name"]) for c in await self.redis.xinfo_consumers(names.STREAM, names.GROUP)
            if c["pending"] == 0 and c["idle"] > idle_ms and _s(c["name"]) != RETRY_CONSUMER
        ]
        for name in gone:
            await self.redis.xgroup_delconsumer(names.STREAM, names.GROUP, name)
        return gone

    # -- consuming -------------------------------------------------------------------------
    async def _run(self, *, concurrency: int, stop: asyncio.Event) -> None:
        in_flight: dict[str, Entry] = {}
        freed = Slots(concurrency, in_flight)
        async with task_group() as helpers:
            helpers.start_soon(self._heartbeat, in_flight)
            helpers.start_soon(self._housekeeping)
            # The slots' group ends only when every entry taken has settled: a graceful stop
            # finishes what we hold, so nothing waits for the stale timeout.
            async with task_group() as slots:
                while not stop.is_set():
                    if not await freed.wait_for_one():
                        continue
                    for entry, attempt in await self._claim_due(freed.free) or await self._read_new(freed.free):
                        in_flight[entry.id] = entry
                        slots.start_soon(self._slot, freed, entry, attempt)
            helpers.cancel_scope.cancel()

    async def _slot(self, slots: Slots, entry: Entry, attempt: int) -> None:
        try:
            await self.consume(entry, entry.job, attempt=attempt, job_id=entry.id)
        except Exception:
            log.warning("entry %s failed; it stays pending and is claimed again", entry.id, exc_info=True)
        finally:
            slots.release(entry.id)

    async def _idle(self) -> bool:
        # Nothing pending (in flight or parked) and nothing the group has not read yet.
        stream = await self.redis.xinfo_stream(names.STREAM)
        groups = {_s(g["name"]): g for g in await self.redis.xinfo_groups(names.STREAM)}
        group = groups.get(names.GROUP, {})
        caught_up = _s(group.get("last-delivered-id")) == _s(stream["last-generated-id"])
        return caught_up and not await self._pending_count()

    async def _read_new(self, count: int) -> list[tuple[Entry, int]]:
        reply = await self.raw.xreadgroup(
            names.GROUP, self.worker_id, {names.STREAM: ">"}, count=count, block=BLOCK_MS
        )
        return [(Entry(_s(i), f), 1) for _stream, entries in reply or [] for i, f in entries]

    async def _claim_due(self, count: int) -> list[tuple[Entry, int]]:
        # Entries of dead workers first, then the earliest due retries: asked apart, so
        # neither waits behind the other.
        stale_ms = int(self.settings.stale_after_s * 1000)
        batch = await self._claim(await self._abandoned(count, stale_ms), min_idle_ms=stale_ms)
        due = await self._due_retries(count - len(batch))
        if due:
            # Half the idle time we saw: a worker that claimed it a moment ago reset it to
            # ~0, so a second claimer loses the race instead of running it twice.
            claimed = await self._claim(due, min_idle_ms=min(p["time_since_delivered"] for p in due) // 2)
            if claimed:
                await self.redis.zrem(RETRY_DUE_KEY, *(entry.id for entry, _a in claimed))
            batch += claimed
        return batch

    async def _abandoned(self, count: int, stale_ms: int) -> list[dict[str, Any]]:
        """Up to `count` entries of workers silent for `stale_ms`, consumer by consumer."""
        found: list[dict[str, Any]] = []
        for consumer in await self.redis.xinfo_consumers(names.STREAM, names.GROUP):
            name = _s(consumer["name"])
            if len(found) >= count or name == RETRY_CONSUMER or not consumer["pending"]:
                continue
            found += await self.redis.xpending_range(
                names.STREAM, names.GROUP, min="-", max="+", count=count - len(found),
                consumername=name, idle=stale_ms,
            )
        return found

    async def _due_retries(self, count: int) -> list[dict[str, Any]]:
        """Up to `count` parked entries whose due time has come, earliest first."""
        if count <= 0:
            return []
        ids = await self.redis.zrangebyscore(RETRY_DUE_KEY, "-inf", time.time(), start=0, num=count)
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for entry_id in ids:
            pipe.xpending_range(names.STREAM, names.GROUP, min=entry_id, max=entry_id, count=1)
        pending = [p for rows in await pipe.execute() for p in rows]
        settled = set(map(_s, ids)) - {_s(p["message_id"]) for p in pending}
        if settled:  # acked or dead-lettered meanwhile: nothing is parked there any more
            await self.redis.zrem(RETRY_DUE_KEY, *settled)
        return pending

    async def _claim(self, pending: list[dict[str, Any]], *, min_idle_ms: int) -> list[tuple[Entry, int]]:
        if not pending:
            return []
        deliveries = {_s(p["message_id"]): p["times_delivered"] for p in pending}
        claimed = await self.raw.xclaim(
            names.STREAM, names.GROUP, self.worker_id, min_idle_time=max(1, min_idle_ms),
            message_ids=list(deliveries),
        )
        batch = [(Entry(_s(i), f), deliveries[_s(i)] + 1) for i, f in claimed if f is not None]
        for missing in set(deliveries) - {entry.id for entry, _a in batch}:
            if not await self.redis.xrange(names.STREAM, missing, missing, count=1):
                # Trimmed while pending (MAXLEN): the payload is gone; say so in the DLQ.
                verdict = Verdict.dead(None, "entry trimmed from the stream while pending")
                await self._settle(Entry(missing, {}), verdict, deliveries[missing], started=time.monotonic())
        return batch

    async def _ack(self, entry: Entry) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.xack(names.STREAM, names.GROUP, entry.id)
        pipe.zrem(RETRY_DUE_KEY, entry.id)
        await pipe.execute()

    async def _retry(self, entry: Entry, delay_s: float, attempt: int) -> None:
        # Park it: still pending (nothing is lost), owned by no live worker, due later.
        pipe = self.redis.pipeline(transaction=True)
        pipe.zadd(RETRY_DUE_KEY, {entry.id: time.time() + delay_s})
        pipe.xclaim(
            names.STREAM, names.GROUP, RETRY_CONSUMER, min_idle_time=0,
            message_ids=[entry.id], justid=True,
        )
        await pipe.execute()

    async def _dead_letter(self, entry: Entry, reason: str, attempt: int) -> None:
        await self.redis.eval(
            _DEAD_LETTER, 3, names.STREAM, names.STREAM_DLQ, RETRY_DUE_KEY,
            entry.id, names.GROUP, preserved(entry.job or b""), reason, attempt, DLQ_MAXLEN,
        )

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            try:
                await self.trim()
                await self.forget_gone_consumers()
            except Exception:  # a Redis blip must not end the housekeeping
                log.warning("streams housekeeping failed; trying again later", exc_info=True)

    async def _heartbeat(self, in_flight: dict[str, Entry]) -> None:
        """Keep our in-flight entries' idle time low, so nobody presumes us dead."""
        while True:
            await asyncio.sleep(self.settings.stale_after_s / 4)
            if not in_flight:
                continue
            try:
                # Only entries still ours: one another worker took over stays with it.
                owned = await self.redis.xpending_range(
                    names.STREAM, names.GROUP, min="-", max="+", count=len(in_flight) + 50,
                    consumername=self.worker_id,
                )
                ids = [_s(p["message_id"]) for p in owned if _s(p["message_id"]) in in_flight]
                if ids:
                    await self.redis.xclaim(
                        names.STREAM, names.GROUP, self.worker_id, min_idle_time=0,
                        message_ids=ids, justid=True,
                    )
            except Exception:  # a Redis blip must not end the heartbeat
                log.warning("streams heartbeat failed; retrying", exc_info=True)

    async def _pending_count(self) -> int:
        summary = await self.redis.xpending(names.STREAM, names.GROUP)
        return int(summary["pending"])

    # -- dead letters and stats --------------------------------------------------------------
    async def _dlq_list(self, limit: int) -> list[DeadLetter]:
        entries = await self.redis.xrange(names.STREAM_DLQ, count=limit)
        return [_letter(_s(i), f) for i, f in entries]

    async def _redrive(self, letters: list[DeadLetter]) -> int:
        pipe = self.redis.pipeline(transaction=True)
        for letter in letters:
            pipe.xadd(names.STREAM, {"job": letter.payload, "redrivenFrom": letter.id})
            pipe.xdel(names.STREAM_DLQ, letter.id)
        await pipe.execute()
        return len(letters)

    async def _transport_stats(self, stats: LaneStats) -> None:
        await self.setup()
        groups = {_s(g["name"]): g for g in await self.redis.xinfo_groups(names.STREAM)}
        group = groups.get(names.GROUP, {})
        parked = 0
        for consumer in await self.redis.xinfo_consumers(names.STREAM, names.GROUP):
            if _s(consumer["name"]) == RETRY_CONSUMER:
                parked = consumer["pending"]
        stats.lag = group.get("lag")
        stats.dlq_size = await self.redis.xlen(names.STREAM_DLQ)
        stats.detail = {
            "length": await self.redis.xlen(names.STREAM),
            "pending": group.get("pending", 0),
            "parked_for_retry": parked,
            "last_delivered_id": _s(group.get("last-delivered-id", "")),
        }


class Slots:
    """A worker's `concurrency` slots over the entries it holds: how many are free, and a
    wait (bounded, so the loop sees a stop request) until one is."""

    def __init__(self, concurrency: int, in_flight: dict[str, Entry]) -> None:
        self.concurrency = concurrency
        self.in_flight = in_flight
        self._freed = anyio.Event()

    @property
    def free(self) -> int:
        return self.concurrency - len(self.in_flight)

    async def wait_for_one(self, timeout_s: float = BLOCK_MS / 1000) -> bool:
        if self.free > 0:
            return True
        with anyio.move_on_after(timeout_s):
            await self._freed.wait()
        return self.free > 0

    def release(self, entry_id: str) -> None:
        self.in_flight.pop(entry_id, None)
        self._freed.set()
        self._freed = anyio.Event()


def _letter(entry_id: str, fields: dict) -> DeadLetter:
    payload = _s(fields.get("job", ""))
    return DeadLetter(
        id=entry_id,
        booking_id=booking_id_of(payload),
        reason=_s(fields.get("reason", "")),
        attempts=int(fields.get("attempts", 0)),
        payload=payload,
        failed_at=int(entry_id.split("-")[0]) / 1000,
    )
