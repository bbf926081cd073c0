"""The Kubernetes manifests, played by podman as the README says
(`deploy/kubernetes/play_local.py`, the README's block run as it stands):
the gateway answers with a token, a workflow runs to SUCCEEDED on a
generated slide and its result downloads; a worker added by raising the
replicas joins and takes jobs; the scheduler's pod removed and played again
on its volume still has the finished workflow; each pod answers Prometheus
where its annotations say. Every container runs as uid 10001 on a read-only
root file system."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy.podman import (
    ENV,
    full_log,
    image_built_by_make_test,
    logs,
    needs_podman,
    play_local,
    podman,
)
from tests.harness import ROOT
from tests.integration.support import succeeded_over_http
from tests.processes import free_port
from tests.timing import patience, wait_for
from wsi_runtime.health_wait import wait_http
from wsi_runtime.synthetic_slides import synthetic_he_slide

pytestmark = needs_podman
PLAY = [str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "deploy/kubernetes/play_local.py")]
MARK = "<!-- kube-play: tests/deploy/test_kube.py runs this block as it stands -->"


def readme_block() -> str:
    """The README's kube-play commands, as they stand."""
    text = (ROOT / "README.md").read_text()
    block = re.search(re.escape(MARK) + r"\n```bash\n(.*?)```", text, re.S)
    assert block, "the README has no kube-play block"
    return block.group(1)


def play(*args: str) -> None:
    subprocess.run([*PLAY, *args], env=ENV, check=True, capture_output=True, timeout=300)


@pytest.fixture
def played(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """The README's block run in ``tmp_path`` (a slide in ``slides/``; the
    block builds the image); the gateway's URL and the token. Everything
    removed after, logs shown on failure. A deployment already played here
    (someone trying the README) is left alone: the test is skipped."""
    there = [
        *(p for p in podman("pod", "ps", "--format", "{{.Name}}").split() if p.startswith("wsi-")),
        *(
            v
            for v in podman("volume", "ls", "--format", "{{.Name}}").split()
            if v in play_local.VOLUMES
        ),
    ]
    if there:
        pytest.skip(
            f"a kube-play deployment is here ({', '.join(there)}); the test would remove it:"
            " `deploy/kubernetes/play_local.py down --volumes` first"
        )
    (tmp_path / "slides").mkdir()
    synthetic_he_slide(tmp_path / "slides" / "demo.tiff", width=1536, height=1024, seed=2)
    port = free_port()
    script = (
        readme_block()
        .replace(".venv/bin/", f"{ROOT}/.venv/bin/")
        .replace("deploy/kubernetes/", f"{ROOT}/deploy/kubernetes/")
        # (built by `make test` just before pytest, or here)
        .replace("make image", "true" if image_built_by_make_test() else f"make -C {ROOT} image")
        .replace("--gateway-port 8000", f"--gateway-port {port}")
    )
    try:
        done = subprocess.run(
            ["bash", "-euc", script], cwd=tmp_path, env=ENV, capture_output=True, timeout=900
        )
        assert done.returncode == 0, done.stderr.decode()[-3000:]
        token = (tmp_path / "alice.token").read_text().strip()
        yield {"url": f"http://127.0.0.1:{port}", "token": token, "dir": tmp_path}
    finally:
        if getattr(request.node, "failed_call", False):
            for name in podman("ps", "-a", "--format", "{{.Names}}").split():
                if name.startswith("wsi-") and not name.endswith("-infra"):
                    print(logs(name))
        play("down", "--volumes")


def joined(http: httpx.Client, who: dict[str, str], count: int) -> bool:
    try:
        stats = http.get("/stats", headers=who).json()
    except (httpx.HTTPError, ValueError):
        return False
    return int(stats.get("workers_connected", 0)) == count


def remove_pods(*pods: str) -> None:
    """As a pod is deleted: its containers stopped within their grace, then removed."""
    podman("pod", "stop", "--time", "10", *pods)
    podman("pod", "rm", *pods)


def pod_ip(pod: str) -> str:
    container = f"{pod}-{pod.split('-')[1]}"  # wsi-worker-2-pod-0 -> ...-worker
    return podman(
        "inspect", container, "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
    )


def workflow(
    http: httpx.Client, who: dict[str, str], branch: str, cells: bool = True
) -> dict[str, Any]:
    """A tissue mask, and (``cells``) the segmentation that reuses it."""
    mask = {"key": "mask", "branch": branch, "job_type": "TISSUE_MASK", "wsi_path": "demo.tiff"}
    segment = {**mask, "key": "cells", "job_type": "CELL_SEGMENTATION", "depends_on": ["mask"]}
    jobs = [mask, segment] if cells else [mask]
    created = http.post("/workflows", json={"jobs": jobs}, headers=who)
    assert created.status_code == 201, created.text
    return succeeded_over_http(http, created.json()["workflow_id"], who, within_s=240)


def test_the_manifests_play_a_workflow_scale_and_keep_the_journal(
    played: dict[str, Any],
) -> None:
    url, who = played["url"], {"Authorization": f"Bearer {played['token']}"}
    wait_http(url.removeprefix("http://"), patience(90))
    with httpx.Client(base_url=url, timeout=60) as http:
        assert http.get("/workflows").status_code == 401  # token mode
        wait_for(lambda: joined(http, who, 2), 90, "the two workers of the replicas to join")
        first = workflow(http, who, "first")
        cells = next(j for j in first["jobs"] if j["key"] == "cells")
        assert cells["result"]["summary"]["nuclei"] > 100
        download = http.get(f"/jobs/{cells['job_id']}/results/cells.geojson", headers=who)
        assert download.status_code == 200 and download.json()["type"] == "FeatureCollection"

        # A third replica joins; with the first two gone, it takes the next workflow.
        slides = str(played["dir"] / "slides")
        play("up", "--slides", slides, "--workers", "3")
        wait_for(lambda: joined(http, who, 3), 90, "the third worker to join")
        third = pod_ip("wsi-worker-3-pod-0")
        remove_pods("wsi-worker-pod-0", "wsi-worker-2-pod-0")
        wait_for(lambda: joined(http, who, 1), 60, "the removed workers to leave")
        second = workflow(http, who, "second", cells=False)  # where it runs is the point
        assert {j["attempt_workers"][-1] for j in second["jobs"]} == {f"{third}:50052"}

        # The scheduler's pod removed and played again: its journal is on the volume.
        before = pod_ip("wsi-scheduler-pod-0")
        remove_pods("wsi-scheduler-pod-0")
        play("up", "--slides", slides, "--workers", "3")
        wait_for(
            lambda: http.get(f"/workflows/{first['workflow_id']}", headers=who).status_code == 200,
            90,
            "the played-again scheduler to answer",
        )
        again = http.get(f"/workflows/{first['workflow_id']}", headers=who).json()
        assert again["state"] == "SUCCEEDED" and len(again["jobs"]) == 2
        # The worker that stayed finds the new pod by its name (at another
        # address) and joins it within seconds; the two replicas played again
        # join once they have started (their start is not the point here).
        assert pod_ip("wsi-scheduler-pod-0") != before
        stayed = "wsi-worker-3-pod-0-worker"
        rejoined = lambda: full_log(stayed).count("joined the scheduler") == 2  # noqa: E731
        wait_for(rejoined, 10, f"{stayed} to join the new scheduler")
        wait_for(lambda: joined(http, who, 3), 60, "the replicas played again to join")
        mask = {"branch": "after", "job_type": "TISSUE_MASK", "wsi_path": "demo.tiff"}
        created = http.post("/workflows", json={"jobs": [mask]}, headers=who)
        assert created.status_code == 201, created.text
        succeeded_over_http(http, created.json()["workflow_id"], who, within_s=60)

    # Prometheus scrapes each pod by its IP, where its annotations say.
    for deployment in (o for o in play_local.load() if o["kind"] == "Deployment"):
        name = deployment["metadata"]["name"]
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        pod = pod_ip(play_local.pod_name(name if name != "wsi-worker" else "wsi-worker-3"))
        target = (
            f"http://{pod}:{annotations['prometheus.io/port']}{annotations['prometheus.io/path']}"
        )
        scraped = httpx.get(target, timeout=10)
        assert scraped.status_code == 200 and b"# TYPE" in scraped.content, target

    # Every service as the image's user, on a read-only root file system.
    for name in (
        "wsi-scheduler-pod-0-scheduler",
        "wsi-worker-3-pod-0-worker",
        "wsi-gateway-pod-0-gateway",
    ):
        assert podman("exec", name, "id", "-u") == "10001"
        assert podman("inspect", name, "--format", "{{.HostConfig.ReadonlyRootfs}}") == "true"
