"""Offset bookkeeping for the Kafka lane's parallel consumer (the Confluent Parallel Consumer idea).

Kafka commits one offset per partition: "everything before this is done". To run a
partition's records side by side and still never commit past an unfinished one, the tracker
keeps, per partition, the records polled but not yet committed, and commits only the
CONTIGUOUS finished prefix (contiguous among polled records: offsets themselves have gaps,
e.g. where a transaction marker sits): a slow record at offset n holds the commit at n while n+1, n+2…
finish behind it (a crash redelivers them; the pipeline's effects are idempotent).

Which records may run at the same time is the ordering:
- `partition`: one record of a partition at a time, in offset order (Kafka's classic model);
- `key`: one record per key (hotel) at a time, in offset order; different hotels overlap;
- `unordered`: any record may start as soon as it is polled.

A record that ends as a retry or a dead letter carries the records it must produce
(`outgoing`): they are sent in the same Kafka transaction that commits the prefix holding
them, so they exist exactly when its offset is committed.

Pure logic, no I/O. The consumer thread (commits, rebalances) and the event loop (starting
and finishing records) both call it, hence the lock.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Ordering(StrEnum):
    PARTITION = "partition"
    KEY = "key"
    UNORDERED = "unordered"


@dataclass(eq=False)
class Tracked:
    """One polled record on its way to being committed."""

    partition: Hashable  # a TopicPartition in the worker; anything hashable here
    offset: int
    key: bytes | None
    record: Any = None
    done: bool = False
    outgoing: list[Any] = field(default_factory=list)  # retries or letters to produce on commit
    waiter: Any = None  # whoever waits for the commit (the worker's future); opaque here


@dataclass
class Prefix:
    """What one partition can commit now: the next offset to read, and the finished
    records that commit takes with it."""

    offset: int
    records: list[Tracked]

    @property
    def outgoing(self) -> list[Any]:
        return [out for item in self.records for out in item.outgoing]


class OffsetTracker:
    def __init__(self, ordering: Ordering | str = Ordering.KEY, *, partition_limit: int = 100) -> None:
        self.ordering = Ordering(ordering)
        self.partition_limit = partition_limit  # in flight per partition before it is paused
        self._lock = threading.Lock()
        self._pending: dict[Hashable, dict[int, Tracked]] = {}  # per partition, in offset order
        self._busy: dict[Hashable, deque[Tracked]] = {}  # ordering lane → records waiting behind it

    def add(self, item: Tracked) -> bool:
        """Track a polled record; True when it may start now, False when it waits its turn
        (a later `finish` of the record ahead of it hands it out)."""
        with self._lock:
            pending = self._pending.setdefault(item.partition, {})
            if item.offset in pending:  # polled again (a rewind): the first copy is the one running
                return False
            pending[item.offset] = item
            lane = self._lane(item)
            if lane in self._busy:
                self._busy[lane].append(item)
                return False
            self._busy[lane] = deque()
            return True

    def finish(self, item: Tracked) -> list[Tracked]:
        """The record is done (acked, or its retry/letter is in `outgoing`): return the records
        that may start now. A record of a revoked partition is ignored: it is no longer ours."""
        with self._lock:
            if item.done or self._pending.get(item.partition, {}).get(item.offset) is not item:
                return []
            item.done = True
            lane = self._lane(item)
            waiting = self._busy.get(lane)
            if waiting:
                return [waiting.popleft()]
            self._busy.pop(lane, None)
            return []

    def owns(self, item: Tracked) -> bool:
        with self._lock:
            return self._pending.get(item.partition, {}).get(item.offset) is item

    def committable(self, partitions: set[Hashable] | None = None) -> dict[Hashable, Prefix]:
        """Each partition's contiguous finished prefix (only `partitions`, if given)."""
        with self._lock:
            out = {}
            for tp, pending in self._pending.items():
                if partitions is not None and tp not in partitions:
                    continue
                prefix = []
                for offset in sorted(pending):
                    item = pending[offset]
                    if not item.done:
                        break
                    prefix.append(item)
                if prefix:
                    out[tp] = Prefix(prefix[-1].offset + 1, prefix)
            return out

    def committed(self, prefixes: dict[Hashable, Prefix]) -> None:
        """Those prefixes are committed: forget them."""
        with self._lock:
            for tp, prefix in prefixes.items():
                pending = self._pending.get(tp, {})
                for item in prefix.records:
                    if pending.get(item.offset) is item:
                        del pending[item.offset]

    def revoke(self, partitions: set[Hashable]) -> list[Tracked]:
        """The partitions moved to another member: drop everything of theirs (the caller
        commits their finished prefix first) and return what was dropped."""
        with self._lock:
            dropped = [item for tp in partitions for item in self._pending.pop(tp, {}).values()]
            self._busy = {lane: q for lane, q in self._busy.items() if lane[0] not in partitions}
            return dropped

    def partitions(self) -> list[Hashable]:
        with self._lock:
            return list(self._pending)

    def in_flight(self, partition: Hashable | None = None) -> int:
        with self._lock:
            if partition is not None:
                return len(self._pending.get(partition, {}))
            return sum(len(p) for p in self._pending.values())

    def full(self, partition: Hashable) -> bool:
        return self.in_flight(partition) >= self.partition_limit

    def _lane(self, item: Tracked) -> tuple[Hashable, Any]:
        """Records in one lane run one at a time, in offset order."""
        match self.ordering:
            case Ordering.PARTITION:
                return (item.partition, None)
            case Ordering.KEY:
                return (item.partition, item.key)
            case Ordering.UNORDERED:
                return (item.partition, item.offset)
