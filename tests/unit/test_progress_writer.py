"""The progress writer: reports queue without waiting, land in order, and a failed write
fails the run as an awaited write would have."""

from __future__ import annotations

import asyncio

import pytest

from labkit.progress_writer import ProgressReport, ProgressWriter


class SlowSink:
    """Records each write call's reports; each write takes a while, as a round trip does."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.calls: list[list[ProgressReport]] = []
        self.fail_on_call = fail_on_call

    async def write(self, reports: list[ProgressReport]) -> None:
        self.calls.append(list(reports))
        await asyncio.sleep(0.01)
        if len(self.calls) == self.fail_on_call:
            raise ConnectionError("redis went away")


async def test_reports_do_not_wait_and_land_in_order_in_few_writes():
    sink = SlowSink()
    writer = ProgressWriter(sink.write)
    for n in range(10):
        await writer.report(n * 10, f"note {n}")
    assert sink.calls == []  # nothing was awaited yet: the run went on at once
    await writer.flush()
    written = [r.progress for call in sink.calls for r in call]
    assert written == [n * 10 for n in range(10)]
    assert len(sink.calls) < 10  # queued reports share a write
    times = [r.at for call in sink.calls for r in call]
    assert times == sorted(times)


async def test_reports_made_while_a_write_is_in_flight_follow_it():
    sink = SlowSink()
    writer = ProgressWriter(sink.write)
    await writer.report(0, "started")
    await asyncio.sleep(0.005)  # the first write is under way
    await writer.report(20, "payment done")
    await writer.report(None, "pdf started")
    await writer.flush()
    assert [[r.note for r in call] for call in sink.calls] == [["started"], ["payment done", "pdf started"]]


async def test_a_failed_write_fails_the_next_report_and_the_flush():
    sink = SlowSink(fail_on_call=1)
    writer = ProgressWriter(sink.write)
    await writer.report(0, "started")
    await writer.settled()  # settled never raises: the verdict of a failed run still gets written
    with pytest.raises(ConnectionError):
        await writer.report(20, "payment done")
    with pytest.raises(ConnectionError):
        await writer.flush()
    assert len(sink.calls) == 1


async def test_a_writer_with_no_reports_flushes_at_once():
    await ProgressWriter(SlowSink().write).flush()
