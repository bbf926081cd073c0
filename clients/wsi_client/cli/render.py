"""How the CLI shows things to a person: tables, a live progress bar per job,
a one-line summary per job. (``--json`` output does not pass through here.)"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table

from wsi_client.digest import digest, human_age, human_duration, job_facts
from wsi_client.workflow_view import (
    WorkflowView,
    job_state_name,
    job_type_name,
    workflow_state_name,
)
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb

STATE_STYLE = {
    "PENDING": "yellow",
    "RUNNING": "cyan",
    "SUCCEEDED": "green",
    "FAILED": "red",
    "CANCELLED": "magenta",
}


def styled(state: str) -> str:
    return f"[{STATE_STYLE.get(state, 'white')}]{state}[/]"


def _time(ts: pb.Job | pb.Workflow) -> str:
    created = ts.create_time
    if not created.seconds:
        return ""
    return created.ToDatetime().replace(microsecond=0).isoformat(sep=" ") + "Z"


def workflows_table(workflows: Iterable[pb.Workflow], now_s: float) -> Table:
    """What a person compares: slides, state, backend, nuclei, time taken, age."""
    table = Table(box=None, header_style="bold")
    columns = ("WORKFLOW", "NAME", "SLIDES", "STATE", "PROGRESS", "BACKEND", "NUCLEI", "TOOK")
    for column in (*columns, "CREATED"):
        table.add_column(column, no_wrap=column not in ("NAME", "SLIDES"))
    for wf in workflows:
        seen = digest(wf, now_s)
        table.add_row(
            wf.workflow_id,
            escape(wf.name),
            escape(seen.slides),
            styled(workflow_state_name(wf.state)),
            f"{wf.progress.percent:5.1f} %",
            escape(seen.backends) or "-",
            f"{seen.nuclei:,}" if seen.nuclei is not None else "-",
            human_duration(seen.seconds) if seen.seconds is not None else "-",
            human_age(seen.age_s),
        )
    return table


def jobs_table(jobs: Iterable[pb.Job]) -> Table:
    table = Table(box=None, header_style="bold")
    columns = ("JOB", "KEY", "BRANCH", "TYPE", "STATE", "TILES", "BACKEND", "NUCLEI", "TOOK")
    for column in (*columns, "ATTEMPT", "NOTE"):
        table.add_column(column, no_wrap=column not in ("BRANCH", "NOTE"))
    for j in jobs:
        state = job_state_name(j.state)
        facts = job_facts(j)
        table.add_row(
            j.job_id,
            escape(j.key),
            escape(j.branch),
            job_type_name(j.job_type),
            styled(state),
            f"{j.progress.tiles_done}/{j.progress.tiles_total}",
            escape(facts.backend) or "-",
            f"{facts.nuclei:,}" if facts.nuclei is not None else "-",
            human_duration(facts.seconds) if facts.seconds is not None else "-",
            str(j.attempt),
            escape(j.pending_reason if state == "PENDING" else j.error or facts.note),
        )
    return table


def workflow_header(wf: pb.Workflow) -> str:
    state = workflow_state_name(wf.state)
    name = f" ({escape(wf.name)})" if wf.name else ""
    return f"workflow {wf.workflow_id}{name}: {styled(state)}, {wf.progress.percent:.1f} %"


def stats_table(stats: pb.SchedulerStats) -> Table:
    table = Table(box=None, show_header=False)
    table.add_column()
    table.add_column(justify="right")
    rows = [
        ("running jobs (all users)", stats.running_jobs),
        ("pending jobs (all users)", stats.pending_jobs),
        ("my running / pending", f"{stats.my_running_jobs} / {stats.my_pending_jobs}"),
        ("active / waiting users", f"{stats.active_users} / {stats.waiting_users}"),
        ("max active users", stats.max_active_users),
        ("worker slots busy / total", f"{stats.worker_slots_busy} / {stats.worker_slots_total}"),
        ("workers connected", stats.workers_connected),
        ("max running jobs", stats.max_workers),
        ("watch streams", stats.watch_streams),
    ]
    for label, value in rows:
        table.add_row(label, str(value))
    for number, w in enumerate(stats.workers, 1):
        error = f": {escape(w.error)}" if w.error else ""
        state = (
            f"{w.busy}/{w.slots} slots busy"
            if w.connected
            else f"[red]unreachable[/] ({w.failed_probes} probes{error})"
        )
        origin = f" ({w.origin})" if w.origin else ""
        # Addresses are shown to operators only (the scheduler's --operators).
        table.add_row(f"worker {w.address or number}{origin}", state)
    for b in stats.branches:
        table.add_row(
            f"branch {escape(b.branch)} of {b.workflow_id}", f"{b.running} run, {b.pending} wait"
        )
    return table


def job_summary(j: pb.Job) -> str:
    """One line: what became of the job, how long it took, what it found."""
    state = job_state_name(j.state)
    parts = [f"{_label(j)}: {styled(state)}"]
    if j.progress.tiles_total:
        parts.append(f"{j.progress.tiles_done}/{j.progress.tiles_total} tiles")
    facts = job_facts(j)
    if facts.seconds is not None:
        parts.append(human_duration(facts.seconds))
    if j.attempt > 1:
        parts.append(f"attempt {j.attempt}")
    if facts.nuclei is not None:
        parts.append(f"{facts.nuclei} nuclei")
    if facts.backend:
        parts.append(escape(facts.backend))
    if j.error:
        parts.append(escape(j.error))
    elif facts.note:
        parts.append(f"note: {escape(facts.note)}")
    return ", ".join(parts)


def _label(j: pb.Job) -> str:
    return escape(f"{j.key} [{j.branch}] {job_type_name(j.job_type)}")


class WatchDisplay:
    """Live bars on a terminal; elsewhere (a pipe, a CI log) one line per state
    change, so the output stays readable when it is not a terminal."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.view = WorkflowView()
        self.live = console.is_terminal
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[tiles]:>13}"),
            TextColumn("{task.fields[state]}"),
            console=console,
            disable=not self.live,
        )
        self._tasks: dict[str, TaskID] = {}
        self._states: dict[str, int] = {}

    def __enter__(self) -> WatchDisplay:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(None, None, None)

    def update(self, event: pb.WorkflowEvent) -> None:
        changed = self.view.apply(event)
        jobs = list(self.view.jobs.values()) if changed is None else [changed]
        for j in jobs:
            self._show(j)

    def _show(self, j: pb.Job) -> None:
        state = job_state_name(j.state)
        if self.live:
            note = escape(j.pending_reason) if state == "PENDING" else ""
            label = _label(j)
            done, total = j.progress.tiles_done, j.progress.tiles_total
            tiles = f"{done}/{total} tiles" if total else ""
            if not total:  # a tissue mask has no tiles: a full bar once it succeeded
                done, total = int(state == "SUCCEEDED"), 1
            shown = styled(state) + (f" {note}" if note else "")
            if j.job_id not in self._tasks:
                self._tasks[j.job_id] = self._progress.add_task(
                    label, total=total, state=shown, tiles=tiles
                )
            self._progress.update(
                self._tasks[j.job_id], total=total, completed=done, state=shown, tiles=tiles
            )
        elif self._states.get(j.job_id) != j.state:
            stamp = datetime.now().strftime("%H:%M:%S")
            reason = j.pending_reason if state == "PENDING" else j.error
            self.console.print(
                f"{stamp} {_label(j)}: {styled(state)}"
                + (f" ({escape(reason)})" if reason else ""),
                highlight=False,
                soft_wrap=True,
            )
        self._states[j.job_id] = j.state

    def summary(self) -> None:
        view = self.view
        self.console.print(
            f"workflow {view.workflow_id}: {styled(workflow_state_name(view.state))}",
            highlight=False,
        )
        for j in view.jobs.values():
            self.console.print("  " + job_summary(j), highlight=False, soft_wrap=True)
