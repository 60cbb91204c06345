"""The three technologies behind one interface; each imported only when asked for."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from labkit.backends.base import Backend, DeadLetter, LaneStats
from labkit.settings import LANES

_MODULES = {"bullmq": "BullMQBackend", "streams": "StreamsBackend", "kafka": "KafkaBackend"}


class UnknownBackend(ValueError):
    pass


def backend_class(lane: str) -> type[Backend]:
    if lane not in _MODULES:
        raise UnknownBackend(f"unknown backend {lane!r}; choose one of {', '.join(LANES)}")
    return getattr(import_module(f"labkit.backends.{lane}"), _MODULES[lane])


def open_backend(lane: str, **stores: Any) -> Backend:
    """The lane's backend over the stores a Lab owns (settings, redis, status, metrics,
    faults, effects)."""
    return backend_class(lane)(**stores)


def lanes_of(choice: str) -> list[str]:
    """`all` or a comma list → lane names, in the order the lab always shows them."""
    wanted = LANES if choice == "all" else [c.strip() for c in choice.split(",") if c.strip()]
    for lane in wanted:
        backend_class(lane)
    return [lane for lane in LANES if lane in wanted]


__all__ = ["Backend", "DeadLetter", "LaneStats", "backend_class", "lanes_of", "open_backend"]
