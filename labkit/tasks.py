"""Structured concurrency for the lab: work that never outlives the block that started it
(anyio task groups), with failures raised as themselves."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
from anyio.abc import TaskGroup


@contextlib.asynccontextmanager
async def task_group() -> AsyncIterator[TaskGroup]:
    """`anyio.create_task_group()`, but one failure is raised as itself rather than as an
    ExceptionGroup of one: a notebook shows the TimeoutError that says what went wrong, and a
    worker's `except ConnectionError` still sees a lost broker."""
    try:
        async with anyio.create_task_group() as tasks:
            yield tasks
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
