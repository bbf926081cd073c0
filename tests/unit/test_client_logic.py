"""The client's pure parts: backoff, the watch cursor, workflow files, the
watch view's exit status."""

from __future__ import annotations

import itertools
import re

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from wsi_client.backoff import Backoff
from wsi_client.watch_cursor import WatchCursor
from wsi_client.workflow_file import (
    WorkflowFileError,
    jobs_from_flags,
    parse_params,
    parse_workflow,
)
from wsi_client.workflow_view import EXIT_CANCELLED, EXIT_FAILED, EXIT_SUCCEEDED, WorkflowView
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb

# ---- backoff -----------------------------------------------------------------


def test_backoff_grows_to_its_cap_and_stops_after_its_attempts() -> None:
    policy = Backoff(initial=0.1, maximum=0.5, multiplier=2, attempts=6)
    assert list(policy.delays(lambda: 1.0)) == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    assert list(policy.delays(lambda: 0.0)) == pytest.approx([0.05, 0.1, 0.2, 0.25, 0.25])
    assert list(Backoff(attempts=1).delays()) == []


@given(st.floats(0.001, 2), st.floats(1, 4), st.integers(1, 12), st.floats(0, 1))
def test_every_delay_lies_between_half_and_all_of_the_capped_step(
    initial: float, multiplier: float, attempts: int, fraction: float
) -> None:
    policy = Backoff(
        initial=initial, maximum=initial * 10, multiplier=multiplier, attempts=attempts
    )
    delays = list(policy.delays(lambda: fraction))
    assert len(delays) == attempts - 1
    step = initial
    for delay in delays:
        assert step / 2 - 1e-9 <= delay <= step + 1e-9
        step = min(policy.maximum, step * multiplier)


@pytest.mark.parametrize(
    "kwargs", [{"initial": 0}, {"initial": 2, "maximum": 1}, {"multiplier": 0.5}, {"attempts": 0}]
)
def test_backoff_refuses_settings_that_make_no_sense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)  # type: ignore[arg-type]


# ---- watch cursor --------------------------------------------------------------


def event(
    sequence: int, kind: int = pb.WorkflowEvent.JOB_STATE, state: int = 2
) -> pb.WorkflowEvent:
    return pb.WorkflowEvent(sequence=sequence, kind=kind, workflow_state=state)  # type: ignore[arg-type]


def test_cursor_passes_the_first_snapshot_then_only_new_changes() -> None:
    cursor = WatchCursor()
    assert cursor.accept(event(3, pb.WorkflowEvent.SNAPSHOT))
    assert not cursor.accept(event(3))  # a change the snapshot already holds
    assert cursor.accept(event(4))
    assert [cursor.accept(event(s)) for s in (2, 4, 5)] == [False, False, True]
    assert cursor.after == 5 and not cursor.finished


def test_cursor_drops_a_resync_snapshot_with_nothing_new_and_marks_the_end() -> None:
    cursor = WatchCursor(after=7)
    assert not cursor.accept(event(7, pb.WorkflowEvent.SNAPSHOT))
    assert cursor.accept(event(9, pb.WorkflowEvent.SNAPSHOT))
    assert cursor.accept(event(10, state=pb.WORKFLOW_STATE_SUCCEEDED))
    assert cursor.finished


@given(st.lists(st.integers(1, 40), max_size=60))
def test_cursor_delivers_each_sequence_once_and_in_increasing_order(
    sequences: list[int],
) -> None:
    """Whatever a server replays across reconnects, the caller sees a strictly
    increasing series: nothing repeats."""
    cursor = WatchCursor()
    delivered = [s for s in sequences if cursor.accept(event(s))]
    assert delivered == sorted(set(delivered))
    assert all(b > a for a, b in itertools.pairwise(delivered))


# ---- workflow files ------------------------------------------------------------

BRANCHES_YAML = """
name: run-1
defaults: {wsi_path: slide.svs, params: {tile_size: 512}}
branches:
  a:
    - {key: mask, job_type: TISSUE_MASK}
    - {key: cells, job_type: CELL_SEGMENTATION, depends_on: [mask], params: {fast: true}}
  b:
    - {key: other, job_type: CELL_SEGMENTATION, wsi_path: other.svs}
"""


def test_branch_form_keeps_branch_order_and_fills_defaults() -> None:
    document = parse_workflow(yaml.safe_load(BRANCHES_YAML))
    assert document.name == "run-1"
    got = [(j.key, j.branch, pb.JobType.Name(j.job_type), j.wsi_path) for j in document.jobs]
    assert got == [
        ("mask", "a", "TISSUE_MASK", "slide.svs"),
        ("cells", "a", "CELL_SEGMENTATION", "slide.svs"),
        ("other", "b", "CELL_SEGMENTATION", "other.svs"),
    ]
    assert list(document.jobs[1].depends_on) == ["mask"]
    assert dict(document.jobs[0].params) == {"tile_size": "512"}  # YAML number -> string
    assert dict(document.jobs[1].params) == {"fast": "true"}  # a job's params replace defaults


def test_flat_form_is_the_gateway_body() -> None:
    document = parse_workflow(
        {
            "jobs": [{"branch": "a", "job_type": "TISSUE_MASK", "wsi_path": "s.svs"}],
            "request_id": "r-1",
        }
    )
    assert document.request_id == "r-1" and document.jobs[0].branch == "a"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "holds a mapping"),
        ({}, "either 'jobs'"),
        ({"jobs": [], "branches": {}}, "either 'jobs'"),
        ({"jobs": []}, "no jobs"),
        ({"jobs": "x"}, "'jobs' must be a list"),
        ({"jobs": [{"job_type": "TISSUE_MASK"}]}, "jobs[0]: 'wsi_path' is required"),
        ({"jobs": [{"job_type": "SEGMENT", "wsi_path": "s"}]}, "jobs[0]: unknown job type"),
        ({"jobs": [{"job_type": "TISSUE_MASK", "wsi_path": "s", "colour": 1}]}, "colour"),
        ({"jobs": [{"job_type": "TISSUE_MASK", "wsi_path": "s", "depends_on": "a"}]}, "list"),
        ({"branches": {"a": {"job_type": "TISSUE_MASK"}}}, "branch 'a' must hold a list"),
        (
            {"branches": {"a": [{"branch": "b", "job_type": "TISSUE_MASK", "wsi_path": "s"}]}},
            "differs from its branch",
        ),
        ({"defaults": {"key": "x"}, "jobs": []}, "'defaults': unknown field(s) key"),
        ({"jobs": [], "priority": 1}, "unknown field(s) priority"),
    ],
)
def test_malformed_documents_name_what_to_fix(document: object, message: str) -> None:
    with pytest.raises(WorkflowFileError, match=re.escape(message)):
        parse_workflow(document)


def test_flags_give_each_slide_its_own_branch_of_jobs_in_order() -> None:
    jobs = jobs_from_flags(
        ["a/x.svs", "b/x.svs", "y.svs"], ["TISSUE_MASK", "CELL_SEGMENTATION"], params={"k": "v"}
    )
    assert [(j.branch, j.wsi_path) for j in jobs[::2]] == [
        ("x.svs", "a/x.svs"),
        ("x.svs-2", "b/x.svs"),
        ("y.svs", "y.svs"),
    ]
    assert [pb.JobType.Name(j.job_type) for j in jobs[:2]] == ["TISSUE_MASK", "CELL_SEGMENTATION"]
    assert all(dict(j.params) == {"k": "v"} for j in jobs)
    assert {j.branch for j in jobs_from_flags(["p", "q"], ["TISSUE_MASK"], branch="one")} == {"one"}
    with pytest.raises(WorkflowFileError, match="at least one slide"):
        jobs_from_flags([], ["TISSUE_MASK"])


def test_params_are_name_value_pairs() -> None:
    assert parse_params(["tile_size=256", "note=a=b", "empty="]) == {
        "tile_size": "256",
        "note": "a=b",
        "empty": "",
    }
    for bad in ("novalue", "=x"):
        with pytest.raises(WorkflowFileError, match="NAME=VALUE"):
            parse_params([bad])


# ---- watch view ----------------------------------------------------------------


def job_event(sequence: int, job_id: str, state: int, workflow_state: int) -> pb.WorkflowEvent:
    return pb.WorkflowEvent(
        sequence=sequence,
        kind=pb.WorkflowEvent.JOB_STATE,
        job=pb.Job(job_id=job_id, state=state),  # type: ignore[arg-type]
        workflow_state=workflow_state,  # type: ignore[arg-type]
    )


def test_view_folds_events_and_maps_the_outcome_to_an_exit_status() -> None:
    snapshot = pb.WorkflowEvent(
        sequence=1,
        kind=pb.WorkflowEvent.SNAPSHOT,
        workflow=pb.Workflow(
            workflow_id="w",
            jobs=[pb.Job(job_id="a", state=pb.JOB_STATE_PENDING), pb.Job(job_id="b")],
        ),
        workflow_state=pb.WORKFLOW_STATE_PENDING,
    )
    view = WorkflowView()
    assert view.apply(snapshot) is None and list(view.jobs) == ["a", "b"]
    view.apply(job_event(2, "b", pb.JOB_STATE_SUCCEEDED, pb.WORKFLOW_STATE_RUNNING))
    assert list(view.jobs) == ["a", "b"]  # order kept
    view.apply(job_event(3, "a", pb.JOB_STATE_SUCCEEDED, pb.WORKFLOW_STATE_SUCCEEDED))
    assert view.exit_status() == EXIT_SUCCEEDED
    view.apply(job_event(4, "a", pb.JOB_STATE_CANCELLED, pb.WORKFLOW_STATE_CANCELLED))
    assert view.exit_status() == EXIT_CANCELLED
    view.apply(job_event(5, "b", pb.JOB_STATE_FAILED, pb.WORKFLOW_STATE_FAILED))
    assert view.exit_status() == EXIT_FAILED


@pytest.mark.parametrize(
    "argv",
    [
        ["--json", "--user", "ana", "--timeout", "3", "submit", "a.svs", "-t", "TISSUE_MASK"],
        ["submit", "a.svs", "-t", "TISSUE_MASK", "--json", "--user", "ana", "--timeout", "3"],
        ["--user", "bob", "submit", "--json", "a.svs", "--user", "ana", "-t", "TISSUE_MASK"],
    ],
)
def test_global_options_go_before_or_after_the_command(argv: list[str]) -> None:
    """`wsi submit ... --json` as people write it (the README's form too)."""
    from wsi_client.cli.main import build_parser

    args = build_parser().parse_args(argv)
    assert (args.command, args.slides, args.types, args.json, args.user) == (
        "submit",
        ["a.svs"],
        ["TISSUE_MASK"],
        True,
        "ana",
    )
    if "--timeout" in argv:
        assert args.timeout == 3.0
    plain = build_parser().parse_args(["list"])
    assert plain.json is False and plain.timeout == 10.0


@pytest.mark.parametrize(
    ("seconds", "written"),
    [
        (0.04, "0.0 s"),
        (1.9983, "2.0 s"),
        (5.71, "5.7 s"),
        (42.4, "42 s"),
        (60.0, "1 min"),
        (192.3, "3 min 12 s"),
        (3599.6, "60 min"),
        (7500.0, "2 h 05 min"),
    ],
)
def test_durations_as_people_read_them(seconds: float, written: str) -> None:
    from wsi_client.digest import human_duration

    assert human_duration(seconds) == written


def test_a_workflow_digest_has_what_people_compare() -> None:
    from wsi_client.digest import digest, human_age, job_facts

    def job(slide: str, start: int, end: int, summary: str = "") -> pb.Job:
        made = pb.Job(wsi_path=f"/data/{slide}")
        if start:
            made.start_time.FromSeconds(start)
        if end:
            made.end_time.FromSeconds(end)
        if summary:
            made.result.summary = summary
        return made

    wf = pb.Workflow(
        jobs=[
            job("a.svs", 1000, 1002),
            job("a.svs", 1002, 1030, '{"nuclei": 1481, "backend": "classical"}'),
            job("b.tiff", 1001, 1075, '{"nuclei": 2656, "backend": "learned"}'),
        ]
    )
    wf.create_time.FromSeconds(990)
    seen = digest(wf, now_s=1190)
    assert (seen.slides, seen.backends, seen.nuclei) == (
        "a.svs, b.tiff",
        "classical, learned",
        4137,
    )
    assert seen.seconds == 75 and seen.age_s == 200 and human_age(seen.age_s) == "3 min ago"
    noted = job("c.tiff", 1000, 1001, '{"nuclei": 9, "mpp_note": "target_mpp=1 not used"}')
    assert job_facts(noted).note == "target_mpp=1 not used" and job_facts(wf.jobs[1]).note == ""
    from wsi_client.cli.render import job_summary  # the line `wsi watch` ends with

    assert job_summary(noted).endswith("9 nuclei, note: target_mpp=1 not used")
    running = pb.Workflow(jobs=[job("a.svs", 1000, 0)])
    assert digest(running, now_s=1001).seconds is None and digest(running, 1001).nuclei is None
    assert [human_age(s) for s in (1, 30, 7200, 3 * 86400)] == [
        "just now",
        "30 s ago",
        "2 h ago",
        "3 d ago",
    ]
