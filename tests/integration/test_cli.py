"""The `wsi` console script and the example script, run as a user runs them
(subprocesses of the installed entry points) against real services."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import CMU, ROOT, Cluster, Service, cluster_with_gateway

WSI = Path(sys.executable).parent / "wsi"
EXAMPLE = ROOT / "clients" / "examples" / "submit_and_watch.py"


@dataclass
class Setup:
    cluster: Cluster
    gateway: Service
    results: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    workdir = tmp_path_factory.mktemp("cli")
    settings = {"worker_slots": (4,), "max_workers": 4, "max_active_users": 50}
    with cluster_with_gateway(workdir, **settings) as (c, gateway):  # type: ignore[arg-type]
        env = {
            **os.environ,
            "WSI_ADDRESS": c.scheduler.address,
            "WSI_USER": "cli-user",
        }
        yield Setup(c, gateway, workdir / "results", env)


def wsi(
    setup: Setup, *args: str, user: str | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(setup.env)
    if user is not None:
        env["WSI_USER"] = user
    return subprocess.run(
        [str(WSI), *args], env=env, capture_output=True, text=True, timeout=120, input=stdin
    )


def ok_json(done: subprocess.CompletedProcess[str]) -> object:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def one_line_error(done: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert done.returncode == code, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0]


def test_submit_watch_status_results_list_stats(setup: Setup, tmp_path: Path) -> None:
    created = ok_json(wsi(setup, "--json", "submit", CMU, "--name", "cli run"))
    assert isinstance(created, dict)
    workflow_id = created["workflow_id"]
    assert [(j["branch"], j["job_type"]) for j in created["jobs"]] == [
        (CMU, "TISSUE_MASK"),
        (CMU, "CELL_SEGMENTATION"),
    ]

    watched = wsi(setup, "watch", workflow_id)
    assert watched.returncode == 0, watched.stderr
    lines = watched.stdout.strip().splitlines()
    assert lines[-3] == f"workflow {workflow_id}: SUCCEEDED"
    assert lines[-2].strip().startswith(f"0 [{CMU}] TISSUE_MASK: SUCCEEDED")
    assert "tiles" in lines[-1] and "nuclei" in lines[-1]
    assert any("CELL_SEGMENTATION: RUNNING" in line for line in lines)

    status = ok_json(wsi(setup, "--json", "status", workflow_id))
    assert isinstance(status, dict) and status["state"] == "SUCCEEDED"
    job_id = status["jobs"][1]["job_id"]
    job_status = ok_json(wsi(setup, "--json", "status", job_id))
    assert isinstance(job_status, dict) and job_status["key"] == "1"
    human = wsi(setup, "status", workflow_id)
    assert human.returncode == 0 and "SUCCEEDED" in human.stdout and job_id in human.stdout

    paths = wsi(setup, "results", job_id)
    assert paths.returncode == 0
    listed = dict(line.split("\t") for line in paths.stdout.strip().splitlines())
    assert {"cells.geojson", "summary.json", "preview.png"} <= set(listed)
    downloaded = ok_json(
        wsi(setup, "--json", "results", job_id, "-d", str(tmp_path), "--name", "cells.geojson")
    )
    assert isinstance(downloaded, dict)
    saved = Path(downloaded["files"]["cells.geojson"])
    assert saved.parent == tmp_path
    assert saved.read_bytes() == setup.results.joinpath(listed["cells.geojson"]).read_bytes()
    one_line_error(wsi(setup, "results", job_id, "--name", "nope.txt"), 1, "no result named")

    workflows = ok_json(wsi(setup, "--json", "list"))
    assert isinstance(workflows, list) and workflows[0]["workflow_id"] == workflow_id
    assert wsi(setup, "list").stdout.count("cli run") == 1
    # What a person compares, in the list and in the status table: the slide,
    # the backend that ran, the nuclei found, the time it took.
    nuclei = job_status["result"]["summary"]["nuclei"]
    backend = job_status["result"]["summary"]["backend"]
    row = next(line for line in wsi(setup, "list").stdout.splitlines() if workflow_id in line)
    assert CMU in row and backend in row and f"{nuclei:,}" in row and " s " in row, row
    assert f"{nuclei:,}" in human.stdout and backend in human.stdout
    stats = ok_json(wsi(setup, "--json", "stats"))
    assert isinstance(stats, dict) and stats["workers_connected"] == 1


def test_submit_a_yaml_file_and_follow_it_as_json_lines(setup: Setup, tmp_path: Path) -> None:
    spec = tmp_path / "run.yaml"
    spec.write_text(
        f"""
name: from yaml
defaults: {{wsi_path: {CMU}}}
branches:
  a:
    - {{key: mask, job_type: TISSUE_MASK}}
    - {{key: small, job_type: TISSUE_MASK, wsi_path: small.svs, depends_on: [mask]}}
  b:
    - {{key: boxes, job_type: TISSUE_MASK, wsi_path: boxes.tiff}}
"""
    )
    done = wsi(setup, "--json", "submit", "-f", str(spec), "--watch")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events[0]["kind"] == "SNAPSHOT" and events[0]["workflow"]["name"] == "from yaml"
    assert [e["sequence"] for e in events[1:]] == list(
        range(events[0]["sequence"] + 1, events[0]["sequence"] + len(events))
    )
    assert events[-1]["workflow_state"] == "SUCCEEDED"
    branches = {j["key"]: j["branch"] for j in events[0]["workflow"]["jobs"]}
    assert branches == {"mask": "a", "small": "a", "boxes": "b"}


def test_submit_a_json_file_from_stdin(setup: Setup) -> None:
    body = {"name": "piped", "jobs": [{"branch": "x", "job_type": "TISSUE_MASK", "wsi_path": CMU}]}
    created = ok_json(wsi(setup, "--json", "submit", "-f", "-", stdin=json.dumps(body)))
    assert isinstance(created, dict) and created["name"] == "piped"


def test_watch_exits_1_when_a_job_fails(setup: Setup) -> None:
    created = ok_json(wsi(setup, "--json", "submit", "unreadable.svs", "-t", "TISSUE_MASK"))
    assert isinstance(created, dict)
    done = wsi(setup, "watch", created["workflow_id"])
    assert done.returncode == 1
    assert "FAILED" in done.stdout and "Bogus marker length" in done.stdout


def test_cancel_a_job_and_a_workflow_then_watch_exits_3(setup: Setup) -> None:
    created = ok_json(
        wsi(
            setup,
            "--json",
            "submit",
            CMU,
            "-t",
            "CELL_SEGMENTATION",
            "-t",
            "TISSUE_MASK",
            "-p",
            "tile_size=256",
            "-p",
            "overlap=32",
        )
    )
    assert isinstance(created, dict)
    first, second = created["jobs"]
    assert first["params"] == {"tile_size": "256", "overlap": "32"}
    cancelled = ok_json(wsi(setup, "--json", "cancel", second["job_id"]))
    assert isinstance(cancelled, dict)
    # Queued behind the first job, it is cancelled at once; if the first one
    # ended before the cancel came (a busy machine), it is running, marked
    # cancelling, and stops at its next tile, as the watch below shows.
    assert cancelled["state"] == "CANCELLED" or (
        cancelled["state"] == "RUNNING" and cancelled["cancelling"] is True
    ), cancelled
    ending = wsi(setup, "--json", "cancel", "--workflow", created["workflow_id"])
    if ending.returncode == 0:
        assert isinstance(json.loads(ending.stdout), dict)
    else:  # the first job finished first (a fast machine): the workflow had ended
        one_line_error(ending, 1, "FAILED_PRECONDITION", "already ended CANCELLED")
    done = wsi(setup, "watch", created["workflow_id"])
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert f"workflow {created['workflow_id']}: CANCELLED" in done.stdout
    one_line_error(
        wsi(setup, "cancel", second["job_id"]), 1, "FAILED_PRECONDITION", "already ended"
    )


def test_errors_are_one_line_with_a_non_zero_status(setup: Setup, tmp_path: Path) -> None:
    one_line_error(wsi(setup, "list", user=""), 2, "--user", "WSI_USER")
    one_line_error(wsi(setup, "list", user="bad user!"), 1, "UNAUTHENTICATED")
    one_line_error(wsi(setup, "status", "no-such-id"), 1, "no workflow or job 'no-such-id'")
    one_line_error(wsi(setup, "submit", "../../etc/passwd"), 1, "PERMISSION_DENIED")
    # A pattern that matches nothing: its reason, not a traceback.
    nothing = "no slide under the scheduler's slide roots matches 'nomatch/*.svs'"
    one_line_error(wsi(setup, "submit", "nomatch/*.svs", "-t", "TISSUE_MASK"), 2, nothing)
    one_line_error(wsi(setup, "slides", "nomatch/*.svs"), 2, nothing)
    # A table written where it cannot be, or as a format it is not: one line each.
    made = ok_json(wsi(setup, "submit", "small.svs", "-t", "TISSUE_MASK", "--json"))
    assert isinstance(made, dict)
    workflow = str(made["workflow_id"])
    missing = str(tmp_path / "no-such-folder" / "t.csv")
    one_line_error(wsi(setup, "table", workflow, "-o", missing), 1, missing, "No such file")
    one_line_error(wsi(setup, "table", workflow, "-o", "t.xlsx"), 1, "a .csv or a .parquet file")
    bad = tmp_path / "bad.yaml"
    bad.write_text("jobs: [{job_type: SEGMENT, wsi_path: x}]")
    one_line_error(wsi(setup, "submit", "-f", str(bad)), 2, "jobs[0]: unknown job type 'SEGMENT'")
    one_line_error(wsi(setup, "submit", "-f", str(tmp_path / "missing.yaml")), 1, "cannot read")
    unreachable = wsi(setup, "--address", "127.0.0.1:1", "--timeout", "1", "stats")
    one_line_error(unreachable, 1, "UNAVAILABLE")
    usage = wsi(setup, "cancel")
    assert usage.returncode == 2 and "usage:" in usage.stderr


def test_the_example_script_submits_and_follows_a_workflow(setup: Setup) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE),
            CMU,
            "--address",
            setup.cluster.scheduler.address,
            "--user",
            "example-user",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("workflow ")
    assert "  mask: RUNNING" in lines and "  cells: SUCCEEDED" in lines
    assert any(line.startswith("  cells: ") and "tiles" in line for line in lines)
    nuclei = next(line for line in lines if line.startswith("cells: "))
    assert int(nuclei.split()[1]) > 1000
    assert lines[-1] == "SUCCEEDED"
