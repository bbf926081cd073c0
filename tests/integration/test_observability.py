"""Metrics, lifecycle logs and the dashboard, against real services: the
numbers move as a real workflow runs, every transition is logged once, and
every dashboard query names a metric the services export."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import ROOT, Cluster, Service, cluster_with_gateway, user
from tests.integration.support import (
    LONG,
    Watcher,
    create,
    get,
    job_transitions,
    rpc_error,
    spec,
)
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb

DASHBOARD = ROOT / "deploy" / "grafana" / "wsi-dashboard.json"
SCRAPE_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class Setup:
    cluster: Cluster
    gateway: Service


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    workdir = tmp_path_factory.mktemp("observed")
    with cluster_with_gateway(workdir, worker_slots=(2,), max_workers=2) as (c, gateway):
        yield Setup(c, gateway)


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over every series of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


def test_metrics_move_as_a_workflow_runs_and_finishes(setup: Setup) -> None:
    c = setup.cluster
    scheduler_url, worker_url = c.scheduler.metrics_url, c.workers[0].metrics_url
    assert scheduler_url.endswith("/metrics") and worker_url.endswith("/metrics")
    before_s, before_w = scrape(scheduler_url), scrape(worker_url)

    wf = create(
        c,
        "metrics-user",
        [
            spec("mask"),
            spec("seg", params=LONG),
            spec("queued"),
            spec("broken", branch="secret-branch", slide="unreadable.svs"),
        ],
    )
    c.stub.CancelJob(pb.CancelJobRequest(job_id=wf.jobs[2].job_id), metadata=user("metrics-user"))
    rpc_error(lambda: get(c, "metrics-user", "no-such-workflow"))
    watcher = Watcher(c, "metrics-user", wf.workflow_id, after=wf.sequence)
    peak_running = peak_watchers = 0.0
    while watcher.thread.is_alive():
        during = scrape(scheduler_url)
        peak_running = max(peak_running, value(during, "wsi_scheduler_running_jobs"))
        peak_watchers = max(peak_watchers, value(during, "wsi_scheduler_watch_streams"))
        watcher.thread.join(0.2)
    watcher.join()

    def delta(name: str, before: Samples, after: Samples, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    after_s = scrape(scheduler_url)
    # A RunJob call is counted as it closes, a moment after the scheduler has
    # the job's last update (the job's own counters move before it).
    deadline = time.monotonic() + 5
    while True:
        after_w = scrape(worker_url)
        run_jobs = delta("wsi_worker_rpcs_total", before_w, after_w, method="Worker/RunJob")
        if run_jobs >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    seg = get(c, "metrics-user", wf.workflow_id).jobs[1]

    assert peak_running >= 1 and peak_watchers >= 1
    s, w = (before_s, after_s), (before_w, after_w)
    assert delta("wsi_scheduler_jobs_submitted_total", *s) == 4
    assert delta("wsi_scheduler_jobs_finished_total", *s, state="SUCCEEDED") == 2
    assert delta("wsi_scheduler_jobs_finished_total", *s, state="FAILED") == 1
    assert delta("wsi_scheduler_jobs_finished_total", *s, state="CANCELLED") == 1
    assert delta("wsi_scheduler_job_queue_wait_seconds_count", *s) == 3  # the cancelled never ran
    assert delta("wsi_scheduler_job_run_seconds_count", *s, job_type="CELL_SEGMENTATION") == 1
    assert delta("wsi_scheduler_job_run_seconds_sum", *s, job_type="CELL_SEGMENTATION") > 0.5
    assert value(after_s, "wsi_scheduler_queue_depth") == 0
    assert value(after_s, "wsi_scheduler_running_jobs") == 0
    assert value(after_s, "wsi_scheduler_worker_slots") == 2
    assert value(after_s, "wsi_scheduler_workers_connected") == 1
    assert delta("wsi_scheduler_rpcs_total", *s, method="Scheduler/CreateWorkflow", code="OK") == 1
    assert (
        delta("wsi_scheduler_rpcs_total", *s, method="Scheduler/GetWorkflow", code="NOT_FOUND") == 1
    )
    assert delta("wsi_scheduler_rpcs_total", *s, method="Scheduler/WatchWorkflow", code="OK") >= 1

    tiles = seg.progress.tiles_total
    assert tiles > 10
    assert delta("wsi_worker_tiles_processed_total", *w, job_type="CELL_SEGMENTATION") == tiles
    assert delta("wsi_worker_tile_processing_seconds_count", *w) == tiles
    assert delta("wsi_worker_jobs_total", *w, outcome="succeeded") == 2
    assert delta("wsi_worker_jobs_total", *w, outcome="failed") == 1
    assert delta("wsi_worker_rpcs_total", *w, method="Worker/RunJob", code="OK") == 3
    assert (
        value(after_w, "wsi_worker_jobs_running") == 0 and value(after_w, "wsi_worker_slots") == 2
    )

    # No label carries a user id, a branch name, a path or an id: bounded cardinality.
    for samples in (after_s, after_w):
        for _, labels in samples:
            for _, label_value in labels:
                assert "metrics-user" not in label_value and "secret-branch" not in label_value
                assert wf.workflow_id not in label_value and ".svs" not in label_value


def transition_lines(log: str, workflow_id: str) -> list[dict[str, object]]:
    lines = []
    for line in log.splitlines():
        start = line.find('{"event":"job_transition"')
        if start >= 0:
            record = json.loads(line[start:])
            if record["workflow"] == workflow_id:
                lines.append(record)
    return lines


def test_the_lifecycle_log_has_every_transition_once_in_order(setup: Setup) -> None:
    c = setup.cluster
    wf = create(c, "log-user", [spec("mask"), spec("seg", params=LONG), spec("other", branch="b")])
    watcher = Watcher(c, "log-user", wf.workflow_id, after=wf.sequence)
    events = watcher.join()
    logged = transition_lines(c.scheduler.log(), wf.workflow_id)
    created = [r for r in logged if r["from"] == ""]
    assert sorted(str(r["key"]) for r in created) == ["mask", "other", "seg"]
    assert all(r["to"] == "PENDING" for r in created)
    changes = [(str(r["key"]), str(r["to"])) for r in logged if r["from"] != ""]
    assert changes == job_transitions(events)  # the same transitions, in the same order
    for record in logged:
        assert {
            "job",
            "workflow",
            "user",
            "branch",
            "from",
            "to",
            "attempt",
            "reason",
            "duration_s",
        } <= set(record)
        assert record["user"] == "log-user" and float(record["duration_s"]) >= 0  # type: ignore[arg-type]
    seg_run = next(r for r in logged if r["key"] == "seg" and r["from"] == "RUNNING")
    assert seg_run["to"] == "SUCCEEDED" and float(seg_run["duration_s"]) > 0.5  # type: ignore[arg-type]
    assert seg_run["attempt"] == 1
    assert get(c, "log-user", wf.workflow_id).state == pb.WORKFLOW_STATE_SUCCEEDED


def exported_names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def test_every_dashboard_query_names_an_exported_metric(setup: Setup) -> None:
    c = setup.cluster
    exported = (
        exported_names(scrape(c.scheduler.metrics_url))
        | exported_names(scrape(c.workers[0].metrics_url))
        | exported_names(scrape(f"{setup.gateway.address}/metrics"))
    )
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) >= 10
    named = {m for expr in exprs for m in re.findall(r"\bwsi_[a-z0-9_]+", expr)}
    assert named and named <= exported, sorted(named - exported)
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in (
        "queue depth",
        "running jobs",
        "users",
        "p50 / p95",
        "tiles per second",
        "utilisation",
    ):
        assert topic in titles
    scrape_config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    targets = {
        t
        for job in scrape_config["scrape_configs"]
        for s in job["static_configs"]
        for t in s["targets"]
    }
    assert targets == {"127.0.0.1:9101", "127.0.0.1:9102", "127.0.0.1:8000"}


def test_no_metrics_endpoint_when_turned_off(tmp_path: Path) -> None:
    from tests.harness import start_worker

    worker = start_worker(tmp_path, metrics_port="-1")
    try:
        assert worker.metrics_url == "" and "metrics on" not in worker.log()
        with grpc.insecure_channel(worker.address) as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
    finally:
        worker.stop()
