"""The worker's gRPC face in-process: RunJob's life cycle around a job the
test plays (progress relayed, outcomes, the caller's cancel, refused
requests), result paths and the viewer's error statuses, with no pool process,
slide or socket."""

from __future__ import annotations

import asyncio
import errno
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from prometheus_client import CollectorRegistry

from worker_service.errors import JobCancelled, SlideError
from worker_service.pipeline.context import JobContext
from worker_service.pipeline.job import JobOutcome, JobSpec
from worker_service.pipeline.tile_pool import TilePool
from worker_service.server import job_run
from worker_service.server.metrics import WorkerMetrics
from worker_service.server.servicer import WorkerServicer, _viewer_status
from worker_service.viewer.cell_queries import CellQueries, Selection, TooManyNuclei
from worker_service.viewer.slide_tiles import NoSuchTile
from wsi_protocol.scheduler.v1 import scheduler_pb2 as spb
from wsi_protocol.worker.v1 import worker_pb2 as pb
from wsi_runtime.boxes import BoxError
from wsi_runtime.slide_paths import SlidePathError


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code, self.details = code, details


class FakeContext:
    async def abort(self, code: grpc.StatusCode, details: str = "", **_: object) -> None:
        raise Aborted(code, details)


Play = Callable[[JobSpec, JobContext, int], Awaitable[JobOutcome]]


class Worker:
    """A servicer whose jobs are played by the test."""

    def __init__(self, tmp_path: Path, play: Play) -> None:
        self.roots = tmp_path / "slides"
        self.roots.mkdir()
        (self.roots / "s.svs").write_bytes(b"a slide")
        self.results = tmp_path / "results"
        self.results.mkdir()
        self.registry = CollectorRegistry()
        self.pool = TilePool(1)  # its processes start only when used: never here
        self.servicer = WorkerServicer(
            2,
            self.results,
            [self.roots],
            self.pool,
            progress_interval=0.0,
            metrics=WorkerMetrics(self.registry),
            run=play,
        )

    def ended(self, outcome: str) -> float:
        value = self.registry.get_sample_value(
            "wsi_worker_jobs_total", {"job_type": "CELL_SEGMENTATION", "outcome": outcome}
        )
        return value or 0.0

    def stream(self, job_id: str, slide: str = "s.svs") -> AsyncIterator[pb.JobUpdate]:
        request = pb.RunJobRequest(
            job_id=job_id,
            job_type=spb.CELL_SEGMENTATION,
            wsi_path=slide,
            attempt=1,
        )
        return self.servicer.RunJob(request, cast(Any, FakeContext()))

    async def updates(self, job_id: str, slide: str = "s.svs") -> list[pb.JobUpdate]:
        return [update async for update in self.stream(job_id, slide)]


@pytest.fixture
def job_id() -> str:
    return str(uuid.uuid4())


async def test_progress_is_relayed_and_the_outcome_ends_the_stream(
    tmp_path: Path, job_id: str
) -> None:
    async def play(spec: JobSpec, ctx: JobContext, token: int) -> JobOutcome:
        assert spec.slide_name == "s.svs" and Path(spec.slide_path).is_absolute()
        for done in range(4):
            ctx.report(done, 3)
            await asyncio.sleep(0)
        folder = tmp_path / "results" / spec.job_id
        return JobOutcome({"summary.json": str(folder / "summary.json")}, {"nuclei": 5})

    worker = Worker(tmp_path, play)
    updates = await worker.updates(job_id)
    progress = [(u.progress.tiles_done, u.progress.tiles_total) for u in updates[:-1]]
    assert progress == [(0, 3), (1, 3), (2, 3), (3, 3)]
    result = updates[-1].result
    assert result.files == {"summary.json": f"{job_id}/summary.json"}  # no server path
    assert result.summary == '{"nuclei": 5}'
    assert worker.servicer.running == 0 and worker.ended("succeeded") == 1


@pytest.mark.parametrize("fails", [False, True])
async def test_the_end_is_counted_before_the_last_update_leaves(
    tmp_path: Path, job_id: str, fails: bool
) -> None:
    """The scheduler acts on the last update at once: this worker's metrics
    must already show the job ended then, and count it once."""

    async def play(spec: JobSpec, ctx: JobContext, token: int) -> JobOutcome:
        if fails:
            raise SlideError("cannot open slide 's.svs': bad tile")
        return JobOutcome({}, {"nuclei": 0})

    worker = Worker(tmp_path, play)
    outcome = "failed" if fails else "succeeded"
    stream = worker.stream(job_id)
    last = await anext(stream)
    assert last.WhichOneof("update") == ("error" if fails else "result")
    assert worker.servicer.running == 0 and worker.ended(outcome) == 1  # the stream still open
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert worker.servicer.running == 0 and worker.ended(outcome) == 1


async def test_a_quiet_job_sends_heartbeats(
    tmp_path: Path, job_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long phase with no progress to report still says the job is alive,
    so the scheduler's silence bound takes back only a worker gone quiet."""
    monkeypatch.setattr(job_run, "HEARTBEAT_S", 0.05)

    async def play(spec: JobSpec, ctx: JobContext, token: int) -> JobOutcome:
        await asyncio.sleep(0.4)
        ctx.report(1, 1)
        return JobOutcome({}, {"nuclei": 0})

    worker = Worker(tmp_path, play)
    updates = await worker.updates(job_id)
    kinds = [u.WhichOneof("update") for u in updates]
    assert kinds[-2:] == ["progress", "result"]
    assert kinds.count("heartbeat") >= 3 and set(kinds[:-2]) == {"heartbeat"}, kinds


@pytest.mark.parametrize(
    ("raised", "code", "message"),
    [
        (SlideError("cannot open slide 's.svs': bad tile"), "INVALID_ARGUMENT", "bad tile"),
        (OSError(errno.ENOSPC, "No space left on device", "/srv/results/x"), "INTERNAL", "space"),
        (ValueError("a bug"), "INTERNAL", "internal error in the worker (ValueError)"),
    ],
)
async def test_a_jobs_own_trouble_fails_it_and_leaves_no_files(
    tmp_path: Path, job_id: str, raised: Exception, code: str, message: str
) -> None:
    async def play(spec: JobSpec, ctx: JobContext, token: int) -> JobOutcome:
        (tmp_path / "results" / spec.job_id).mkdir()
        (tmp_path / "results" / spec.job_id / "cells.geojson.tmp").write_text("{")
        raise raised

    worker = Worker(tmp_path, play)
    (update,) = await worker.updates(job_id)
    assert update.error.code == code and message in update.error.message
    assert "/srv" not in update.error.message
    assert not (tmp_path / "results" / job_id).exists()
    assert worker.servicer.running == 0 and worker.ended("failed") == 1


async def test_the_callers_cancel_stops_the_job(tmp_path: Path, job_id: str) -> None:
    seen: dict[str, Any] = {}
    stopped = threading.Event()

    def tiles(ctx: JobContext) -> JobOutcome:
        """As the pipeline does in its thread: a tile loop checking for a cancel."""
        ctx.report(1, 10)
        while not ctx.cancelled():
            time.sleep(0.001)
        stopped.set()
        raise JobCancelled()

    async def play(spec: JobSpec, ctx: JobContext, token: int) -> JobOutcome:
        seen["token"] = token
        return await asyncio.to_thread(tiles, ctx)

    worker = Worker(tmp_path, play)
    request = pb.RunJobRequest(job_id=job_id, job_type=spb.CELL_SEGMENTATION, wsi_path="s.svs")
    stream = cast(
        AsyncGenerator[pb.JobUpdate, None],
        worker.servicer.RunJob(request, cast(Any, FakeContext())),
    )
    first = await anext(stream)
    assert first.progress.tiles_done == 1 and worker.servicer.running == 1
    await stream.aclose()  # the scheduler cancelled the call, or the stream broke
    assert await asyncio.to_thread(stopped.wait, 5), "the job's tiles did not stop"
    board = worker.pool.cancel_board.array
    assert board[seen["token"] % len(board)] == seen["token"]  # a pool-run job sees it too
    assert worker.servicer.running == 0 and worker.ended("cancelled") == 1


async def test_requests_it_must_not_run_are_refused(tmp_path: Path, job_id: str) -> None:
    async def play(spec: JobSpec, ctx: JobContext, token: int) -> JobOutcome:
        raise AssertionError("must not run")

    worker = Worker(tmp_path, play)
    with pytest.raises(Aborted) as refused:
        await worker.updates("../../etc")
    assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT
    (outside,) = await worker.updates(job_id, slide="/etc/passwd")
    assert outside.error.code == "PERMISSION_DENIED"
    assert outside.error.message == "slide 'passwd' is outside the slide roots on this worker"
    (missing,) = await worker.updates(job_id, slide="nope.svs")
    assert missing.error.code == "INVALID_ARGUMENT"


async def test_result_files_are_served_by_job_id_and_plain_name_only(
    tmp_path: Path, job_id: str
) -> None:
    async def play(spec: JobSpec, ctx: JobContext, token: int) -> JobOutcome:
        raise AssertionError("no job here")

    worker = Worker(tmp_path, play)
    (tmp_path / "results" / job_id).mkdir()
    (tmp_path / "results" / job_id / "summary.json").write_bytes(b"{}")
    ctx = cast(Any, FakeContext())

    async def read(job: str, name: str) -> bytes:
        request = pb.ReadResultRequest(job_id=job, name=name)
        return b"".join([c.data async for c in worker.servicer.ReadResult(request, ctx)])

    assert await read(job_id, "summary.json") == b"{}"
    # A job folder that is a link out of the results root (to a folder holding a file).
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "summary.json").write_bytes(b"{}")
    linked = str(uuid.uuid4())
    (tmp_path / "results" / linked).symlink_to(outside)
    for job, name in (
        (job_id, "../x"),
        (job_id, "a/b"),
        (job_id, "nope"),
        ("../r", "s"),
        (job_id, "summary.json\x00"),
        (job_id, "a\x00b"),
        (linked, "summary.json"),
    ):
        with pytest.raises(Aborted) as refused:
            await read(job, name)
        assert refused.value.code is grpc.StatusCode.NOT_FOUND, (job, name)


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (BoxError("bbox must be x0,y0,x1,y1"), grpc.StatusCode.INVALID_ARGUMENT, "bbox"),
        (TooManyNuclei("over 50,000"), grpc.StatusCode.INVALID_ARGUMENT, "50,000"),
        (NoSuchTile("no level 40"), grpc.StatusCode.NOT_FOUND, "no level 40"),
        (SlidePathError("outside", permission=True), grpc.StatusCode.NOT_FOUND, "not readable"),
        (SlidePathError("missing"), grpc.StatusCode.NOT_FOUND, "not readable on its worker"),
        (SlideError("cannot open"), grpc.StatusCode.NOT_FOUND, "cannot open"),
        (FileNotFoundError("/srv/r/x"), grpc.StatusCode.NOT_FOUND, "gone from its worker"),
    ],
)
def test_viewer_errors_become_public_statuses_once(
    error: Exception, code: grpc.StatusCode, message: str
) -> None:
    status = _viewer_status(error)
    assert status is not None and status[0] is code and message in status[1]
    assert "/srv" not in status[1]


def test_anything_else_is_not_a_viewer_answer() -> None:
    assert _viewer_status(RuntimeError("a bug")) is None


async def test_a_box_s_nuclei_stream_in_bounded_reads_as_one_collection(
    tmp_path: Path, job_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read a few nuclei at a time and sent in chunks, the answer is the one
    collection the whole selection makes, boundaries and commas included."""
    from tests.unit.test_cell_index import _nuclei, _write, features
    from worker_service.analysis import cell_index

    async def play(spec: JobSpec, ctx: JobContext, token: int) -> JobOutcome:
        raise AssertionError("no job here")

    worker = Worker(tmp_path, play)
    folder = tmp_path / "results" / job_id
    folder.mkdir()
    cells = folder / "cells.geojson"
    with (folder / cell_index.INDEX_NAME).open("wb") as handle:
        cell_index.save(_write(cells, _nuclei(500, 3)), handle)
    box = (200.0, 300.0, 2500.0, 2600.0)
    whole = features(CellQueries(), cells, box)
    assert len(whole) > 200
    reads: list[int] = []
    original = CellQueries.read

    def counted(self: CellQueries, selection: Selection, start: int, stop: int) -> list[bytes]:
        found = original(self, selection, start, stop)
        reads.append(len(found))
        return found

    monkeypatch.setattr("worker_service.server.servicer.NUCLEI_PER_READ", 37)
    monkeypatch.setattr("worker_service.server.servicer.RESULT_CHUNK_BYTES", 4096)
    monkeypatch.setattr(CellQueries, "read", counted)
    request = pb.QueryCellsRequest(job_id=job_id, x0=box[0], y0=box[1], x1=box[2], y1=box[3])
    ctx = cast(Any, FakeContext())
    chunks = [c.data async for c in worker.servicer.QueryCells(request, ctx)]
    assert len(chunks) > 10 and max(map(len, chunks)) < 4096 + 2000
    assert max(reads) <= 37 and sum(reads) == len(whole)
    start = b'{"type":"FeatureCollection","features":['
    assert b"".join(chunks) == start + b",".join(whole) + b"]}"
    empty = pb.QueryCellsRequest(job_id=job_id, x0=-90, y0=-90, x1=-80, y1=-80)
    assert [c.data async for c in worker.servicer.QueryCells(empty, ctx)] == [start + b"]}"]
