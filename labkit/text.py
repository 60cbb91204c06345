"""Redis replies may be bytes or str depending on the client: one place turns them to text."""

from __future__ import annotations

from typing import Any


def as_text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)
