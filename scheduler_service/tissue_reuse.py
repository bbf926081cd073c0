"""Which finished TISSUE_MASK job's mask a job can reuse, and the scheduler's
small memory of recent masks. Pure: no gRPC, no clock.

A CELL_SEGMENTATION job that depends on a TISSUE_MASK job of the same slide
would find the same tissue again: the scheduler hands it the mask the
dependency's worker returned, whichever worker runs it. Masks are kept in
memory only (a few KB each, the most recent ``capacity``): after a restart,
or once evicted, the dispatcher reads the mask back from the worker that
holds the dependency's results (and if that worker is away, the job finds
its tissue itself)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Generic, Protocol, TypeVar

from wsi_protocol.job_types import JobType

REUSING_TYPES = frozenset({JobType.CELL_SEGMENTATION})
SOURCE_TYPE = JobType.TISSUE_MASK
DEFAULT_CAPACITY = 1024

T = TypeVar("T")


class JobLike(Protocol):
    @property
    def job_id(self) -> str: ...
    @property
    def job_type(self) -> str: ...
    @property
    def slide_file(self) -> str: ...
    @property
    def state(self) -> object: ...


def mask_source(job: JobLike, dependencies: Iterable[JobLike], succeeded: object) -> str | None:
    """The id of the first dependency whose tissue ``job`` can take: a
    TISSUE_MASK job on the same slide file, in state ``succeeded``."""
    if job.job_type not in REUSING_TYPES:
        return None
    for dependency in dependencies:
        if (
            dependency.job_type == SOURCE_TYPE
            and dependency.slide_file == job.slide_file
            and dependency.state == succeeded
        ):
            return dependency.job_id
    return None


class RecentMasks(Generic[T]):
    """The last ``capacity`` masks, by the id of the job that found them."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = max(0, capacity)
        self._masks: OrderedDict[str, T] = OrderedDict()

    def put(self, job_id: str, mask: T) -> None:
        if not self.capacity:
            return
        self._masks[job_id] = mask
        self._masks.move_to_end(job_id)
        while len(self._masks) > self.capacity:
            self._masks.popitem(last=False)

    def get(self, job_id: str) -> T | None:
        mask = self._masks.get(job_id)
        if mask is not None:
            self._masks.move_to_end(job_id)
        return mask

    def __len__(self) -> int:
        return len(self._masks)
