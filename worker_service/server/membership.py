"""A worker started with ``--scheduler ADDRESS`` joins that scheduler by
itself and keeps a heartbeat, so a lab adds a host by starting a worker on
it: no scheduler restart, no address list to edit. The scheduler answers a
heartbeat it does not place (it restarted, or forgot this worker after a
silence) with NOT_FOUND, and the worker joins again. A join waits for the
channel to connect (``wait_for_ready``) rather than failing at once while
gRPC backs off between connection attempts (at most 2 s apart:
``serving.KEEPALIVE_CHANNEL``), so a worker started before its scheduler is
in within about 2 s of the scheduler listening (9 s when it was 6 s late,
before)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import grpc

from wsi_protocol import metadata
from wsi_protocol.worker.v1 import worker_pb2 as pb
from wsi_protocol.worker.v1 import worker_pb2_grpc as pb_grpc
from wsi_runtime import serving, tls

log = logging.getLogger("wsi.worker.membership")
RETRY_FIRST_S = 0.5
JOIN_WAIT_S = 5.0
RETRY_MAX_S = 10.0  # after a refusal (a wrong secret): an absent scheduler is waited for


class Membership:
    def __init__(
        self,
        scheduler: str,
        advertised: str,
        info: Callable[[], pb.WorkerInfo],
        secret: str,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.advertised = advertised
        self.info = info
        self._metadata = ((metadata.WORKER_SECRET, secret),)
        # Pings notice a scheduler whose address vanished (a replaced pod), so
        # the channel connects again to the name instead of beating into a void.
        self._channel = tls.aio_channel(scheduler, credentials, serving.KEEPALIVE_CHANNEL)
        self._stub = pb_grpc.WorkerRegistryStub(self._channel)

    async def run(self) -> None:
        """Joins, beats, joins again when needed; until cancelled."""
        delay = RETRY_FIRST_S
        while True:
            try:
                joined = await self._stub.Join(
                    pb.JoinRequest(address=self.advertised, info=self.info()),
                    metadata=self._metadata,
                    timeout=JOIN_WAIT_S,
                    wait_for_ready=True,
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED:  # not there yet
                    log.warning("no scheduler at %s yet; still waiting", self.scheduler)
                    continue
                log.warning(
                    "cannot join the scheduler at %s (%s: %s); again in %.1f s",
                    self.scheduler,
                    exc.code().name,
                    exc.details(),
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            delay = RETRY_FIRST_S
            log.info("joined the scheduler at %s as %s", self.scheduler, self.advertised)
            await self._beat(max(0.2, joined.heartbeat_interval_s))

    async def _beat(self, interval: float) -> None:
        """Returns when the scheduler no longer knows this worker."""
        beat = pb.HeartbeatRequest(address=self.advertised)
        while True:
            await asyncio.sleep(interval)
            try:
                await self._stub.Heartbeat(beat, metadata=self._metadata, timeout=interval)
            except grpc.aio.AioRpcError as exc:
                if exc.code() is grpc.StatusCode.NOT_FOUND:
                    log.info("the scheduler forgot this worker: joining again")
                    return
                log.warning("heartbeat failed (%s); trying on", exc.code().name)

    async def leave(self) -> None:
        """On a graceful stop: the scheduler retries this worker's jobs at once."""
        with contextlib.suppress(grpc.aio.AioRpcError):
            await self._stub.Leave(
                pb.LeaveRequest(address=self.advertised), metadata=self._metadata, timeout=2
            )
        await self._channel.close(grace=None)
