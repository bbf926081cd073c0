"""The scheduler's dispatch parts in-process, against fake worker stubs: links
(probing, capacity, membership), the job runner (a worker lost mid-job, a job
finished while its stream breaks, a cancel) and the proxy (result relay and
its error mapping). What only real processes covered before, in milliseconds."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import cast

import grpc
import pytest

from scheduler_service.dispatcher import Dispatcher
from scheduler_service.policy import SchedulingPolicy, State
from scheduler_service.store import JobRecord, Store
from scheduler_service.validation import JobInput
from scheduler_service.worker_links import Connect
from scheduler_service.worker_proxy import WorkerRefusal, WorkerUnavailable
from tests.unit.fake_workers import FakeJobCall, FakeNetwork, FakeWorker
from wsi_protocol import metadata
from wsi_protocol.worker.v1 import worker_pb2 as wpb

W1, W2 = "10.0.0.1:50052", "10.0.0.2:50052"


def new_store(max_workers: int = 4, max_attempts: int = 3) -> Store:
    ticks = itertools.count(1000)
    ids = (f"job-{n}" for n in itertools.count())
    policy = SchedulingPolicy(max_workers, 3, max_attempts=max_attempts)
    return Store(
        policy, clock=lambda: float(next(ticks)), on_event=lambda *_: None, new_id=lambda: next(ids)
    )


def submit(store: Store, *keys: str) -> list[JobRecord]:
    items = [JobInput(key, key, "TISSUE_MASK", "s.svs", ()) for key in keys]
    wf, _ = store.create_workflow("alice", "wf", items, ["/slides/s.svs"] * len(items))
    return list(wf.jobs)


async def until(check: Callable[[], bool], what: str, within_s: float = 5.0) -> None:
    """Lets the loop run until ``check`` holds (the fakes answer at once)."""
    deadline = asyncio.get_running_loop().time() + within_s
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


@pytest.fixture
async def network() -> FakeNetwork:
    return FakeNetwork()


@asynccontextmanager
async def started(
    store: Store,
    network: FakeNetwork,
    addresses: tuple[str, ...] = (W1,),
    job_silence_s: float = 60.0,
) -> AsyncIterator[Dispatcher]:
    dispatcher = Dispatcher(
        store,
        addresses,
        cast(Connect, network),
        "s" * 20,
        retry_initial=0.01,
        retry_max=0.02,
        job_silence_s=job_silence_s,
    )
    dispatcher.start()
    try:
        yield dispatcher
    finally:
        await dispatcher.close()


async def running_call(worker: FakeWorker, job: JobRecord) -> FakeJobCall:
    """The job's RunJob call on ``worker`` (RUNNING comes with the dispatch, the
    call itself a loop turn or two later)."""
    await until(lambda: any(c.request.job_id == job.job_id for c in worker.calls), "the call")
    return next(call for call in worker.calls if call.request.job_id == job.job_id)


@asynccontextmanager
async def one_job_running(
    network: FakeNetwork, max_attempts: int = 3
) -> AsyncIterator[tuple[Dispatcher, JobRecord, FakeJobCall]]:
    """A dispatcher with one worker (W1) running one job, and the job's stream."""
    store = new_store(max_attempts=max_attempts)
    (job,) = submit(store, "a")
    async with started(store, network) as dispatcher:
        await until(lambda: job.state is State.RUNNING, "dispatch")
        yield dispatcher, job, await running_call(network.workers[W1], job)


# ---- links: probing, capacity, membership -------------------------------------------


async def test_probing_learns_slots_and_reconnects_a_lost_worker(network: FakeNetwork) -> None:
    network.workers[W2] = FakeWorker(slots=3, up=False)
    async with started(new_store(), network, (W1, W2)) as dispatcher:
        links = dispatcher.links
        await until(lambda: links.workers_connected == 1, "the first worker")
        await until(lambda: links.links[1].failed_probes >= 2, "probes of the second")
        assert (links.slots_total, links.free_slots()) == (2, 2)
        assert "UNAVAILABLE" in links.links[1].error
        network.workers[W2].up = True
        await until(lambda: links.workers_connected == 2, "the second worker back")
        assert links.slots_total == 5 and links.links[1].failed_probes == 0
        secret = (metadata.WORKER_SECRET, "s" * 20)
        assert all(secret in seen for seen in network.workers[W1].seen_metadata)


async def test_a_joined_worker_is_used_then_forgotten_when_silent(network: FakeNetwork) -> None:
    store = new_store()
    async with started(store, network, ()) as dispatcher:
        links = dispatcher.links
        (job,) = submit(store, "a")
        links.join(W1, now=10.0)
        assert links.heartbeat(W1, now=12.0) and not links.heartbeat(W2, now=12.0)
        await until(lambda: job.state is State.RUNNING, "the job on the joined worker")
        assert job.worker == W1 and links.slots_busy == 1
        links.forget_silent(now=20.0, silence_s=5.0)
        assert links.links == [] and network.workers[W1].closed is False  # closing, soon
        await until(lambda: network.workers[W1].closed, "its channel closed")
        (await running_call(network.workers[W1], job)).break_with(
            grpc.StatusCode.CANCELLED, "closed"
        )
        await until(lambda: job.state is State.PENDING, "the job requeued")
        assert not links.heartbeat(W1, now=21.0)  # it must join again


# ---- the job runner --------------------------------------------------------------------


async def test_one_worker_under_two_spellings_counts_once(network: FakeNetwork) -> None:
    """Joined as localhost:P and as 127.0.0.1:P, the same worker (its id says
    so) offers its slots once; the other address takes over when the first
    is lost (as when the first spelling stops resolving)."""
    worker = network.workers["localhost:50052"] = FakeWorker(slots=4)
    store = new_store()
    async with started(store, network, ()) as dispatcher:
        links = dispatcher.links
        links.join("localhost:50052", now=0.0)
        await until(lambda: links.workers_connected == 1, "the first spelling")
        network.workers["127.0.0.1:50052"] = worker
        links.join("127.0.0.1:50052", now=0.0)
        await until(lambda: "same worker" in links.links[1].error, "the second spelling's probe")
        assert (links.workers_connected, links.slots_total) == (1, 4)
        assert links.links[1].error == "the same worker as localhost:50052: counted once"
        links.leave("localhost:50052", "gone")
        await until(lambda: links.workers_connected == 1, "the other spelling taking over")
        assert links.slots_total == 4 and links.links[0].address == "127.0.0.1:50052"
        other = FakeWorker(slots=2)  # another worker: counted on its own
        network.workers["10.0.0.9:50052"] = other
        links.join("10.0.0.9:50052", now=0.0)
        await until(lambda: links.workers_connected == 2, "another worker")
        assert links.slots_total == 6


async def test_the_backends_offered_are_known_once_every_connected_worker_says(
    network: FakeNetwork,
) -> None:
    network.workers[W1] = FakeWorker(backends=("classical", "learned"))
    network.workers[W2] = FakeWorker(backends=("classical",), up=False)
    async with started(new_store(), network, (W1, W2)) as dispatcher:
        links = dispatcher.links
        assert links.backends_offered() is None  # none connected yet
        await until(lambda: links.workers_connected == 1, "the first worker")
        assert links.backends_offered() == frozenset({"classical", "learned"})
        network.workers[W2].backends, network.workers[W2].up = (), True  # an older worker
        await until(lambda: links.workers_connected == 2, "the second worker")
        assert links.backends_offered() is None  # one does not say: not known


async def test_a_job_runs_reports_progress_and_succeeds(network: FakeNetwork) -> None:
    store = new_store()
    (job,) = submit(store, "a")
    async with started(store, network) as dispatcher:
        await until(lambda: job.state is State.RUNNING, "dispatch")
        call = await running_call(network.workers[W1], job)
        assert call.request.wsi_path == "s.svs" and call.request.attempt == 1  # root-relative
        call.progress(2, 8)
        await until(lambda: job.tiles_done == 2, "progress")
        call.succeed()
        await until(lambda: job.state is State.SUCCEEDED, "success")
        assert job.result_files == {"summary.json": f"{job.job_id}/summary.json"}
        call.end()
        await until(lambda: dispatcher.links.slots_busy == 0, "the slot back")


@pytest.mark.parametrize(
    "name, path",
    [
        ("evil\r\nSet-Cookie: x", "{job}/evil"),  # a header injected through the name
        ("../../etc/passwd", "{job}/../../etc/passwd"),
        (".hidden", "{job}/.hidden"),
        ("summary.json", "other-job/summary.json"),  # another job's folder
    ],
)
async def test_a_result_a_worker_should_not_give_fails_the_job_cleanly(
    network: FakeNetwork, name: str, path: str
) -> None:
    store = new_store()
    (job,) = submit(store, "a")
    async with started(store, network):
        await until(lambda: job.state is State.RUNNING, "dispatch")
        call = await running_call(network.workers[W1], job)
        call.succeed(files={name: path.format(job=job.job_id)})
        await until(lambda: job.state is State.FAILED, "refused")
        assert "the worker's answer was refused" in job.error and not job.result_files
        call.end()


async def test_a_worker_lost_mid_job_requeues_it_at_the_head(network: FakeNetwork) -> None:
    store = new_store()
    first, second = submit(store, "a", "b")
    async with started(store, network) as dispatcher:
        links = dispatcher.links
        await until(lambda: second.state is State.RUNNING, "both running")
        call = await running_call(network.workers[W1], first)
        call.progress(3, 8)
        await until(lambda: first.tiles_done == 3, "progress")
        network.workers[W1].up = False
        call.break_with(grpc.StatusCode.UNAVAILABLE, "socket closed")
        await until(lambda: first.state is State.PENDING, "the job requeued")
        assert not links.links[0].connected and "UNAVAILABLE" in links.links[0].error
        assert links.links[0].busy == 1  # the other job's stream is still open
        network.workers[W1].up = True
        await until(lambda: first.state is State.RUNNING, "the retry")
        assert first.attempt == 2 and len(network.workers[W1].calls) == 3


async def test_a_job_whose_worker_goes_silent_is_taken_back_and_retried(
    network: FakeNetwork,
) -> None:
    """A worker that accepts a job and then says nothing, not even a
    heartbeat, cannot hold it: after the silence bound the call is cancelled
    and the job retried; heartbeats alone keep a job running."""
    store = new_store()
    (job,) = submit(store, "a")
    async with started(store, network, job_silence_s=1.0) as dispatcher:
        await until(lambda: job.state is State.RUNNING, "dispatch")
        silent = await running_call(network.workers[W1], job)
        await until(lambda: job.attempt == 2, "the retry", within_s=3.0)
        assert silent.cancelled and job.state is State.RUNNING
        again = network.workers[W1].calls[-1]
        for _ in range(20):  # 2 s of heartbeats, twice the bound
            again.send(wpb.JobUpdate(heartbeat=wpb.Heartbeat()))
            await asyncio.sleep(0.1)
        assert job.attempt == 2 and not again.cancelled
        again.succeed()
        again.end()
        await until(lambda: job.state is State.SUCCEEDED, "the retry's outcome")
        await until(lambda: dispatcher.links.slots_busy == 0, "the slot given back")


async def test_a_retry_goes_to_a_worker_that_has_not_had_the_job(network: FakeNetwork) -> None:
    """The freest worker first, but not the one that just let the job down
    while another has a free slot; with no other, the same one again."""
    network.workers[W1] = FakeWorker(slots=4)
    network.workers[W2] = FakeWorker(slots=1)
    store = new_store()
    (job,) = submit(store, "a")
    async with started(store, network, (W1, W2), job_silence_s=0.5) as dispatcher:
        await until(lambda: dispatcher.links.workers_connected == 2, "both workers")
        await until(lambda: job.state is State.RUNNING, "dispatch")
        await running_call(network.workers[W1], job)  # the freest; then silent
        await until(lambda: job.attempt == 2, "the retry", within_s=3.0)
        assert job.attempt_workers == [W1, W2]
        network.workers[W2].up = False
        dispatcher.links.mark_lost(dispatcher.links.links[1], "gone")
        await until(lambda: job.attempt == 3, "the next retry", within_s=3.0)
        assert job.attempt_workers == [W1, W2, W1]  # no other left: the same one again


async def test_a_job_finished_before_its_stream_breaks_stays_succeeded(
    network: FakeNetwork,
) -> None:
    async with one_job_running(network) as (dispatcher, job, call):
        call.succeed()
        call.break_with(grpc.StatusCode.UNAVAILABLE, "socket closed")
        await until(lambda: dispatcher.links.slots_busy == 0, "the stream's end")
        await asyncio.sleep(0.05)  # time for a wrongly lost worker to be probed again
        assert job.state is State.SUCCEEDED
        # The outcome came: the worker was not lost (never probed again).
        assert dispatcher.links.links[0].connected and network.workers[W1].probes == 1


async def test_a_stream_that_ends_without_an_outcome_loses_the_job(network: FakeNetwork) -> None:
    async with one_job_running(network, max_attempts=1) as (_, job, call):
        call.end()
        await until(lambda: job.state is State.FAILED, "the job failed after its last try")
        assert "without a result" in job.error


async def test_a_workers_own_error_fails_the_job_and_keeps_the_worker(
    network: FakeNetwork,
) -> None:
    async with one_job_running(network) as (dispatcher, job, call):
        call.break_with(grpc.StatusCode.UNKNOWN, "bug")
        await until(lambda: job.state is State.FAILED, "failure")
        assert job.error == "worker error (UNKNOWN): bug"
        assert dispatcher.links.links[0].connected


async def test_cancelling_a_running_job_cancels_its_stream(network: FakeNetwork) -> None:
    async with one_job_running(network) as (dispatcher, job, call):
        dispatcher.runner.store.cancel_job("alice", job.job_id)
        dispatcher.runner.stop_job(job.job_id)
        await until(lambda: job.state is State.CANCELLED, "the cancel")
        assert call.cancelled
        assert dispatcher.links.links[0].connected


# ---- the proxy: relay and error mapping -----------------------------------------------


async def test_results_are_relayed_from_the_worker_that_holds_them(network: FakeNetwork) -> None:
    network.workers[W1] = FakeWorker(results={"j/summary.json": b'{"nuclei": 12}'})
    async with started(new_store(), network) as dispatcher:
        proxy = dispatcher.proxy
        await until(lambda: dispatcher.links.workers_connected == 1, "the worker")
        chunks = [chunk async for chunk in proxy.read_result(W1, "j", "summary.json")]
        assert b"".join(data for data, _ in chunks) == b'{"nuclei": 12}'
        assert [size for _, size in chunks][:2] == [14, 0]
        with pytest.raises(WorkerRefusal, match=r"'cells\.geojson' of job 'j': no such result"):
            [chunk async for chunk in proxy.read_result(W1, "j", "cells.geojson")]
        with pytest.raises(WorkerUnavailable, match="not connected"):
            [chunk async for chunk in proxy.read_result(W2, "j", "summary.json")]
        network.workers[W1].answer = grpc.StatusCode.UNAVAILABLE
        with pytest.raises(WorkerUnavailable, match="not connected now"):
            [chunk async for chunk in proxy.read_result(W1, "j", "summary.json")]
        assert await proxy.delete_results(W1, "j") is False
        network.workers[W1].answer = None
        assert await proxy.delete_results(W1, "j") is True
        assert await proxy.delete_results(W2, "j") is False


RELAYED = r"of job '[^']+': worker says "  # what was asked, then the worker's words


@pytest.mark.parametrize(
    ("answer", "error", "message"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, WorkerRefusal, RELAYED + "INVALID_ARGUMENT"),
        (grpc.StatusCode.NOT_FOUND, WorkerRefusal, RELAYED + "NOT_FOUND"),
        (grpc.StatusCode.PERMISSION_DENIED, WorkerUnavailable, "did not answer"),
        (grpc.StatusCode.FAILED_PRECONDITION, WorkerUnavailable, "did not answer"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, WorkerUnavailable, "did not answer"),
    ],
)
async def test_viewer_answers_map_to_the_schedulers_errors(
    network: FakeNetwork, answer: grpc.StatusCode, error: type[Exception], message: str
) -> None:
    async with one_job_running(network) as (dispatcher, job, _):
        network.workers[W1].answer = answer
        with pytest.raises(error, match=message):
            await dispatcher.proxy.slide_tile(job, 3, 1, 2)
        with pytest.raises(error, match=message):
            await dispatcher.proxy.cell_density(W1, job.job_id, 256)
        if error is WorkerRefusal:  # relayed with the worker's own code, untranslated
            with pytest.raises(WorkerRefusal) as relayed:
                await dispatcher.proxy.deep_zoom(job)
            assert relayed.value.code is answer


async def test_the_viewer_reads_the_slide_on_any_connected_worker(network: FakeNetwork) -> None:
    store = new_store()
    (job,) = submit(store, "a")
    async with started(store, network, (W1, W2)) as dispatcher:
        await until(lambda: job.state is State.RUNNING, "dispatch")
        ran_on = job.worker
        other = W2 if ran_on == W1 else W1
        network.workers[ran_on].up = False
        dispatcher.links.mark_lost(next(w for w in dispatcher.links.links if w.address == ran_on))
        info = await dispatcher.proxy.deep_zoom(job)
        assert (info.width, info.height) == (100, 50)
        network.workers[other].up = False
        dispatcher.links.mark_lost(next(w for w in dispatcher.links.links if w.address == other))
        with pytest.raises(WorkerUnavailable, match="no worker is connected"):
            await dispatcher.proxy.deep_zoom(job)
