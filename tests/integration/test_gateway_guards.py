"""The gateway as an attacker meets it: an oversized body is refused while it
is read (413, memory flat), a malformed identity header is 401 (never 500),
a foreign Host is 400 (DNS rebinding), slow-header connections are cut at
the header timeout while others are served at once, and every answer
carries the browser-safety headers."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import socket
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import CMU, SLIDES, Service, cluster, cluster_with_gateway, start_gateway
from tests.processes import free_port
from tests.timing import wait_for

HEADER_TIMEOUT_S = 2.0
BIG_BODY = 62 * 2**20


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    workdir = tmp_path_factory.mktemp("guards")
    with cluster(workdir, worker_slots=(1,)) as c:
        service = start_gateway(
            workdir,
            c.scheduler,
            15.0,
            header_timeout=str(HEADER_TIMEOUT_S),
        )
        try:
            yield service
        finally:
            service.stop()


def host_port(gateway: Service) -> tuple[str, int]:
    host, port = gateway.address.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def raw_request(gateway: Service, head: bytes, body_size: int = 0, chunked: bool = False) -> bytes:
    """Sends ``head`` and then up to ``body_size`` bytes of body as a client
    that reads while it sends (as curl does), and returns the answer."""
    answer = b""
    with socket.create_connection(host_port(gateway), timeout=30) as conn:
        conn.sendall(head)
        sent, chunk = 0, b"x" * 65536
        while sent < body_size:
            readable, _, _ = select.select([conn], [], [], 0)
            if readable:
                break  # answered before the body was complete
            piece = chunk if not chunked else b"%x\r\n%s\r\n" % (len(chunk), chunk)
            try:
                conn.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while not answer.endswith(b"}") and (data := conn.recv(65536)):
                answer += data
    return answer


def test_a_62_mb_body_is_refused_while_read_and_memory_stays_flat(gateway: Service) -> None:
    before = rss_kb(gateway.process.pid)
    declared = raw_request(
        gateway,
        b"POST /workflows HTTP/1.1\r\nHost: 127.0.0.1\r\nX-User-ID: big\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % BIG_BODY,
        BIG_BODY,
    )
    assert declared.startswith(b"HTTP/1.1 413"), declared[:200]
    streamed = raw_request(
        gateway,
        b"POST /workflows HTTP/1.1\r\nHost: 127.0.0.1\r\nX-User-ID: big\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        BIG_BODY,
        chunked=True,
    )
    assert streamed.startswith(b"HTTP/1.1 413"), streamed[:200]
    assert b"PAYLOAD_TOO_LARGE" in streamed
    # Without an identity the answer is the same: the size is checked first.
    anonymous = raw_request(
        gateway,
        b"POST /workflows HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n" % BIG_BODY,
        BIG_BODY,
    )
    assert anonymous.startswith(b"HTTP/1.1 413")
    grown_mb = (rss_kb(gateway.process.pid) - before) / 1024
    assert grown_mb < 20, f"gateway RSS grew {grown_mb:.1f} MB"
    # A body under the cap is still parsed as before.
    with httpx.Client(base_url=gateway.address, timeout=10) as http:
        reply = http.post("/workflows", headers={"X-User-ID": "small"}, json={"jobs": []})
        assert reply.status_code == 400


def test_a_client_that_sends_its_whole_body_first_gets_the_413(gateway: Service) -> None:
    """urllib sends the body before it reads, without Expect: 100-continue:
    a 6 MB body over the 4 MB cap, announced and chunked, gets the 413 (read
    and dropped first), not a reset connection."""
    body = b"x" * (6 * 2**20)
    request = urllib.request.Request(
        f"{gateway.address}/workflows",
        data=body,
        method="POST",
        headers={"X-User-ID": "eager", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 413
    assert json.loads(refused.value.read())["code"] == "PAYLOAD_TOO_LARGE"
    chunked = urllib.request.Request(
        f"{gateway.address}/workflows",
        data=iter([body[i : i + 65536] for i in range(0, len(body), 65536)]),
        method="POST",
        headers={"X-User-ID": "eager", "Transfer-Encoding": "chunked"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(chunked, timeout=30)
    assert refused.value.code == 413


@pytest.mark.parametrize(
    "value",
    [
        "\u00e9l\u00e8ve".encode().decode("latin-1"),  # UTF-8 bytes of non-ASCII text
        "\u00ff",
        "tab\there",
        "ctl\x01x",
        "del\x7fx",
        "a b",
        "x" * 65,
    ],
)
def test_a_malformed_identity_header_is_401(gateway: Service, value: str) -> None:
    head = (
        b"GET /workflows HTTP/1.1\r\nHost: 127.0.0.1\r\nX-User-ID: "
        + value.encode("latin-1")
        + b"\r\nConnection: close\r\n\r\n"
    )
    answer = raw_request(gateway, head)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:300]
    assert b"UNAUTHENTICATED" in answer and b"Traceback" not in answer


def test_a_foreign_host_is_400(gateway: Service) -> None:
    with httpx.Client(base_url=gateway.address, timeout=10) as http:
        for host in ("attacker.example", "attacker.example:8000", "127.0.0.2"):
            reply = http.get("/workflows", headers={"Host": host, "X-User-ID": "a"})
            assert reply.status_code == 400, host
            assert reply.json()["code"] == "INVALID_ARGUMENT"
        port = host_port(gateway)[1]
        for host in ("localhost", f"localhost:{port}", f"127.0.0.1:{port}"):
            reply = http.get("/workflows", headers={"Host": host, "X-User-ID": "a"})
            assert reply.status_code == 200, host


def test_slow_header_clients_are_cut_and_others_served(gateway: Service) -> None:
    slow = []
    try:
        for _ in range(200):
            conn = socket.create_connection(host_port(gateway), timeout=10)
            conn.sendall(b"GET /workflows HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Us")
            slow.append(conn)
        opened = time.monotonic()
        with httpx.Client(base_url=gateway.address, timeout=5) as http:
            times = []
            for _ in range(5):
                started = time.perf_counter()
                assert http.get("/healthz").status_code == 200
                times.append(time.perf_counter() - started)
        assert statistics.median(times) < 0.1, times

        def all_closed() -> bool:
            for conn in slow:
                conn.setblocking(False)
                try:
                    if conn.recv(1) != b"":
                        return False
                except BlockingIOError:
                    return False
                except ConnectionResetError:
                    pass
            return True

        wait_for(all_closed, HEADER_TIMEOUT_S + 5, "the slow connections to be closed")
        assert time.monotonic() - opened < HEADER_TIMEOUT_S + 5
    finally:
        for conn in slow:
            conn.close()


def test_every_answer_carries_the_browser_safety_headers(gateway: Service) -> None:
    with httpx.Client(base_url=gateway.address, timeout=10) as http:
        user = {"X-User-ID": "headers"}
        body = {"jobs": [{"branch": "b", "job_type": "TISSUE_MASK", "wsi_path": CMU}]}
        workflow = http.post("/workflows", json=body, headers=user).json()
        job_id = workflow["jobs"][0]["job_id"]
        wait_for(
            lambda: http.get(f"/jobs/{job_id}", headers=user).json()["state"] == "SUCCEEDED",
            60,
            "the job",
        )
        private = [
            http.get("/workflows", headers=user),
            http.get(f"/jobs/{job_id}", headers=user),
            http.get(f"/jobs/{job_id}/results/summary.json", headers=user),
            http.get(f"/jobs/{job_id}/results/preview.png", headers=user),
            http.get("/workflows"),  # 401
            http.get(f"/jobs/{job_id}/results/summary.json", headers={"X-User-ID": "other"}),
            http.get("/"),
            http.get("/docs"),
            http.get("/openapi.json"),
        ]
        shared = [http.get("/static/app.js"), http.get("/static/style.css")]
        for reply in private + shared:
            where = f"{reply.request.url.path} ({reply.status_code})"
            csp = reply.headers.get("content-security-policy", "")
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, where
            assert "unsafe-inline" not in csp, where
            assert reply.headers.get("x-content-type-options") == "nosniff", where
            assert reply.headers.get("x-frame-options") == "DENY", where
            assert reply.headers.get("referrer-policy") == "no-referrer", where
        for reply in private:
            where = f"{reply.request.url.path} ({reply.status_code})"
            assert reply.headers.get("cache-control") == "private, no-store", where
            assert "X-User-ID" in reply.headers.get("vary", ""), where
        for reply in shared:
            assert reply.headers.get("cache-control") == "no-cache"
        # GeoJSON goes compressed to a client that accepts it, as it is to one that does not.
        url = f"/jobs/{job_id}/results/tissue.geojson"
        plain = http.get(url, headers={**user, "Accept-Encoding": "identity"})
        packed = http.get(url, headers={**user, "Accept-Encoding": "gzip"})
        assert plain.headers.get("content-encoding") is None
        assert packed.headers.get("content-encoding") == "gzip"
        assert packed.content == plain.content  # httpx decompresses
        with http.stream("GET", url, headers={**user, "Accept-Encoding": "gzip"}) as raw:
            on_the_wire = b"".join(raw.iter_raw())
        assert len(on_the_wire) < len(plain.content) / 2, (len(on_the_wire), len(plain.content))
        preview = http.get(f"/jobs/{job_id}/results/preview.png", headers=user)
        assert preview.headers.get("content-encoding") is None  # PNG is compressed already


def test_an_unreachable_scheduler_is_503_without_its_address(tmp_path: Path) -> None:
    port = free_port()
    nobody = Service("nobody", None, tmp_path / "none.log", address=f"127.0.0.1:{port}")  # type: ignore[arg-type]
    gateway = start_gateway(tmp_path, nobody)
    try:
        reply = httpx.get(gateway.address + "/workflows", headers={"X-User-ID": "a"}, timeout=30)
        assert reply.status_code == 503
        assert reply.json()["message"] == "the scheduler is unavailable; try again shortly"
        assert str(port) not in reply.text and "127.0.0.1" not in reply.text
        assert str(port) in gateway.log()  # the details are for the operator
    finally:
        gateway.stop()


def test_slides_are_listed_page_by_page_to_callers_only(gateway: Service) -> None:
    expected = sorted(
        p.name for p in SLIDES.iterdir() if p.suffix.lower() in (".svs", ".tiff", ".dcm")
    )
    with httpx.Client(base_url=gateway.address, timeout=30) as http:
        assert http.get("/slides").status_code == 401
        user = {"X-User-ID": "picker"}
        names, token = [], ""
        while True:
            reply = http.get("/slides", params={"page_size": 3, "page_token": token}, headers=user)
            assert reply.status_code == 200, reply.text
            body = reply.json()
            names += [slide["name"] for slide in body["slides"]]
            token = body["next_page_token"]
            if not token:
                break
        assert names == expected
        cmu = next(
            s for s in http.get("/slides", headers=user).json()["slides"] if s["name"] == CMU
        )
        assert (cmu["width"], cmu["height"], cmu["vendor"]) == (2220, 2967, "aperio")
        assert str(SLIDES) not in http.get("/slides", headers=user).text
        bad = http.get("/slides", params={"page_token": "nope"}, headers=user)
        assert bad.status_code == 400


def test_a_slide_name_that_is_not_utf8_is_skipped_and_refused_readably(tmp_path: Path) -> None:
    """One such file used to fail GET /slides for every user (500)."""
    root = tmp_path / "slides"
    root.mkdir()
    for name in ("a.svs", "c.svs"):
        shutil.copy(SLIDES / "small.svs", root / name)
    shutil.copy(os.fsencode(SLIDES / "small.svs"), os.fsencode(root) + b"/b\xff.svs")
    with (
        cluster_with_gateway(tmp_path, slide_roots=str(root), worker_slots=(1,)) as (_, gateway),
        httpx.Client(base_url=gateway.address, timeout=30) as http,
    ):
        user = {"X-User-ID": "picker"}
        names, token = [], ""
        while True:
            page: dict[str, str | int] = {"page_size": 1, "page_token": token}
            reply = http.get("/slides", params=page, headers=user)
            assert reply.status_code == 200, reply.text
            names += [slide["name"] for slide in reply.json()["slides"]]
            token = reply.json()["next_page_token"]
            if not token:
                break
        assert names == ["a.svs", "c.svs"]
        job = {"job_type": "TISSUE_MASK", "wsi_path": "b\udcff.svs"}
        body = json.dumps({"jobs": [job]}).encode()  # "\udcff" escaped, as JSON allows
        json_type = {"Content-Type": "application/json"}
        refused = http.post("/workflows", content=body, headers={**user, **json_type})
        assert refused.status_code == 400
        assert refused.json()["code"] == "INVALID_ARGUMENT"
        assert "wsi_path 'b\\\\udcff.svs' is not valid UTF-8" in refused.json()["message"]
