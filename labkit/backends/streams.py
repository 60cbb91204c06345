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
import json
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
from labkit.round_trip import coalescer
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
# Settling is for the entry's owner only: a worker that stalled and lost its entry to another
# (stale takeover) must not settle it too, or one poison booking gets two letters. Each script
# first checks, atomically, that the entry is still pending with `owner` (ARGV[1], ARGV[2]);
# 0 when it is not. An empty owner skips the check (an entry trimmed while pending has no
# owner left). KEYS = {stream, dlq or retry-due set, ...}; ARGV = {entry id, owner, group, ...}.
_OWNED = """
local function owned(stream, group, id, owner)
  return owner == '' or #redis.call('XPENDING', stream, group, id, id, 1, owner) == 1
end
"""
# The letter, then the ack, or neither: a script stops at its first error, where MULTI would
# still ack an entry whose letter failed (WRONGTYPE, OOM) and lose it.
_DEAD_LETTER = _OWNED + """
if not owned(KEYS[1], ARGV[3], ARGV[1], ARGV[2]) then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*', 'job', ARGV[4], 'reason', ARGV[5],
  'attempts', ARGV[6], 'source', ARGV[1])
redis.call('XACK', KEYS[1], ARGV[3], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""
# Park a failed entry: due at ARGV[4] (epoch s), owned by the parking consumer ARGV[5].
_PARK = _OWNED + """
if not owned(KEYS[1], ARGV[3], ARGV[1], ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('XCLAIM', KEYS[1], ARGV[3], ARGV[5], 0, ARGV[1], 'JUSTID')
return 1
"""
# Heartbeat: reset the idle time of the entries (ARGV[3..]) still ours, and only those; read
# and claim apart, an entry parked in between would be pulled back from the parking consumer.
_TOUCH = _OWNED + """
for i = 3, #ARGV do
  if owned(KEYS[1], ARGV[1], ARGV[i], ARGV[2]) then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  end
end
"""
# Take due retries: only the worker whose ZREM removes an entry from the due set claims it
# (XCLAIM counts the delivery), so two workers that both saw it due never both run it.
# KEYS = {stream, due set}; ARGV = {group, consumer, entry ids...}; returns
# {id, fields (empty when the entry was trimmed), times delivered} per entry won.
_TAKE_DUE = """
local won = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  if redis.call('ZREM', KEYS[2], id) == 1 then
    local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id)
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
    local fields = claimed[1] and claimed[1][2] or {}
    table.insert(won, {id, fields, p[1] and p[1][4] or 0})
  end
end
return won
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
            if entry.job is None:  # XADDed by hand (redis-cli) without the lab's field
                names_ = ", ".join(preserved(k) for k in entry.fields) or "none"
                verdict = Verdict.dead(None, f"invalid job: the entry has no `job` field (its fields: {names_})")
                await self._settle(entry, verdict, attempt, started=time.monotonic())
                return
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
            batch += await self._take_due([_s(p["message_id"]) for p in due])
        return batch

    async def _take_due(self, ids: list[str]) -> list[tuple[Entry, int]]:
        """Claim the due retries this worker removes from the due set (_TAKE_DUE): what
        another worker took a moment ago is no longer there, however long it has run since."""
        won = await self.raw.eval(_TAKE_DUE, 2, names.STREAM, RETRY_DUE_KEY, names.GROUP, self.worker_id, *ids)
        batch = []
        for raw_id, fields, delivered in won:
            entry = Entry(_s(raw_id), dict(zip(fields[::2], fields[1::2], strict=True)))
            if fields:
                batch.append((entry, int(delivered)))
            elif not await self.redis.xrange(names.STREAM, entry.id, entry.id, count=1):
                verdict = Verdict.dead(None, "entry trimmed from the stream while pending")
                await self._settle(entry, verdict, int(delivered), started=time.monotonic())
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
        # In the round trip the other settling writes share. Not atomic, and need not be: a
        # due-set member whose entry is acked is dropped by the next `_due_retries`.
        await coalescer(self.redis).run_all([lambda pipe: pipe.xack(names.STREAM, names.GROUP, entry.id),
                                             lambda pipe: pipe.zrem(RETRY_DUE_KEY, entry.id)])

    async def _retry(self, entry: Entry, delay_s: float, attempt: int) -> None:
        # Park it: still pending (nothing is lost), owned by no live worker, due later.
        await self.redis.eval(
            _PARK, 2, names.STREAM, RETRY_DUE_KEY, entry.id, self._owner(entry), names.GROUP,
            repr(time.time() + delay_s), RETRY_CONSUMER,
        )

    async def _dead_letter(self, entry: Entry, reason: str, attempt: int) -> bool:
        """The letter and the ack; False (nothing written) when another worker owns the entry now."""
        return bool(await self.redis.eval(
            _DEAD_LETTER, 3, names.STREAM, names.STREAM_DLQ, RETRY_DUE_KEY, entry.id,
            self._owner(entry), names.GROUP, _payload(entry), reason, attempt, DLQ_MAXLEN,
        ))

    def _owner(self, entry: Entry) -> str:
        """Who must still own `entry` to settle it: this worker; nobody for a trimmed entry."""
        return self.worker_id if entry.fields else ""

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
                # Only entries still ours (_TOUCH): one another worker took over stays with it,
                # one we parked a moment ago stays parked.
                await self.redis.eval(_TOUCH, 1, names.STREAM, names.GROUP, self.worker_id, *in_flight)
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


def _payload(entry: Entry) -> str:
    """What a letter keeps of the entry: its `job` field, or every field when it has none."""
    if entry.job is not None:
        return preserved(entry.job)
    return json.dumps({preserved(k): preserved(v) for k, v in entry.fields.items()}) if entry.fields else ""
