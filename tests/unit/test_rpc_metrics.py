"""The status code an RPC is counted under, from how its handler ended."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from wsi_runtime.metrics import _code


class EndedCall:
    """The one thing ``_code`` reads of a servicer context: the status set on it."""

    def __init__(self, code: grpc.StatusCode | None) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode | None:
        return self._code


@pytest.mark.parametrize(
    ("set_code", "exc", "counted"),
    [
        (grpc.StatusCode.NOT_FOUND, Exception("abort"), "NOT_FOUND"),  # context.abort
        (None, asyncio.CancelledError(), "CANCELLED"),  # the client went away
        (None, GeneratorExit(), "CANCELLED"),  # a stream closed under the handler
        (grpc.StatusCode.OK, ValueError("bug"), "UNKNOWN"),  # an unhandled error
        (None, RuntimeError("bug"), "UNKNOWN"),
    ],
)
def test_code_of_an_ended_call(
    set_code: grpc.StatusCode | None, exc: BaseException, counted: str
) -> None:
    context: Any = EndedCall(set_code)
    assert _code(context, exc) == counted
