"""The JSON of the gateway and ``wsi --json``: a job's summary is an object."""

from __future__ import annotations

from wsi_protocol.json_format import to_json
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb


def test_a_result_s_summary_is_its_structured_object() -> None:
    result = pb.JobResult(summary='{"nuclei": 12}')
    result.structured_summary.update(
        {"nuclei": 12, "mpp_used": 0.5, "slide": {"path": "a.svs", "levels": [1, 2]}, "x": None}
    )
    shown = to_json(result)
    assert shown == {
        "files": {},
        "summary": {
            "nuclei": 12,
            "mpp_used": 0.5,
            "slide": {"path": "a.svs", "levels": [1, 2]},
            "x": None,
        },
    }
    assert isinstance(shown["summary"]["nuclei"], int)  # not 12.0
    assert "structured_summary" not in shown


def test_no_result_yet_is_null() -> None:
    assert to_json(pb.Job())["result"] is None
