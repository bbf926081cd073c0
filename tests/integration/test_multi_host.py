"""Workers on other hosts: two network namespaces made by the test (each
joined to this one by a veth pair, nothing else reachable), a worker in each
with its own results folder and no folder shared with anyone. The scheduler
and the gateway stay here. Workers join by themselves, a late one takes
waiting jobs, every result downloads byte-identical through the gateway and
``wsi results -d``, a worker killed mid-job has its job retried on the other,
and its finished results answer 503 until it is back."""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest

from tests.harness import CMU, SLIDES, Service, start_gateway, start_scheduler, start_worker, user
from tests.integration.support import LONG, spec
from tests.timing import wait_for
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb
from wsi_protocol.scheduler.v1 import scheduler_pb2_grpc as pb_grpc

WSI = Path(sys.executable).parent / "wsi"
WORKER_PORT = 50052  # the same in each namespace: each is a host of its own
WHO = user("lab")


def sh(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=30)


@dataclass
class Host:
    namespace: str
    address: str  # the namespace's side of its veth
    gateway: str  # this host's side

    @property
    def prefix(self) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.namespace)


@pytest.fixture(scope="module")
def hosts() -> Iterator[tuple[Host, Host]]:
    tag = f"{random.randrange(16**4):04x}"
    net = random.randrange(100, 250)
    made: list[Host] = []
    try:
        for index in (1, 2):
            host = Host(f"wsi-{tag}-{index}", f"10.{net}.{index}.2", f"10.{net}.{index}.1")
            outer, inner = f"wv{tag}{index}o", f"wv{tag}{index}i"
            sh("ip", "netns", "add", host.namespace)
            made.append(host)
            sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
            sh("ip", "link", "set", inner, "netns", host.namespace)
            sh("ip", "addr", "add", f"{host.gateway}/24", "dev", outer)
            sh("ip", "link", "set", outer, "up")
            inside = host.prefix
            sh(*inside, "ip", "addr", "add", f"{host.address}/24", "dev", inner)
            sh(*inside, "ip", "link", "set", inner, "up")
            sh(*inside, "ip", "link", "set", "lo", "up")
            sh(*inside, "ip", "route", "add", "default", "via", host.gateway)
    except (subprocess.CalledProcessError, FileNotFoundError, PermissionError) as exc:
        for host in made:
            subprocess.run(["ip", "netns", "del", host.namespace], capture_output=True)
        detail = (
            exc.stderr.decode().strip() if isinstance(exc, subprocess.CalledProcessError) else exc
        )
        pytest.skip(f"this machine cannot make network namespaces (ip netns): {detail}")
    try:
        yield made[0], made[1]
    finally:
        for host in made:  # their veth pairs go with them
            subprocess.run(["ip", "netns", "del", host.namespace], capture_output=True)


def start_remote_worker(workdir: Path, host: Host, scheduler: Service, name: str) -> Service:
    """Its own results folder, shared with nobody, and its own copy of the
    slides at a path of its own (hosts mount their slide roots where they like)."""
    slides = workdir / name / "slides"
    if not slides.is_dir():
        slides.mkdir(parents=True)
        shutil.copy(SLIDES / CMU, slides / CMU)
    return start_worker(
        workdir / name,
        name,
        2,
        slide_roots=str(slides),
        prefix=host.prefix,
        host=host.address,
        worker_port=str(WORKER_PORT),
        scheduler=scheduler.address,
        processes="1",
        metrics_port="-1",
    )


def connected(stub: pb_grpc.SchedulerStub) -> set[str]:
    stats = stub.GetStats(pb.GetStatsRequest(), metadata=WHO)
    return {w.address for w in stats.workers if w.connected}


def workflow(stub: pb_grpc.SchedulerStub, workflow_id: str) -> pb.Workflow:
    got: pb.Workflow = stub.GetWorkflow(
        pb.GetWorkflowRequest(workflow_id=workflow_id), metadata=WHO
    )
    return got


def download(gateway: Service, job: pb.Job, name: str) -> httpx.Response:
    return httpx.get(
        f"{gateway.address}/jobs/{job.job_id}/results/{name}",
        headers={"X-User-ID": "lab"},
        timeout=60,
    )


def test_workers_on_two_hosts(hosts: tuple[Host, Host], tmp_path: Path) -> None:
    one, two = hosts
    with ExitStack() as stack:
        # The scheduler listens on this host's side of the first veth; the second
        # namespace reaches it through its own veth (it is a local address here).
        scheduler = start_scheduler(
            tmp_path,
            [],
            host=one.gateway,
            heartbeat_interval="0.5",
            max_workers=4,
            operators="lab",  # WHO: sees the workers' addresses
        )
        stack.callback(scheduler.stop)
        gateway = start_gateway(tmp_path, scheduler)
        stack.callback(gateway.stop)
        channel = stack.enter_context(grpc.insecure_channel(scheduler.address))
        stub = pb_grpc.SchedulerStub(channel)
        workers = {"w1": start_remote_worker(tmp_path, one, scheduler, "w1")}
        stack.callback(lambda: [w.stop() for w in workers.values()])
        address = {"w1": f"{one.address}:{WORKER_PORT}", "w2": f"{two.address}:{WORKER_PORT}"}
        wait_for(lambda: connected(stub) == {address["w1"]}, 30, "the first worker to join")

        # Six jobs for two slots: four wait, and the worker that joins now takes some.
        jobs = [spec(f"j{i}", branch=f"b{i}", params=LONG) for i in range(6)]
        made = stub.CreateWorkflow(pb.CreateWorkflowRequest(jobs=jobs), metadata=WHO)
        workers["w2"] = start_remote_worker(tmp_path, two, scheduler, "w2")
        wait_for(lambda: len(connected(stub)) == 2, 30, "the second worker to join")
        done = wait_for(
            lambda: (
                (w := workflow(stub, made.workflow_id)).state == pb.WORKFLOW_STATE_SUCCEEDED and w
            ),
            240,
            "the six jobs",
        )
        ran_on = {job.key: job.attempt_workers[-1] for job in done.jobs}
        assert set(ran_on.values()) == set(address.values()), ran_on

        # Every result of both, byte-identical through the gateway and through wsi.
        folder_of = {address[name]: tmp_path / name / "results" for name in address}
        for job in done.jobs:
            folder = folder_of[job.attempt_workers[-1]]
            target = tmp_path / "downloads" / job.key
            got = subprocess.run(
                [str(WSI), "--address", scheduler.address, "--user", "lab",
                 "results", job.job_id, "-d", str(target)],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert got.returncode == 0, got.stderr
            for name, relative in job.result.files.items():
                original = (folder / relative).read_bytes()
                assert (target / name).read_bytes() == original, (job.key, name)
                reply = download(gateway, job, name)
                assert reply.status_code == 200 and reply.content == original, (job.key, name)

        # A worker killed mid-job: the job is retried on the other and succeeds.
        late = stub.CreateWorkflow(
            pb.CreateWorkflowRequest(jobs=[spec("late", params=LONG)]), metadata=WHO
        )

        def running_on() -> str:
            job = workflow(stub, late.workflow_id).jobs[0]
            busy = job.state == pb.JOB_STATE_RUNNING and job.progress.tiles_done > 0
            return job.attempt_workers[-1] if busy else ""

        victim_address = wait_for(running_on, 60, "the late job to be under way")
        victim = next(name for name, a in address.items() if a == victim_address)
        workers[victim].kill(signal.SIGKILL)
        retried = wait_for(
            lambda: (
                (w := workflow(stub, late.workflow_id)).state == pb.WORKFLOW_STATE_SUCCEEDED
                and w.jobs[0]
            ),
            240,
            "the late job to be retried and succeed",
        )
        assert list(retried.attempt_workers) == [
            victim_address,
            *(set(address.values()) - {victim_address}),
        ]

        # Its finished results: 503 (UNAVAILABLE) while it is away, then back.
        held = next(job for job in done.jobs if job.attempt_workers[-1] == victim_address)
        wait_for(lambda: victim_address not in connected(stub), 30, "the scheduler to notice")
        away = download(gateway, held, "summary.json")
        assert away.status_code == 503, away.text
        assert "not connected" in away.json()["message"]
        assert victim_address not in away.text
        host = one if victim == "w1" else two
        workers[victim] = start_remote_worker(tmp_path, host, scheduler, victim)
        wait_for(lambda: victim_address in connected(stub), 30, "the worker to be back")
        back = download(gateway, held, "summary.json")
        assert back.status_code == 200
        assert (
            back.content
            == (folder_of[victim_address] / held.result.files["summary.json"]).read_bytes()
        )
