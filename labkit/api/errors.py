"""Every client mistake becomes a 4xx problem naming what is wrong — never a 5xx.

Two layers: an ASGI guard that refuses oversized bodies (413) and non-JSON bodies (415)
before anything parses them, and exception handlers that turn validation errors and HTTP
errors into one shape, RFC 9457 problem details (`application/problem+json`):
`{"type", "title", "status", "detail": "...", "errors": [{"field", "message"}]}`.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labkit.api.models import PROBLEM_JSON

MAX_BODY_BYTES = 16 * 1024  # a booking is ~150 bytes; anything near this is not a booking

# The model validator's rules name no field in their location; name it from the message.
_RULE_FIELDS = {
    "checkOut must be after checkIn": "checkOut",
    "checkIn must not be in the past": "checkIn",
    "stay must be at most": "checkOut",
}


def problems(exc: RequestValidationError) -> list[dict[str, str]]:
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        if loc and loc[0] in {"body", "header", "query", "path"}:
            loc = loc[1:]
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "json_invalid":
            field, message = "body", f"malformed JSON: {err.get('ctx', {}).get('error', message)}"
        else:
            field = ".".join(loc) or next(
                (f for rule, f in _RULE_FIELDS.items() if rule in message), "body"
            )
        out.append({"field": field, "message": message})
    return out


def error(status: int, message: str, errors: list[dict[str, str]] | None = None, **extra: Any) -> JSONResponse:
    """A problem-details response: `detail` says what happened, `errors` names the fields."""
    body = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status,
            "detail": message, "errors": errors or [], **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        found = problems(exc)
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in found)
        return error(422, f"invalid request: {summary}", found)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = error(exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    app.add_middleware(BodyGuard)


class BodyGuard:
    """413 for a body over MAX_BODY_BYTES (declared or streamed), 415 for a body that is not
    JSON. Runs before FastAPI reads the body, so a huge upload is never buffered."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in {"POST", "PUT", "PATCH"}:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _reply(scope, send, 413, f"request body larger than {self.max_bytes} bytes")
            return
        body, too_big = await _read(receive, self.max_bytes)
        if too_big:
            await _reply(scope, send, 413, f"request body larger than {self.max_bytes} bytes")
            return
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        if body and media != "application/json" and not media.endswith("+json"):
            shown = media or "none"
            await _reply(scope, send, 415, f"content type {shown!r} is not supported; send application/json")
            return
        try:
            body.decode("utf-8")  # RFC 8259: JSON on the wire is UTF-8
        except UnicodeDecodeError as exc:
            problem = {"field": "body", "message": f"malformed JSON: not UTF-8 ({exc.reason} at byte {exc.start})"}
            await _reply(scope, send, 422, f"invalid request: body: {problem['message']}", [problem])
            return
        await self.app(scope, _replay(body, receive), send)


async def _read(receive: Receive, limit: int) -> tuple[bytes, bool]:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks), False


def _replay(body: bytes, original: Receive) -> Receive:
    """Hand the app the body we already read; later calls wait for the real disconnect."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await original()

    return receive


async def _reply(scope: Scope, send: Send, status: int, message: str,
                 errors: list[dict[str, str]] | None = None) -> None:
    async def no_body() -> Message:
        return {"type": "http.disconnect"}

    await error(status, message, errors)(scope, no_body, send)
