"""One frozen settings object, read from LABKIT_* variables only when asked (never at import).

`Settings()` is the defaults; `Settings.from_env()` reads os.environ, `Settings.from_env(mapping)`
reads that mapping instead (tests, and the environment a child process is given).
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlparse

from pydantic import Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings import SettingsError as SourceError

from labkit import names

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_KAFKA_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_KAFKA_HEAP = "-Xms256m -Xmx512m"
KAFKA_VERSION = "4.1.1"  # a 4.x release kafka-python 3.0.x is tested against
LANES = ("bullmq", "streams", "kafka")
PREFIX = "LABKIT_"
KAFKA_OPTION_PREFIX = "LABKIT_KAFKA_OPT_"


class SettingsError(ValueError):
    """A LABKIT_* variable holds a value labkit cannot use."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, env_prefix=PREFIX, env_ignore_empty=True)

    redis_url: str = DEFAULT_REDIS_URL
    kafka_bootstrap: str = DEFAULT_KAFKA_BOOTSTRAP
    # Extra kafka-python client options for external clusters (TLS, SASL), one variable each:
    # LABKIT_KAFKA_OPT_SECURITY_PROTOCOL=SASL_SSL, LABKIT_KAFKA_OPT_SASL_MECHANISM=PLAIN, ...
    kafka_options: Mapping[str, Any] = Field(default_factory=dict)
    # JVM flags for the brokers `labkit infra up` starts (Binder's small machines want less).
    kafka_heap: str = DEFAULT_KAFKA_HEAP
    # Throwaway clusters (lesson 10, chaos): C1-only JIT and the serial GC start a broker in
    # about half the time on 2 cores, at a peak throughput those runs never need.
    kafka_quick_start: bool = False
    time_scale: float = Field(1.0, ge=0.0)
    home: Path = Path(".lab")
    max_attempts: int = Field(4, ge=1)
    backoff_base_s: float = Field(1.0, ge=0.0)
    backoff_max_s: float = Field(30.0, ge=0.0)
    backoff_jitter: bool = True  # False: every retry waits the full ceiling (chaos compares both)
    # A claimed job whose worker has not been heard of for this long is presumed dead and
    # handed to another worker (BullMQ lock, Streams idle time, Kafka session timeout).
    stale_after_s: float = Field(3.0, ge=0.5)
    # What the Kafka worker keeps in order while it runs records side by side: a partition's
    # records, one key's (hotel's), or nothing (labkit.backends.kafka_dispatch.Ordering).
    kafka_ordering: Literal["partition", "key", "unordered"] = "key"
    bullmq_rate_limit_per_s: int = Field(0, ge=0)  # BullMQ's worker limiter, jobs per second; 0 = none
    idempotency: bool = True
    retention_s: float = Field(86_400.0, ge=1.0)  # a finished booking's status, history and ledger are kept this long
    # The lab's topics are created with this many partitions: a fact, not a knob.
    kafka_partitions: ClassVar[int] = names.KAFKA_PARTITIONS

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        **_other_sources: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # the environment is read by from_env only, never implicitly

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        source = _LabkitVariables(cls, os.environ if env is None else env)
        try:
            return cls(**source())
        except SourceError as exc:  # a variable pydantic-settings could not even decode
            raise SettingsError(str(exc)) from None
        except ValidationError as exc:
            raise SettingsError(_explain(exc, source.env)) from None

    @field_validator("home")
    @classmethod
    def _expand_home(cls, home: Path) -> Path:
        return home.expanduser()

    @field_validator("kafka_heap")
    @classmethod
    def _jvm_flags_only(cls, heap: str) -> str:
        if not all(flag.startswith("-") for flag in shlex.split(heap)):
            raise ValueError('JVM flags only, e.g. "-Xms256m -Xmx512m"')
        return heap

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed, validated like the original."""
        return type(self)(**{**dict(self), **changes})

    @property
    def kafka_heap_flags(self) -> tuple[str, ...]:
        return tuple(shlex.split(self.kafka_heap))

    @property
    def kafka_jvm_flags(self) -> tuple[str, ...]:
        """Every JVM flag of a broker: the heap, then the JIT and garbage collector."""
        quick = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
        steady = ("-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20")
        return (*self.kafka_heap_flags, *(quick if self.kafka_quick_start else steady))

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
            _variable(name): _text(value)
            for name, value in self
            if name != "kafka_options"
        }
        for key, value in self.kafka_options.items():
            out[f"{KAFKA_OPTION_PREFIX}{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
        return out


class _LabkitVariables(EnvSettingsSource):
    """LABKIT_* variables from a given mapping (not necessarily os.environ); the
    LABKIT_KAFKA_OPT_<NAME> ones are gathered into kafka_options."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self.env = env  # read by _load_env_vars, which the base __init__ calls
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # What the base class does with os.environ: names case-blind, empty values unset.
        return {key.lower(): value for key, value in self.env.items() if value != ""}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if field_name == "kafka_options":  # one variable per option, gathered in __call__
            return None, field_name, False
        return super().get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        values = super().__call__()
        values["kafka_options"] = {
            key.removeprefix(KAFKA_OPTION_PREFIX).lower(): _option(key, raw)
            for key, raw in self.env.items()
            if key.startswith(KAFKA_OPTION_PREFIX)
        }
        return values


def _variable(field_name: str) -> str:
    return f"{PREFIX}{field_name.upper()}"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _explain(exc: ValidationError, env: Mapping[str, str]) -> str:
    """'LABKIT_TIME_SCALE='fast' is not valid: Input should be a valid number', one per problem."""
    problems = []
    for error in exc.errors():
        name = _variable(str(error["loc"][0])) if error["loc"] else PREFIX + "*"
        problems.append(f"{name}={env.get(name, error['input'])!r} is not valid: {error['msg']}")
    return "; ".join(problems)


def _option(name: str, raw: str) -> Any:
    """kafka-python wants real types: `30000` → int, `false` → bool; text stays text."""
    if name.lower().endswith(("password", "username", "_id")):
        return raw  # secrets and names are text even when they look like numbers
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    return value if isinstance(value, (bool, int, float)) else raw
