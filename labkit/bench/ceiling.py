"""Each broker's own load tool, for the ceiling no client library can pass on this machine:
`redis-benchmark` (XADD, then XREADGROUP COUNT n NOACK) and Kafka's ProducerPerformance /
ConsumerPerformance classes from the lab's Kafka jars."""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
import uuid
from dataclasses import asdict, dataclass
from urllib.parse import urlparse

from labkit import kafka_admin
from labkit.infra import kafka_jars
from labkit.settings import KAFKA_VERSION, Settings

RECORD_BYTES = 200
READ_COUNT = 100  # entries per XREADGROUP of the consume ceiling
TOOL_TIMEOUT_S = 300


@dataclass(frozen=True)
class Ceiling:
    tool: str
    produce_per_s: float | None
    consume_per_s: float | None
    note: str = ""

    @property
    def per_s(self) -> float | None:
        """Messages through, when producing and consuming share the broker: the slower side."""
        rates = [r for r in (self.produce_per_s, self.consume_per_s) if r]
        return min(rates) if rates else None

    def as_dict(self) -> dict:
        return asdict(self) | {"per_s": self.per_s}


def redis_ceiling(settings: Settings, count: int) -> Ceiling:
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return Ceiling("redis-benchmark", None, None, "redis-benchmark not found (apt-get install redis-tools)")
    url = urlparse(settings.redis_url)
    base = [binary, "-h", url.hostname or "127.0.0.1", "-p", str(url.port or 6379), "--csv"]
    stream = f"bench:ceiling:{uuid.uuid4().hex[:8]}"
    produce = _rps(_run([*base, "-n", str(count), "-P", "16", "XADD", stream, "*", "f", "v" * RECORD_BYTES]))
    _run([*base, "-n", "1", "XGROUP", "CREATE", stream, "g", "0"])
    reads = count // READ_COUNT
    consume = _rps(_run([*base, "-n", str(reads), "-c", "1", "XREADGROUP", "GROUP", "g", "c", "COUNT",
                         str(READ_COUNT), "NOACK", "STREAMS", stream, ">"])) * READ_COUNT
    _run([*base, "-n", "1", "DEL", stream])
    return Ceiling("redis-benchmark", produce, consume, f"XADD -P 16; XREADGROUP COUNT {READ_COUNT} NOACK, one client")


def parse_redis_benchmark_csv(text: str) -> float:
    """Requests/s of the one test in `redis-benchmark --csv` output (header row optional)."""
    rows = [r for r in csv.reader(io.StringIO(text)) if len(r) >= 2]
    return float(next(r[1] for r in rows if _is_number(r[1])))


_rps = parse_redis_benchmark_csv


def kafka_ceiling(settings: Settings, count: int) -> Ceiling:
    try:
        java = kafka_jars.java_binary()
        libs = kafka_jars.resolve_libs(KAFKA_VERSION)
    except Exception as exc:  # noqa: BLE001 - no JVM or jars: the ceiling is simply not measured
        return Ceiling("kafka perf tools", None, None, f"not run: {exc}")
    topic = f"bench-ceiling-{uuid.uuid4().hex[:8]}"
    kafka_admin.create_topic(settings, topic, partitions=6)
    tools = [java, "-Xmx256m", "-cp", f"{libs}/*"]
    try:
        produced = _run([*tools, "org.apache.kafka.tools.ProducerPerformance", "--topic", topic,
                         "--num-records", str(count), "--record-size", str(RECORD_BYTES),
                         "--throughput", "-1", "--producer-props",
                         f"bootstrap.servers={settings.kafka_bootstrap}", "acks=all", "linger.ms=5"])
        consumed = _run([*tools, "org.apache.kafka.tools.ConsumerPerformance", "--bootstrap-server",
                         settings.kafka_bootstrap, "--topic", topic, "--messages", str(count)])
    finally:
        kafka_admin.delete_topics(settings, [topic])
    return Ceiling("kafka ProducerPerformance / ConsumerPerformance",
                   parse_producer_performance(produced), parse_consumer_performance(consumed),
                   "acks=all, linger.ms=5, 200-byte records, 6 partitions")


def parse_producer_performance(text: str) -> float:
    """records/sec from ProducerPerformance's final summary line."""
    found = re.findall(r"\d+ records sent, ([\d.]+) records/sec", text)
    if not found:
        raise ValueError(f"no ProducerPerformance summary in: {text[-300:]!r}")
    return float(found[-1])


def parse_consumer_performance(text: str) -> float:
    """Messages/s while fetching (group join excluded when the tool reports it apart)."""
    rows = [[c.strip() for c in line.split(",")] for line in text.splitlines() if line.count(",") >= 4]
    header = next(i for i, row in enumerate(rows) if "nMsg.sec" in row)
    values = dict(zip(rows[header], rows[header + 1], strict=False))
    return float(values.get("fetch.nMsg.sec") or values["nMsg.sec"])


def _run(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False)
    if done.returncode:
        raise RuntimeError(f"{cmd[0]} failed ({done.returncode}): {done.stderr[-500:]}")
    return done.stdout


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
