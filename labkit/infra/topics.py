"""Create the lab's Kafka topics (works against any cluster Settings points at)."""

from __future__ import annotations

from dataclasses import dataclass

import kafka.errors as kafka_errors
from kafka import KafkaAdminClient

from labkit import names
from labkit.settings import Settings

LAB_TOPICS = (names.TOPIC, names.TOPIC_DLQ, *names.RETRY_TOPICS)


@dataclass(frozen=True, kw_only=True)
class TopicReport:
    created: tuple[str, ...]
    existing: tuple[str, ...]
    replication_factor: int


def ensure_topics(
    settings: Settings,
    replication_factor: int | None = None,
    *,
    partitions: int = names.KAFKA_PARTITIONS,
    timeout_s: float = 30.0,
) -> TopicReport:
    """Create any missing lab topic; existing ones are left exactly as they are.

    replication_factor defaults to min(3, live brokers), so one broker works and three
    brokers get real replicas.
    """
    admin = KafkaAdminClient(
        **settings.kafka_config(client_id="labkit-topics", request_timeout_ms=int(timeout_s * 1000))
    )
    try:
        if replication_factor is None:
            brokers = admin.describe_cluster()["brokers"]
            replication_factor = max(1, min(3, len(brokers)))
        existing = set(admin.list_topics())
        missing = [t for t in LAB_TOPICS if t not in existing]
        created: list[str] = []
        if missing:
            spec = {"num_partitions": partitions, "replication_factor": replication_factor}
            result = admin.create_topics(
                {topic: spec for topic in missing},
                timeout_ms=int(timeout_s * 1000),
                raise_errors=False,
            )
            for topic in result["topics"]:
                error = kafka_errors.for_code(topic["error_code"])
                if error is kafka_errors.NoError:
                    created.append(topic["name"])
                elif error is not kafka_errors.TopicAlreadyExistsError:  # someone raced us: fine
                    raise error(f"creating topic {topic['name']}: {topic.get('error_message')}")
            # Leaders elected before we return: producers can use the topics at once.
            admin.wait_for_topics(created, timeout_ms=int(timeout_s * 1000))
    finally:
        admin.close()
    return TopicReport(
        created=tuple(created),
        existing=tuple(t for t in LAB_TOPICS if t not in created),
        replication_factor=replication_factor,
    )
