"""Where workers started with ``--scheduler`` join, keep a heartbeat and
leave (the WorkerRegistry service, on the scheduler's port, behind the
workers' shared secret). A worker silent for three heartbeat intervals is
forgotten: its running jobs are retried elsewhere, as for any lost worker."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import grpc

from scheduler_service.worker_links import WorkerLinks
from wsi_protocol.worker.v1 import worker_pb2 as wpb
from wsi_protocol.worker.v1 import worker_pb2_grpc as wpb_grpc

if TYPE_CHECKING:
    from wsi_runtime.serving import Context

HEARTBEAT_INTERVAL_S = 2.0
MISSED_BEATS = 3
SERVICE_NAME = wpb.DESCRIPTOR.services_by_name["WorkerRegistry"].full_name
# host:port, the host a name, an IPv4 address or a bracketed IPv6 address.
_ADDRESS = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253}):\d{1,5}")


class WorkerRegistry(wpb_grpc.WorkerRegistryServicer):
    def __init__(
        self,
        links: WorkerLinks,
        interval_s: float = HEARTBEAT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.links = links
        self.interval_s = interval_s
        self.clock = clock

    async def _address(self, address: str, context: Context) -> str:
        if not _ADDRESS.fullmatch(address) or int(address.rsplit(":", 1)[1]) > 65535:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "address must be host:port as the scheduler dials it",
            )
        return address

    async def Join(self, request: wpb.JoinRequest, context: Context) -> wpb.JoinResponse:
        address = await self._address(request.address, context)
        self.links.join(address, self.clock())
        return wpb.JoinResponse(heartbeat_interval_s=self.interval_s)

    async def Heartbeat(
        self, request: wpb.HeartbeatRequest, context: Context
    ) -> wpb.HeartbeatResponse:
        if not self.links.heartbeat(request.address, self.clock()):
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown worker: join again")
        return wpb.HeartbeatResponse()

    async def Leave(self, request: wpb.LeaveRequest, context: Context) -> wpb.LeaveResponse:
        self.links.leave(request.address, "it left")
        return wpb.LeaveResponse()

    async def forget_silent_workers(self) -> None:
        """Runs for the scheduler's life."""
        while True:
            await asyncio.sleep(self.interval_s)
            self.links.forget_silent(self.clock(), self.interval_s * MISSED_BEATS)
