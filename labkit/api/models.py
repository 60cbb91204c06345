"""The API's request and response bodies: what `/openapi.json` promises clients.

The request model is the seed's BookingRequest plus `backends`, with two tightenings that
make the published schema the truth: dates must be `YYYY-MM-DD` strings (pydantic's lax
mode would also take a Unix timestamp, which the schema cannot say) and `backends` may only
name the three lanes, once each.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.dataclasses import dataclass as pydantic_dataclass

from labkit.backends.base import LaneStats
from labkit.booking import BookingRequest
from labkit.settings import LANES

Lane = Literal["bullmq", "streams", "kafka"]
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _iso_date(value: Any) -> Any:
    # pydantic's lax date also takes Unix timestamps (as numbers or digit strings); the
    # schema says `format: date`, so that is all the API takes.
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not _ISO_DATE.match(value):
        raise ValueError("must be a date written YYYY-MM-DD")
    return value


def _distinct(lanes: list[str] | None) -> list[str] | None:
    if lanes is not None and len(set(lanes)) != len(lanes):
        raise ValueError("each backend may be named once")
    return lanes


IsoDate = Annotated[date, BeforeValidator(_iso_date), Field(description="ISO-8601 date, YYYY-MM-DD")]
Lanes = Annotated[
    list[Lane],
    Field(min_length=1, max_length=3, json_schema_extra={"uniqueItems": True}),
    AfterValidator(_distinct),
]


class BookingIn(BookingRequest):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "description": "A booking: checkIn today or later, checkOut after it, at most 30 nights."
        },
    )

    checkIn: IsoDate
    checkOut: IsoDate
    backends: Annotated[Lanes | None, Field(description="Lanes to publish to; all three when omitted.")] = None

    def lanes(self) -> list[str]:
        wanted = set(self.backends or LANES)
        return [lane for lane in LANES if lane in wanted]

    def booking_fields(self) -> dict[str, Any]:
        return self.model_dump(exclude={"backends"})

    def fingerprint(self) -> str:
        """Hash of the meaning of the body: key order and spacing do not make it different."""
        canonical = {**self.model_dump(mode="json", exclude={"backends"}), "backends": self.lanes()}
        return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


class Accepted(BaseModel):
    bookingId: str
    jobs: dict[str, str] = Field(description="Each lane's own job id (BullMQ id, stream entry, topic:partition:offset)")


class FieldError(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    """RFC 9457 problem details (`application/problem+json`); `errors` is our extension member
    naming each bad field."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[FieldError] = []


class PartialPublish(ErrorBody):
    """503 when a broker is down: which lanes accepted the booking and which did not."""

    bookingId: str | None = None
    jobs: dict[str, str] = {}
    failed: dict[str, str] = {}


class HistoryEntry(BaseModel):
    model_config = ConfigDict(extra="allow")

    state: str
    at: str


class LaneStatus(BaseModel):
    lane: str
    bookingId: str
    state: str
    progress: int
    attempts: int
    jobId: str
    detail: str
    publishedAt: float | None
    updatedAt: float | None
    history: list[HistoryEntry]


class BookingView(BaseModel):
    bookingId: str
    lanes: dict[str, LaneStatus]


@pydantic_dataclass
class QueueStats(LaneStats):
    """LaneStats as the API shows it: a lane whose broker did not answer carries `error`."""

    error: str | None = None


class DeadLetterView(BaseModel):
    id: str
    booking_id: str | None
    reason: str
    attempts: int
    payload: str
    failed_at: float | None = None
    key: str = ""


class DlqList(BaseModel):
    backend: str
    letters: list[DeadLetterView]


class Redriven(BaseModel):
    backend: str
    redriven: int


class BrokerHealth(BaseModel):
    up: bool
    detail: str


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    brokers: dict[str, BrokerHealth]


PROBLEM_JSON = "application/problem+json"


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can answer with."""
    return {code: {"model": ErrorBody, "content": {PROBLEM_JSON: {}}} for code in codes}
