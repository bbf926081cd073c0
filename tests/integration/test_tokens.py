"""Token mode (WSI_AUTH_TOKENS) on the scheduler and the gateway, as an
attacker and as users meet it: no token, a wrong token, a token revoked by
editing the file while everything runs, and an x-user-id naming someone else
are all refused with the right code; the right token sees its user's work
only; limits count per token, whatever x-user-id says; ``wsi`` and the
client work with ``--token``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from scheduler_service.service import IDENTITY_RECHECK_S
from tests.harness import (
    CMU,
    Cluster,
    Service,
    bearer,
    cluster,
    cluster_with_gateway,
    start_gateway,
)
from tests.integration.support import LONG, spec
from wsi_client.client import SchedulerClient, job
from wsi_protocol import metadata
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb
from wsi_runtime.token_file import add_token, revoke_user

WSI = Path(sys.executable).parent / "wsi"


@dataclass
class TokenCluster:
    cluster: Cluster
    gateway: Service
    tokens_file: Path
    alice: str
    bob: str
    carol: str


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenCluster]:
    workdir = tmp_path_factory.mktemp("tokens")
    tokens_file = workdir / "tokens.txt"
    tokens_file.write_text("# user  sha256(token)\n")
    alice, bob, carol = (add_token(tokens_file, name) for name in ("alice", "bob", "carol"))
    with cluster_with_gateway(
        workdir,
        auth_tokens=str(tokens_file),
        worker_slots=(1,),
        max_workers=1,
        rate_limit=5,
        rate_burst=10,
        max_pending_per_user=3,
    ) as (c, gateway):
        yield TokenCluster(c, gateway, tokens_file, alice, bob, carol)


def code_of(call: object) -> grpc.StatusCode:
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        return code
    return grpc.StatusCode.OK


def create(system: TokenCluster, md: tuple[tuple[str, str], ...], branch: str) -> pb.Workflow:
    request = pb.CreateWorkflowRequest(name="t", jobs=[spec("a", branch)])
    made: pb.Workflow = system.cluster.stub.CreateWorkflow(request, metadata=md, timeout=10)
    return made


def test_grpc_refuses_what_is_not_a_valid_token(system: TokenCluster) -> None:
    stub = system.cluster.stub
    listing = pb.ListWorkflowsRequest()

    def listed(md: tuple[tuple[str, str], ...]) -> grpc.StatusCode:
        return code_of(lambda: stub.ListWorkflows(listing, metadata=md, timeout=10))

    assert listed(((metadata.USER_ID, "alice"),)) is grpc.StatusCode.UNAUTHENTICATED
    assert listed(()) is grpc.StatusCode.UNAUTHENTICATED
    assert listed(bearer("wsi_not-a-token")) is grpc.StatusCode.UNAUTHENTICATED
    assert listed(((metadata.AUTHORIZATION, system.alice),)) is grpc.StatusCode.UNAUTHENTICATED
    other = (*bearer(system.alice), (metadata.USER_ID, "bob"))
    assert listed(other) is grpc.StatusCode.PERMISSION_DENIED
    own = (*bearer(system.alice), (metadata.USER_ID, "alice"))
    assert listed(own) is grpc.StatusCode.OK


def test_a_token_sees_only_its_users_work(system: TokenCluster) -> None:
    stub = system.cluster.stub
    mine = create(system, bearer(system.alice), "own")
    theirs = pb.GetWorkflowRequest(workflow_id=mine.workflow_id)
    assert stub.GetWorkflow(theirs, metadata=bearer(system.alice)).workflow_id == mine.workflow_id
    found = code_of(lambda: stub.GetWorkflow(theirs, metadata=bearer(system.bob)))
    assert found is grpc.StatusCode.NOT_FOUND
    # Naming alice with bob's token gets bob nothing either.
    as_alice = (*bearer(system.bob), (metadata.USER_ID, "alice"))
    found = code_of(lambda: stub.GetWorkflow(theirs, metadata=as_alice))
    assert found is grpc.StatusCode.PERMISSION_DENIED
    listed = stub.ListWorkflows(pb.ListWorkflowsRequest(), metadata=bearer(system.bob))
    assert mine.workflow_id not in {w.workflow_id for w in listed.workflows}
    stub.CancelWorkflow(
        pb.CancelWorkflowRequest(workflow_id=mine.workflow_id), metadata=bearer(system.alice)
    )


def test_limits_count_per_token_whatever_x_user_id_says(system: TokenCluster) -> None:
    stub = system.cluster.stub
    answers = []
    for index in range(12):  # rate 5/s, burst 10: rotating ids must not help
        md = (*bearer(system.carol), (metadata.USER_ID, f"rotating-{index}"))
        answers.append(cancel_code(system, md, f"no-such-job-{index}"))
    assert set(answers) == {grpc.StatusCode.PERMISSION_DENIED}
    answers = [cancel_code(system, bearer(system.carol), f"no-such-{i}") for i in range(60)]
    assert answers.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 10
    # The pending cap (3) belongs to the token's user too.
    bobs = bearer(system.bob)
    four = pb.CreateWorkflowRequest(jobs=[spec(f"k{i}", "lane", params=LONG) for i in range(4)])
    refused = code_of(lambda: stub.CreateWorkflow(four, metadata=bobs, timeout=10))
    assert refused is grpc.StatusCode.RESOURCE_EXHAUSTED
    three = pb.CreateWorkflowRequest(jobs=[spec(f"k{i}", "lane", params=LONG) for i in range(3)])
    made = stub.CreateWorkflow(three, metadata=bobs, timeout=10)
    stub.CancelWorkflow(pb.CancelWorkflowRequest(workflow_id=made.workflow_id), metadata=bobs)


def cancel_code(system: TokenCluster, md: tuple[tuple[str, str], ...], job_id: str) -> object:
    request = pb.CancelJobRequest(job_id=job_id)
    return code_of(lambda: system.cluster.stub.CancelJob(request, metadata=md, timeout=10))


def test_the_gateway_answers_401_403_and_serves_the_tokens_user(system: TokenCluster) -> None:
    url = system.gateway.address
    with httpx.Client(base_url=url, timeout=10) as http:
        assert http.get("/auth").json() == {"mode": "token"}
        assert http.get("/workflows", headers={"X-User-ID": "alice"}).status_code == 401
        assert http.get("/workflows").status_code == 401
        wrong = {"Authorization": "Bearer wsi_wrong"}
        assert http.get("/workflows", headers=wrong).status_code == 401
        assert http.get("/workflows", headers={"Authorization": "Basic abc"}).status_code == 401
        alice = {"Authorization": f"Bearer {system.alice}"}
        reply = http.get("/workflows", headers={**alice, "X-User-ID": "bob"})
        assert reply.status_code == 403
        assert reply.json()["code"] == "PERMISSION_DENIED"
        body = {"jobs": [{"branch": "http", "job_type": "TISSUE_MASK", "wsi_path": CMU}]}
        made = http.post("/workflows", json=body, headers=alice)
        assert made.status_code == 201, made.text
        workflow_id = made.json()["workflow_id"]
        bob = {"Authorization": f"Bearer {system.bob}"}
        assert http.get(f"/workflows/{workflow_id}", headers=bob).status_code == 404
        assert http.get(f"/workflows/{workflow_id}", headers=alice).status_code == 200
        http.post(f"/workflows/{workflow_id}/cancel", headers=alice)


def test_a_token_revoked_in_the_file_stops_working_at_once(system: TokenCluster) -> None:
    stub = system.cluster.stub
    dave = add_token(system.tokens_file, "dave")  # added while running: valid at once
    request = pb.ListWorkflowsRequest()
    assert code_of(lambda: stub.ListWorkflows(request, metadata=bearer(dave))) is (
        grpc.StatusCode.OK
    )
    with httpx.Client(base_url=system.gateway.address, timeout=10) as http:
        headers = {"Authorization": f"Bearer {dave}"}
        assert http.get("/workflows", headers=headers).status_code == 200
        assert revoke_user(system.tokens_file, "dave") == 1
        assert http.get("/workflows", headers=headers).status_code == 401
    assert code_of(lambda: stub.ListWorkflows(request, metadata=bearer(dave))) is (
        grpc.StatusCode.UNAUTHENTICATED
    )


def test_a_revoked_token_ends_its_open_watch(tmp_path: Path) -> None:
    """Identity is read when a call starts; a watch may stay open for days,
    so it is checked again while the stream is open (no worker here: the
    job waits, and the stream with it)."""
    tokens_file = tmp_path / "tokens.txt"
    erin, frank = add_token(tokens_file, "erin"), add_token(tokens_file, "frank")
    with cluster(tmp_path, worker_slots=(), auth_tokens=str(tokens_file)) as c:
        streams: dict[str, Any] = {}  # grpc's stream: an iterator and a call
        for token in (erin, frank):
            request = pb.CreateWorkflowRequest(name="w", jobs=[spec("a", "b")])
            made = c.stub.CreateWorkflow(request, metadata=bearer(token), timeout=10)
            watch = pb.WatchWorkflowRequest(workflow_id=made.workflow_id)
            streams[token] = c.stub.WatchWorkflow(watch, metadata=bearer(token), timeout=60)
            assert next(streams[token]).workflow_state == pb.WORKFLOW_STATE_PENDING
        assert revoke_user(tokens_file, "erin") == 1
        revoked = time.monotonic()
        with pytest.raises(grpc.RpcError) as ended:
            next(streams[erin])
        assert ended.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert "revoked" in (ended.value.details() or "")
        assert time.monotonic() - revoked < IDENTITY_RECHECK_S + 5
        # Frank's stream, his token still valid, stays open.
        assert not streams[frank].done()
        streams[frank].cancel()


def test_cli_and_client_take_a_token(
    system: TokenCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = system.cluster.scheduler.address

    def wsi(*args: str, token: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "WSI_USER"}
        return subprocess.run(
            [str(WSI), "--address", address, *args],
            env={**env, "WSI_TOKEN": token},
            capture_output=True,
            text=True,
            timeout=120,
        )

    submitted = wsi("--json", "submit", CMU, "-t", "TISSUE_MASK", token=system.alice)
    assert submitted.returncode == 0, submitted.stderr
    workflow = json.loads(submitted.stdout)
    job_id = workflow["jobs"][0]["job_id"]
    watched = wsi("watch", workflow["workflow_id"], token=system.alice)
    assert watched.returncode == 0, watched.stderr
    downloaded = wsi(
        "results",
        job_id,
        "-d",
        str(tmp_path),
        token=system.alice,
    )
    assert downloaded.returncode == 0, downloaded.stderr
    assert (tmp_path / "summary.json").is_file()
    refused = wsi("results", job_id, token=system.bob)
    assert refused.returncode == 1 and "NOT_FOUND" in refused.stderr
    refused = wsi("list", token="wsi_wrong")
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr

    async def through_the_client() -> int:
        async with SchedulerClient(address, token=system.alice) as client:
            made = await client.create_workflow([job("py", "TISSUE_MASK", CMU)])
            await client.cancel_workflow(made.workflow_id)
            page = await client.list_workflows()
            return len(page.workflows)

    assert asyncio.run(through_the_client()) >= 2

    async def from_the_environment() -> int:
        async with SchedulerClient(address) as client:  # WSI_TOKEN, as wsi reads it
            return len((await client.list_workflows()).workflows)

    monkeypatch.delenv("WSI_USER", raising=False)
    monkeypatch.setenv("WSI_TOKEN", system.alice)
    assert asyncio.run(from_the_environment()) >= 2


def test_a_flood_of_bad_tokens_is_limited_and_never_locks_out_a_valid_one(
    tmp_path: Path,
) -> None:
    """Bad tokens straight at the scheduler and through the gateway (with and
    without a forged X-Forwarded-For), all from this host, as the gateway
    is: the flood is limited, and another user's 100 calls with a valid
    token, 50 each way, all succeed meanwhile."""
    tokens_file = tmp_path / "tokens.txt"
    good = add_token(tokens_file, "erin")
    with cluster_with_gateway(tmp_path, auth_tokens=str(tokens_file)) as (c, gateway):
        request = pb.ListWorkflowsRequest()
        direct: list[grpc.StatusCode] = []
        through: list[int] = []
        forged: list[int] = []
        valid: list[object] = []
        with httpx.Client(base_url=gateway.address, timeout=10) as http:
            for index in range(50):
                for kind in range(2):
                    guess = bearer(f"wsi_guess{index}_{kind}")
                    direct.append(code_of(lambda: c.stub.ListWorkflows(request, metadata=guess)))  # noqa: B023
                    bad = {"Authorization": f"Bearer wsi_guess{index}_{kind}"}
                    through.append(http.get("/workflows", headers=bad).status_code)
                    spoofed = {**bad, "X-Forwarded-For": f"203.0.113.{index * 2 + kind}"}
                    forged.append(http.get("/workflows", headers=spoofed).status_code)
                valid.append(code_of(lambda: c.stub.ListWorkflows(request, metadata=bearer(good))))
                valid.append(
                    http.get("/workflows", headers={"Authorization": f"Bearer {good}"}).status_code
                )
    assert valid == [grpc.StatusCode.OK, 200] * 50
    assert direct[0] is grpc.StatusCode.UNAUTHENTICATED
    # Not the last call's code: the bucket refills one failure a second, so
    # under a flood one guess a second is answered UNAUTHENTICATED again.
    assert direct.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 50
    assert through[0] == 401 and through.count(429) >= 50
    assert forged.count(429) >= 50  # a new forged address per guess does not help


def test_a_named_proxy_s_forwarded_address_is_the_one_limited(tmp_path: Path) -> None:
    """A gateway told to trust 127.0.0.0/8 as its proxies (a network, as a
    cluster's ingress pods need) limits failed tokens per forwarded address:
    one address's flood is limited, another address behind the same proxy,
    and the proxy's own calls, are not."""
    tokens_file = tmp_path / "tokens.txt"
    good = add_token(tokens_file, "gina")
    with cluster(tmp_path, worker_slots=(), auth_tokens=str(tokens_file)) as c:
        gateway = start_gateway(
            tmp_path,
            c.scheduler,
            auth_tokens=str(tokens_file),
            trusted_proxies="192.0.2.7,127.0.0.0/8",
        )
        try:
            with httpx.Client(base_url=gateway.address, timeout=10) as http:

                def status(xff: str | None, token: str) -> int:
                    headers = {"Authorization": f"Bearer {token}"}
                    if xff is not None:
                        headers["X-Forwarded-For"] = xff
                    return http.get("/workflows", headers=headers).status_code

                flood = [status("203.0.113.9", f"wsi_guess{i}") for i in range(30)]
                assert flood[0] == 401 and flood.count(429) >= 5, flood
                assert status("198.51.100.1", "wsi_guess_other") == 401  # its own budget
                assert status(None, "wsi_guess_proxy") == 401  # the proxy's own address
                assert status("203.0.113.9", good) == 200  # a valid token, never refused
        finally:
            gateway.stop()
