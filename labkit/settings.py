"""One frozen settings object, read from the environment only when asked (never at import)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_KAFKA_BOOTSTRAP = "127.0.0.1:9092"
KAFKA_VERSION = "4.1.1"  # a 4.x release kafka-python 3.0.x is tested against
LANES = ("bullmq", "streams", "kafka")


class SettingsError(ValueError):
    """A LABKIT_* variable holds a value labkit cannot use."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    redis_url: str = DEFAULT_REDIS_URL
    kafka_bootstrap: str = DEFAULT_KAFKA_BOOTSTRAP
    # Extra kafka-python client options for external clusters (TLS, SASL), e.g.
    # security_protocol=SASL_SSL, sasl_mechanism=PLAIN, sasl_plain_username=...
    kafka_options: Mapping[str, Any] = field(default_factory=dict)
    time_scale: float = 1.0
    home: Path = Path(".lab")
    max_attempts: int = 4
    backoff_base_s: float = 1.0
    backoff_max_s: float = 30.0
    # A claimed job whose worker has not been heard of for this long is presumed dead and
    # handed to another worker (BullMQ lock, Streams idle time, Kafka session timeout).
    stale_after_s: float = 3.0
    kafka_partitions: int = 6
    bullmq_rate_limit_per_s: int = 0  # BullMQ's worker limiter, jobs per second; 0 = none
    idempotency: bool = True
    retention_s: float = 86_400.0  # a finished booking's status, history and ledger are kept this long

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        kafka_options: dict[str, Any] = {}
        for key, value in env.items():
            if key.startswith("LABKIT_KAFKA_OPT_"):
                kafka_options[key.removeprefix("LABKIT_KAFKA_OPT_").lower()] = _option(key, value)
        return cls(
            redis_url=env.get("LABKIT_REDIS_URL", DEFAULT_REDIS_URL),
            kafka_bootstrap=env.get("LABKIT_KAFKA_BOOTSTRAP", DEFAULT_KAFKA_BOOTSTRAP),
            kafka_options=kafka_options,
            time_scale=_number(env, "LABKIT_TIME_SCALE", 1.0, minimum=0.0),
            home=Path(env.get("LABKIT_HOME", ".lab")).expanduser(),
            max_attempts=int(_number(env, "LABKIT_MAX_ATTEMPTS", 4, minimum=1)),
            backoff_base_s=_number(env, "LABKIT_BACKOFF_BASE_S", 1.0, minimum=0.0),
            backoff_max_s=_number(env, "LABKIT_BACKOFF_MAX_S", 30.0, minimum=0.0),
            stale_after_s=_number(env, "LABKIT_STALE_AFTER_S", 3.0, minimum=0.5),
            bullmq_rate_limit_per_s=int(_number(env, "LABKIT_BULLMQ_RATE_LIMIT_PER_S", 0, minimum=0)),
            idempotency=env.get("LABKIT_IDEMPOTENCY", "on").lower() not in {"0", "off", "false"},
            retention_s=_number(env, "LABKIT_RETENTION_S", 86_400.0, minimum=1.0),
        )

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @property
    def redis_host_port(self) -> tuple[str, int]:
        url = urlparse(self.redis_url)
        return url.hostname or "127.0.0.1", url.port or 6379

    @property
    def kafka_host_port(self) -> tuple[str, int]:
        first = self.kafka_bootstrap.split(",")[0].strip()
        host, _, port = first.rpartition(":")
        return host or "127.0.0.1", int(port or 9092)

    def kafka_config(self, **extra: Any) -> dict[str, Any]:
        """Options for any kafka-python client: bootstrap plus the user's TLS/SASL options."""
        return {"bootstrap_servers": self.kafka_bootstrap.split(","), **self.kafka_options, **extra}

    def env(self) -> dict[str, str]:
        """These settings as LABKIT_* variables, so child processes see the same lab."""
        out = {
            "LABKIT_REDIS_URL": self.redis_url,
            "LABKIT_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "LABKIT_TIME_SCALE": repr(self.time_scale),
            "LABKIT_HOME": str(self.home),
            "LABKIT_MAX_ATTEMPTS": str(self.max_attempts),
            "LABKIT_BACKOFF_BASE_S": repr(self.backoff_base_s),
            "LABKIT_BACKOFF_MAX_S": repr(self.backoff_max_s),
            "LABKIT_STALE_AFTER_S": repr(self.stale_after_s),
            "LABKIT_BULLMQ_RATE_LIMIT_PER_S": str(self.bullmq_rate_limit_per_s),
            "LABKIT_IDEMPOTENCY": "on" if self.idempotency else "off",
            "LABKIT_RETENTION_S": repr(self.retention_s),
        }
        for key, value in self.kafka_options.items():
            out[f"LABKIT_KAFKA_OPT_{key.upper()}"] = json.dumps(value) if not isinstance(value, str) else value
        return out


def _option(name: str, raw: str) -> Any:
    """kafka-python wants real types: `30000` → int, `false` → bool; text stays text."""
    if name.lower().endswith(("password", "username", "_id")):
        return raw  # secrets and names are text even when they look like numbers
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    return value if isinstance(value, (bool, int, float)) else raw


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise SettingsError(f"{name}={raw!r} must be >= {minimum}")
    return value
