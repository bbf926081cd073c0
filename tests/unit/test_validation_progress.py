from __future__ import annotations

import pytest

from scheduler_service.policy import State
from scheduler_service.progress import (
    WorkflowState,
    job_fraction,
    job_percent,
    workflow_percent,
    workflow_state,
)
from scheduler_service.validation import (
    InvalidSpec,
    JobInput,
    TooManyJobs,
    check_backends,
    normalise_jobs,
)
from worker_service.analysis.progress_throttle import ProgressThrottle
from wsi_runtime.identity import valid_user_id


def ji(
    key: str = "", branch: str = "b", deps: tuple[str, ...] = (), job_type: str = "TISSUE_MASK"
) -> JobInput:
    return JobInput(key, branch, job_type, "x.svs", deps)


def test_defaults_and_dedup() -> None:
    jobs = normalise_jobs([ji(), JobInput("", "", "CELL_SEGMENTATION", "y", ("0", "0"))], 10)
    assert [j.key for j in jobs] == ["0", "1"]
    assert jobs[1].branch == "default" and jobs[1].depends_on == ("0",)


@pytest.mark.parametrize(
    ("jobs", "message"),
    [
        ([], "at least one job"),
        ([ji("a", job_type="SEGMENT")], "unknown job type"),
        ([ji("a"), ji("a")], "duplicate"),
        ([ji("a", deps=("z",))], "unknown job key"),
        ([ji("a", deps=("a",))], "itself"),
        ([ji("a", "x", ("b",)), ji("b", "y", ("a",))], "cycle"),
        ([ji("a", "x", ("b",)), ji("b", "x")], "cycle"),
        ([ji("k" * 200)], "at most"),
        ([JobInput("a", "b", "TISSUE_MASK", "")], "wsi_path"),
    ],
)
def test_invalid_specs(jobs: list[JobInput], message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        normalise_jobs(jobs, 10)


def test_a_job_without_a_key_is_named_by_its_place_and_branch() -> None:
    with pytest.raises(InvalidSpec) as refused:
        normalise_jobs([ji(), ji(branch="scans", job_type="SEGMENT")], 10)
    assert str(refused.value).startswith("job 2 in the list (no key; branch 'scans'): unknown")
    with pytest.raises(InvalidSpec, match=r"^job 1 in the list \(no key; branch 'default'\)"):
        normalise_jobs([JobInput("", "", "TISSUE_MASK", "")], 10)
    with pytest.raises(InvalidSpec, match=r"^job 'seg': wsi_path"):
        normalise_jobs([JobInput("seg", "", "TISSUE_MASK", "")], 10)


def test_a_backend_no_connected_worker_runs_is_refused_at_submit() -> None:
    wants = [JobInput("", "scans", "CELL_SEGMENTATION", "x.svs", (), {"backend": "instanseg"})]
    offered = frozenset({"classical", "learned"})
    with pytest.raises(InvalidSpec) as refused:
        check_backends([ji("mask"), *wants], offered)
    assert str(refused.value) == (
        "job 2 in the list (no key; branch 'scans'): backend 'instanseg' cannot run on any"
        " connected worker; they offer classical, learned"
    )
    check_backends(wants, offered | {"instanseg"})  # some worker offers it
    check_backends(wants, None)  # not known yet (WorkerLinks.backends_offered): it waits
    check_backends([ji("plain")], offered)  # no backend named: the worker's default


def test_too_many_jobs_is_a_quota_not_a_malformed_request() -> None:
    with pytest.raises(TooManyJobs, match="at most 10 jobs, got 11: split it"):
        normalise_jobs([ji(str(i)) for i in range(11)], 10)


def test_dependency_on_a_later_job_in_another_branch_is_fine() -> None:
    jobs = normalise_jobs([ji("seg", "s", ("mask",)), ji("mask", "m")], 10)
    assert [j.key for j in jobs] == ["seg", "mask"]


@pytest.mark.parametrize(
    ("user", "ok"),
    [
        ("alice", True),
        ("a.b_c-1", True),
        ("x" * 64, True),
        ("", False),
        (None, False),
        ("x" * 65, False),
        ("a b", False),
        ("é", False),
    ],
)
def test_user_ids(user: str | None, ok: bool) -> None:
    assert valid_user_id(user) is ok


def test_progress_maths() -> None:
    assert job_fraction(State.RUNNING, 5, 10) == 0.5
    assert job_fraction(State.RUNNING, 5, 0) == 0.0
    assert job_fraction(State.CANCELLED, 1, 10) == 0.1  # what was done, not "finished"
    assert job_fraction(State.FAILED, 0, 0) == 0.0
    assert job_fraction(State.SUCCEEDED, 0, 0) == 1.0
    assert job_percent(State.SUCCEEDED, 0, 0) == 100.0
    assert job_percent(State.RUNNING, 1, 3) == 33.33
    assert workflow_percent(1.5, 3) == 50.0
    assert workflow_percent(0, 0) == 0.0


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({State.PENDING: 3}, WorkflowState.PENDING),
        ({State.PENDING: 2, State.RUNNING: 1}, WorkflowState.RUNNING),
        ({State.PENDING: 1, State.SUCCEEDED: 1}, WorkflowState.RUNNING),
        ({State.SUCCEEDED: 2}, WorkflowState.SUCCEEDED),
        ({State.SUCCEEDED: 1, State.CANCELLED: 1}, WorkflowState.CANCELLED),
        ({State.FAILED: 1, State.CANCELLED: 1}, WorkflowState.FAILED),
    ],
)
def test_workflow_state(counts: dict[State, int], expected: str) -> None:
    assert workflow_state(counts) == expected


def test_throttle_lets_first_last_and_spaced_updates_through() -> None:
    throttle = ProgressThrottle(20)
    emitted = [t for t in range(0, 100) if throttle.should_emit(float(t), t, 100)]
    assert emitted == [0, 20, 40, 60, 80]
    assert throttle.should_emit(81.0, 100, 100)  # the last one always goes through
