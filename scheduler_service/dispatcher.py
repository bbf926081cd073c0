"""The scheduler's side of its workers, assembled: the links (membership,
probing, capacity), the job runner (the policy's picks as RunJob streams) and
the proxy (results and viewer calls relayed). One object to start and close."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from scheduler_service.background import Background
from scheduler_service.job_runner import JOB_SILENCE_S, JobRunner
from scheduler_service.store import Store
from scheduler_service.worker_links import Connect, WorkerLinks
from scheduler_service.worker_proxy import WorkerProxy


class Dispatcher:
    def __init__(
        self,
        store: Store,
        worker_addresses: Sequence[str],
        connect: Connect,
        worker_secret: str = "",
        retry_initial: float = 0.2,
        retry_max: float = 5.0,
        on_error: Callable[[str], None] = lambda kind: None,
        job_silence_s: float = JOB_SILENCE_S,
    ) -> None:
        self.background = Background(on_error)
        self.links = WorkerLinks(
            worker_addresses, connect, self.background, worker_secret, retry_initial, retry_max
        )
        self.proxy = WorkerProxy(self.links)
        self.runner = JobRunner(store, self.links, self.proxy, self.background, job_silence_s)

    def start(self) -> None:
        self.links.start()

    async def close(self) -> None:
        self.runner.close()
        await self.background.close()
        await self.links.close()
