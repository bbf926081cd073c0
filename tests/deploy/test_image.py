"""The services' image, built by `make image` from the local base and run by
podman on this host's loopback (host network, every service bound to
127.0.0.1): scheduler, worker and gateway from the one image, as the
non-root user it declares, the secret passed at run time and in no layer; a
workflow on a generated slide runs to SUCCEEDED and its result downloads
through the gateway. The Kubernetes manifests: test_kube.py."""

from __future__ import annotations

import os
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.deploy.podman import ENV, logs, needs_podman, podman
from tests.integration.support import succeeded_over_http
from tests.processes import free_port
from tests.timing import patience
from wsi_runtime.health_wait import wait_http
from wsi_runtime.synthetic_slides import synthetic_he_slide

pytestmark = needs_podman


@pytest.fixture
def containers(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """The test's containers, removed after it; their logs printed if it failed."""
    names: list[str] = []
    yield names
    failed = getattr(request.node, "failed_call", False)
    for name in names:
        if failed:
            print(logs(name))
        subprocess.run(["podman", "rm", "-f", "-t", "2", name], env=ENV, capture_output=True)


def run(
    names: list[str],
    image: str,
    secret: str,
    env: dict[str, str],
    volumes: list[str],
    command: list[str],
) -> str:
    name = f"wsi-test-{uuid.uuid4().hex[:8]}"
    names.append(name)
    args = ["run", "-d", "--name", name, "--network", "host", "-e", "WSI_HOST=127.0.0.1"]
    args += ["-e", "WSI_WORKER_SECRET"]  # its value from this process's environment only
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    for volume in volumes:
        args += ["-v", volume]
    subprocess.run(
        ["podman", *args, image, *command],
        env={**ENV, "WSI_WORKER_SECRET": secret},
        check=True,
        capture_output=True,
        timeout=60,
    )
    return name


def start_services(image: str, names: list[str], secret: str, tmp_path: Path) -> str:
    """Scheduler, worker and gateway from ``image`` on loopback, each with its
    volumes (the results and state folders owned by the image's user); the
    gateway's URL."""
    slides, results, state = tmp_path / "slides", tmp_path / "results", tmp_path / "state"
    for folder in (slides, results, state):
        folder.mkdir()
    synthetic_he_slide(slides / "demo.tiff", width=2048, height=1536, seed=2)
    for folder in (results, state):
        os.chown(folder, 10001, 10001)
    scheduler_port, worker_port, gateway_port = free_port(), free_port(), free_port()
    scheduler = f"127.0.0.1:{scheduler_port}"
    ro = f"{slides}:/slides:ro"
    no_metrics = {"WSI_METRICS_PORT": "-1"}
    scheduler_env = {"WSI_SCHEDULER_PORT": str(scheduler_port), **no_metrics}
    run(names, image, secret, scheduler_env, [ro, f"{state}:/state"], ["wsi-scheduler"])
    worker_env = {"WSI_WORKER_PORT": str(worker_port), "WSI_SCHEDULER": scheduler, **no_metrics}
    run(names, image, secret, worker_env, [ro, f"{results}:/results"], ["wsi-worker"])
    gateway_env = {"WSI_GATEWAY_PORT": str(gateway_port), "WSI_SCHEDULER_ADDRESS": scheduler}
    run(names, image, secret, gateway_env, [], ["wsi-gateway"])
    return f"http://127.0.0.1:{gateway_port}"


def test_the_image_runs_every_service_as_non_root_and_a_workflow_through_them(
    image: str, containers: list[str], tmp_path: Path
) -> None:
    secret = secrets.token_urlsafe(24)
    gateway = start_services(image, containers, secret, tmp_path)
    wait_http(gateway.removeprefix("http://"), patience(60))
    who = {"X-User-ID": "lab"}
    mask = {"key": "mask", "branch": "a", "job_type": "TISSUE_MASK", "wsi_path": "demo.tiff"}
    cells = {**mask, "key": "cells", "job_type": "CELL_SEGMENTATION", "depends_on": ["mask"]}
    with httpx.Client(base_url=gateway, timeout=60) as http:
        created = http.post("/workflows", json={"jobs": [mask, cells]}, headers=who)
        assert created.status_code == 201, created.text
        wf = succeeded_over_http(http, created.json()["workflow_id"], who)
        done = next(j for j in wf["jobs"] if j["key"] == "cells")
        assert done["result"]["summary"]["nuclei"] > 100
        download = http.get(f"/jobs/{done['job_id']}/results/cells.geojson", headers=who)
    assert download.status_code == 200 and download.json()["type"] == "FeatureCollection"
    # Every service runs as the image's non-root user; the secret is in no layer.
    for name in containers:
        assert podman("exec", name, "id", "-u") == "10001"
    assert secret not in podman("image", "inspect", image)
    assert secret not in podman("history", "--no-trunc", image)
