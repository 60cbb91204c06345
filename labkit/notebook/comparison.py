"""Lesson 11's side-by-side table: every cell comes from a measurement, not from prose.

`recorded_results()` reads the RESULTS that earlier lessons printed in this run (the runner
writes executed notebooks to build/notebooks/); `measure()` runs one small live experiment on
all three lanes (a payment fault, two workers per lane) for whatever was not recorded;
`compare()` fills the rows, each cell naming where its number came from.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import psutil

from labkit import kafka_admin, names, processes
from labkit.notebook.lessons import first_starts, lesson_faults
from labkit.notebook.widgets import booking_statuses
from labkit.settings import LANES

ROWS = ("ordering", "replay", "delivery guarantee", "retry mechanism", "scaling unit",
        "durability", "operating cost", "observability")
EXECUTED = Path(__file__).resolve().parents[2] / "build" / "notebooks"


def recorded_results(directory: Path = EXECUTED) -> dict[str, dict[str, Any]]:
    """Lesson number → its RESULTS, for every executed lesson found (none: an empty dict)."""
    from labkit.notebook.runner import results

    out = {}
    for path in sorted(directory.glob("[0-9][0-9]_*.ipynb")):
        try:
            out[path.name[:2]] = results(path)
        except (LookupError, ValueError):
            continue  # a lesson that failed or was interrupted printed no RESULTS
    return out


async def measure(lab, workload, *, count: int = 24, fail_rate: float = 0.3, timeout_s: float = 90.0) -> dict[str, Any]:
    """One run on every lane — `count` bookings, payment failing at `fail_rate`, two worker
    processes per lane — and the facts the table needs, per lane."""
    bookings = workload.bookings(count)
    ids = [b.bookingId for b in bookings]
    since = time.time()
    async with lesson_faults(lab, [f"payment.fail_rate={fail_rate}"]), lab.workers(LANES, count=2, concurrency=2):
        await lab.publish(bookings)
        states = await lab.wait_for(ids, timeout_s=timeout_s)
        stats = await lab.stats()
    statuses = await booking_statuses(lab, ids)
    facts: dict[str, Any] = {"states": states, "stats": stats, "statuses": statuses}
    facts["in_order"] = {lane: hotels_in_order(bookings, await first_starts(lab, lane, ids)) for lane in LANES}
    facts["kept"] = await still_readable(lab, ids, since)
    facts["brokers"] = await anyio.to_thread.run_sync(broker_facts, lab.settings)
    facts["redis_persistence"] = await lab.redis.config_get("appendonly")
    return facts


def hotels_in_order(bookings, starts: Mapping[str, float]) -> tuple[int, int]:
    """(hotels whose bookings started in publish order, hotels with two or more bookings)."""
    by_hotel: dict[str, list[float]] = {}
    for booking in bookings:
        if booking.bookingId in starts:
            by_hotel.setdefault(booking.hotelId, []).append(starts[booking.bookingId])
    several = [times for times in by_hotel.values() if len(times) > 1]
    return sum(times == sorted(times) for times in several), len(several)


async def still_readable(lab, ids: list[str], since: float) -> dict[str, int]:
    """Per lane, how many of the finished bookings can still be read back from the broker."""
    mine = set(ids)
    records = await anyio.to_thread.run_sync(lambda: kafka_admin.records(lab.settings, since_s=since - 1))
    entries = await lab.redis.xrange(names.STREAM, min=f"{int(since * 1000) - 1000}-0")
    jobs = [await lab.redis.exists(f"bull:{names.QUEUE}:job-{b}") for b in ids]
    return {
        "kafka": len({r["bookingId"] for r in records} & mine),
        "streams": sum(_text(fields.get(b"jobId", fields.get("jobId", ""))).removeprefix("job-") in mine
                       for _id, fields in entries),  # the entry names the job: job-<bookingId>
        "bullmq": sum(jobs),
    }


def broker_facts(settings) -> dict[str, Any]:
    """Memory of each broker process (MB) and how many Kafka brokers answer."""
    rss = {}
    for name, (_host, port) in {"redis": settings.redis_host_port, "kafka": settings.kafka_host_port}.items():
        pid = processes.listener_pid(port)
        rss[name] = round(psutil.Process(pid).memory_info().rss / 2**20) if pid else None
    return {"rss_mb": rss, "kafka_brokers": kafka_admin.broker_count(settings)}


def compare(facts: dict[str, Any], recorded: Mapping[str, dict[str, Any]]) -> list[dict[str, str]]:
    """The table: one row per aspect, a cell per lane, and where the numbers came from."""
    return [{"aspect": aspect, **ROW_MAKERS[aspect](facts, recorded)} for aspect in ROWS]


def _ordering(facts, recorded):
    cells = {lane: "{} of {} hotels in publish order (2 workers)".format(*facts["in_order"][lane]) for lane in LANES}
    if (r := recorded.get("07")) and "kafka_hotels" in r:
        cells["kafka"] += f"; lesson 07: {r['kafka_hotels_in_order']} of {r['kafka_hotels']} hotels in offset order (per key)"
    return cells


def _replay(facts, recorded):
    kept = facts["kept"]
    cells = {"bullmq": f"no log: {kept['bullmq']} finished job hashes kept, re-run one by one",
             "streams": f"{kept['streams']} entries re-readable by id (XRANGE) until trimmed",
             "kafka": f"{kept['kafka']} records re-readable by offset or time until retention"}
    if (r := recorded.get("07")) and "replayed_from_time" in r:
        cells["kafka"] += f"; lesson 07 replayed {r['replayed_from_time']} from a time"
    return cells


def _delivery(facts, _recorded):
    out = {}
    for lane in LANES:
        mine = [s for s in facts["statuses"] if s.lane == lane]
        redelivered = sum(any(h["state"] == "retrying" for h in s.history) for s in mine)
        done = sum(s.state in ("completed", "rejected", "dead-lettered") for s in mine)
        out[lane] = f"at-least-once: {redelivered} redelivered after a failure, {done}/{len(mine)} settled"
    return out


def _retry(facts, _recorded):
    notes = {}
    for status in facts["statuses"]:
        for h in status.history:
            if h["state"] == "retrying":
                notes.setdefault(status.lane, h["detail"])
    return {lane: notes.get(lane, "no retry happened") for lane in LANES}


def _scaling(facts, recorded):
    workers = {lane: facts["stats"][lane].workers for lane in LANES}
    cells = {"bullmq": f"processes × concurrency ({workers['bullmq']} workers)",
             "streams": f"consumers in a group ({workers['streams']} workers)",
             "kafka": f"partitions: at most one consumer each, its hotels side by side ({workers['kafka']} workers)"}
    if (r := recorded.get("04")) and "idle_consumers" in r:
        cells["kafka"] += f"; lesson 04: {r['idle_consumers']} of {r['kafka_members']} consumers idle"
        if per_s := r.get("kafka_records_per_s"):
            cells["kafka"] += ", one partition at " + " vs ".join(f"{o} {v}/s" for o, v in per_s.items())
    return cells


def _durability(facts, recorded):
    aof = facts["redis_persistence"].get("appendonly")
    redis = f"Redis appendonly={aof}: one server"
    kafka = f"replicated log on {facts['brokers']['kafka_brokers']} broker(s)"
    if (r := recorded.get("10")) and "acks" in r:
        kafka += f"; lesson 10 acks: {r['acks']}"
    return {"bullmq": redis, "streams": redis, "kafka": kafka}


def _cost(facts, _recorded):
    rss = facts["brokers"]["rss_mb"]
    shared = f"Redis {rss['redis']} MB (shared by both Redis lanes)"
    return {"bullmq": shared, "streams": shared, "kafka": f"Kafka JVM {rss['kafka']} MB"}


def _observability(facts, _recorded):
    out = {}
    for lane in LANES:
        s = facts["stats"][lane]
        lag = "no lag figure" if s.lag is None else f"lag {s.lag}"
        out[lane] = f"waiting {s.waiting}, DLQ {s.dlq_size}, {lag}, {len(s.detail)} extra gauges"
    return out


ROW_MAKERS = {"ordering": _ordering, "replay": _replay, "delivery guarantee": _delivery,
              "retry mechanism": _retry, "scaling unit": _scaling, "durability": _durability,
              "operating cost": _cost, "observability": _observability}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
