"""TLS on every hop, with the README's recipe (deploy/tls/make-dev-certs.sh)
making a throwaway CA: the scheduler, the worker and the gateway (HTTPS)
serve TLS, the scheduler and its worker verify each other (mTLS), and a
workflow runs through all of it. A plaintext client, a client without a
certificate and a client whose certificate another CA signed are refused."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest

from tests.harness import (
    ROOT,
    Service,
    TlsClient,
    start_gateway,
    start_scheduler,
    start_worker,
)
from tests.integration.support import spec
from tests.timing import patience, wait_for
from wsi_protocol import metadata
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb
from wsi_protocol.scheduler.v1 import scheduler_pb2_grpc as pb_grpc
from wsi_protocol.worker.v1 import worker_pb2 as wpb
from wsi_protocol.worker.v1 import worker_pb2_grpc as wpb_grpc

RECIPE = ROOT / "deploy" / "tls" / "make-dev-certs.sh"
pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
USER = ((metadata.USER_ID, "tls-user"),)


@dataclass
class Certs:
    folder: Path

    def __call__(self, name: str) -> str:
        return str(self.folder / name)

    def read(self, name: str) -> bytes:
        return (self.folder / name).read_bytes()


@dataclass
class TlsSystem:
    certs: Certs
    foreign: Certs  # another CA and its certificates: trusted by nobody here
    worker: Service
    scheduler: Service
    gateway: Service


def make_certs(folder: Path) -> Certs:
    subprocess.run(["sh", str(RECIPE), str(folder)], check=True, capture_output=True, timeout=60)
    return Certs(folder)


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsSystem]:
    workdir = tmp_path_factory.mktemp("tls")
    certs, foreign = make_certs(workdir / "tls"), make_certs(workdir / "foreign")
    as_client = TlsClient(certs("ca.pem"), certs("client.pem"), certs("client.key"))
    worker = start_worker(
        workdir,
        tls_cert=certs("worker.pem"),
        tls_key=certs("worker.key"),
        tls_client_ca=certs("ca.pem"),  # only callers with a certificate of this CA
        tls=as_client,
    )
    try:
        scheduler = start_scheduler(
            workdir,
            [worker],
            tls_cert=certs("scheduler.pem"),
            tls_key=certs("scheduler.key"),
            tls_ca=certs("ca.pem"),  # the workers' CA; its own certificate is its client one
            tls=TlsClient(certs("ca.pem")),
        )
        try:
            gateway = start_gateway(
                workdir,
                scheduler,
                15.0,
                TlsClient(certs("ca.pem")),
                tls_cert=certs("gateway.pem"),
                tls_key=certs("gateway.key"),
                tls_ca=certs("ca.pem"),
            )
            try:
                yield TlsSystem(certs, foreign, worker, scheduler, gateway)
            finally:
                gateway.stop()
        finally:
            scheduler.stop()
    finally:
        worker.stop()


def secure(
    address: str, ca: bytes, cert: bytes | None = None, key: bytes | None = None
) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(ca, key, cert)
    return grpc.secure_channel(address, credentials)


def refused(channel: grpc.Channel, call: str) -> grpc.StatusCode:
    with channel:
        try:
            if call == "worker":
                wpb_grpc.WorkerStub(channel).GetInfo(wpb.GetInfoRequest(), timeout=patience(5))
            else:
                pb_grpc.SchedulerStub(channel).GetStats(
                    pb.GetStatsRequest(), metadata=USER, timeout=patience(5)
                )
        except grpc.RpcError as error:
            code: grpc.StatusCode = error.code()
            return code
    return grpc.StatusCode.OK


def test_a_workflow_runs_over_tls_and_mtls(system: TlsSystem, tmp_path: Path) -> None:
    address = system.scheduler.address
    with secure(address, system.certs.read("ca.pem")) as channel:
        stub = pb_grpc.SchedulerStub(channel)
        wait_for(
            lambda: stub.GetStats(pb.GetStatsRequest(), metadata=USER).workers_connected == 1,
            30,
            "the scheduler to reach its worker over mutual TLS",
        )
        made = stub.CreateWorkflow(pb.CreateWorkflowRequest(jobs=[spec("a")]), metadata=USER)
        request = pb.GetWorkflowRequest(workflow_id=made.workflow_id)
        wait_for(
            lambda: stub.GetWorkflow(request, metadata=USER).state == pb.WORKFLOW_STATE_SUCCEEDED,
            60,
            "the workflow to succeed",
        )
        job_id = made.jobs[0].job_id
    # The gateway serves HTTPS and calls the scheduler over TLS.
    context = ssl.create_default_context(cafile=system.certs("ca.pem"))
    url = system.gateway.address.replace("http://", "https://")
    with httpx.Client(base_url=url, verify=context, timeout=10) as http:
        reply = http.get(f"/jobs/{job_id}", headers={"X-User-ID": "tls-user"})
        assert reply.status_code == 200 and reply.json()["state"] == "SUCCEEDED"
    # wsi, with --tls-ca, downloads its results through the scheduler (over TLS).
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "wsi"),
            "--address", address, "--tls-ca", system.certs("ca.pem"), "--user", "tls-user",
            "results", job_id, "-d", str(tmp_path),
        ],
        capture_output=True, text=True, timeout=60, env={**os.environ},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "summary.json").is_file()


def test_plaintext_and_untrusted_clients_are_refused(system: TlsSystem) -> None:
    certs, foreign = system.certs, system.foreign
    ca = certs.read("ca.pem")
    scheduler, worker = system.scheduler.address, system.worker.address
    assert refused(grpc.insecure_channel(scheduler), "scheduler") is grpc.StatusCode.UNAVAILABLE
    assert refused(grpc.insecure_channel(worker), "worker") is grpc.StatusCode.UNAVAILABLE
    # A TLS client that does not trust the servers' CA.
    untrusting = secure(scheduler, foreign.read("ca.pem"))
    assert refused(untrusting, "scheduler") is grpc.StatusCode.UNAVAILABLE
    # The worker wants a client certificate of its CA: none, or another CA's, is refused.
    assert refused(secure(worker, ca), "worker") is grpc.StatusCode.UNAVAILABLE
    stranger = secure(worker, ca, foreign.read("client.pem"), foreign.read("client.key"))
    assert refused(stranger, "worker") is grpc.StatusCode.UNAVAILABLE
    # With the right certificate the handshake passes; the shared secret is still needed.
    trusted = secure(worker, ca, certs.read("client.pem"), certs.read("client.key"))
    assert refused(trusted, "worker") is grpc.StatusCode.UNAUTHENTICATED
    # Plain HTTP to the HTTPS gateway gets no answer.
    with pytest.raises(httpx.HTTPError):
        httpx.get(system.gateway.address + "/healthz", timeout=5)
