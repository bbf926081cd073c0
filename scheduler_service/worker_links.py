"""The scheduler's workers: one link each, static (``--worker-addresses``) or
joined by itself (``WorkerRegistry``); probing a lost one with backoff; the
slots they offer. Connections come from an injected factory, so tests drive
links with fake stubs and no sockets."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import grpc

from scheduler_service.background import Background
from wsi_protocol import metadata
from wsi_protocol.worker.v1 import worker_pb2 as wpb
from wsi_protocol.worker.v1 import worker_pb2_grpc as wpb_grpc
from wsi_runtime import serving, tls

log = logging.getLogger("wsi.scheduler.dispatch")

PROBE_TIMEOUT_S = 2.0


class Connection(Protocol):
    """What a link holds of a worker: its stub, and a way to hang up."""

    @property
    def stub(self) -> wpb_grpc.WorkerAsyncStub: ...

    async def close(self) -> None: ...


Connect = Callable[[str], Connection]


@dataclass
class GrpcConnection:
    channel: grpc.aio.Channel
    stub: wpb_grpc.WorkerAsyncStub

    async def close(self) -> None:
        await self.channel.close(grace=None)


def grpc_connect(credentials: grpc.ChannelCredentials | None = None) -> Connect:
    """Real connections: one channel per worker, TLS when ``credentials``."""

    def connect(address: str) -> GrpcConnection:
        # A worker that dies without closing its connection (power, network)
        # is noticed within seconds on a running job's stream.
        channel = tls.aio_channel(address, credentials, serving.KEEPALIVE_CHANNEL)
        return GrpcConnection(channel, wpb_grpc.WorkerStub(channel))

    return connect


@dataclass
class WorkerLink:
    address: str
    connection: Connection
    slots: int = 0
    busy: int = 0
    connected: bool = False
    error: str = ""
    failed_probes: int = 0
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    origin: str = "static"  # or "joined": registered itself (WorkerRegistry)
    last_seen: float = 0.0  # of a joined worker: its last join or heartbeat (monotonic)
    removed: bool = False  # forgotten (left, or silent): no more jobs, no more probes
    backends: tuple[str, ...] = ()
    worker_id: str = ""  # what the worker calls itself (GetInfo); "" from older workers

    @property
    def stub(self) -> wpb_grpc.WorkerAsyncStub:
        return self.connection.stub

    @property
    def free(self) -> int:
        return max(0, self.slots - self.busy) if self.connected else 0

    @property
    def state(self) -> str:
        """A forgotten worker is no longer listed at all."""
        return "connected" if self.connected else "lost"


def call_metadata(worker_secret: str) -> tuple[tuple[str, str], ...]:
    """Every call shows the workers the shared secret (they serve their scheduler only)."""
    return ((metadata.WORKER_SECRET, worker_secret),) if worker_secret else ()


class WorkerLinks:
    def __init__(
        self,
        addresses: Sequence[str],
        connect: Connect,
        background: Background,
        worker_secret: str = "",
        retry_initial: float = 0.2,
        retry_max: float = 5.0,
    ) -> None:
        self._connect = connect
        self._background = background
        self.metadata = call_metadata(worker_secret)
        self.retry_initial, self.retry_max = retry_initial, retry_max
        self.links = [WorkerLink(address, connect(address)) for address in addresses]
        self.on_change: Callable[[], None] = lambda: None  # capacity changed: dispatch again
        self._started = False
        self._closing = False

    # ---- membership (workers that join by themselves) ---------------------------

    def join(self, address: str, now: float) -> None:
        """A worker registered: probed and used like a static one from now on.
        One already listed (static, or joined and lost) keeps its link, whose
        probes reconnect it; one that was forgotten gets a new link."""
        for link in self.links:
            if link.address == address and not link.removed:
                link.last_seen = now
                return
        link = WorkerLink(address, self._connect(address), origin="joined", last_seen=now)
        self.links.append(link)
        log.info("worker %s joined", address)
        if self._started:
            self._background.spawn(self._keep_connected(link), "probe", address)

    def heartbeat(self, address: str, now: float) -> bool:
        """False if no such joined worker is known (it must join again)."""
        for link in self.links:
            if link.address == address and link.origin == "joined" and not link.removed:
                link.last_seen = now
                return True
        return False

    def leave(self, address: str, why: str) -> None:
        """Forgets a joined worker: its running jobs are retried elsewhere as for
        any lost worker (their streams end with the channel), and nothing new
        goes to it."""
        for link in [w for w in self.links if w.address == address and w.origin == "joined"]:
            log.info("worker %s forgotten: %s", address, why)
            link.removed = True
            self.mark_lost(link, why)
            self.links.remove(link)
            self._background.spawn(link.connection.close(), "close", address)

    def forget_silent(self, now: float, silence_s: float) -> None:
        for link in list(self.links):
            if link.origin == "joined" and now - link.last_seen > silence_s:
                self.leave(link.address, f"no heartbeat for {silence_s:.0f} s")

    # ---- capacity --------------------------------------------------------------

    @property
    def slots_total(self) -> int:
        return sum(link.slots for link in self.links if link.connected)

    @property
    def slots_busy(self) -> int:
        return sum(link.busy for link in self.links if link.connected)

    @property
    def workers_connected(self) -> int:
        return sum(1 for link in self.links if link.connected)

    def backends_offered(self) -> frozenset[str] | None:
        """The segmentation backends the connected workers offer between them;
        None while that is not known (no worker connected, or one that does
        not say: an older worker)."""
        offered = [frozenset(link.backends) for link in self.links if link.connected]
        if not offered or not all(offered):
            return None
        return frozenset().union(*offered)

    def free_slots(self) -> int:
        return sum(link.free for link in self.links)

    def freest(self, tried: Collection[str] = ()) -> WorkerLink:
        """The worker with the most free slots, one that has not had the job
        before (``tried``: the workers of its earlier attempts) first: a job
        whose worker went silent or was lost is retried elsewhere when it can be."""
        return max(
            self.links, key=lambda link: (link.free > 0, link.address not in tried, link.free)
        )

    def connected(self, address: str) -> WorkerLink | None:
        return next((w for w in self.links if w.address == address and w.connected), None)

    def connected_preferring(self, address: str) -> WorkerLink | None:
        """``address`` if it is connected, else any connected worker."""
        return self.connected(address) or next(
            (w for w in self.links if w.connected and not w.removed), None
        )

    # ---- probing ---------------------------------------------------------------

    def start(self) -> None:
        self._started = True
        for link in self.links:
            self._background.spawn(self._keep_connected(link), "probe", link.address)

    async def close(self) -> None:
        self._closing = True
        for link in self.links:
            await link.connection.close()

    async def _keep_connected(self, link: WorkerLink) -> None:
        """Learns the worker's slots; after a loss, probes it again with backoff."""
        delay = self.retry_initial
        while not self._closing and not link.removed:
            try:
                info = await link.stub.GetInfo(
                    wpb.GetInfoRequest(), timeout=PROBE_TIMEOUT_S, metadata=self.metadata
                )
            except grpc.aio.AioRpcError as exc:
                link.failed_probes += 1
                link.error = f"{exc.code().name}: {exc.details()}"
                log.warning(
                    "worker %s unreachable (%s); retry in %.1fs",
                    link.address,
                    exc.code().name,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
                continue
            if link.removed:
                return
            twin = self._twin(link, info.worker_id)
            if twin is not None:
                # One worker under two addresses (localhost:P and 127.0.0.1:P):
                # counted once; this address takes over if the other is lost.
                link.error = f"the same worker as {twin.address}: counted once"
                log.warning("worker %s is %s again: not counted twice", link.address, twin.address)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
                continue
            delay = self.retry_initial
            link.error, link.failed_probes = "", 0
            link.worker_id = info.worker_id
            link.slots, link.connected = max(0, info.slots), True
            link.backends = tuple(info.backends)
            link.lost.clear()
            log.info("worker %s connected: %d slots", link.address, link.slots)
            self.on_change()
            await link.lost.wait()

    def _twin(self, link: WorkerLink, worker_id: str) -> WorkerLink | None:
        """Another connected link to the worker called ``worker_id``."""
        if not worker_id:
            return None
        return next(
            (
                other
                for other in self.links
                if other is not link
                and other.connected
                and not other.removed
                and other.worker_id == worker_id
            ),
            None,
        )

    def mark_lost(self, link: WorkerLink, error: str = "") -> None:
        if link.connected:
            log.warning("worker %s lost", link.address)
            link.connected = False
            link.error = error
            link.lost.set()
            self.on_change()  # pending reasons and capacity change
