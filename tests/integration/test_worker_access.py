"""The worker of ``make run`` runs jobs for its scheduler only: a call
without the secret the launcher made is refused, and even with it a job id
that is not the scheduler's format never becomes a folder."""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc
import pytest

from tests.integration.test_launcher import launched
from wsi_protocol import metadata
from wsi_protocol.scheduler.v1 import scheduler_pb2 as spb
from wsi_protocol.worker.v1 import worker_pb2 as wpb
from wsi_protocol.worker.v1 import worker_pb2_grpc as wpb_grpc


def secret_file_of(pid: int) -> Path:
    """The secret file the launcher named in the worker's flags (the secret
    itself is never a flag: every process listing would show it)."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return Path(argv[argv.index("--worker-secret-file") + 1])


def run_job(stub: wpb_grpc.WorkerStub, job_id: str, secret: str | None) -> grpc.StatusCode:
    request = wpb.RunJobRequest(
        job_id=job_id, job_type=spb.TISSUE_MASK, wsi_path="CMU-1-Small-Region.svs"
    )
    shown = ((metadata.WORKER_SECRET, secret),) if secret is not None else ()
    try:
        for _ in stub.RunJob(request, metadata=shown, timeout=30):
            pass
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def test_run_job_needs_the_secret_and_a_scheduler_job_id(tmp_path: Path) -> None:
    outside = Path("/tmp") / f"wsi-escape-{uuid.uuid4().hex}"
    with launched(tmp_path, WSI_WORKER_SECRET="") as run:
        worker_pid = run.services()["worker_service"]
        secret_file = secret_file_of(worker_pid)
        assert secret_file.stat().st_mode & 0o077 == 0  # this user's only
        secret = secret_file.read_text()
        assert len(secret) >= 32  # made by the launcher, at this start
        results = Path(run.env["WSI_RESULTS_DIR"])
        with grpc.insecure_channel(f"127.0.0.1:{run.env['WSI_WORKER_PORT']}") as channel:
            stub = wpb_grpc.WorkerStub(channel)
            # Without the secret, or with a wrong one: refused, whatever the call.
            assert run_job(stub, str(uuid.uuid4()), None) is grpc.StatusCode.UNAUTHENTICATED
            assert run_job(stub, str(uuid.uuid4()), "x" * 43) is grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as info:
                stub.GetInfo(wpb.GetInfoRequest(), timeout=10)
            assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
            # With it, a path for a job id is refused before anything is written.
            for job_id in ("../x", str(outside), "../../../" + str(outside), "a/b", ".."):
                assert run_job(stub, job_id, secret) is grpc.StatusCode.INVALID_ARGUMENT, job_id
            assert not outside.exists()
            assert not (tmp_path / "x").exists()
            assert not results.exists() or not any(results.iterdir())
            # The scheduler's own format runs.
            job_id = str(uuid.uuid4())
            assert run_job(stub, job_id, secret) is grpc.StatusCode.OK
            assert (results / job_id / "summary.json").is_file()
    assert not secret_file.parent.exists()  # gone with the launcher, its folder too
