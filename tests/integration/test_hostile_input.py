"""Hostile and careless input, as one table: every case gets the status code
of the public API contract and a message that says what is wrong, while another
user's workflow runs to the end untouched."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from PIL import Image

from tests.harness import SLIDES, Cluster, cluster, user
from tests.integration.support import LONG, Watcher, create, follow, get, job_transitions, spec
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb

Code = grpc.StatusCode


def slide_root(tmp_path: Path) -> Path:
    """A slide root holding every kind of trap a path can be."""
    root = tmp_path / "slides"
    root.mkdir()
    (root / "escape.svs").symlink_to("/etc/passwd")
    (root / "zero.svs").symlink_to("/dev/zero")
    (root / "folder.svs").mkdir()
    os.mkfifo(root / "pipe.svs")
    (root / "notes.svs").write_text("these are not pixels\n" * 50)
    Image.new("I;16", (64, 64)).save(root / "labels.png")  # a label map, not a stain
    (root / "inside.svs").symlink_to(SLIDES / "small.svs")  # a link that stays inside: fine
    return root


def cases(c: Cluster, theirs: pb.Workflow) -> list[tuple[str, Callable[[], object], Code, str]]:
    s = c.stub
    me = user("mallory")

    def make(
        *jobs: pb.JobSpec, who: tuple[tuple[str, str]] = me, **kw: str
    ) -> Callable[[], object]:
        return lambda: s.CreateWorkflow(pb.CreateWorkflowRequest(jobs=jobs, **kw), metadata=who)

    wid, jid = theirs.workflow_id, theirs.jobs[0].job_id
    big = [spec(str(i), branch=f"b{i % 50}", slide="small.svs") for i in range(10_000)]
    return [
        (
            "no user id",
            lambda: s.GetStats(pb.GetStatsRequest()),
            Code.UNAUTHENTICATED,
            "x-user-id (HTTP header X-User-ID) is required",
        ),
        (
            "malformed user id",
            make(spec("a"), who=user("mal lory")),
            Code.UNAUTHENTICATED,
            "1 to 64 characters",
        ),
        (
            "two different user ids",  # which one a proxy checked is unknowable
            make(spec("a"), who=(("x-user-id", "mallory"), ("x-user-id", "alice"))),  # type: ignore[arg-type]
            Code.UNAUTHENTICATED,
            "metadata x-user-id is given 2 times with different values",
        ),
        (
            "user id too long",
            make(spec("a"), who=user("m" * 65)),
            Code.UNAUTHENTICATED,
            "1 to 64 characters",
        ),
        (
            "their GetWorkflow",
            lambda: s.GetWorkflow(pb.GetWorkflowRequest(workflow_id=wid), metadata=me),
            Code.NOT_FOUND,
            "not found",
        ),
        (
            "their CancelWorkflow",
            lambda: s.CancelWorkflow(pb.CancelWorkflowRequest(workflow_id=wid), metadata=me),
            Code.NOT_FOUND,
            "not found",
        ),
        (
            "their GetJob",
            lambda: s.GetJob(pb.GetJobRequest(job_id=jid), metadata=me),
            Code.NOT_FOUND,
            "not found",
        ),
        (
            "their CancelJob",
            lambda: s.CancelJob(pb.CancelJobRequest(job_id=jid), metadata=me),
            Code.NOT_FOUND,
            "not found",
        ),
        (
            "their WatchWorkflow",
            lambda: list(s.WatchWorkflow(pb.WatchWorkflowRequest(workflow_id=wid), metadata=me)),
            Code.NOT_FOUND,
            "not found",
        ),
        (
            "an id of 10,000 characters",
            lambda: s.GetJob(pb.GetJobRequest(job_id="j" * 10_000), metadata=me),
            Code.NOT_FOUND,
            "not found",
        ),
        (
            "../ escape",
            make(spec("a", slide="../../../../etc/passwd")),
            Code.PERMISSION_DENIED,
            "outside the slide roots",
        ),
        (
            "absolute path outside",
            make(spec("a", slide="/etc/passwd")),
            Code.PERMISSION_DENIED,
            "outside the slide roots",
        ),
        (
            "symlink that escapes",
            make(spec("a", slide="escape.svs")),
            Code.PERMISSION_DENIED,
            "outside the slide roots",
        ),
        (
            "/dev/zero",
            make(spec("a", slide="/dev/zero")),
            Code.PERMISSION_DENIED,
            "outside the slide roots",
        ),
        (
            "symlink to /dev/zero",
            make(spec("a", slide="zero.svs")),
            Code.PERMISSION_DENIED,
            "outside the slide roots",
        ),
        (
            "a directory",
            make(spec("a", slide="folder.svs")),
            Code.INVALID_ARGUMENT,
            "is not a regular file",
        ),
        (
            "a FIFO",
            make(spec("a", slide="pipe.svs")),
            Code.INVALID_ARGUMENT,
            "is not a regular file",
        ),
        (
            "a file that is no slide",
            make(spec("a", slide="notes.svs")),
            Code.INVALID_ARGUMENT,
            "is not a slide format OpenSlide reads",
        ),
        (
            "a label map as a slide",
            make(spec("a", slide="labels.png")),
            Code.INVALID_ARGUMENT,
            "is a PNG image of mode I;16 (not 8-bit colour",
        ),
        (
            "a missing slide",
            make(spec("a", slide="nothing-here.svs")),
            Code.INVALID_ARGUMENT,
            "not found under the slide roots",
        ),
        (
            "NUL in a path",
            make(spec("a", slide="small.svs\x00.txt")),
            Code.INVALID_ARGUMENT,
            "NUL byte",
        ),
        (
            "unknown job type",
            make(spec("a", job_type=7)),
            Code.INVALID_ARGUMENT,
            "unknown job type",
        ),
        ("empty workflow", make(), Code.INVALID_ARGUMENT, "at least one job"),
        ("10,000-job workflow", make(*big), Code.RESOURCE_EXHAUSTED, "at most 1000 jobs"),
        (
            "dependency cycle",
            make(spec("a", deps=("b",)), spec("b", branch="y", deps=("a",))),
            Code.INVALID_ARGUMENT,
            "dependency cycle",
        ),
        (
            "unknown dependency",
            make(spec("a", deps=("ghost",))),
            Code.INVALID_ARGUMENT,
            "unknown job key 'ghost'",
        ),
        ("oversize name", make(spec("a"), name="n" * 300), Code.INVALID_ARGUMENT, "at most 256"),
        (
            "oversize request id",
            make(spec("a"), request_id="r" * 300),
            Code.INVALID_ARGUMENT,
            "request_id",
        ),
        ("oversize key", make(spec("k" * 200)), Code.INVALID_ARGUMENT, "at most 128 characters"),
        (
            "oversize branch",
            make(spec("a", branch="b" * 200)),
            Code.INVALID_ARGUMENT,
            "at most 128 characters",
        ),
        (
            "oversize path",
            make(spec("a", slide="p" * 5000)),
            Code.INVALID_ARGUMENT,
            "longer than 4096",
        ),
        (
            "oversize param",
            make(spec("a", params={"x": "v" * 300})),
            Code.INVALID_ARGUMENT,
            "param 'x' is too long",
        ),
        (
            "a region that crosses itself",
            make(spec("a", params={"region": "0,0 100,100 100,0 0,200"})),
            Code.INVALID_ARGUMENT,
            "param region: polygon is not simple",
        ),
        (
            "an empty box",
            make(spec("a", params={"region": "500,500,100,900"})),
            Code.INVALID_ARGUMENT,
            "box '500,500,100,900' is empty",
        ),
        (
            "a 5 MB request",
            make(spec("a"), name="n" * 5_000_000),
            Code.RESOURCE_EXHAUSTED,
            "larger than max",
        ),
        (
            "bad page token",
            lambda: s.ListWorkflows(pb.ListWorkflowsRequest(page_token="not-a-token"), metadata=me),
            Code.INVALID_ARGUMENT,
            "not one this server issued",
        ),
    ]


def test_bad_input_gets_its_status_and_a_well_behaved_user_is_untouched(tmp_path: Path) -> None:
    root = slide_root(tmp_path)
    with cluster(
        tmp_path, worker_slots=(2,), max_workers=2, slide_roots=f"{root}:{SLIDES}", rate_limit=0
    ) as c:
        good = create(c, "good-user", [spec("seg", params=LONG), spec("mask", branch="other")])
        watcher = Watcher(c, "good-user", good.workflow_id, after=good.sequence)
        theirs = create(c, "victim", [spec("v", params=LONG)])
        answers = []  # every message and result a user got, scanned for server paths below
        for name, call, code, fragment in cases(c, theirs):
            with pytest.raises(grpc.RpcError) as caught:
                call()
            error: grpc.Call = caught.value  # type: ignore[assignment]
            assert error.code() == code, (name, error.details())
            assert fragment in (error.details() or ""), (name, error.details())
            answers.append(error.details() or "")

        # Broken slides pass the header check and fail in their job, with OpenSlide's words;
        # a symlink that stays inside a root is fine.
        broken = create(
            c,
            "mallory",
            [
                spec("unreadable", branch="u", slide="unreadable.svs"),
                spec("unopenable", branch="o", slide="unopenable.tiff"),
                spec("linked", branch="l", slide="inside.svs"),
            ],
        )
        follow(c, "mallory", broken)
        final = {j.key: j for j in get(c, "mallory", broken.workflow_id).jobs}
        assert final["unreadable"].state == pb.JOB_STATE_FAILED
        assert "Bogus marker length" in final["unreadable"].error
        assert final["unopenable"].state == pb.JOB_STATE_FAILED
        assert "Unsupported TIFF compression: 52479" in final["unopenable"].error
        assert final["linked"].state == pb.JOB_STATE_SUCCEEDED
        answers += [str(job) for job in final.values()]

        transitions = job_transitions(watcher.join())
        for key in ("seg", "mask"):
            assert [state for k, state in transitions if k == key] == ["RUNNING", "SUCCEEDED"]
        assert get(c, "good-user", good.workflow_id).state == pb.WORKFLOW_STATE_SUCCEEDED
        follow(c, "victim", theirs)  # the target of the cross-user calls is untouched too
        victim = get(c, "victim", theirs.workflow_id).jobs[0]
        assert victim.state == pb.JOB_STATE_SUCCEEDED and victim.attempt == 1
        answers += [str(get(c, "good-user", good.workflow_id)), str(victim)]
        assert '"cells.geojson"' in answers[-1] and "summary" in answers[-1]

    # Nothing about the server's disk in any of it: no slide root, no results folder.
    server_paths = {
        str(tmp_path),
        os.path.realpath(tmp_path),
        str(SLIDES),
        os.path.realpath(SLIDES),
    }
    for answer in answers:
        for path in server_paths:
            assert path not in answer, (path, answer[:500])
