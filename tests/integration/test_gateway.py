"""The HTTP gateway against a real scheduler and worker: every route, the
status codes of the API table, tenancy, and Server-Sent Events."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import CMU, Cluster, Service, cluster, cluster_with_gateway, start_gateway, user
from tests.timing import patience, wait_for
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb


@dataclass
class Gateway:
    cluster: Cluster
    service: Service
    http: httpx.Client

    def as_user(self, who: str) -> dict[str, str]:
        return {"X-User-ID": who}

    def create(self, who: str, jobs: list[dict[str, object]], **extra: object) -> dict[str, Any]:
        reply = self.http.post(
            "/workflows", json={"jobs": jobs, **extra}, headers=self.as_user(who)
        )
        assert reply.status_code == 201, reply.text
        return reply.json()  # type: ignore[no-any-return]

    def wait_done(self, who: str, workflow_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            wf = self.http.get(f"/workflows/{workflow_id}", headers=self.as_user(who)).json()
            if wf["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
                return wf  # type: ignore[no-any-return]
            time.sleep(0.1)
        raise TimeoutError(workflow_id)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("gateway")
    with (
        cluster_with_gateway(workdir, worker_slots=(2,), max_active_users=50) as (c, service),
        httpx.Client(base_url=service.address, timeout=30) as http,
    ):
        yield Gateway(c, service, http)


def mask(branch: str = "a", slide: str = CMU, **extra: object) -> dict[str, object]:
    return {"branch": branch, "job_type": "TISSUE_MASK", "wsi_path": slide, **extra}


def cells(branch: str = "a", slide: str = CMU, **extra: object) -> dict[str, object]:
    return {"branch": branch, "job_type": "CELL_SEGMENTATION", "wsi_path": slide, **extra}


def sse_events(text: str) -> list[tuple[int, dict[str, Any]]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith(":")]
        ids = [int(line[4:]) for line in lines if line.startswith("id: ")]
        data = "\n".join(line[6:] for line in lines if line.startswith("data: "))
        if data:
            events.append((ids[0], json.loads(data)))
    return events


def test_readme_body_creates_and_every_read_route_answers(gw: Gateway) -> None:
    wf = gw.create("alice", [{"branch": "a", "job_type": "CELL_SEGMENTATION", "wsi_path": CMU}])
    assert (
        wf["state"] in ("PENDING", "RUNNING") and wf["jobs"][0]["job_type"] == "CELL_SEGMENTATION"
    )
    done = gw.wait_done("alice", wf["workflow_id"])
    assert done["state"] == "SUCCEEDED" and done["progress"]["percent"] == 100.0
    headers = gw.as_user("alice")
    listed = gw.http.get("/workflows", headers=headers).json()
    assert wf["workflow_id"] in [w["workflow_id"] for w in listed["workflows"]]
    progress = gw.http.get(f"/workflows/{wf['workflow_id']}/progress", headers=headers).json()
    assert (
        progress["jobs"][0]["progress"]["tiles_done"]
        == progress["jobs"][0]["progress"]["tiles_total"]
        > 0
    )
    job = gw.http.get(f"/jobs/{wf['jobs'][0]['job_id']}", headers=headers).json()
    assert job["state"] == "SUCCEEDED" and job["result"]["summary"]["nuclei"] > 1000
    stats = gw.http.get("/stats", headers=headers).json()
    assert stats["worker_slots_total"] == 2 and isinstance(stats["running_jobs"], int)
    assert gw.http.get("/healthz").json() == {"status": "ok"}
    for path in ("/healthz", "/"):  # as uptime checks and load balancers ask
        assert gw.http.head(path).status_code == 200, path
    metrics = gw.http.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert (
        'wsi_gateway_http_requests_total{method="POST",route="/workflows",status="201"}'
        in metrics.text
    )
    docs = gw.http.get("/openapi.json").json()
    for path in (
        "/workflows",
        "/workflows/{workflow_id}",
        "/workflows/{workflow_id}/progress",
        "/workflows/{workflow_id}/events",
        "/workflows/{workflow_id}/cancel",
        "/jobs/{job_id}",
        "/jobs/{job_id}/cancel",
        "/jobs/{job_id}/results/{name}",
        "/stats",
        "/healthz",
        "/metrics",
    ):
        assert path in docs["paths"], path
    assert gw.http.get("/docs").status_code == 200


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("cells.geojson", "application/geo+json"),
        ("tissue.geojson", "application/geo+json"),
        ("tissue_mask.png", "image/png"),
        ("preview.png", "image/png"),
        ("summary.json", "application/json"),
        ("nuclei.parquet", "application/vnd.apache.parquet"),
    ],
)
def test_result_files_are_served_to_their_owner_only(
    gw: Gateway, name: str, media_type: str
) -> None:
    wf = gw.create("owner", [cells(slide="small.svs")])
    gw.wait_done("owner", wf["workflow_id"])
    job_id = wf["jobs"][0]["job_id"]
    reply = gw.http.get(f"/jobs/{job_id}/results/{name}", headers=gw.as_user("owner"))
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith(media_type)
    if name.endswith("json"):
        assert reply.json()
    elif name.endswith(".parquet"):
        assert reply.content[:4] == reply.content[-4:] == b"PAR1"
    else:
        assert reply.content[:8] == b"\x89PNG\r\n\x1a\n"
    stranger = gw.http.get(f"/jobs/{job_id}/results/{name}", headers=gw.as_user("stranger"))
    assert stranger.status_code == 404 and stranger.json()["code"] == "NOT_FOUND"


def test_job_params_are_this_deployment_s_and_each_edge_is_accepted(gw: Gateway) -> None:
    """/job-params gives the bounds and backends that hold here (the
    scheduler's --min-tile-size 128; the workers offer classical and learned),
    to anyone (a form needs them before its user signs in); a job at each
    tile-size edge, other parameters left to their defaults, is accepted."""
    here = gw.http.get("/job-params").json()
    assert gw.http.get("/job-params", headers=gw.as_user("edges")).json() == here
    assert here["tile_size"]["min"] == 128 and here["tile_size"]["max"] == 8192
    assert here["backend"]["choices"] == ["classical", "learned"]
    for tile in (here["tile_size"]["min"], here["tile_size"]["max"]):
        gw.create("edges", [mask(params={"tile_size": str(tile)})])
    below = gw.http.post(
        "/workflows",
        json={"jobs": [mask(params={"tile_size": str(here["tile_size"]["min"] - 1)})]},
        headers=gw.as_user("edges"),
    )
    assert below.status_code == 400 and "minimum of 128" in below.json()["message"]


def test_unknown_result_name_and_path_tricks_are_refused(gw: Gateway) -> None:
    wf = gw.create("paths", [mask(slide="small.svs")])
    gw.wait_done("paths", wf["workflow_id"])
    job_id = wf["jobs"][0]["job_id"]
    for name in ("nope.txt", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd"):
        reply = gw.http.get(f"/jobs/{job_id}/results/{name}", headers=gw.as_user("paths"))
        assert reply.status_code == 404, name


def test_other_users_ids_answer_404_on_every_route(gw: Gateway) -> None:
    wf = gw.create("victim", [cells(params={"tile_size": "256", "overlap": "32"})])
    wid, jid = wf["workflow_id"], wf["jobs"][0]["job_id"]
    intruder = gw.as_user("intruder")
    for method, path in [
        ("GET", f"/workflows/{wid}"),
        ("GET", f"/workflows/{wid}/progress"),
        ("GET", f"/workflows/{wid}/events"),
        ("POST", f"/workflows/{wid}/cancel"),
        ("GET", f"/jobs/{jid}"),
        ("POST", f"/jobs/{jid}/cancel"),
        ("GET", f"/jobs/{jid}/results/summary.json"),
    ]:
        reply = gw.http.request(method, path, headers=intruder)
        assert reply.status_code == 404, (method, path, reply.text)
        assert reply.json()["code"] == "NOT_FOUND"
    assert gw.wait_done("victim", wid)["state"] == "SUCCEEDED"  # untouched


@pytest.mark.parametrize(
    ("headers", "body", "status", "code"),
    [
        ({}, {"jobs": [mask()]}, 401, "UNAUTHENTICATED"),
        ({"X-User-ID": "bad user!"}, {"jobs": [mask()]}, 401, "UNAUTHENTICATED"),
        ({"X-User-ID": "v"}, {"jobs": []}, 400, "INVALID_ARGUMENT"),
        ({"X-User-ID": "v"}, {"jobs": [mask(job_type="SEGMENT")]}, 400, "INVALID_ARGUMENT"),
        ({"X-User-ID": "v"}, {"jobs": [mask(depends_on=["ghost"])]}, 400, "INVALID_ARGUMENT"),
        (
            {"X-User-ID": "v"},
            {
                "jobs": [
                    mask(key="x", depends_on=["y"]),
                    mask(key="y", branch="b", depends_on=["x"]),
                ]
            },
            400,
            "INVALID_ARGUMENT",
        ),
        ({"X-User-ID": "v"}, {"jobs": [{"branch": "a"}]}, 400, "INVALID_ARGUMENT"),
        ({"X-User-ID": "v"}, {"jobs": [mask(slide="/etc/passwd")]}, 403, "PERMISSION_DENIED"),
        ({"X-User-ID": "v"}, {"jobs": [mask(slide="missing.svs")]}, 400, "INVALID_ARGUMENT"),
    ],
)
def test_status_codes_of_the_api_table(
    gw: Gateway, headers: dict[str, str], body: dict[str, Any], status: int, code: str
) -> None:
    reply = gw.http.post("/workflows", json=body, headers=headers)
    assert reply.status_code == status, reply.text
    assert reply.json()["code"] == code and reply.json()["message"]


def test_bad_page_token_cancel_of_finished_job_and_unknown_ids(gw: Gateway) -> None:
    headers = gw.as_user("codes")
    reply = gw.http.get("/workflows", params={"page_token": "garbage"}, headers=headers)
    assert reply.status_code == 400
    wf = gw.create("codes", [mask(slide="small.svs")])
    gw.wait_done("codes", wf["workflow_id"])
    reply = gw.http.post(f"/jobs/{wf['jobs'][0]['job_id']}/cancel", headers=headers)
    assert reply.status_code == 409 and reply.json()["code"] == "FAILED_PRECONDITION"
    reply = gw.http.post(f"/workflows/{wf['workflow_id']}/cancel", headers=headers)
    assert reply.status_code == 409
    assert gw.http.get("/jobs/does-not-exist", headers=headers).status_code == 404


def test_an_identity_header_sent_twice_differently_is_refused(gw: Gateway) -> None:
    """Behind a proxy that adds X-User-ID after a client's own, the first
    value would have been the client's: two different values are a 401;
    the same one twice is that user."""
    twice = [("X-User-ID", "mallory"), ("X-User-ID", "alice")]
    reply = gw.http.get("/workflows", headers=twice)
    assert reply.status_code == 401, reply.text
    assert reply.json()["message"] == "header X-User-ID is given 2 times with different values"
    same = [("X-User-ID", "alice"), ("X-User-ID", "alice")]
    assert gw.http.get("/workflows", headers=same).status_code == 200


def test_numbers_past_their_fields_are_answered_not_a_500(gw: Gateway) -> None:
    """A page size past 32 bits is the largest page; a Last-Event-ID past 64
    bits resumes after everything (a snapshot, then the end of a finished
    workflow's stream): both were 500s from protobuf. A huge page token is
    refused with its reason (it was echoed whole, past gRPC's 16 KB)."""
    headers = gw.as_user("numbers")
    wf = gw.create("numbers", [mask(slide="small.svs")])
    gw.wait_done("numbers", wf["workflow_id"])
    for route in ("/workflows", "/slides"):
        reply = gw.http.get(route, params={"page_size": 10**11}, headers=headers)
        assert reply.status_code == 200, reply.text
    assert gw.http.get("/workflows", params={"page_size": -1}, headers=headers).status_code == 400
    # A token of 30,000 characters: its 400, not the 429 of an oversized status.
    reply = gw.http.get("/workflows", params={"page_token": "A" * 30_000}, headers=headers)
    assert reply.status_code == 400 and reply.json()["code"] == "INVALID_ARGUMENT", reply.text
    huge = {**headers, "Last-Event-ID": "9" * 30}
    with gw.http.stream("GET", f"/workflows/{wf['workflow_id']}/events", headers=huge) as events:
        assert events.status_code == 200
        text = b"".join(events.iter_bytes()).decode()
    assert '"SUCCEEDED"' in text


def test_cancel_routes(gw: Gateway) -> None:
    headers = gw.as_user("canceller")
    wf = gw.create("canceller", [cells(params={"tile_size": "256", "overlap": "32"}), mask()])
    second = wf["jobs"][1]["job_id"]
    reply = gw.http.post(f"/jobs/{second}/cancel", headers=headers)
    assert reply.status_code == 200 and reply.json()["state"] == "CANCELLED"
    reply = gw.http.post(f"/workflows/{wf['workflow_id']}/cancel", headers=headers)
    assert reply.status_code == 200
    assert gw.wait_done("canceller", wf["workflow_id"])["state"] == "CANCELLED"


def test_sse_delivers_every_transition_in_order_and_resumes(gw: Gateway) -> None:
    wf = gw.create(
        "sse", [mask(key="m"), cells(key="c", depends_on=["m"]), mask(key="o", branch="b")]
    )
    headers = gw.as_user("sse")
    url = f"/workflows/{wf['workflow_id']}/events"
    with gw.http.stream("GET", url, params={"after": wf["sequence"]}, headers=headers) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        text = "".join(stream.iter_text())
    events = sse_events(text)
    ids = [i for i, _ in events]
    assert ids == list(range(wf["sequence"] + 1, wf["sequence"] + 1 + len(ids)))
    assert all(i == e["sequence"] for i, e in events)
    states = [(e["job"]["key"], e["job"]["state"]) for _, e in events if e["kind"] == "JOB_STATE"]
    for key in ("m", "c", "o"):
        assert [s for k, s in states if k == key] == ["RUNNING", "SUCCEEDED"]
    assert states.index(("m", "SUCCEEDED")) < states.index(("c", "RUNNING"))
    assert events[-1][1]["workflow_state"] == "SUCCEEDED"
    # Reconnect with Last-Event-ID from the middle: exactly the rest, nothing missed.
    cut = len(events) // 2
    resume = {**headers, "Last-Event-ID": str(events[cut][0])}
    with gw.http.stream("GET", url, headers=resume) as stream:
        rest = sse_events("".join(stream.iter_text()))
    assert rest == events[cut + 1 :]


def test_closing_the_sse_client_frees_the_grpc_stream(tmp_path: Path) -> None:
    # One worker slot, kept busy by three long jobs submitted first: the watched
    # workflow stays PENDING (its stream open, idle) while we look.
    with cluster(tmp_path, worker_slots=(1,), max_workers=1) as c:
        gateway = start_gateway(tmp_path, c.scheduler)
        try:

            def watch_streams() -> int:
                stats = c.stub.GetStats(pb.GetStatsRequest(), metadata=user("probe"))
                return int(stats.watch_streams)

            with httpx.Client(base_url=gateway.address, timeout=30) as http:
                headers = {"X-User-ID": "leaver"}
                long_job = cells(params={"tile_size": "128", "overlap": "16"})
                busy = http.post("/workflows", json={"jobs": [long_job] * 3}, headers=headers)
                waiting = http.post(
                    "/workflows", json={"jobs": [mask(branch="b")]}, headers=headers
                ).json()
                before = watch_streams()
                url = f"/workflows/{waiting['workflow_id']}/events"
                with (
                    httpx.Client(base_url=gateway.address, timeout=30) as fresh,
                    fresh.stream("GET", url, headers=headers) as stream,
                ):
                    # Keep the iterator: dropping it closes the response (httpx
                    # closes a half-read stream when its generator is discarded).
                    lines = stream.iter_lines()
                    assert next(lines).startswith("id: ")  # connected and streaming
                    assert watch_streams() == before + 1
                deadline = time.monotonic() + patience(5)
                while watch_streams() > before and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert watch_streams() == before
                # Freed because the client left, not because the workflow ended.
                watched = http.get(f"/workflows/{waiting['workflow_id']}", headers=headers)
                assert watched.json()["state"] == "PENDING"
                for wf in (busy.json(), waiting):
                    http.post(f"/workflows/{wf['workflow_id']}/cancel", headers=headers)
        finally:
            gateway.stop()


def test_sse_of_unknown_workflow_is_a_json_404(gw: Gateway) -> None:
    reply = gw.http.get("/workflows/nope/events", headers=gw.as_user("x"))
    assert reply.status_code == 404 and reply.json()["code"] == "NOT_FOUND"


def test_scheduler_down_is_503(tmp_path: Path) -> None:
    with cluster(tmp_path, worker_slots=(1,)) as c:
        gateway = start_gateway(tmp_path, c.scheduler)
        try:
            c.scheduler.stop()
            reply = httpx.get(f"{gateway.address}/stats", headers={"X-User-ID": "u"}, timeout=30)
            assert reply.status_code == 503 and reply.json()["code"] == "UNAVAILABLE"
        finally:
            gateway.stop()


def test_a_frozen_scheduler_is_503_within_seconds_and_the_gateway_recovers(tmp_path: Path) -> None:
    """SIGSTOP keeps the scheduler's connection open but silent, as a pod
    whose address vanished on a cluster does: without keep-alive pings the
    gateway's call would wait for TCP to give up (minutes), holding the
    user's request. It must fail over to 503 in seconds, and answer again once
    the scheduler does. A call's own deadline (--call-timeout) bounds the
    wait for a scheduler that is alive but stuck: 504."""
    with cluster(tmp_path, worker_slots=(1,)) as c:
        gateway = start_gateway(tmp_path, c.scheduler)
        # A second gateway whose calls wait 1 s at most (--call-timeout): the
        # same silence is its 504, before keep-alive has noticed anything.
        hasty = start_gateway(tmp_path, c.scheduler, call_timeout="1")
        try:
            with (
                httpx.Client(base_url=gateway.address, timeout=60) as http,
                httpx.Client(base_url=hasty.address, timeout=60) as quick,
            ):
                who = {"X-User-ID": "u"}
                assert http.get("/stats", headers=who).status_code == 200  # connected
                assert quick.get("/stats", headers=who).status_code == 200
                c.scheduler.process.send_signal(signal.SIGSTOP)
                try:
                    asked = time.monotonic()
                    timed_out = quick.get("/stats", headers=who)
                    waited_quick = time.monotonic() - asked
                    asked = time.monotonic()
                    reply = http.get("/stats", headers=who)
                    waited = time.monotonic() - asked
                finally:
                    c.scheduler.process.send_signal(signal.SIGCONT)
                assert timed_out.status_code == 504, timed_out.text
                assert timed_out.json()["code"] == "DEADLINE_EXCEEDED"
                assert waited_quick < patience(4), (
                    f"the 1 s deadline answered after {waited_quick:.1f} s"
                )
                assert reply.status_code == 503 and reply.json()["code"] == "UNAVAILABLE"
                assert waited < 20, f"the frozen scheduler was noticed after {waited:.1f} s"
                wait_for(lambda: http.get("/stats", headers=who).status_code == 200, 30, "recovery")
                assert quick.get("/stats", headers=who).status_code == 200
        finally:
            gateway.stop()
            hasty.stop()


def test_rate_limit_is_429_with_retry_after_and_spares_other_users(tmp_path: Path) -> None:
    with cluster(tmp_path, worker_slots=(1,), rate_limit="0.2", rate_burst=2) as c:
        gateway = start_gateway(tmp_path, c.scheduler)
        try:
            with httpx.Client(base_url=gateway.address, timeout=30) as http:
                greedy = {"X-User-ID": "greedy"}
                codes = [
                    http.post(
                        "/workflows", json={"jobs": [mask(slide="small.svs")]}, headers=greedy
                    )
                    for _ in range(4)
                ]
                assert [r.status_code for r in codes[:2]] == [201, 201]
                limited = codes[-1]
                assert limited.status_code == 429
                assert limited.json()["code"] == "RESOURCE_EXHAUSTED"
                assert int(limited.headers["Retry-After"]) >= 1
                polite = http.post(
                    "/workflows",
                    json={"jobs": [mask(slide="small.svs")]},
                    headers={"X-User-ID": "polite"},
                )
                assert polite.status_code == 201
                # Reads are never limited.
                assert http.get("/workflows", headers=greedy).status_code == 200
        finally:
            gateway.stop()


def test_idle_event_stream_gets_keep_alive_comments(tmp_path: Path) -> None:
    with cluster(tmp_path, worker_slots=(1,), max_workers=1) as c:
        gateway = start_gateway(tmp_path, c.scheduler, keepalive=0.2)
        try:
            with httpx.Client(base_url=gateway.address, timeout=30) as http:
                headers = {"X-User-ID": "idle"}
                busy = http.post(
                    "/workflows",
                    json={"jobs": [cells(params={"tile_size": "256", "overlap": "32"})]},
                    headers=headers,
                ).json()
                waiting = http.post("/workflows", json={"jobs": [mask()]}, headers=headers).json()
                url = f"/workflows/{waiting['workflow_id']}/events"
                with http.stream(
                    "GET", url, params={"after": waiting["sequence"]}, headers=headers
                ) as stream:
                    lines = []
                    for line in stream.iter_lines():
                        lines.append(line)
                        if line.startswith(": keep-alive") or len(lines) > 50:
                            break
                assert ": keep-alive" in lines
                http.post(f"/workflows/{busy['workflow_id']}/cancel", headers=headers)
                http.post(f"/workflows/{waiting['workflow_id']}/cancel", headers=headers)
        finally:
            gateway.stop()
