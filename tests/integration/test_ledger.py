"""The payment ledger honours an idempotency key: the same key and amount give the first
charge back; the same key with another amount is refused."""

from __future__ import annotations

import pytest

from labkit.effects import PaymentMismatch
from labkit.workload import Workload

pytestmark = pytest.mark.redis


async def test_a_key_replays_its_charge_and_refuses_another_amount(lab):
    first, other = Workload(seed=9).bookings(2)
    assert first.amount_cents != other.amount_cents
    effects = lab.effects["streams"]

    charge = await effects.charge(first, idempotency_key="order-1")
    again = await effects.charge(first, idempotency_key="order-1")
    assert (again.charge_id, again.replayed, charge.replayed) == (charge.charge_id, True, False)
    with pytest.raises(PaymentMismatch, match="order-1"):
        await effects.charge(other, idempotency_key="order-1")
    assert await effects.charges_made(first.bookingId) == 1
    assert await effects.charges_made(other.bookingId) == 0
