"""The fault matrix: every scenario by name, in the order `labkit chaos --scenario all` runs them."""

from __future__ import annotations

from labkit.chaos.runner import Scenario
from labkit.chaos.scenarios import brokers, traffic, workers

SCENARIOS = {
    s.name: s
    for s in (
        Scenario("worker-kill", "kill -9 workers mid-payment, repeatedly, while publishing",
                 workers.worker_kill),
        Scenario("worker-freeze", "SIGSTOP a worker past its claim timeout, then SIGCONT",
                 workers.worker_freeze),
        Scenario("lost-response", "the charge succeeds, the worker dies before recording it",
                 workers.lost_response, ci_bookings=40),
        Scenario("poison", "malformed messages and always-failing bookings in the flow",
                 traffic.poison, p99_limit=2.0),
        Scenario("payment-outage", "payment fails 100 % for a while, then recovers",
                 traffic.payment_outage, measure=traffic.retry_figures),
        Scenario("payment-outage-no-jitter", "the same outage, every retry at its full backoff",
                 traffic.payment_outage, ci_bookings=30, settings={"backoff_jitter": False},
                 measure=traffic.retry_figures),
        Scenario("burst-inventory", "far more bookings than room-nights, many workers at once",
                 traffic.burst_inventory, ci_bookings=100, workers=3, full_workers=8,
                 concurrency=4),
        Scenario("idempotency-race", "one Idempotency-Key posted 50 times concurrently",
                 traffic.idempotency_race, workers=1),
        Scenario("redis-restart-aof", "kill -9 Redis while bookings flow, restart from the AOF",
                 brokers.redis_restart_aof),
        Scenario("connection-drops", "CLIENT KILL of Redis connections, a frozen Kafka broker",
                 brokers.connection_drops),
        Scenario("kafka-broker-kill", "kill -9 the Kafka broker while producing through the API",
                 brokers.kafka_broker_kill, ci_bookings=40),
        Scenario("kafka-leader-loss", "three brokers: the leader dies, then two brokers",
                 brokers.kafka_leader_loss, ci_bookings=30, kafka_brokers=3),
    )
}
