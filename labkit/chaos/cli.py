"""`labkit chaos`: run the fault matrix and judge it by the independent ledger."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import anyio
import typer
from rich.console import Console

from labkit.chaos import report
from labkit.chaos.ledger import Ledger
from labkit.chaos.runner import Outcome, ledger_path, run_scenario
from labkit.chaos.scenarios import SCENARIOS
from labkit.settings import LANES, Settings

chaos_app = typer.Typer(help="The fault matrix on all three lanes, judged by an independent ledger.")


@chaos_app.callback(invoke_without_command=True)
def chaos(
    scenario: Annotated[str, typer.Option(help=f"one of {', '.join(SCENARIOS)}, or all")] = "all",
    bookings: Annotated[int | None, typer.Option(help="bookings per lane (CI-sized when omitted)")] = None,
    lanes: Annotated[str, typer.Option(help="comma-separated lanes")] = ",".join(LANES),
    out: Annotated[Path, typer.Option(help="where chaos.json, chaos.html and the ledger go")] = Path("build/chaos"),
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON report")] = False,
) -> None:
    names = list(SCENARIOS) if scenario == "all" else [scenario]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise typer.BadParameter(f"unknown scenario {unknown[0]!r}; choose from {', '.join(SCENARIOS)}")
    chosen = [lane.strip() for lane in lanes.split(",") if lane.strip()]
    console = Console(stderr=as_json)
    outcomes = anyio.run(_run_all, names, chosen, bookings, out, console)
    json_path, html_path = report.write(outcomes, out, bookings=bookings)
    if as_json:
        print(json.dumps(report.as_json(outcomes, bookings=bookings), indent=2))
    else:
        console.print(report.table(outcomes))
        console.print(f"report: {json_path}  {html_path}")
    raise typer.Exit(0 if all(o.clean for o in outcomes) else 1)


async def _run_all(names: list[str], lanes: list[str], bookings: int | None, out: Path,
                   console: Console) -> list[Outcome]:
    ledger = Ledger(ledger_path(out))
    outcomes = []
    try:
        for name in names:
            console.print(f"[bold]{name}[/]: {SCENARIOS[name].summary}")
            outcome = await run_scenario(SCENARIOS[name], base=Settings.from_env(), ledger=ledger,
                                         lanes=lanes, bookings=bookings)
            console.print(f"  {'clean' if outcome.clean else 'DEFECT'} in {outcome.seconds:.0f} s")
            outcomes.append(outcome)
    finally:
        ledger.close()
    return outcomes
