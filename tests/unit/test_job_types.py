"""The services' job type enum is the API's, name for name and number for number."""

from __future__ import annotations

import json

from wsi_protocol.job_types import JobType
from wsi_protocol.scheduler.v1 import scheduler_pb2


def test_the_enum_is_the_apis_job_types() -> None:
    on_the_wire = {name: number for name, number in scheduler_pb2.JobType.items() if number}
    assert {t.value: t.number for t in JobType} == on_the_wire


def test_edges_decode_what_they_encode_and_refuse_the_rest() -> None:
    for job_type in JobType:
        assert JobType.from_number(job_type.number) is job_type
        assert JobType.from_name(job_type.value) is job_type
    assert JobType.from_number(scheduler_pb2.JOB_TYPE_UNSPECIFIED) is None
    assert JobType.from_number(99) is None
    assert JobType.from_name("cell_segmentation") is None


def test_it_reads_as_its_name_in_json_and_labels() -> None:
    assert (
        json.dumps({"job_type": JobType.CELL_SEGMENTATION}) == '{"job_type": "CELL_SEGMENTATION"}'
    )
    assert f"{JobType.TISSUE_MASK}" == "TISSUE_MASK"
