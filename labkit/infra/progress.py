"""How slow infra work (a jar download, a broker starting) tells the user what it is doing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


def _quiet(_message: str) -> None:
    pass


@dataclass(frozen=True)
class Progress:
    """`doing` replaces a passing status line (a spinner's text); `done` leaves a line behind.
    Both do nothing by default: notebooks and tests call the infra functions quietly."""

    doing: Callable[[str], None] = _quiet
    done: Callable[[str], None] = _quiet


QUIET = Progress()
