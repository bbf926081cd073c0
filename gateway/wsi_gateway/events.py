"""A workflow's WatchWorkflow stream as Server-Sent Events: the first event
(or the scheduler's error status) is awaited before the response starts, so
an unknown or foreign workflow is a plain 404; then every event is one SSE
event whose ``id:`` is its sequence, with keep-alive comments while idle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from fastapi.responses import StreamingResponse

from wsi_gateway import sse
from wsi_gateway.dependencies import GrpcFailure
from wsi_protocol.json_format import to_json
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb
from wsi_protocol.scheduler.v1 import scheduler_pb2_grpc as pb_grpc


async def event_stream(
    stub: pb_grpc.SchedulerAsyncStub,
    watch: pb.WatchWorkflowRequest,
    caller: tuple[tuple[str, str], ...],
    keepalive_s: float,
) -> StreamingResponse:
    stream = stub.WatchWorkflow(watch, metadata=caller)
    queue: asyncio.Queue[pb.WorkflowEvent | None] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for message in stream:
                await queue.put(message)
        finally:
            await queue.put(None)

    reader = asyncio.ensure_future(pump())
    first = await queue.get()
    if first is None:  # ended before any event: an error status (or nothing to send)
        try:
            reader.result()
        except grpc.aio.AioRpcError as error:
            raise GrpcFailure(error) from error

    async def frames() -> AsyncIterator[str]:
        try:
            message = first
            while message is not None:
                yield sse.event(to_json(message), message.sequence)
                while True:
                    try:
                        message = await asyncio.wait_for(queue.get(), keepalive_s)
                        break
                    except TimeoutError:
                        yield sse.comment("keep-alive")
        finally:
            stream.cancel()
            reader.cancel()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(frames(), media_type="text/event-stream", headers=headers)
