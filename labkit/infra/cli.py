"""`labkit infra up|status|down|logs`: the lab's local Redis and Apache Kafka."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from labkit import processes
from labkit.infra import brokers
from labkit.infra.errors import InfraError
from labkit.infra.layout import ALLOWED_BROKERS
from labkit.infra.progress import Progress
from labkit.settings import Settings, SettingsError

infra_app = typer.Typer(
    help="Run the lab's brokers locally: Redis and Apache Kafka (KRaft).",
    no_args_is_help=True,
    add_completion=False,
)

out = Console(soft_wrap=True)  # long paths and topic lists stay on one line
err = Console(stderr=True)
T = TypeVar("T")


class Service(str, Enum):
    redis = "redis"
    kafka = "kafka"


ServicesArg = Annotated[
    list[Service] | None,
    typer.Argument(help="Which brokers (default: both).", show_default=False),
]


@contextmanager
def _user_errors() -> Iterator[None]:
    """Problems the user can fix become one red line and exit code 1 — never a traceback."""
    try:
        yield
    except (InfraError, SettingsError, ValueError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _settings() -> Settings:
    return Settings.from_env()


def _names(services: list[Service] | None) -> tuple[str, ...]:
    return tuple(s.value for s in services) if services else brokers.SERVICES


def _run(fn: Callable[[], T]) -> T:
    with _user_errors():
        return fn()


@infra_app.command()
def up(
    services: ServicesArg = None,
    kafka_brokers: Annotated[
        int | None,
        typer.Option(
            "--kafka-brokers",
            help="1, or 3 for a local replicated cluster (default: what runs, else 1).",
            show_default=False,
        ),
    ] = None,
    install: Annotated[
        bool,
        typer.Option(
            "--install",
            help="apt-get install redis-server if missing (root). Also LABKIT_AUTO_INSTALL=1.",
        ),
    ] = False,
    timeout_s: Annotated[
        float, typer.Option("--timeout-s", help="Seconds to wait for Kafka to answer.")
    ] = 120.0,
) -> None:
    """Start Redis and Kafka (idempotent) and create the lab topics; returns when healthy."""
    auto = os.environ.get("LABKIT_AUTO_INSTALL", "").lower() in {"1", "yes", "true", "on"}

    def go() -> brokers.UpReport:
        if kafka_brokers is not None and kafka_brokers not in ALLOWED_BROKERS:
            raise InfraError(f"--kafka-brokers must be 1 or 3, not {kafka_brokers}")
        # On stderr: the spinner and the "healthy" lines never mix with the report below.
        with err.status("checking what runs", spinner="dots") as spinner:
            return brokers.up(
                _settings(),
                services=_names(services),
                brokers=kafka_brokers,
                install=install or auto,
                timeout_s=timeout_s,
                progress=Progress(
                    doing=spinner.update,
                    done=lambda line: err.print(f"[green]✓[/green] {line}", highlight=False),
                ),
            )

    report = _run(go)
    for line in report.started:
        out.print(f"started {line}", highlight=False)
    for line in report.already_running:
        out.print(f"already running: {line}", highlight=False)
    if report.topics is not None:
        created = ", ".join(report.topics.created) or "none (all exist)"
        out.print(
            f"topics created: {created}; replication factor {report.topics.replication_factor}",
            highlight=False,
        )
    out.print(f"[green]healthy[/green] after {report.seconds:.1f} s", highlight=False)


@infra_app.command()
def down(services: ServicesArg = None) -> None:
    """Stop what `labkit infra up` started (pid files); nothing else is touched."""
    lines = _run(lambda: brokers.down(_settings(), services=_names(services)))
    for line in lines or ["nothing to stop"]:
        out.print(line, highlight=False)


@infra_app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Version, address, pid and health of each broker."""
    settings = _run(_settings)
    rows = _run(lambda: brokers.status(settings))
    if as_json:
        payload = {
            "home": str(settings.home.expanduser().resolve()),
            "services": [r.as_dict() for r in rows],
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    table = Table(title=f"labkit infra — {settings.home}")
    for column in ("service", "node", "version", "address", "pid", "healthy"):
        table.add_column(column, no_wrap=True)
    for r in rows:
        address = f"{r.host}:{r.port}" + (
            f" (ctrl {r.controller_port})" if r.controller_port else ""
        )
        table.add_row(
            r.service,
            "" if r.node_id is None else str(r.node_id),
            r.version or "?",
            address,
            str(r.pid) if r.pid else ("external" if r.healthy else "-"),
            "[green]yes[/green]" if r.healthy else "[red]no[/red]",
        )
    out.print(table)
    for r in rows:
        if r.warning:
            err.print(f"[yellow]warning:[/yellow] {r.service}: {r.warning}", highlight=False)
    out.print(f"logs: {settings.home.expanduser().resolve() / 'logs'}  (`labkit infra logs`)")


@infra_app.command()
def logs(
    service: Annotated[
        Service | None, typer.Argument(help="redis or kafka (default: both).", show_default=False)
    ] = None,
    lines: Annotated[int, typer.Option("-n", "--lines", help="Lines per file.")] = 40,
) -> None:
    """Show the end of the brokers' log files."""
    settings = _run(_settings)
    chosen = [service.value] if service else list(brokers.SERVICES)
    shown = False
    for name in chosen:
        for path in brokers.log_files(settings, name):
            if not path.exists():
                continue
            shown = True
            typer.echo(f"==> {path} <==")
            for line in processes.tail(path, lines=lines):
                typer.echo(line)
    if not shown:
        err.print("no log files yet; run `labkit infra up`")
