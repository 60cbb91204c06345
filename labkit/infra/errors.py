"""The one error type the infra commands show to users as a single actionable line."""

from __future__ import annotations


class InfraError(RuntimeError):
    """Something the user can fix; the message says how."""
