"""Property-based contract test: schemathesis generates requests from the API's own
/openapi.json (valid and invalid) and sends them to a real uvicorn process on real brokers.
No generated request may cause a 5xx, and every response must match the schema."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hypothesis_settings
from schemathesis.specs.openapi import checks as openapi_checks

from labkit.api.app import create_app
from labkit.api.server import api_process
from labkit.settings import Settings

pytestmark = [pytest.mark.redis, pytest.mark.kafka, pytest.mark.timeout(240)]

MIN_CASES = 500
CALLS: Counter[str] = Counter()
CHECKS = [
    schemathesis.checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.response_headers_conformance,
    # invalid data per the schema must be refused: the schema is not looser than the code
    openapi_checks.negative_data_rejection,
]


@pytest.fixture(scope="module")
def api_url(settings):
    with api_process(settings) as base:
        yield base


# The schema the app itself publishes (the same document the server serves at /openapi.json;
# built at import because schemathesis' lazy `from_fixture` loader breaks on pytest 9).
SPEC = create_app(Settings.from_env()).openapi()
schema = schemathesis.openapi.from_dict(SPEC)


@schema.parametrize()
@hypothesis_settings(
    max_examples=400,
    deadline=None,
    derandomize=True,  # the same cases every run: a failure here is reproducible
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_every_generated_request_conforms(case, api_url):
    case.call_and_validate(base_url=api_url, checks=CHECKS, timeout=15)
    CALLS[case.operation.label] += 1


def test_enough_cases_were_generated():
    print(f"schemathesis cases per operation: {dict(CALLS)}")
    assert sum(CALLS.values()) >= MIN_CASES, dict(CALLS)
    assert CALLS["POST /api/bookings"] >= 300, dict(CALLS)


def test_the_server_serves_the_schema_that_was_tested(api_url):
    assert httpx.get(f"{api_url}/openapi.json", timeout=10).json() == SPEC
