"""``make run``: starts a worker, the scheduler and the gateway on loopback with
the default settings (or the ``WSI_*`` environment), prints where they are, and
keeps them running until it is asked to stop (Ctrl-C, SIGTERM, SIGHUP).

- The services die with the launcher whatever ends it, SIGKILL included (the
  kernel sends each one SIGTERM when its parent goes): no orphan holds a port.
- A service that exits on its own is started again with backoff; the others
  go on (the scheduler keeps a lost worker's jobs and retries them).
- A service that cannot start (a port in use) ends the launch with its own
  one-line reason and a non-zero exit.
- The default slide folder ``./slides`` is created, with a synthetic demo slide
  when empty; a slide root named explicitly must exist.
- What the launcher decides (slide roots, addresses, the worker secret) reaches
  the services as their flags; its own environment is left as it found it."""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from wsi_protocol import addresses
from wsi_runtime import settings
from wsi_runtime.health_wait import wait_http, wait_serving
from wsi_runtime.lifetime import LAUNCHER_PID_ENV
from wsi_runtime.serving import StartupError, check_port_free, check_slide_roots
from wsi_runtime.synthetic_slides import synthetic_he_slide
from wsi_runtime.worker_secret import SECRET_ENV, SECRET_FILE_ENV

DEMO_SLIDE = "demo.tiff"
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 60.0  # a service up this long starts again with the shortest backoff


@dataclass
class Service:
    name: str
    argv: list[str]
    ports: list[tuple[str, int, str]]  # (host, port, what) it will listen on
    ready: Callable[[Callable[[], bool]], None]  # waits until serving; given "still alive"
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    backoff: float = BACKOFF_FIRST_S
    restart_at: float = 0.0

    def start(self) -> None:
        # Its own session: Ctrl-C reaches only the launcher, which stops the
        # services in order; LAUNCHER_PID_ENV makes each one die with it.
        env = {**os.environ, LAUNCHER_PID_ENV: str(os.getpid())}
        self.process = subprocess.Popen(self.argv, start_new_session=True, env=env)
        self.started = time.monotonic()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def slide_roots() -> list[Path]:
    """The slide roots, checked: an explicit root must exist; the default is
    made (with a demo slide when empty), so a first job runs after cloning."""
    explicit = os.environ.get("WSI_SLIDE_ROOTS", "")
    if explicit:
        roots = settings.path_list(explicit)
        check_slide_roots(roots)
        return roots
    root = settings.DEFAULT_SLIDE_ROOT
    root.mkdir(parents=True, exist_ok=True)
    if not any(root.iterdir()):
        print(f"writing a synthetic demo slide to {root / DEMO_SLIDE} ...", flush=True)
        synthetic_he_slide(root / DEMO_SLIDE, width=4096, height=3072, seed=1)
    return [root]


@dataclass(frozen=True)
class Plan:
    """Where each service listens, from the ``WSI_*`` environment or the defaults,
    and what the launcher hands them."""

    host: str
    worker: str
    scheduler: str
    gateway: str
    metrics_port: int  # the scheduler's; the workers' are the next ones
    local_workers: int = 1
    upstream: str = ""  # the scheduler the gateway calls (WSI_SCHEDULER_ADDRESS, or ours)
    slide_roots: tuple[Path, ...] = ()
    secret_file: Path | None = None  # the secret made for this launch, if none was given

    @property
    def workers(self) -> list[str]:
        """WSI_LOCAL_WORKERS workers on consecutive ports from WSI_WORKER_PORT."""
        host, first = self.worker.rsplit(":", 1)
        return [f"{host}:{int(first) + index}" for index in range(self.local_workers)]

    @staticmethod
    def from_env() -> Plan:
        host = os.environ.get("WSI_HOST", addresses.HOST)

        def at(variable: str, default: int) -> str:
            return f"{host}:{os.environ.get(variable, default)}"

        try:
            count = int(os.environ.get("WSI_LOCAL_WORKERS", "1"))
        except ValueError:
            count = 0
        if not 1 <= count <= 64:
            raise StartupError("WSI_LOCAL_WORKERS must be a whole number from 1 to 64")
        scheduler = at("WSI_SCHEDULER_PORT", addresses.SCHEDULER_PORT)
        return Plan(
            host,
            at("WSI_WORKER_PORT", addresses.WORKER_PORT),
            scheduler,
            at("WSI_GATEWAY_PORT", addresses.GATEWAY_PORT),
            int(os.environ.get("WSI_METRICS_PORT", addresses.SCHEDULER_METRICS_PORT)),
            count,
            upstream=os.environ.get("WSI_SCHEDULER_ADDRESS") or scheduler,
        )


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _grpc_ready(address: str) -> Callable[[Callable[[], bool]], None]:
    return lambda alive: wait_serving(address, timeout=60, alive=alive)


def _shared_flags(plan: Plan) -> list[str]:
    """What the scheduler and its workers are both told."""
    roots = ["--slide-roots", ":".join(str(root) for root in plan.slide_roots)]
    secret = ["--worker-secret-file", str(plan.secret_file)] if plan.secret_file else []
    return roots + secret


def _worker(plan: Plan, index: int, address: str) -> Service:
    """Each worker has its own results folder (one worker: the folder itself)."""
    results = Path(os.environ.get("WSI_RESULTS_DIR") or "results")
    folder = results if plan.local_workers == 1 else results / f"worker-{index}"
    metrics = plan.metrics_port + 1 + index
    return Service(
        "worker" if plan.local_workers == 1 else f"worker {index}",
        [
            sys.executable,
            "-m",
            "worker_service",
            "--worker-port",
            str(_port(address)),
            "--metrics-port",
            str(metrics),
            "--results-dir",
            str(folder),
            "--scheduler",
            plan.scheduler,
            *_shared_flags(plan),
        ],
        [(plan.host, _port(address), "worker"), (plan.host, metrics, "worker metrics")],
        _grpc_ready(address),
    )


def services(plan: Plan) -> list[Service]:
    """The scheduler first: the workers join it as soon as they are up."""
    host, metrics_port = plan.host, plan.metrics_port
    scheduler = Service(
        "scheduler",
        [
            sys.executable,
            "-m",
            "scheduler_service",
            "--metrics-port",
            str(metrics_port),
            # Static workers only if asked for: the local ones join by themselves.
            "--worker-addresses",
            os.environ.get("WSI_WORKER_ADDRESSES", ""),
            *_shared_flags(plan),
        ],
        [(host, _port(plan.scheduler), "scheduler"), (host, metrics_port, "scheduler metrics")],
        _grpc_ready(plan.scheduler),
    )
    gateway = Service(
        "gateway",
        [sys.executable, "-m", "wsi_gateway", "--scheduler-address", plan.upstream],
        [(host, _port(plan.gateway), "gateway")],
        lambda alive: wait_http(plan.gateway, timeout=60, alive=alive),
    )
    workers = [_worker(plan, index, address) for index, address in enumerate(plan.workers)]
    return [scheduler, *workers, gateway]


def new_worker_secret() -> Path | None:
    """A new secret for scheduler and workers at each start, unless one is set:
    the worker then runs jobs for this scheduler only. It goes in a file only
    this user can read, in a folder of its own (a flag's value would show in
    every process listing); the launcher removes both when it ends."""
    if os.environ.get(SECRET_ENV) or os.environ.get(SECRET_FILE_ENV):
        return None
    path = Path(tempfile.mkdtemp(prefix="wsi-launch-")) / "worker-secret"  # a 0700 folder
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_urlsafe(32))
    return path


def banner(plan: Plan) -> str:
    host, metrics_port, gateway = plan.host, plan.metrics_port, plan.gateway
    scheduler = plan.upstream
    return (
        f"\n  web UI     http://{gateway}/   (REST + OpenAPI at /docs)\n"
        f"  scheduler  grpc://{scheduler}   (public API, reflection, health)\n"
        f"  workers    {', '.join(f'grpc://{w}' for w in plan.workers)}   (joined the scheduler)\n"
        f"  metrics    http://{host}:{metrics_port}/metrics (scheduler), "
        + ", ".join(
            f"http://{host}:{metrics_port + 1 + i}/metrics" for i in range(plan.local_workers)
        )
        + f" (workers), http://{gateway}/metrics (gateway)\n"
        f"  slides     {':'.join(str(r.resolve()) for r in plan.slide_roots)}\n"
        f"  try: grpcurl -plaintext {scheduler} list\n"
        "  Ctrl-C stops everything.\n"
    )


def supervise(running: Sequence[Service], stopping: Callable[[], bool]) -> None:
    """Until asked to stop: a service that exits is started again after its
    backoff (doubling up to BACKOFF_MAX_S, reset once it has run a while)."""
    while not stopping():
        now = time.monotonic()
        for service in running:
            if service.alive() or stopping():
                continue
            if service.restart_at == 0.0:
                code = service.process.returncode if service.process else None
                if now - service.started > STABLE_AFTER_S:
                    service.backoff = BACKOFF_FIRST_S
                print(
                    f"launcher: {service.name} exited (code {code});"
                    f" starting it again in {service.backoff:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
                service.restart_at = now + service.backoff
                service.backoff = min(service.backoff * 2, BACKOFF_MAX_S)
            elif now >= service.restart_at:
                service.restart_at = 0.0
                service.start()
        time.sleep(0.2)


def main() -> int:
    stop_requested: list[int] = []

    def request_stop(signum: int, _: object) -> None:
        stop_requested.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, request_stop)
    try:
        roots = slide_roots()
    except StartupError as exc:
        print(f"wsi launcher: error: {exc}", file=sys.stderr)
        return 2
    try:
        plan = Plan.from_env()
    except StartupError as exc:
        print(f"wsi launcher: error: {exc}", file=sys.stderr)
        return 2
    secret_file = new_worker_secret()
    try:
        plan = dataclasses.replace(plan, slide_roots=tuple(roots), secret_file=secret_file)
        return launch(plan, stop_requested)
    finally:
        if secret_file is not None:
            shutil.rmtree(secret_file.parent, ignore_errors=True)


def launch(plan: Plan, stop_requested: list[int]) -> int:
    planned = services(plan)
    try:
        # Before anything starts: another instance's services would otherwise
        # answer the readiness checks of ours.
        for service in planned:
            for host, port, what in service.ports:
                check_port_free(host, port, what)
    except StartupError as exc:
        print(f"wsi launcher: error: {exc}", file=sys.stderr)
        return 1
    started: list[Service] = []
    try:
        for service in planned:
            service.start()
            started.append(service)

            def starting(service: Service = service) -> bool:
                return service.alive() and not stop_requested

            try:
                service.ready(starting)
            except (RuntimeError, TimeoutError) as exc:
                if stop_requested:
                    return 0
                # The service printed its own reason (a port in use, say) above.
                print(f"wsi launcher: error: {service.name} did not start: {exc}", file=sys.stderr)
                return 1
        print(banner(plan), flush=True)
        supervise(started, lambda: bool(stop_requested))
        return 0
    finally:
        for service in reversed(started):
            service.stop()
        for service in reversed(started):
            service.wait(timeout=15)


if __name__ == "__main__":
    sys.exit(main())
