"""The gateway's pure parts: protobuf to JSON, status mapping, SSE framing."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from wsi_gateway import sse
from wsi_gateway.__main__ import listening_socket
from wsi_gateway.bodies import JobIn, WorkflowIn
from wsi_gateway.dependencies import BadRequest
from wsi_gateway.guards import HostAllowList
from wsi_gateway.http_errors import error_body, http_status
from wsi_gateway.sized_body import SizeMismatch, sized_body
from wsi_protocol.json_format import to_json
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb
from wsi_protocol.status import retry_after_seconds


def test_job_json_has_plain_names_numbers_and_every_field() -> None:
    created = Timestamp()
    created.FromSeconds(1_700_000_000)
    job = pb.Job(
        job_id="j",
        state=pb.JOB_STATE_RUNNING,
        job_type=pb.CELL_SEGMENTATION,
        progress=pb.Progress(tiles_done=3, tiles_total=10, percent=30.0),
        params={"tile_size": "256"},
        depends_on=["mask"],
        create_time=created,
    )
    data = to_json(job)
    assert data["state"] == "RUNNING" and data["job_type"] == "CELL_SEGMENTATION"
    assert data["progress"] == {"tiles_done": 3, "tiles_total": 10, "percent": 30.0}
    assert data["params"] == {"tile_size": "256"} and data["depends_on"] == ["mask"]
    assert data["create_time"] == "2023-11-14T22:13:20Z"
    assert data["start_time"] is None and data["error"] == "" and data["result"] is None
    workflow = to_json(pb.Workflow(state=pb.WORKFLOW_STATE_SUCCEEDED, jobs=[job], sequence=7))
    assert workflow["state"] == "SUCCEEDED" and workflow["sequence"] == 7
    assert workflow["jobs"][0]["state"] == "RUNNING"
    event = to_json(pb.WorkflowEvent(kind=pb.WorkflowEvent.JOB_STATE, sequence=9))
    assert event["kind"] == "JOB_STATE" and event["workflow_state"] == "UNSPECIFIED"


def test_status_mapping_and_bodies() -> None:
    assert http_status(grpc.StatusCode.UNAUTHENTICATED) == 401
    assert http_status(grpc.StatusCode.INVALID_ARGUMENT) == 400
    assert http_status(grpc.StatusCode.PERMISSION_DENIED) == 403
    assert http_status(grpc.StatusCode.NOT_FOUND) == 404
    assert http_status(grpc.StatusCode.FAILED_PRECONDITION) == 409
    assert http_status(grpc.StatusCode.RESOURCE_EXHAUSTED) == 429
    assert http_status(grpc.StatusCode.UNAVAILABLE) == 503
    assert http_status(grpc.StatusCode.INTERNAL) == 500
    assert error_body(grpc.StatusCode.NOT_FOUND, "gone") == {"code": "NOT_FOUND", "message": "gone"}
    assert retry_after_seconds((("retry-after-seconds", "3"),)) == 3
    assert retry_after_seconds((("other", "x"),)) == 1
    assert retry_after_seconds(None) == 1


def test_sse_framing_and_resume_point() -> None:
    assert sse.event({"a": 1}, 5) == 'id: 5\ndata: {"a": 1}\n\n'
    assert sse.event([1], None, "x") == "event: x\ndata: [1]\n\n"
    assert sse.comment("keep-alive") == ": keep-alive\n\n"
    assert sse.resume_after("12", 3) == 12
    assert sse.resume_after(None, 3) == 3
    assert sse.resume_after("garbage", None) == 0
    # Past any uint64 sequence (a 500 from protobuf before): after everything.
    assert sse.resume_after("9" * 30, None) == 2**64 - 1
    assert sse.resume_after(None, 10**30) == 2**64 - 1
    assert sse.resume_after("-5", None) == 0


def test_text_no_grpc_string_can_carry_is_a_bad_request_naming_the_field() -> None:
    """A lone surrogate (what Python makes of a file name that is not UTF-8)
    arrives in JSON as ``\\udcff``: a 400, not a failure to encode."""
    body = WorkflowIn(jobs=[JobIn(job_type="TISSUE_MASK", wsi_path="bad\udcff.svs")])
    with pytest.raises(BadRequest, match=r"wsi_path 'bad\\\\udcff.svs' is not valid UTF-8"):
        body.message()
    assert WorkflowIn(jobs=[JobIn(job_type="TISSUE_MASK", wsi_path="ok.svs")]).message().jobs


@pytest.mark.parametrize(
    "size, chunks, sent, whole",
    [
        (6, [b"abc", b"def"], b"abcdef", True),
        (4, [b"abc", b"def"], b"abcd", False),  # more than announced: cut, then ended
        (1_000_000_000_000, [b"abc", b"def"], b"abcdef", False),  # fewer: ended
    ],
)
def test_a_streamed_result_is_held_to_its_announced_size(
    size: int, chunks: list[bytes], sent: bytes, whole: bool
) -> None:
    async def rest() -> AsyncIterator[bytes]:
        for chunk in chunks[1:]:
            yield chunk

    async def read() -> tuple[bytes, bool]:
        got = b""
        try:
            async for data in sized_body(size, chunks[0], rest(), "result"):
                got += data
        except SizeMismatch:
            return got, False
        return got, True

    assert asyncio.run(read()) == (sent, whole)


def test_a_body_nested_too_deeply_gets_the_apis_error_shape() -> None:
    """FastAPI's own 400 for a body it cannot parse, 404 for a path no route
    has and 405 for a method a path does not take were {"detail": ...}."""
    from fastapi.testclient import TestClient

    from wsi_gateway.app import GatewaySettings, create_app

    settings = GatewaySettings(scheduler_address="127.0.0.1:1", allowed_hosts=("testserver",))
    headers = {"X-User-ID": "u", "Content-Type": "application/json"}
    with TestClient(create_app(settings)) as client:
        deep = client.post("/workflows", content="[" * 10_000 + "]" * 10_000, headers=headers)
        missing = client.get("/no-such-route", headers=headers)
        wrong_method = client.delete("/workflows", headers=headers)
        static_post = client.post("/static/app.js", headers=headers)
    assert deep.status_code == 400
    assert deep.json()["code"] == "INVALID_ARGUMENT" and "nested" in deep.json()["message"]
    assert missing.status_code == 404
    assert missing.json() == {
        "code": "NOT_FOUND",
        "message": "nothing at GET /no-such-route: the API's routes are listed at /docs",
    }
    assert wrong_method.status_code == 405 and wrong_method.headers["Allow"] == "GET, POST"
    assert wrong_method.json() == {
        "code": "UNIMPLEMENTED",
        "message": "DELETE /workflows is not allowed; /workflows takes GET, POST",
    }
    assert static_post.status_code == 405 and static_post.headers["Allow"] == "GET, HEAD"


def test_a_body_that_is_not_a_json_object_is_answered_in_the_user_s_terms() -> None:
    """No Content-Type, broken JSON, a list, a wrong field: each a 400 in the
    API's {code, message}, saying what to send."""
    from fastapi.testclient import TestClient

    from wsi_gateway.app import GatewaySettings, create_app

    settings = GatewaySettings(scheduler_address="127.0.0.1:1", allowed_hosts=("testserver",))
    workflow = '{"jobs": [{"job_type": "TISSUE_MASK", "wsi_path": "x"}]}'
    json_type = {"X-User-ID": "u", "Content-Type": "application/json"}
    no_type = {"X-User-ID": "u"}
    cases = [
        (no_type, workflow, "body: send a JSON object with Content-Type: application/json"),
        (json_type, '{"jobs": [,]}', "body: not valid JSON at character 10 (Expecting value)"),
        (json_type, "[1]", 'body: expected a JSON object, e.g. {"jobs": [...]}'),
        (json_type, '{"jobs": [{"job_type": 5}]}', "jobs.0.job_type: Input should be a valid"),
    ]
    with TestClient(create_app(settings)) as client:
        for headers, body, message in cases:
            reply = client.post("/workflows", content=body, headers=headers)
            assert reply.status_code == 400, body
            assert reply.json()["code"] == "INVALID_ARGUMENT"
            assert reply.json()["message"].startswith(message), reply.json()


def test_each_connection_answers_without_waiting_for_the_clients_ack() -> None:
    """The gateway's listening socket hands asyncio connections it turns
    Nagle off on (TCP_NODELAY): with a socket made as SOCK_STREAM alone,
    each keep-alive request after the first waited 40 ms."""

    async def accept_one() -> int:
        made: asyncio.Future[asyncio.Transport] = asyncio.get_running_loop().create_future()

        class Accepted(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                made.set_result(transport)  # type: ignore[arg-type]

        listening = listening_socket("127.0.0.1", 0)
        server = await asyncio.get_running_loop().create_server(Accepted, sock=listening)
        async with server:
            _, writer = await asyncio.open_connection(*listening.getsockname()[:2])
            transport = await asyncio.wait_for(made, 10)
            accepted = transport.get_extra_info("socket")
            option = int(accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()
            transport.close()
            return option

    assert asyncio.run(accept_one()) == 1


@pytest.mark.parametrize(
    ("host", "server", "allowed"),
    [
        ("10.1.2.3:8000", ("10.1.2.3", 8000), True),  # a probe or a scrape by pod IP
        ("[fd00::7]:8000", ("fd00::7", 8000), True),
        ("10.1.2.4:8000", ("10.1.2.3", 8000), False),  # another address
        ("attacker.example", ("10.1.2.3", 8000), False),  # a rebound name
        ("127.0.0.2", ("127.0.0.1", 8000), False),
        ("wsi-gateway", ("10.1.2.3", 8000), True),  # a listed name
        ("", ("10.1.2.3", 8000), False),
    ],
)
def test_the_host_allow_list_takes_its_names_and_the_address_dialled(
    host: str, server: tuple[str, int], allowed: bool
) -> None:
    reached: list[str] = []

    async def app(scope: object, receive: object, send: object) -> None:
        reached.append("app")

    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    guard = HostAllowList(app, ["wsi-gateway"])
    scope = {"type": "http", "headers": [(b"host", host.encode())], "server": server}
    asyncio.run(guard(scope, None, send))  # type: ignore[arg-type]
    assert (reached == ["app"]) is allowed
    assert allowed or sent[0]["status"] == 400
