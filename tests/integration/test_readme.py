"""The README's curl examples, run as written against a live gateway (only the
address and the ids they ask you to fill in are substituted)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness import ROOT, SLIDES, cluster, start_gateway
from wsi_runtime.synthetic_slides import synthetic_he_slide

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl"),
]


def readme_block(heading: str) -> list[str]:
    """The shell commands of the first code block after ``heading``."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(heading) :]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    joined = block.group(1).replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip().startswith("curl")]


def test_readme_curl_examples_run_as_written(tmp_path: Path) -> None:
    slides = tmp_path / "slides"
    synthetic_he_slide(slides / "demo.tiff", width=1024, height=768, seed=1)
    with cluster(tmp_path, worker_slots=(2,), slide_roots=f"{slides}:{SLIDES}") as c:
        gateway = start_gateway(tmp_path, c.scheduler, tmp_path / "results")
        try:
            commands = readme_block("## Try it with curl")
            assert len(commands) == 7

            def run(command: str, **ids: str) -> str:
                command = command.replace("http://127.0.0.1:8000", gateway.address)
                for name, value in ids.items():
                    command = command.replace(name, value)
                done = subprocess.run(
                    ["bash", "-c", command],
                    cwd=tmp_path,
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                assert done.returncode == 0, (command, done.stderr)
                return done.stdout

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
            assert json.loads(run(commands[5], **ids))["code"] == "FAILED_PRECONDITION"
            assert "running_jobs" in json.loads(run(commands[6], **ids))
        finally:
            gateway.stop()
