"""Where the services listen out of the box (all configurable): one place for
the services, the launcher and the clients."""

from __future__ import annotations

HOST = "127.0.0.1"
SCHEDULER_PORT = 50051
WORKER_PORT = 50052
GATEWAY_PORT = 8000
SCHEDULER_METRICS_PORT = 9101
WORKER_METRICS_PORT = 9102

SCHEDULER = f"{HOST}:{SCHEDULER_PORT}"
WORKER = f"{HOST}:{WORKER_PORT}"
GATEWAY_URL = f"http://{HOST}:{GATEWAY_PORT}"
