"""What every `labkit` command shares: the lane options, the two consoles, and the wrapper that
runs an async command and turns the errors a learner can fix into one clear line."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from enum import Enum
from functools import wraps
from typing import Annotated, Any

import typer
from kafka.errors import KafkaError
from redis.exceptions import ConnectionError as RedisConnectionError
from rich.console import Console

from labkit.backends import UnknownBackend
from labkit.faults import FaultSpecError
from labkit.settings import LANES, SettingsError

console = Console(width=None if Console().is_terminal else 160)
err = Console(stderr=True)  # errors and progress: stdout stays clean for --json and pipes

# The choices --help lists, kept in step with LANES.
Lane = Enum("Lane", {lane: lane for lane in LANES}, type=str)
LaneOrAll = Enum("LaneOrAll", {"all": "all", **{lane: lane for lane in LANES}}, type=str)
Backend = Annotated[Lane, typer.Option("--backend", "-b", help="The lane.")]
Lanes = Annotated[
    list[LaneOrAll],
    typer.Option("--backend", "-b", help="A lane, or all; repeat for several (-b bullmq -b kafka)."),
]


def friendly(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """Run an async command; turn the errors a learner can fix into one clear line."""

    @wraps(fn)
    def run(*args, **kwargs):
        try:
            return asyncio.run(fn(*args, **kwargs))
        except (UnknownBackend, FaultSpecError, SettingsError) as exc:
            fail(str(exc))
        except RedisConnectionError as exc:
            fail(f"cannot reach Redis ({exc}); is the lab up? run `labkit infra up`")
        except KafkaError as exc:
            fail(f"Kafka error: {exc}; is the lab up? run `labkit infra up`")

    return run


def fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)
