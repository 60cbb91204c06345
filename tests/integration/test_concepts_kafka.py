"""Kafka concepts the lessons assert, on scratch topics of the test broker."""

from __future__ import annotations

import pytest

from labkit.notebook import concepts_kafka
from labkit.workload import Workload

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]


def test_every_acks_level_writes_and_idempotence_needs_acks_all(settings):
    run = concepts_kafka.acks_and_idempotence(settings)
    assert run["offset_by_acks"]["1"] == 1 and run["offset_by_acks"]["all"] == 2
    assert run["producer_id"] >= 0
    assert "acks" in run["idempotence_with_acks_1"]


@pytest.mark.parametrize(("protocol", "never_stopped"), [("eager", 0), ("cooperative", 3)])
def test_only_cooperative_rebalancing_keeps_partitions_running(settings, protocol, never_stopped):
    run = concepts_kafka.rebalance_stops(settings, protocol)
    assert len(run["never_stopped"]) == never_stopped
    assert run["never_stopped"] == [p for p in run["first_keeps"] if p in run["never_stopped"]]


def test_commit_before_processing_loses_the_record_on_a_crash(settings):
    run = concepts_kafka.at_most_once(settings, records=3)
    assert run["lost"] == [run["taken_then_crashed"]] == ["booking-0"]


def test_every_group_gets_every_record(settings):
    got = concepts_kafka.fan_out(settings, records=4)
    assert got == {"billing": [f"booking-{n}" for n in range(4)], "audit": [f"booking-{n}" for n in range(4)]}


def test_hot_hotels_skew_their_partitions(settings):
    run = concepts_kafka.partition_skew(settings, Workload(seed=42), bookings=200)
    assert run["per_partition"] == run["predicted"]
    assert run["busiest"] in run["hot_hotel_partition"].values()
    assert run["max_over_mean"] > 1


def test_an_aborted_transaction_is_hidden_and_moves_no_offset_but_outside_effects_ran(settings):
    run = concepts_kafka.transactions(settings)
    assert run["read_committed"] == ["confirmed booking-1 (commit)"]
    assert run["read_uncommitted"] == ["confirmed booking-1 (abort)", "confirmed booking-1 (commit)"]
    assert (run["offset_after_abort"], run["offset_after_commit"]) == (None, 1)
    assert (run["emails_without_key"], run["emails_with_key"]) == (2, 1)


def test_retention_moves_the_log_start(settings):
    run = concepts_kafka.retention(settings, timeout_s=30)
    assert run["log_start_offset"] > 0
