"""A blocking face of ``SchedulerClient`` for scripts and notebooks without
asyncio: the async client runs on a private event loop in a daemon thread, and
every method waits for its result there. Same methods, same errors.

    with SyncSchedulerClient("127.0.0.1:50051", user="alice") as wsi:
        workflow = wsi.create_workflow([job("a", "TISSUE_MASK", "slide.svs")])
        for event in wsi.watch(workflow.workflow_id, workflow.sequence):
            ...
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar

from wsi_client.client import DEFAULT_ADDRESS, SchedulerClient
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb

R = TypeVar("R")


class SyncSchedulerClient:
    def __init__(self, address: str = DEFAULT_ADDRESS, *, user: str = "", **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

        async def build() -> SchedulerClient:  # the channel belongs to the loop's thread
            return SchedulerClient(address, user=user, **options)

        self._client = self._run(build())

    def _run(self, coroutine: Coroutine[Any, Any, R]) -> R:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def __enter__(self) -> SyncSchedulerClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._client.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop.close()

    def create_workflow(
        self, jobs: Sequence[pb.JobSpec], *, name: str = "", request_id: str | None = None
    ) -> pb.Workflow:
        return self._run(self._client.create_workflow(jobs, name=name, request_id=request_id))

    def get_workflow(self, workflow_id: str) -> pb.Workflow:
        return self._run(self._client.get_workflow(workflow_id))

    def list_workflows(self, page_size: int = 0, page_token: str = "") -> pb.ListWorkflowsResponse:
        return self._run(self._client.list_workflows(page_size, page_token))

    def get_job(self, job_id: str) -> pb.Job:
        return self._run(self._client.get_job(job_id))

    def cancel_job(self, job_id: str) -> pb.Job:
        return self._run(self._client.cancel_job(job_id))

    def cancel_workflow(self, workflow_id: str) -> pb.Workflow:
        return self._run(self._client.cancel_workflow(workflow_id))

    def stats(self) -> pb.SchedulerStats:
        return self._run(self._client.stats())

    def watch(self, workflow_id: str, after_sequence: int = 0) -> Iterator[pb.WorkflowEvent]:
        """Blocks for each event; leaving the loop early closes the stream."""
        events = self._client.watch(workflow_id, after_sequence)

        async def next_event() -> pb.WorkflowEvent | None:
            return await anext(events, None)

        try:
            while (event := self._run(next_event())) is not None:
                yield event
        finally:
            self._run(events.aclose())
