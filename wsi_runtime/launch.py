"""``make run``: starts a worker and the scheduler on loopback with the default
settings (or the ``WSI_*`` environment), prints where they are, and stops both
cleanly on Ctrl-C or SIGTERM. An empty slide folder gets a synthetic demo
slide, so a first job can run straight after cloning."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from wsi_runtime.health_wait import wait_http, wait_serving
from wsi_runtime.synthetic_slides import synthetic_he_slide

DEMO_SLIDE = "demo.tiff"


def _address(port_var: str, default: int) -> str:
    host = os.environ.get("WSI_HOST", "127.0.0.1")
    return f"{host}:{os.environ.get(port_var, default)}"


def _running(process: subprocess.Popen[bytes]) -> Callable[[], bool]:
    return lambda: process.poll() is None


def main() -> int:
    slide_roots = os.environ.setdefault("WSI_SLIDE_ROOTS", "slides")
    for root in slide_roots.split(":"):
        Path(root).mkdir(parents=True, exist_ok=True)
    first_root = Path(slide_roots.split(":")[0])
    if not any(first_root.iterdir()):
        print(f"writing a synthetic demo slide to {first_root / DEMO_SLIDE} ...", flush=True)
        synthetic_he_slide(first_root / DEMO_SLIDE, width=4096, height=3072, seed=1)
    worker_address = _address("WSI_WORKER_PORT", 50052)
    scheduler_address = _address("WSI_SCHEDULER_PORT", 50051)
    gateway_address = _address("WSI_GATEWAY_PORT", 8000)
    # The scheduler's Prometheus port; the worker's is the next one.
    host = os.environ.get("WSI_HOST", "127.0.0.1")
    metrics_port = int(os.environ.get("WSI_METRICS_PORT", 9101))
    os.environ.setdefault("WSI_WORKER_ADDRESSES", worker_address)
    os.environ.setdefault("WSI_SCHEDULER_ADDRESS", scheduler_address)
    children: list[subprocess.Popen[bytes]] = []

    stopping: list[bool] = []

    def stop(*_: object) -> None:
        stopping.append(True)
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    try:
        for module, address, metrics in (
            ("worker_service", worker_address, metrics_port + 1),
            ("scheduler_service", scheduler_address, metrics_port),
        ):
            child = subprocess.Popen(
                [sys.executable, "-m", module, "--metrics-port", str(metrics)],
                start_new_session=True,
            )
            children.append(child)
            wait_serving(address, timeout=30, alive=_running(child))
        gateway = subprocess.Popen([sys.executable, "-m", "gateway"], start_new_session=True)
        children.append(gateway)
        wait_http(gateway_address, timeout=30, alive=_running(gateway))
        print(
            f"\n  web UI     http://{gateway_address}/   (REST + OpenAPI at /docs)\n"
            f"  scheduler  grpc://{scheduler_address}   (public API, reflection, health)\n"
            f"  worker     grpc://{worker_address}\n"
            f"  metrics    http://{host}:{metrics_port}/metrics (scheduler), "
            f"http://{host}:{metrics_port + 1}/metrics (worker), "
            f"http://{gateway_address}/metrics (gateway)\n"
            f"  slides     {':'.join(str(Path(r).resolve()) for r in slide_roots.split(':'))}\n"
            f"  try: grpcurl -plaintext {scheduler_address} list\n"
            "  Ctrl-C stops everything.\n",
            flush=True,
        )
        while all(child.poll() is None for child in children):
            time.sleep(0.2)
        return 0 if stopping else 1  # asked to stop, or a service died on its own
    except KeyboardInterrupt:
        return 0
    finally:
        stop()
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()


if __name__ == "__main__":
    sys.exit(main())
