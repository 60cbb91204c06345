"""The `labkit` command (typer): infra, workers, publishing, stats, dead letters, faults."""

from __future__ import annotations

import json
from importlib.metadata import version
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from labkit.api.health import BrokerProbe
from labkit.backends import lanes_of
from labkit.bench.cli import bench_app
from labkit.chaos.cli import chaos_app
from labkit.cli_common import Backend, LaneOrAll, Lanes, console, err, friendly
from labkit.faults import FaultStore
from labkit.infra.cli import infra_app
from labkit.lab import Lab
from labkit.settings import Settings
from labkit.worker_cli import BROKER_GONE, worker

app = typer.Typer(help="Booking Queue Lab", no_args_is_help=True, add_completion=False)
app.add_typer(infra_app, name="infra")
dlq_app = typer.Typer(help="Dead-letter queues: list and redrive", no_args_is_help=True)
faults_app = typer.Typer(help="Failure injection, live while workers run", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
app.add_typer(faults_app, name="faults")
app.add_typer(bench_app, name="bench")
app.add_typer(chaos_app, name="chaos")
app.command()(worker)

PUBLISH_BATCH = 500  # bookings per publish call: a progress step, and bounded memory per call


def chosen(choices: list[LaneOrAll]) -> list[str]:
    """--backend values as lane names, in the order the lab always shows them."""
    values = {choice.value for choice in choices}
    return lanes_of("all" if "all" in values else ",".join(values))


def show_version(wanted: bool) -> None:
    if wanted:
        print(f"labkit {version('labkit')}")
        raise typer.Exit()


@app.callback()
def main(
    _version: Annotated[
        bool | None,
        typer.Option("--version", callback=show_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """Booking Queue Lab"""


@app.command()
@friendly
async def publish(
    backend: Lanes = [LaneOrAll.all],  # noqa: B006 - typer reads the default, never mutates it
    count: Annotated[int, typer.Option(min=1, max=1_000_000)] = 10,
    seed: int = 42,
    priority: Annotated[int | None, typer.Option(help="BullMQ job priority")] = None,
    delay_ms: Annotated[int | None, typer.Option(help="BullMQ job delay")] = None,
) -> None:
    """Publish COUNT seeded bookings to each chosen lane, in batches of 500 (a progress bar per
    lane on stderr when there is more than one batch)."""
    from labkit.workload import Workload

    lanes = chosen(backend)
    bookings = Workload(seed=seed).bookings(count)
    columns = (TextColumn("{task.description:>8}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    ids: dict[str, list[str]] = {}
    async with Lab() as lab:
        with Progress(*columns, console=err, transient=True, disable=count <= PUBLISH_BATCH) as bars:
            for lane in lanes:
                bar = bars.add_task(lane, total=count)
                ids[lane] = []
                for start in range(0, count, PUBLISH_BATCH):
                    batch = bookings[start : start + PUBLISH_BATCH]
                    published = await lab.publish(batch, [lane], priority=priority, delay=delay_ms)
                    ids[lane] += published[lane]
                    bars.advance(bar, len(batch))
    for lane, job_ids in ids.items():
        console.print(f"{lane}: published {len(job_ids)} (first {job_ids[0]})")


@app.command()
@friendly
async def stats(
    backend: Lanes = [LaneOrAll.all],  # noqa: B006 - typer reads the default, never mutates it
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Per lane: waiting, active, retrying, completed, rejected, dead-lettered, DLQ, lag,
    workers, and worker restarts (processes a pool started again after they died).

    A lane whose broker does not answer is reported, not fatal: --json still prints every lane
    (that one as {"lane": ..., "error": ...}), the error also goes to stderr, and the exit code
    is 1 — so scripts notice, and `labkit stats --json 2>/dev/null | jq` still parses."""
    lanes = chosen(backend)
    async with Lab() as lab:
        probe = BrokerProbe(lab.settings, lab.redis)
        result = {lane: await lane_stats(lab, probe, lane) for lane in lanes}
    failed = {lane: row["error"] for lane, row in result.items() if "error" in row}
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        columns = ("waiting", "active", "retrying", "completed", "rejected", "dead_lettered",
                   "dlq_size", "lag", "workers", "restarts")
        table = Table("lane", *columns)
        for lane, row in result.items():
            table.add_row(lane, *(("-" if lane in failed else str(row[c])) for c in columns))
        console.print(table)
    for lane, error in failed.items():
        err.print(f"[red]error:[/red] {lane} lane: {error}", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


async def lane_stats(lab: Lab, probe: BrokerProbe, lane: str) -> dict[str, Any]:
    """One lane's counters, or {"lane", "error"} when its brokers do not answer (asked first
    with a short timeout: a Kafka client would wait a minute for a broker that is down)."""
    down = await probe.lane_down(lane)
    if down is None:
        try:
            row = (await lab.backend(lane).stats()).as_dict()
            row["restarts"] = (await lab.worker_restarts([lane]))[lane]
            return row
        except BROKER_GONE as exc:  # it went away between the probe and the reading
            down = f"{type(exc).__name__}: {exc}"
    return {"lane": lane, "error": down}


@dlq_app.command("list")
@friendly
async def dlq_list(backend: Backend, limit: int = 50, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show dead letters with their reason and attempts."""
    async with Lab() as lab:
        letters = await lab.backend(backend.value).dlq_list(limit)
    if as_json:
        print(json.dumps([letter.as_dict() for letter in letters], indent=2))
        return
    table = Table("id", "booking", "attempts", "reason")
    for letter in letters:
        table.add_row(letter.id, letter.booking_id or "?", str(letter.attempts), letter.reason)
    console.print(table)


@dlq_app.command("redrive")
@friendly
async def dlq_redrive(
    backend: Backend, limit: int = 1000,
    booking: Annotated[list[str] | None, typer.Option(help="only this booking's letters (repeatable)")] = None,
) -> None:
    """Send dead letters back to the work queue (all of them, or only --booking's)."""
    async with Lab() as lab:
        moved = await lab.backend(backend.value).dlq_redrive(limit, booking_ids=booking or None)
    console.print(f"{backend.value}: redrove {moved} dead letter(s)")


@faults_app.command("set")
@friendly
async def faults_set(assignments: Annotated[list[str], typer.Argument(help="e.g. payment.fail_rate=0.3")]) -> None:
    """Change failure injection; running workers pick it up within a second."""
    async with Lab() as lab:
        values = await FaultStore(lab.redis).set(assignments)
    console.print(f"faults set: {values}")


@faults_app.command("clear")
@friendly
async def faults_clear() -> None:
    async with Lab() as lab:
        await FaultStore(lab.redis).clear(set_aside_too=True)  # and none come back after a lesson
    console.print("faults cleared")


@faults_app.command("show")
@friendly
async def faults_show() -> None:
    async with Lab() as lab:
        console.print(await FaultStore(lab.redis).show())


@app.command()
def api(
    host: str = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
) -> None:
    """Serve the booking API and the live dashboard."""
    import uvicorn

    from labkit.api.app import create_app

    uvicorn.run(create_app(Settings.from_env()), host=host, port=port, log_level="warning")
