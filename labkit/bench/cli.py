"""`labkit bench`: mounted by labkit/cli.py as `app.add_typer(bench_app, name="bench")`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from labkit.backends import lanes_of
from labkit.bench import report
from labkit.bench.runner import BenchConfig, run
from labkit.settings import Settings

bench_app = typer.Typer(help="Benchmark the lanes: ceiling, raw client, lab transport, lab pipeline.")
console = Console()


@bench_app.callback(invoke_without_command=True)
def bench(
    lanes: str = "all",
    quick: Annotated[bool, typer.Option("--quick", help="CI-sized phases and scaling 1, 2")] = False,
    count: Annotated[int | None, typer.Option(min=10, help="messages per measured phase")] = None,
    repeats: Annotated[int | None, typer.Option(min=3, help="measured phases per layer (median)")] = None,
    concurrency: Annotated[int | None, typer.Option(min=1, help="messages in flight per consumer")] = None,
    rate: Annotated[float | None, typer.Option(help="fixed rate for latency, msgs/s")] = None,
    workers: Annotated[str | None, typer.Option(help="scaling curve, e.g. 1,2,4,8")] = None,
    out: Path = Path("build/bench"),
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Throughput (median of repeated runs after a warm-up), fixed-rate latency from the
    intended send time, and a scaling curve — per lane, in one run."""
    options = {"count": count, "repeats": repeats, "concurrency": concurrency, "latency_rate": rate,
               "scaling_workers": tuple(int(w) for w in workers.split(",")) if workers else None}
    changes = {k: v for k, v in options.items() if v is not None} | {"lanes": tuple(lanes_of(lanes))}
    config = BenchConfig.quick(**changes) if quick else BenchConfig(**changes)

    def progress(what: str, _results: dict) -> None:
        console.print(f"[dim]measured {what}[/dim]")

    results = asyncio.run(run(Settings.from_env(), config, progress=None if as_json else progress))
    json_path, html_path = report.write(results, out)
    if as_json:
        print(json.dumps(results, indent=2))
        return
    console.print(report.tables(results))
    console.print(f"wrote {json_path} and {html_path}")
