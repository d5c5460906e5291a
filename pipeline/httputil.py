"""Small HTTP helpers shared by the ingress's endpoints: bounded request bodies, JSON objects, errors in
one shape, constant-time bearer checks."""

from __future__ import annotations

import hmac
import json
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pipeline.specfile import describe_validation_error

MAX_BODY = 1024 * 1024
"""The largest request body an endpoint reads (1 MB)."""


async def read_body(request: Request) -> bytes | None:
    """The request body, or None when it is larger than ``MAX_BODY``."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return None
    return body


def json_object(body: bytes) -> Any:
    return json.loads(body)


def first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        text = describe_validation_error(exc)
        for prefix in ("event.upload.", "event.member_join.", "event."):  # the wrapper and the union tags
            text = text.replace(f"'{prefix}", "'")
        return text
    return "not JSON"


def bearer_ok(header: str | None, token: str) -> bool:
    return header is not None and header.startswith("Bearer ") and equal(header[7:], token)


def equal(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def error_response(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)
