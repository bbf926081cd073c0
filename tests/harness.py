"""Starts real scheduler and worker processes on free loopback ports for tests
and benchmarks, and always stops them."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from tests.processes import started
from tests.timing import patience
from wsi_protocol import metadata
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb
from wsi_protocol.scheduler.v1 import scheduler_pb2_grpc as pb_grpc
from wsi_runtime.health_wait import wait_http, wait_serving
from wsi_runtime.token_file import add_token

ROOT = Path(__file__).resolve().parent.parent
SLIDES = ROOT / "tests" / "fixtures" / "slides"  # small real slides, kept in the repo
CMU = "CMU-1-Small-Region.svs"
# What every scheduler and worker the tests start shares (see wsi_runtime.worker_secret).
WORKER_SECRET = secrets.token_urlsafe(24)
LISTENING = re.compile(r"listening on (\S+)")
METRICS = re.compile(r"metrics on (\S+)")


@dataclass(frozen=True)
class TlsClient:
    """How the harness reaches a TLS service: the CA, and a client certificate
    for a server that asks for one (mutual TLS)."""

    ca: str
    cert: str = ""
    key: str = ""

    def grpc(self) -> grpc.ChannelCredentials:
        def read(path: str) -> bytes | None:
            return Path(path).read_bytes() if path else None

        return grpc.ssl_channel_credentials(read(self.ca), read(self.key), read(self.cert))

    def https(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca)


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    address: str = ""
    metrics_url: str = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=15)
        self._reap_group()

    def _reap_group(self) -> None:
        """Ends anything the service left in its session (its process pool)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it does not exit within 15 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reap_group()
        return self.process.returncode


def _start(
    module: str,
    name: str,
    workdir: Path,
    args: Sequence[str],
    env: Mapping[str, str],
    health: bool = True,
    root: Path = ROOT,
    tls: TlsClient | None = None,
    prefix: Sequence[str] = (),
) -> Service:
    """``root``: the checkout whose code runs (another commit's worktree for
    an A/B benchmark), ahead of the installed packages."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}.log"
    full_env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "WSI_WORKER_SECRET": WORKER_SECRET,
        **env,
    }
    if root != ROOT:
        full_env["PYTHONPATH"] = os.pathsep.join(
            [str(root), str(root / "clients"), str(root / "gateway")]
        )
    process = started([*prefix, sys.executable, "-m", module, *args], root, full_env, log_path)
    service = Service(name, process, log_path)
    deadline = time.monotonic() + patience(30)
    while time.monotonic() < deadline:
        match = LISTENING.search(service.log())
        if match:
            service.address = match.group(1)
            metrics = METRICS.search(service.log())
            service.metrics_url = metrics.group(1) if metrics else ""
            break
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{service.log()}")
        time.sleep(0.05)
    else:
        service.kill()
        raise RuntimeError(f"{name} did not start:\n{service.log()}")
    running = lambda: process.poll() is None  # noqa: E731
    if health:
        wait_serving(service.address, alive=running, credentials=tls.grpc() if tls else None)
    else:
        wait_http(service.address, alive=running, tls=tls.https() if tls else None)
    return service


def start_worker(workdir: Path, name: str = "worker", slots: int = 2, **extra: Any) -> Service:
    """``root=``: the checkout to run (see ``_start``); ``tls=`` (a TlsClient):
    how to reach a TLS worker; other keywords are flags. Jobs that name no
    backend get the classical one (``default_backend="auto"`` for the
    deployment's default, the learned model): fast, where the segmenter is
    not what a test is about."""
    root = Path(extra.pop("root", str(ROOT)))
    extra.setdefault("default_backend", "classical")
    tls = extra.pop("tls", None)
    prefix = extra.pop("prefix", ())  # e.g. ("ip", "netns", "exec", NAME): another host
    extra.setdefault("metrics_port", "0")
    extra.setdefault("worker_port", "0")
    args = ["--slots", str(slots), "--results-dir", str(workdir / "results")]
    args += ["--slide-roots", str(SLIDES), "--progress-interval", "0.05"]
    for key, value in extra.items():
        args += [f"--{key.replace('_', '-')}", value]
    return _start("worker_service", name, workdir, args, {}, root=root, tls=tls, prefix=prefix)


def start_scheduler(workdir: Path, workers: Sequence[Service], **extra: Any) -> Service:
    """``root=``: the checkout to run (see ``_start``); other keywords are flags.
    The journal lives in ``workdir`` unless ``journal=`` says otherwise, so a
    scheduler started again on the same workdir recovers its state."""
    root = Path(str(extra.pop("root", ROOT)))
    tls = extra.pop("tls", None)
    extra.setdefault("journal", str(workdir / "scheduler-journal.sqlite"))
    extra.setdefault("metrics_port", "0")
    args = ["--scheduler-port", "0", "--slide-roots", str(SLIDES)]
    args += ["--worker-addresses", ",".join(w.address for w in workers)]
    for key, value in extra.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return _start("scheduler_service", "scheduler", workdir, args, {}, root=root, tls=tls)


def start_gateway(
    workdir: Path,
    scheduler: Service,
    keepalive: float = 15.0,
    tls: TlsClient | None = None,
    root: Path = ROOT,
    **extra: str,
) -> Service:
    """``tls``: how to reach an HTTPS gateway; ``root``: the checkout to run
    (see ``_start``); other keywords are flags (``auth_tokens=PATH`` ->
    ``--auth-tokens PATH``)."""
    args = ["--gateway-port", "0", "--scheduler-address", scheduler.address]
    args += ["--sse-keepalive", str(keepalive)]
    for key, value in extra.items():
        args += [f"--{key.replace('_', '-')}", value]
    service = _start("wsi_gateway", "gateway", workdir, args, {}, health=False, tls=tls, root=root)
    service.address = "http://" + service.address
    return service


@dataclass
class Cluster:
    scheduler: Service
    workers: list[Service]
    channel: grpc.Channel
    stub: pb_grpc.SchedulerStub
    probe: tuple[tuple[str, str], ...] = ((metadata.USER_ID, "probe"),)  # the harness's own
    results_dir: Path = Path()  # the workers' results folder (one for all)

    def result_file(self, relative: str) -> Path:
        """A job's result file from its path in ``Job.result.files`` (JOB_ID/NAME)."""
        return self.results_dir / relative

    def wait_workers(self, count: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + patience(timeout)
        while time.monotonic() < deadline:
            stats = self.stub.GetStats(pb.GetStatsRequest(), metadata=self.probe)
            if stats.workers_connected >= count:
                return
            time.sleep(0.05)
        raise TimeoutError(f"only {stats.workers_connected} of {count} workers connected")


@contextmanager
def cluster(
    workdir: Path,
    worker_slots: Sequence[int] = (4,),
    slide_roots: str = "",
    worker_flags: dict[str, str] | None = None,
    **scheduler_settings: int | str,
) -> Iterator[Cluster]:
    """Workers (with ``worker_flags``) and a scheduler; ``slide_roots``
    (colon-separated) replaces the fixture slides as the roots of both."""
    roots = {"slide_roots": slide_roots} if slide_roots else {}
    with ExitStack() as stack:
        workers = []
        for index, slots in enumerate(worker_slots):
            worker = start_worker(workdir, f"worker{index}", slots, **roots, **(worker_flags or {}))
            stack.callback(worker.stop)
            workers.append(worker)
        scheduler = start_scheduler(workdir, workers, **roots, **scheduler_settings)
        stack.callback(scheduler.stop)
        channel = stack.enter_context(grpc.insecure_channel(scheduler.address))
        result = Cluster(scheduler, workers, channel, pb_grpc.SchedulerStub(channel))
        result.results_dir = workdir / "results"
        if scheduler_settings.get("auth_tokens"):  # token mode: the probe needs one too
            result.probe = bearer(add_token(Path(str(scheduler_settings["auth_tokens"])), "probe"))
        result.wait_workers(len(workers))
        yield result


@contextmanager
def cluster_with_gateway(
    workdir: Path, auth_tokens: str = "", **settings: int | str | Sequence[int]
) -> Iterator[tuple[Cluster, Service]]:
    """``cluster(...)`` plus a gateway serving the workers' results;
    ``auth_tokens`` (a token file) puts scheduler and gateway in token mode."""
    tokens = {"auth_tokens": auth_tokens} if auth_tokens else {}
    with cluster(workdir, **tokens, **settings) as c:  # type: ignore[arg-type]
        gateway = start_gateway(workdir, c.scheduler, 15.0, None, ROOT, **tokens)
        try:
            yield c, gateway
        finally:
            gateway.stop()


def user(name: str) -> tuple[tuple[str, str]]:
    return ((metadata.USER_ID, name),)


def bearer(token: str) -> tuple[tuple[str, str]]:
    return ((metadata.AUTHORIZATION, f"Bearer {token}"),)
