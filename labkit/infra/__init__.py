"""Local Redis + Apache Kafka (KRaft) for the lab: `labkit infra up|status|down|logs`."""

from labkit.infra.errors import InfraError

__all__ = ["InfraError"]
