"""No parameter or slide the API accepts exhausts a worker: hostile parameters
are refused at submit, crafted giant slides are refused at run time with the
worker's memory bounded, a cancel stops its CPU within 2 s in every phase, and
a job's own failure (a full disk) fails it once without touching the worker."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path

import grpc
import httpx
import pytest

from tests.crafted_slides import crafted_tiff
from tests.harness import CMU, SLIDES, Cluster, cluster, cluster_with_gateway, user
from tests.integration.support import LONG, create, get, rpc_error, spec
from tests.processes import cpu_seconds, peak_rss_mb
from tests.timing import patience, wait_for
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb

GIANT = (200_000, 200_000)


@pytest.fixture(scope="module")
def hostile_slides(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hostile")
    crafted_tiff(folder / "giant-single.tiff", [GIANT])
    crafted_tiff(folder / "giant-pyramid.tiff", [GIANT, (1563, 1563)])
    crafted_tiff(folder / "slow-overview.tiff", [(16384, 16384)], colour=(200, 120, 160))
    # Pink everywhere (all tissue), 1,936 tiles of 512 px, each a costly decode.
    crafted_tiff(folder / "slow-tiles.tiff", [(20000, 20000), (1250, 1250)], colour=(200, 120, 160))
    shutil.copy(SLIDES / CMU, folder / CMU)
    return folder


def wait_state(
    c: Cluster, who: str, workflow_id: str, job: int, states: Collection[pb.JobState.ValueType]
) -> pb.Job:
    deadline = time.monotonic() + patience(90)
    while time.monotonic() < deadline:
        found = get(c, who, workflow_id).jobs[job]
        if found.state in states:
            return found
        time.sleep(0.05)
    raise AssertionError(f"job {job} never reached {states}")


@pytest.fixture(scope="module")
def hostile(hostile_slides: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster(
        tmp_path_factory.mktemp("bounded"), worker_slots=(2,), slide_roots=str(hostile_slides)
    ) as c:
        yield c


FINAL: set[pb.JobState.ValueType] = {
    pb.JOB_STATE_SUCCEEDED,
    pb.JOB_STATE_FAILED,
    pb.JOB_STATE_CANCELLED,
}


def test_crafted_giant_slides_are_refused_with_the_worker_small(hostile: Cluster) -> None:
    single = create(hostile, "mallory", [spec("m", slide="giant-single.tiff")])
    pyramid = create(
        hostile,
        "mallory",
        [
            spec(
                "s",
                slide="giant-pyramid.tiff",
                params={**LONG, "min_tissue": "0"},
                job_type=pb.CELL_SEGMENTATION,
            )
        ],
    )
    one = wait_state(hostile, "mallory", single.workflow_id, 0, FINAL)
    assert one.state == pb.JOB_STATE_FAILED and one.attempt == 1
    assert "no pyramid level small enough" in one.error
    two = wait_state(hostile, "mallory", pyramid.workflow_id, 0, FINAL)
    assert two.state == pb.JOB_STATE_FAILED and two.attempt == 1
    assert "a job may cover at most 100,000" in two.error
    assert peak_rss_mb(hostile.workers[0].process.pid) < 1024
    stats = hostile.stub.GetStats(pb.GetStatsRequest(), metadata=user("mallory"))
    assert stats.workers_connected == 1  # a job's failure, not a lost worker


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"tile_size": "16", "overlap": "0", "min_tissue": "0"}, "tile_size"),
        ({"target_mpp": "inf"}, "finite"),
        ({"target_mpp": "nan"}, "finite"),
        ({"tile_size": "huge"}, "not a number"),
        ({"tile_sise": "512"}, "unknown param 'tile_sise'"),
    ],
)
def test_hostile_parameters_are_refused_at_submit(
    hostile: Cluster, params: dict[str, str], message: str
) -> None:
    err = rpc_error(lambda: create(hostile, "mallory", [spec("x", params=params)]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (err.details() or "")


@pytest.mark.parametrize(
    ("slide", "params", "running_for"),
    [
        ("slow-overview.tiff", {}, 1.0),  # a mask job, reading its overview strip by strip
        ("slow-tiles.tiff", {"min_tissue": "0"}, 2.0),  # segmentation, among its tiles
    ],
)
def test_a_cancel_stops_the_workers_cpu_within_two_seconds(
    hostile: Cluster, slide: str, params: dict[str, str], running_for: float
) -> None:
    worker = hostile.workers[0].process.pid
    job_type = pb.CELL_SEGMENTATION if params else pb.TISSUE_MASK
    wf = create(hostile, "carol", [spec("long", slide=slide, params=params, job_type=job_type)])
    wait_state(hostile, "carol", wf.workflow_id, 0, {pb.JOB_STATE_RUNNING})
    if job_type == pb.CELL_SEGMENTATION:
        # Among its tiles: preparing them (overview, tissue) takes longer on a busy machine.
        wait_for(
            lambda: get(hostile, "carol", wf.workflow_id).jobs[0].progress.tiles_total > 0,
            30,
            "the job to reach its tiles",
        )
    time.sleep(running_for)
    # The job is working: 0.2 s of CPU (a busy host gives it less a second).
    busy_before = cpu_seconds(worker)
    wait_for(lambda: cpu_seconds(worker) - busy_before > 0.2, 10, "the job to use the CPU")
    hostile.stub.CancelJob(pb.CancelJobRequest(job_id=wf.jobs[0].job_id), metadata=user("carol"))
    wait_state(hostile, "carol", wf.workflow_id, 0, {pb.JOB_STATE_CANCELLED})
    time.sleep(2.0)
    idle_from = cpu_seconds(worker)
    time.sleep(1.0)
    assert cpu_seconds(worker) - idle_from < 0.15
    assert peak_rss_mb(worker) < 1024  # a 16384 px single-level overview read in strips


def test_json_numbers_are_parameters_and_bad_ones_say_why(tmp_path: Path) -> None:
    with cluster_with_gateway(tmp_path, worker_slots=(1,)) as (_, gateway):
        headers = {"X-User-ID": "dana"}
        job = {"branch": "a", "job_type": "TISSUE_MASK", "wsi_path": CMU}
        ok = httpx.post(
            f"{gateway.address}/workflows",
            json={"jobs": [{**job, "params": {"tile_size": 1024, "target_mpp": 0.5}}]},
            headers=headers,
        )
        assert ok.status_code == 201, ok.text
        assert ok.json()["jobs"][0]["state"] in ("PENDING", "RUNNING", "SUCCEEDED")
        for params, message in (
            ({"target_mpp": 1e400}, "finite"),
            ({"tile_size": "huge"}, "not a number"),
            ({"colour": "blue"}, "unknown param"),
        ):
            bad = httpx.post(
                f"{gateway.address}/workflows",
                content=f'{{"jobs": [{{"branch": "a", "job_type": "TISSUE_MASK", "wsi_path":'
                f' "{CMU}", "params": {_json(params)}}}]}}',
                headers={**headers, "Content-Type": "application/json"},
            )
            assert bad.status_code == 400, bad.text
            assert bad.json()["code"] == "INVALID_ARGUMENT" and message in bad.json()["message"]


def _json(params: Mapping[str, object]) -> str:
    """JSON as a client writes it (1e400 stays a literal number)."""
    return "{" + ", ".join(f'"{k}": {_literal(v)}' for k, v in params.items()) + "}"


def _literal(value: object) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    return "1e400" if value == float("inf") else repr(value)


def can_mount_tmpfs(where: Path) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], capture_output=True
    )
    return mounted.returncode == 0


def test_a_full_results_disk_fails_the_job_once_and_keeps_the_worker(tmp_path: Path) -> None:
    results = tmp_path / "results"
    if not can_mount_tmpfs(results):
        pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)")
    try:
        with cluster(tmp_path, worker_slots=(1,)) as c:
            wf = create(c, "erin", [spec("cells", params=LONG)])
            job = wait_state(c, "erin", wf.workflow_id, 0, FINAL)
            assert job.state == pb.JOB_STATE_FAILED
            assert job.attempt == 1  # failed once: a job's error, never retried
            assert "No space left on device" in job.error
            assert list(results.rglob("*")) == []  # no .tmp-* nor half a result
            stats = c.stub.GetStats(pb.GetStatsRequest(), metadata=user("erin"))
            assert stats.workers_connected == 1
            again = create(c, "erin", [spec("mask", slide="small.svs")])  # small: it fits
            assert wait_state(c, "erin", again.workflow_id, 0, FINAL).state == (
                pb.JOB_STATE_SUCCEEDED
            )
    finally:
        subprocess.run(["umount", "-l", str(results)], check=False)
