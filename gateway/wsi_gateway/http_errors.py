"""gRPC status codes to HTTP, and the JSON error body {"code", "message"}."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import grpc

HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def http_status(code: grpc.StatusCode) -> int:
    return HTTP_STATUS.get(code, 500)


def error_body(code: grpc.StatusCode | str, message: str) -> dict[str, str]:
    name = code if isinstance(code, str) else code.name
    return {"code": name, "message": message}


def body_problems(errors: Sequence[Mapping[str, Any]], content_type: str) -> str:
    """What is wrong with a request body, by the API's field names (FastAPI's
    own words name positions and Python types: "10: JSON decode error")."""
    messages = []
    for error in errors:
        where = ".".join(str(part) for part in tuple(error.get("loc", ()))[1:])
        kind = error.get("type", "")
        if kind == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "JSON decode error")
            messages.append(f"body: not valid JSON at character {where or 0} ({reason})")
        elif not where and kind in ("model_attributes_type", "dict_type"):
            if "json" not in content_type.lower():
                messages.append("body: send a JSON object with Content-Type: application/json")
            else:
                messages.append('body: expected a JSON object, e.g. {"jobs": [...]}')
        else:
            messages.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
    return "; ".join(messages)
