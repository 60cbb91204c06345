"""What the lesson notebooks call: `start`/`finish` around a lesson; lessons, widgets, charts
and samplers as modules beside it."""

from labkit.notebook.session import finish, start

__all__ = ["finish", "start"]
