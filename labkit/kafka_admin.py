"""Everything the lab asks Kafka's admin side: topics, the cluster, consumer groups, lag,
where a key lands, and replaying records without a group.

kafka-python's clients are blocking: these functions are plain functions; async callers run
them with `anyio.to_thread.run_sync` (see `wait_for_stable_group`). Every admin client is
opened and closed here, so no caller builds its own.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import kafka.errors as kafka_errors
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.partitioner.default import murmur2

from labkit import names
from labkit.settings import Settings

LAB_TOPICS = (names.TOPIC, names.TOPIC_DLQ, *names.RETRY_TOPICS)
NO_OWNER = "(none)"  # a partition no member owns (the group is rebalancing)


@contextlib.contextmanager
def admin_client(settings: Settings, **options: Any) -> Iterator[KafkaAdminClient]:
    admin = KafkaAdminClient(**settings.kafka_config(**{"client_id": "labkit-admin", **options}))
    try:
        yield admin
    finally:
        admin.close()


@contextlib.contextmanager
def offsets_reader(settings: Settings, group: str | None = None) -> Iterator[KafkaConsumer]:
    """A consumer that never joins a group: it reads end offsets and (for `group`) the
    group's committed offsets."""
    consumer = KafkaConsumer(**settings.kafka_config(group_id=group, enable_auto_commit=False))
    try:
        yield consumer
    finally:
        consumer.close(autocommit=False)


# -- topics and the cluster ---------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class TopicReport:
    created: tuple[str, ...]
    existing: tuple[str, ...]
    replication_factor: int


def subscribed(consumer: KafkaConsumer, topics: list[str], *, timeout_s: float = 30.0, **options: Any) -> KafkaConsumer:
    """`consumer.subscribe(topics)` once it knows every topic's partitions: a group leader
    without a topic's metadata assigns nothing of it, and that member idles until the next
    rebalance (a topic created a moment ago is the usual case)."""
    deadline = time.monotonic() + timeout_s
    while any(consumer.partitions_for_topic(t) is None for t in topics):
        if time.monotonic() > deadline:
            consumer.close()
            raise kafka_errors.KafkaError(f"no metadata for {topics} after {timeout_s:.0f}s")
        time.sleep(0.2)
    consumer.subscribe(topics, **options)
    return consumer


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
    timeout_ms = int(timeout_s * 1000)
    with admin_client(settings, client_id="labkit-topics", request_timeout_ms=timeout_ms) as admin:
        if replication_factor is None:
            replication_factor = max(1, min(3, len(admin.describe_cluster()["brokers"])))
        existing = set(admin.list_topics())
        missing = [t for t in LAB_TOPICS if t not in existing]
        created: list[str] = []
        if missing:
            spec = {"num_partitions": partitions, "replication_factor": replication_factor}
            result = admin.create_topics(
                {topic: spec for topic in missing}, timeout_ms=timeout_ms, raise_errors=False
            )
            for topic in result["topics"]:
                error = kafka_errors.for_code(topic["error_code"])
                if error is kafka_errors.NoError:
                    created.append(topic["name"])
                elif error is not kafka_errors.TopicAlreadyExistsError:  # someone raced us: fine
                    raise error(f"creating topic {topic['name']}: {topic.get('error_message')}")
            # Leaders elected before we return: producers can use the topics at once.
            admin.wait_for_topics(created, timeout_ms=timeout_ms)
    return TopicReport(
        created=tuple(created),
        existing=tuple(t for t in LAB_TOPICS if t not in created),
        replication_factor=replication_factor,
    )


def create_topic(
    settings: Settings, topic: str, *, partitions: int = 1, replication_factor: int = 1
) -> None:
    """A scratch topic (benchmarks, tests), ready for producers when this returns."""
    with admin_client(settings) as admin:
        admin.create_topics([NewTopic(topic, partitions, replication_factor)])
        admin.wait_for_topics([topic], timeout_ms=30_000)


def delete_topics(settings: Settings, topics: list[str]) -> None:
    with admin_client(settings) as admin:
        admin.delete_topics(topics)


def broker_count(settings: Settings, *, timeout_s: float = 3.0) -> int:
    """How many brokers the cluster's metadata lists (raises when none answers)."""
    timeout_ms = int(timeout_s * 1000)
    with admin_client(
        settings, client_id="labkit-health", bootstrap_timeout_ms=timeout_ms, request_timeout_ms=timeout_ms
    ) as admin:
        return len(admin.describe_cluster().get("brokers", []))


# -- consumer groups --------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupView:
    """A consumer group as the broker sees it, for one topic: members and who owns what."""

    state: str | None
    members: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)  # partition, consumer, committed, end, lag

    @property
    def owners(self) -> set[str]:
        return {row["consumer"] for row in self.rows}

    def settled(self, members: int) -> bool:
        """Stable, with `members` members and every partition owned."""
        return self.state == "Stable" and len(self.members) == members and NO_OWNER not in self.owners

    def __getitem__(self, name: str) -> Any:  # lessons read it like the dict it once was
        return getattr(self, name)


def _describe(admin: KafkaAdminClient, group: str) -> dict[str, Any]:
    described = admin.describe_groups([group])
    return described.get(group, described) if isinstance(described, dict) else described[0]


def group_state(settings: Settings, group: str = names.GROUP) -> str | None:
    """`Stable`, `PreparingRebalance`, `Empty`, …; None when the broker cannot say."""
    try:
        with admin_client(settings, client_id="labkit-group-check") as admin:
            return _describe(admin, group).get("group_state")
    except kafka_errors.KafkaError:
        return None


def _owners(info: dict[str, Any], topic: str) -> tuple[list[str], dict[int, str]]:
    owner: dict[int, str] = {}
    members = []
    for member in info.get("members", []):
        label = consumer_label(member["client_id"])
        members.append(label)
        assignment = member.get("member_assignment")  # empty while the group rebalances
        parts = assignment.get("assigned_partitions", []) if isinstance(assignment, dict) else []
        for part in parts:
            if part["topic"] == topic:
                owner.update(dict.fromkeys(part["partitions"], label))
    return sorted(members), owner


def lag(settings: Settings, group: str, topics: tuple[str, ...]) -> dict[TopicPartition, tuple[int, int]]:
    """Per partition of `topics`: (the group's committed offset, the end offset)."""
    with offsets_reader(settings, group) as reader:
        parts = [TopicPartition(t, p) for t in topics for p in reader.partitions_for_topic(t) or ()]
        ends = reader.end_offsets(parts)
        return {tp: (reader.committed(tp) or 0, ends[tp]) for tp in parts}


def group_view(settings: Settings, group: str = names.GROUP, topic: str = names.TOPIC) -> GroupView:
    """Members of the consumer group and the partitions of `topic` each one owns, with lag."""
    with admin_client(settings, client_id="labkit-lesson") as admin:
        info = _describe(admin, group)
    members, owner = _owners(info, topic)
    rows = [
        {"partition": tp.partition, "consumer": owner.get(tp.partition, NO_OWNER),
         "committed": committed, "end": end, "lag": end - committed}
        for tp, (committed, end) in sorted(lag(settings, group, (topic,)).items())
    ]
    return GroupView(info.get("group_state"), members, rows)


async def wait_for_stable_group(
    settings: Settings, *, members: int, group: str = names.GROUP, topic: str = names.TOPIC,
    timeout_s: float = 60.0, poll_s: float = 0.5,
) -> GroupView:
    """Until the group is Stable with `members` members and every partition of `topic` owned;
    returns that view. TimeoutError names the last state seen. A retriable broker error is
    one more "not yet": a fresh broker answers the first question about a group with
    CoordinatorNotAvailable while it creates `__consumer_offsets`."""
    view, error = GroupView(None, []), ""
    try:
        with anyio.fail_after(timeout_s):
            while True:
                try:
                    view = await anyio.to_thread.run_sync(group_view, settings, group, topic)
                except kafka_errors.KafkaError as exc:
                    if not exc.retriable:
                        raise
                    error = f"; last error {type(exc).__name__}"
                else:
                    if view.settled(members):
                        return view
                await anyio.sleep(poll_s)
    except TimeoutError:
        raise TimeoutError(
            f"group {group} not stable with {members} members after {timeout_s:.0f}s: "
            f"state {view.state}, members {view.members}, owners {sorted(view.owners)}{error}"
        ) from None


def consumer_label(client_id: str) -> str:
    """Worker ids are `<host>-<pid>-<random>`: show the pid, which WorkerPool.pids lists."""
    parts = client_id.rsplit("-", 2)
    return f"pid {parts[1]}" if len(parts) == 3 and parts[1].isdigit() else client_id


# -- keys and records -------------------------------------------------------------------------
def partition_for(key: str, partitions: int = names.KAFKA_PARTITIONS) -> int:
    """The partition Kafka's default partitioner picks: murmur2(key) mod partitions."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def records(
    settings: Settings,
    topic: str = names.TOPIC,
    *,
    partition: int | None = None,
    offset: int | None = None,
    since_s: float | None = None,
    limit: int = 1000,
    timeout_s: float = 10.0,
) -> list[dict[str, Any]]:
    """Read records again without any consumer group: from `offset` (per partition) or from
    the first record at or after epoch time `since_s`, else from the beginning. A replay."""
    with offsets_reader(settings) as consumer:
        parts = [partition] if partition is not None else range(settings.kafka_partitions)
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        starts = consumer.offsets_for_times({tp: int(since_s * 1000) for tp in tps}) if since_s else {}
        for tp in tps:
            if since_s is not None:
                found = starts.get(tp)
                consumer.seek(tp, found.offset if found is not None else ends[tp])
            elif offset is not None:
                consumer.seek(tp, offset)
            else:
                consumer.seek_to_beginning(tp)
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(consumer.position(tp) < ends[tp] for tp in tps):
            for tp, batch in consumer.poll(timeout_ms=300).items():
                out += [_record(r) for r in batch if r.offset < ends[tp]]
    out.sort(key=lambda r: (r["partition"], r["offset"]))
    return out[:limit]


def _record(record) -> dict[str, Any]:
    try:
        booking_id = json.loads(record.value)["data"]["bookingId"]
    except (ValueError, KeyError, TypeError):
        booking_id = None
    return {
        "partition": record.partition,
        "offset": record.offset,
        "key": (record.key or b"").decode(errors="replace"),
        "bookingId": booking_id,
        "timestamp": record.timestamp / 1000,
    }


def broker_ids(settings: Settings, *, timeout_s: float = 1.0) -> set[int] | None:
    """Ids of the live, unfenced brokers the cluster reports, or None when none answers."""
    timeout_ms = int(timeout_s * 1000)
    try:
        with admin_client(
            settings, client_id="labkit-health", bootstrap_timeout_ms=timeout_ms, request_timeout_ms=timeout_ms
        ) as admin:
            brokers = admin.describe_cluster().get("brokers", [])
    except (kafka_errors.KafkaError, OSError):
        return None
    return {b["broker_id"] for b in brokers if not b.get("is_fenced")}
