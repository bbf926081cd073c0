"""What every route needs: the scheduler stub (typed lifespan state), the
caller's identity as gRPC metadata, and one exception for a scheduler status,
which app.py maps to HTTP in one place."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Annotated, TypeVar

import grpc
from fastapi import Depends, Header, Request

from wsi_gateway.auth import GatewayAuth, Metadata
from wsi_protocol.scheduler.v1 import scheduler_pb2_grpc as pb_grpc

M = TypeVar("M")


@dataclass(frozen=True)
class GatewayState:
    """Made by the app's lifespan, once: the routes' view of the world."""

    stub: pb_grpc.SchedulerAsyncStub
    keepalive_s: float
    auth: GatewayAuth


class GrpcFailure(Exception):
    """The scheduler answered with an error status."""

    def __init__(self, error: grpc.aio.AioRpcError) -> None:
        self.error = error


class BadRequest(Exception):
    """A request the gateway refuses before calling the scheduler (HTTP 400)."""


class NotFoundError(Exception):
    """A path the gateway knows names nothing, before asking (HTTP 404)."""


async def call(awaitable: Awaitable[M]) -> M:
    try:
        return await awaitable
    except grpc.aio.AioRpcError as error:
        raise GrpcFailure(error) from error


async def collect(stream: AsyncIterable[M]) -> list[M]:
    """Every message of a server stream, its error status raised as ``call`` does."""
    try:
        return [message async for message in stream]
    except grpc.aio.AioRpcError as error:
        raise GrpcFailure(error) from error


async def opened(stream: AsyncIterable[M], empty: str) -> tuple[M, AsyncIterator[M]]:
    """A server stream's first message, its error raised as ``call`` does
    (before any byte of a streamed answer is sent), and the rest of it;
    ``empty``: what to say of a stream with no message at all (the
    scheduler's bug, not the user's)."""
    messages = stream.__aiter__()
    try:
        first = await call(anext(messages))
    except StopAsyncIteration:
        raise BadRequest(empty) from None
    return first, messages


def gateway_state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


def caller(
    request: Request,
    user: Annotated[
        str | None,
        Header(alias="X-User-ID", description="the caller's user id (trusted-header mode)"),
    ] = None,
    authorization: Annotated[
        str | None,
        Header(alias="Authorization", description="'Bearer TOKEN' (token mode)"),
    ] = None,
) -> Metadata:
    """The caller's identity, checked here and again by the scheduler, as gRPC
    metadata. (``user`` and ``authorization`` document the headers; every
    value the request carries is read, as a header sent twice is refused.)"""
    client = request.client.host if request.client else ""
    headers = request.headers
    return gateway_state(request).auth.metadata_for(
        client, headers.getlist("x-user-id"), headers.getlist("authorization")
    )


Gateway = Annotated[GatewayState, Depends(gateway_state)]
Caller = Annotated[Metadata, Depends(caller)]
