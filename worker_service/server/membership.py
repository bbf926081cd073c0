"""A worker started with ``--scheduler ADDRESS`` joins that scheduler by
itself and keeps a heartbeat, so a lab adds a host by starting a worker on
it: no scheduler restart, no address list to edit. The scheduler answers a
heartbeat it does not place (it restarted, or forgot this worker after a
silence) with NOT_FOUND, and the worker joins again. After a failed call the
channel is opened anew: a fresh one resolves the scheduler's name again and
connects at once, where the old one would first wait out its reconnection
backoff (up to 10 s) or a connection attempt to an address that vanished
(gRPC gives one 20 s). So a worker started before its scheduler joins within
about 2 s of the scheduler listening (9 s when it came up 6 s late, before)."""

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
RETRY_MAX_S = 10.0  # a refusal (a wrong secret) is tried again slowly
RETRY_UNREACHED_MAX_S = 2.0  # a scheduler not there (yet) is looked for often
UNREACHED = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


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
        self._credentials = credentials
        self._open()

    def _open(self) -> None:
        # Pings notice a scheduler whose address vanished (a replaced pod), so
        # the channel connects again to the name instead of beating into a void.
        # A subchannel of its own: gRPC otherwise shares one per address among
        # channels, and a new channel would inherit the old one's backoff.
        options = [*serving.KEEPALIVE_CHANNEL, ("grpc.use_local_subchannel_pool", 1)]
        self._channel = tls.aio_channel(self.scheduler, self._credentials, options)
        self._stub = pb_grpc.WorkerRegistryStub(self._channel)

    async def _reopen(self) -> None:
        old = self._channel
        self._open()
        await old.close(grace=None)

    async def run(self) -> None:
        """Joins, beats, joins again when needed; until cancelled."""
        delay = RETRY_FIRST_S
        while True:
            try:
                joined = await self._stub.Join(
                    pb.JoinRequest(address=self.advertised, info=self.info()),
                    metadata=self._metadata,
                    timeout=5,
                )
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "cannot join the scheduler at %s (%s: %s); again in %.1f s",
                    self.scheduler,
                    exc.code().name,
                    exc.details(),
                    delay,
                )
                unreached = exc.code() in UNREACHED
                if unreached:
                    await self._reopen()
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_UNREACHED_MAX_S if unreached else RETRY_MAX_S)
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
                if exc.code() in UNREACHED:
                    await self._reopen()

    async def leave(self) -> None:
        """On a graceful stop: the scheduler retries this worker's jobs at once."""
        with contextlib.suppress(grpc.aio.AioRpcError):
            await self._stub.Leave(
                pb.LeaveRequest(address=self.advertised), metadata=self._metadata, timeout=2
            )
        await self._channel.close(grace=None)
