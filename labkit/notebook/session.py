"""The first and last lines of every lesson: `start` opens the lab, `finish` reports and closes.

    lab, settings, workload = await start(seed=SEED, time_scale=TIME_SCALE)
    ...
    await finish(lab, RESULTS)
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

from labkit.lab import Lab
from labkit.notebook.backlog import drain
from labkit.notebook.widgets import release_lesson, use_static_plotly
from labkit.settings import Settings
from labkit.workload import Workload

# Lessons run fast, retry soon and notice a dead worker quickly; a lesson may change any of it.
LESSON_SETTINGS: dict[str, Any] = {"backoff_base_s": 0.2, "stale_after_s": 2.0}


@dataclass(frozen=True)
class LessonWorkload(Workload):
    """The seed's bookings at this run's own hotels (`hotel-<run_id>-001`…), stocked fresh by
    `start`: rooms the learner's earlier bookings took at the lab's hotels never reject ours."""

    def hotel_id(self, index: int) -> str:  # type: ignore[override]  # per run, not static
        return f"hotel-{self.run_id}-{index + 1:03d}"


def redacted_url(url: str) -> str:
    """`redis://:secret@host:6379/0` → `redis://:***@host:6379/0`: safe to print in a notebook."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class Lesson(NamedTuple):
    lab: Lab
    settings: Settings
    workload: Workload


async def start(*, seed: int, time_scale: float, **settings: Any) -> Lesson:
    """Fixed seeds, so this notebook's output is stable across runs; plotly.js embedded for
    HTML exports; a Lab on the brokers LABKIT_* name, with lesson-sized settings (`settings`
    overrides them, e.g. `max_attempts=3`). Checks Redis answers, processes a backlog left
    queued earlier (backlog.drain) and stocks this run's own hotels on every lane."""
    use_static_plotly()
    lesson_settings = Settings.from_env().with_(
        time_scale=time_scale, **{**LESSON_SETTINGS, **settings}
    )
    lab = Lab(lesson_settings)
    await lab.redis.ping()
    print(
        f"Redis {redacted_url(lesson_settings.redis_url)} · Kafka {lesson_settings.kafka_bootstrap}"
        f" · time × {lesson_settings.time_scale}"
    )
    await drain(lab)
    workload = LessonWorkload(seed=seed)
    await lab.stock(workload.rooms)
    random.seed(seed)  # after the drain, so what the lab held earlier never shifts the draws
    return Lesson(lab, lesson_settings, workload)


async def finish(lab: Lab, results: dict[str, Any]) -> None:
    """Print the `RESULTS {json}` line tests/notebooks reads, disable the lesson's controls
    (a slider must not act on a finished lesson), then close the lab."""
    print("RESULTS " + json.dumps(results))
    release_lesson(lab.faults)
    await lab.close()
