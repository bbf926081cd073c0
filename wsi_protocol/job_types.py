"""The job types as the services hold them: one str enum (its values are the
API's names, so journals, summaries and metric labels read as they always
have), turned into the wire's number only at a gRPC edge."""

from __future__ import annotations

from enum import StrEnum

from wsi_protocol.scheduler.v1 import scheduler_pb2


class JobType(StrEnum):
    TISSUE_MASK = "TISSUE_MASK"
    CELL_SEGMENTATION = "CELL_SEGMENTATION"

    @property
    def number(self) -> scheduler_pb2.JobType.ValueType:
        """The value of ``scheduler.v1.JobType`` on the wire."""
        return scheduler_pb2.JobType.Value(self.value)

    @classmethod
    def from_number(cls, number: int) -> JobType | None:
        """The type a wire value names; None for UNSPECIFIED or an unknown one."""
        return next((t for t in cls if t.number == number), None)

    @classmethod
    def from_name(cls, name: str) -> JobType | None:
        return next((t for t in cls if t.value == name), None)
