"""The services' image, built by `make image` from the local base and run by
podman on this host's loopback (host network, every service bound to
127.0.0.1): scheduler, worker and gateway from the one image, as the
non-root user it declares, the secret passed at run time and in no layer; a
workflow on a generated slide runs to SUCCEEDED and its result downloads
through the gateway. (The Kubernetes manifests and their kube-play test are
still to come: issue 29.)"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import ROOT
from tests.integration.test_slurm import free_port
from tests.timing import wait_for
from wsi_runtime.synthetic_slides import synthetic_he_slide

IMAGE = "localhost/wsi:dev"
ENV = {**os.environ, "CONTAINERS_CONF": str(ROOT / "deploy" / "containers.conf")}
pytestmark = pytest.mark.skipif(
    shutil.which("podman") is None or os.geteuid() != 0,
    reason="needs podman, as root (make test installs it on CI)",
)


def podman(*args: str, timeout: float = 120) -> str:
    done = subprocess.run(
        ["podman", *args], env=ENV, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:3])} ...: {done.stderr.strip()}")
    return done.stdout.strip()


@pytest.fixture(scope="module")
def image() -> str:
    """Built by the README's command (the build is cached between runs)."""
    subprocess.run(["make", "image"], cwd=ROOT, env=ENV, check=True, timeout=1200)
    return IMAGE


@pytest.fixture
def containers() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
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


def test_the_image_runs_every_service_as_non_root_and_a_workflow_through_them(
    image: str, containers: list[str], tmp_path: Path
) -> None:
    secret = secrets.token_urlsafe(24)
    slides, results, state = tmp_path / "slides", tmp_path / "results", tmp_path / "state"
    for folder in (slides, results, state):
        folder.mkdir()
    synthetic_he_slide(slides / "demo.tiff", width=2048, height=1536, seed=2)
    for folder in (results, state):
        os.chown(folder, 10001, 10001)  # the image's user writes there
    scheduler_port, worker_port, gateway_port = free_port(), free_port(), free_port()
    scheduler = f"127.0.0.1:{scheduler_port}"
    ro = f"{slides}:/slides:ro"
    run(
        containers,
        image,
        secret,
        {
            "WSI_SCHEDULER_PORT": str(scheduler_port),
            "WSI_METRICS_PORT": "-1",
            "WSI_WORKER_ADDRESSES": "",
        },
        [ro, f"{state}:/state"],
        ["wsi-scheduler"],
    )
    run(
        containers,
        image,
        secret,
        {
            "WSI_WORKER_PORT": str(worker_port),
            "WSI_METRICS_PORT": "-1",
            "WSI_SCHEDULER": scheduler,
            "WSI_PROCESSES": "2",
        },
        [ro, f"{results}:/results"],
        ["wsi-worker"],
    )
    run(
        containers,
        image,
        secret,
        {"WSI_GATEWAY_PORT": str(gateway_port), "WSI_SCHEDULER_ADDRESS": scheduler},
        [],
        ["wsi-gateway"],
    )
    gateway = f"http://127.0.0.1:{gateway_port}"
    who = {"X-User-ID": "lab"}

    def up() -> bool:
        try:
            return httpx.get(f"{gateway}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 60, "the gateway to answer")
    jobs = [
        {"key": "mask", "branch": "a", "job_type": "TISSUE_MASK", "wsi_path": "demo.tiff"},
        {
            "key": "cells",
            "branch": "a",
            "job_type": "CELL_SEGMENTATION",
            "wsi_path": "demo.tiff",
            "depends_on": ["mask"],
        },
    ]
    created = httpx.post(f"{gateway}/workflows", json={"jobs": jobs}, headers=who, timeout=30)
    assert created.status_code == 201, created.text
    workflow_id = created.json()["workflow_id"]
    deadline = time.monotonic() + 120
    while (wf := httpx.get(f"{gateway}/workflows/{workflow_id}", headers=who).json())[
        "state"
    ] not in ("SUCCEEDED", "FAILED", "CANCELLED") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert wf["state"] == "SUCCEEDED", wf
    cells = next(j for j in wf["jobs"] if j["key"] == "cells")
    assert cells["result"]["summary"]["nuclei"] > 100
    download = httpx.get(
        f"{gateway}/jobs/{cells['job_id']}/results/cells.geojson", headers=who, timeout=60
    )
    assert download.status_code == 200 and download.json()["type"] == "FeatureCollection"
    # Every service runs as the image's non-root user; the secret is in no layer.
    for name in containers:
        assert podman("exec", name, "id", "-u") == "10001"
    assert secret not in podman("image", "inspect", image)
    assert "WORKER_SECRET=" not in podman("history", "--no-trunc", image)
