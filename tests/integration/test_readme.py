"""The README's curl examples, run as written against a live gateway (only the
address and the ids they ask you to fill in are substituted)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.crafted_slides import damaged
from tests.harness import CMU, ROOT, SLIDES, cluster, start_gateway, user
from tests.integration.support import held_still, json_documents
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb
from wsi_runtime.synthetic_slides import synthetic_he_slide

BIN = Path(sys.executable).parent  # make installs grpcurl and wsi here
DEFAULT = "127.0.0.1:50051"  # the scheduler's address in the README's recipes


def shell(command: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Runs a README line with bash; it must succeed. Returns its stdout."""
    done = subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, (command, done.stderr)
    return done.stdout


def readme_block(heading: str) -> list[str]:
    """The shell commands of the first code block after ``heading``."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(heading) :]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    joined = block.group(1).replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip().startswith("curl")]


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_readme_curl_examples_run_as_written(tmp_path: Path) -> None:
    """In the setup they are written for: `make run` with its demo slide only."""
    slides = tmp_path / "slides"
    synthetic_he_slide(slides / "demo.tiff", width=2048, height=1536, seed=1)
    with cluster(tmp_path, worker_slots=(2,), slide_roots=str(slides)) as c:
        gateway = start_gateway(tmp_path, c.scheduler)
        try:
            commands = readme_block("## Try it with curl")
            assert len(commands) == 9

            def run(command: str, **ids: str) -> str:
                command = command.replace("http://127.0.0.1:8000", gateway.address)
                for name, value in ids.items():
                    command = command.replace(name, value)
                return shell(command, tmp_path)

            created = json.loads(run(commands[0]))
            ids = {"WORKFLOW_ID": created["workflow_id"], "JOB_ID": created["jobs"][0]["job_id"]}
            listed = json.loads(run(commands[1], **ids))
            assert listed["workflows"][0]["workflow_id"] == created["workflow_id"]
            assert "jobs" in json.loads(run(commands[2], **ids))
            events = run(commands[3], **ids)  # ends when the workflow does
            assert '"workflow_state": "SUCCEEDED"' in events.strip().split("\n\n")[-1]
            run(commands[4], **ids)
            cells = json.loads((tmp_path / "cells.geojson").read_text())
            assert cells["type"] == "FeatureCollection" and len(cells["features"]) > 50
            in_box = json.loads(run(commands[5], **ids))["features"]
            assert 0 < len(in_box) < len(cells["features"])
            assert '<Size Width="2048" Height="1536"/>' in run(commands[6], **ids)
            assert json.loads(run(commands[7], **ids))["code"] == "FAILED_PRECONDITION"
            assert "running_jobs" in json.loads(run(commands[8], **ids))
        finally:
            gateway.stop()


def readme_grpcurl_commands() -> list[str]:
    """The grpcurl commands of the README's grpcurl block, each joined into one
    line (a command runs from a line starting ``grpcurl`` to the next one)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Try it with grpcurl") :]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    commands: list[str] = []
    for line in block.group(1).splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("grpcurl"):
            commands.append(line)
        else:
            commands[-1] += "\n" + line
    return commands


@pytest.mark.skipif(
    shutil.which("grpcurl", path=str(BIN)) is None, reason="grpcurl is installed by make"
)
def test_readme_grpcurl_recipes_run_as_written(tmp_path: Path) -> None:
    slides = tmp_path / "slides"
    synthetic_he_slide(slides / "demo.tiff", width=1024, height=768, seed=1)
    with cluster(tmp_path, worker_slots=(2,), slide_roots=f"{slides}:{SLIDES}") as c:
        commands = readme_grpcurl_commands()
        assert len(commands) == 9
        env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}

        def run(command: str, **ids: str) -> str:
            command = command.replace(DEFAULT, c.scheduler.address)
            for name, value in ids.items():
                command = command.replace(name, value)
            done = subprocess.run(
                ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 0, (command, done.stderr)
            return done.stdout

        assert {"wsi.scheduler.v1.Scheduler", "grpc.health.v1.Health"} <= set(
            run(commands[0]).split()
        )
        assert "rpc WatchWorkflow" in run(commands[1])
        assert json.loads(run(commands[2]))["status"] == "SERVING"
        demo = json.loads(run(commands[3]))
        assert [j["key"] for j in demo["jobs"]] == ["mask", "cells"]
        created = json.loads(run(commands[4]))
        ids = {"WORKFLOW_ID": created["workflow_id"]}

        events = json_documents(run(commands[5], **ids))  # ends when the workflow does
        assert events[0]["kind"] == "SNAPSHOT"
        assert events[-1]["workflow_state"] == "WORKFLOW_STATE_SUCCEEDED"
        states = [
            (e["job"]["key"], e["job"]["state"])  # type: ignore[index]
            for e in events
            if e["kind"] == "JOB_STATE"
        ]
        for key in ("mask", "seg", "other"):
            assert [s for k, s in states if k == key][-1] == "JOB_STATE_SUCCEEDED"
        assert any(e["kind"] == "JOB_PROGRESS" for e in events)

        resumed = json_documents(run(commands[6], **ids))
        assert int(resumed[0]["sequence"]) == 8  # type: ignore[call-overload]
        assert resumed[-1]["sequence"] == events[-1]["sequence"]

        # A job that is still waiting, so the cancel has something to cancel.
        with held_still(c.workers[0]):
            waiting = c.stub.CreateWorkflow(
                pb.CreateWorkflowRequest(
                    jobs=[
                        pb.JobSpec(
                            branch="z",
                            job_type=pb.CELL_SEGMENTATION,
                            wsi_path=CMU,
                            params={"tile_size": "256"},
                        ),
                        pb.JobSpec(branch="z", job_type=pb.TISSUE_MASK, wsi_path=CMU),
                    ]
                ),
                metadata=user("alice"),
            )
            cancelled = json.loads(run(commands[7], JOB_ID=waiting.jobs[1].job_id))
        assert cancelled["state"] == "JOB_STATE_CANCELLED"
        stats = json.loads(run(commands[8]))
        assert int(stats["worker_slots_total"]) == 2 and int(stats["workers_connected"]) == 1


def test_readme_token_recipe_runs_as_written(tmp_path: Path) -> None:
    """Add a token, use it with curl and wsi, revoke it: the README's lines,
    with the services started by the test in place of its `make run` line."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Identity, tokens and TLS") :]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    lines = [line.split("  #")[0].strip() for line in block.group(1).splitlines()]
    add, start, curl, listing, revoke = lines[:5]
    assert start.endswith("make run")

    def run(command: str, cluster_address: str = "", gateway: str = "") -> str:
        command = command.replace(".venv/bin/", f"{BIN}/")
        if gateway:
            command = command.replace("http://127.0.0.1:8000", gateway)
        env = {k: v for k, v in os.environ.items() if k != "WSI_USER"}
        if cluster_address:
            env["WSI_ADDRESS"] = cluster_address
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, (command, done.stderr)
        return done.stdout

    run(add)
    assert (tmp_path / "alice.token").read_text().startswith("wsi_")
    tokens = str(tmp_path / "tokens.txt")
    with cluster(tmp_path, worker_slots=(1,), auth_tokens=tokens) as c:
        gateway = start_gateway(tmp_path, c.scheduler, auth_tokens=tokens)
        try:
            assert json.loads(run(curl, gateway=gateway.address))["workflows"] == []
            run(listing, cluster_address=c.scheduler.address)
            run(revoke)
            refused = json.loads(run(curl, gateway=gateway.address))
            assert refused["code"] == "UNAUTHENTICATED"
        finally:
            gateway.stop()


def readme_wsi_lines() -> tuple[list[str], str]:
    """The `wsi` section's shell lines (comments cut) and its YAML workflow file."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## The `wsi` command line") :]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    yaml_block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None and yaml_block is not None
    lines = [line.split("  #")[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line], yaml_block.group(1)


def test_readme_wsi_examples_and_workflow_file_run_as_written(tmp_path: Path) -> None:
    """The `wsi` lines and the YAML workflow file, in the setup they name:
    `make run` as it starts, its demo slide only."""
    slides = tmp_path / "slides"
    synthetic_he_slide(slides / "demo.tiff", width=1024, height=768, seed=2)
    lines, workflow_file = readme_wsi_lines()
    export, commands = lines[0], lines[1:]
    assert export.startswith("export PATH=") and len(commands) == 10
    (tmp_path / "run.yaml").write_text(workflow_file)
    with cluster(tmp_path, worker_slots=(2,), slide_roots=str(slides)) as c:
        env = {
            **os.environ,
            "PATH": f"{BIN}:{os.environ['PATH']}",
            "WSI_ADDRESS": c.scheduler.address,
        }

        def run(command: str, **ids: str) -> str:
            for name, value in ids.items():
                command = command.replace(name, value)
            return shell(f"{export}; {command}", tmp_path, env)

        def created(output: str) -> pb.Workflow:
            found = re.search(r"workflow ([0-9a-f-]{36})", output)
            assert found, output
            request = pb.GetWorkflowRequest(workflow_id=found[1])
            return c.stub.GetWorkflow(request, metadata=user("alice"))

        first = created(run(commands[0]))
        assert [j.job_type for j in first.jobs] == [pb.TISSUE_MASK, pb.CELL_SEGMENTATION]
        watched = run(commands[1])  # --watch: returns when it ends, 0 when it succeeded
        assert "SUCCEEDED" in watched
        from_file = created(run(commands[2]))
        assert sorted(j.key for j in from_file.jobs) == ["cells", "coarse", "mask"]
        assert {j.wsi_path for j in from_file.jobs} == {"demo.tiff"}
        ids = {"WORKFLOW_ID": first.workflow_id}
        assert first.workflow_id in run(commands[3])
        assert "demo.tiff" in run(commands[4], **ids)
        run(commands[5], **ids)  # watch: until the workflow ends, and it succeeded
        run(f"wsi watch {from_file.workflow_id}")  # the workflow file's jobs all succeed too
        with held_still(c.workers[0]):  # the second job still waits when it is cancelled
            waiting = c.stub.CreateWorkflow(
                pb.CreateWorkflowRequest(
                    jobs=[
                        pb.JobSpec(branch="z", job_type=pb.CELL_SEGMENTATION, wsi_path="demo.tiff"),
                        pb.JobSpec(branch="z", job_type=pb.TISSUE_MASK, wsi_path="demo.tiff"),
                    ]
                ),
                metadata=user("alice"),
            )
            assert "CANCELLED" in run(commands[6], JOB_ID=waiting.jobs[1].job_id)
        cells_job = first.jobs[1].job_id
        assert "cells.geojson" in run(commands[7], JOB_ID=cells_job)
        run(commands[8], JOB_ID=cells_job)
        downloaded = json.loads((tmp_path / "out" / "cells.geojson").read_text())
        assert downloaded["type"] == "FeatureCollection"
        assert run(commands[9])


def test_readme_python_snippet_runs_as_written(tmp_path: Path) -> None:
    """The Python client's example, as the README prints it: its address
    substituted, ``slide`` (the name it leaves to the reader) set, and its
    top-level ``async with`` run in a coroutine, as a notebook would."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## The Python client") :]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None
    imports, _, body = block.group(1).partition("\n\n")
    with cluster(tmp_path, worker_slots=(2,)) as c:
        source = "\n".join(
            [
                "import asyncio",
                imports,
                f"slide = {CMU!r}",
                "async def main():",
                *(
                    "    " + line
                    for line in body.replace(DEFAULT, c.scheduler.address).splitlines()
                ),
                "asyncio.run(main())",
            ]
        )
        done = subprocess.run(
            [sys.executable, "-c", source], capture_output=True, text=True, timeout=120, cwd=ROOT
        )
    assert done.returncode == 0, (source, done.stderr)
    # One line per event (kind, job key, tiles done) until the workflow ended.
    events = [line.split() for line in done.stdout.splitlines()]
    assert {key for _, key, _ in events} == {"mask", "cells"}
    assert events[-1][1] == "cells" and int(events[-1][2]) > 0, events[-3:]


def test_readme_cohort_recipe_runs_as_written(tmp_path: Path) -> None:
    """The cohort lines under `make run`: three slides in ./slides/cohort/, one
    of them damaged (its watch exits 1), mended before the resubmit."""
    slides = tmp_path / "slides"
    for k in range(3):
        synthetic_he_slide(slides / f"cohort/c{k}.tiff", width=768, height=512, seed=k)
    damaged(slides / "cohort/c2.tiff")
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### A cohort") :]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    lines = [line.split("  #")[0].strip() for line in block.group(1).splitlines()]
    export, *commands = [line for line in lines if line]
    assert export.startswith("export PATH=") and len(commands) == 6
    with cluster(tmp_path, worker_slots=(2,), slide_roots=str(slides)) as c:
        gateway = start_gateway(tmp_path, c.scheduler)
        env = {
            **os.environ,
            "PATH": f"{BIN}:{os.environ['PATH']}",
            "WSI_ADDRESS": c.scheduler.address,
        }
        try:

            def run(command: str, ids: dict[str, str] | None = None, status: int = 0) -> str:
                for name, value in {
                    **(ids or {}),
                    "http://127.0.0.1:8000": gateway.address,
                }.items():
                    command = command.replace(name, value)
                done = subprocess.run(
                    ["bash", "-c", f"{export}; {command}"],
                    cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                )  # fmt: skip
                assert done.returncode == status, (command, done.stdout, done.stderr)
                return done.stdout

            assert run(commands[0]).count("cohort/c") == 3
            found = re.search(r"workflow ([0-9a-f-]{36})", run(commands[1]))
            assert found, "no workflow id printed"
            ids = {"WORKFLOW_ID": str(found[1])}
            run(commands[2], ids, status=1)  # c2 failed
            run(commands[3], ids)
            rows = list(csv.DictReader((tmp_path / "cohort-1.csv").open(newline="")))
            assert [(r["slide"], r["state"]) for r in rows] == [
                ("cohort/c0.tiff", "SUCCEEDED"), ("cohort/c1.tiff", "SUCCEEDED"),
                ("cohort/c2.tiff", "FAILED"),
            ]  # fmt: skip
            (slides / "cohort/c2.tiff").unlink()
            synthetic_he_slide(slides / "cohort/c2.tiff", width=768, height=512, seed=2)
            again = run(commands[4], ids)
            assert "SUCCEEDED" in again and "c0.tiff" not in again
            served = list(csv.reader(io.StringIO(run(commands[5], ids))))
            assert served == list(csv.reader((tmp_path / "cohort-1.csv").open(newline="")))
        finally:
            gateway.stop()
