"""One coroutine per ``wsi`` command: it calls the scheduler and prints either
for a person (rich) or, with ``--json``, one JSON document (``watch``: one per
event, a line each). Each returns the process's exit status."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from rich.console import Console

from wsi_client import cohort
from wsi_client.cli.render import (
    WatchDisplay,
    jobs_table,
    stats_table,
    workflow_header,
    workflows_table,
)
from wsi_client.client import SchedulerClient, SchedulerError
from wsi_client.workflow_file import jobs_from_flags, parse_params, parse_workflow
from wsi_client.workflow_view import WorkflowView, job_state_name
from wsi_protocol import cohort_table
from wsi_protocol.json_format import to_json
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb

# Every job type of the API, in the enum's order (mask first): the default of `submit`.
DEFAULT_TYPES = tuple(name for name, number in pb.JobType.items() if number)


class CommandError(Exception):
    """The command cannot go on; the message says why."""


def _print_json(console: Console, document: Any) -> None:
    console.file.write(json.dumps(document, indent=2) + "\n")


def _show_workflow(console: Console, args: argparse.Namespace, workflow: pb.Workflow) -> None:
    if args.json:
        _print_json(console, to_json(workflow))
    else:
        console.print(workflow_header(workflow))
        console.print(jobs_table(workflow.jobs))


def _show_job(console: Console, args: argparse.Namespace, job: pb.Job, title: str = "") -> None:
    if args.json:
        _print_json(console, to_json(job))
        return
    if title:
        console.print(title, highlight=False)
    console.print(jobs_table([job]))


def _load_document(source: str) -> object:
    """JSON or YAML (YAML is a superset of JSON, so one parser reads both)."""
    import yaml  # deferred: only `submit --file` needs it

    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as exc:
        raise CommandError(f"cannot read {source}: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CommandError(f"{source} is neither JSON nor YAML: {exc}") from None


async def submit(client: SchedulerClient, args: argparse.Namespace, console: Console) -> int:
    params = parse_params(args.param)
    if args.file:
        if args.slides or args.types or args.branch or params:
            raise CommandError("--file takes no slides, --type, --branch or --param")
        document = parse_workflow(_load_document(args.file))
        name, jobs, request_id = document.name, document.jobs, document.request_id
        parts = [(name, jobs)]
    else:
        types = args.types or DEFAULT_TYPES
        slides = await _slides(client, args.slides)
        runs = [slides]
        if len(slides) > 1 and not args.branch:  # one branch per slide: a cohort
            runs = cohort.split(
                slides, len(types), (await client.job_params()).max_jobs_per_workflow
            )
        request_id = ""
        name = Path(slides[0]).name + (f" +{len(slides) - 1}" if slides[1:] else "")
        name = args.name if args.name is not None else name
        parts = [
            (name if len(runs) == 1 else f"{name} ({k}/{len(runs)})",
             jobs_from_flags(run, types, args.branch, params))
            for k, run in enumerate(runs, 1)
        ]  # fmt: skip
    if len(parts) > 1:
        if args.watch:
            raise CommandError(f"--watch follows one workflow; these slides make {len(parts)}")
        if args.request_id:
            raise CommandError(f"--request-id names one workflow; these slides make {len(parts)}")
        console.file.write(
            f"{sum(len(j) for _, j in parts)} jobs: more than one workflow may hold here;"
            f" split into {len(parts)} workflows\n"
        )
    made = [
        await client.create_workflow(
            jobs,
            name=args.name if args.name is not None and len(parts) == 1 else part_name,
            request_id=args.request_id or request_id or None,
        )
        for part_name, jobs in parts
    ]
    if args.watch:
        if not args.json:
            console.print(f"created workflow {made[0].workflow_id}", highlight=False)
        return await _follow(client, args, console, made[0].workflow_id, 0)
    for workflow in made:
        _show_workflow(console, args, workflow)
    return 0


async def _slides(client: SchedulerClient, arguments: list[str]) -> list[str]:
    """The slides named, with patterns and folders expanded against the slides
    the scheduler lists (what it allows this user to run)."""
    if not any(cohort.is_pattern(a) for a in arguments):
        return arguments
    names = [slide.name async for slide in client.iter_slides()]
    return cohort.expand(arguments, names)


async def resubmit(client: SchedulerClient, args: argparse.Namespace, console: Console) -> int:
    """A new workflow of the jobs of ``args.workflow_id`` that did not succeed."""
    workflow = await client.get_workflow(args.workflow_id)
    if workflow.state in (pb.WORKFLOW_STATE_PENDING, pb.WORKFLOW_STATE_RUNNING):
        raise CommandError(
            f"workflow {workflow.workflow_id} has not ended; resubmit it once it has"
        )
    jobs = cohort.unfinished_business(workflow)
    if not jobs:
        raise CommandError(f"every job of workflow {workflow.workflow_id} succeeded")
    again = await client.create_workflow(jobs, name=f"{workflow.name or 'workflow'} (again)")
    if args.watch:
        if not args.json:
            console.print(f"created workflow {again.workflow_id}", highlight=False)
        return await _follow(client, args, console, again.workflow_id, 0)
    _show_workflow(console, args, again)
    return 0


async def table(client: SchedulerClient, args: argparse.Namespace, console: Console) -> int:
    """One row per job (``wsi_protocol.cohort_table``): CSV, JSON rows, or
    Parquet into a FILE named ``*.parquet``."""
    suffix = Path(args.output or "").suffix.lower()
    if args.output and suffix not in (".csv", ".parquet"):
        raise CommandError(f"-o {args.output}: the table is written as a .csv or a .parquet file")
    rows = cohort_table.workflow_rows(await client.get_workflow(args.workflow_id))
    if args.json:
        _print_json(console, rows)
    elif suffix == ".parquet":
        data = cohort_table.to_parquet(rows)
        await asyncio.to_thread(Path(args.output).write_bytes, data)
        console.print(f"{len(rows)} rows in {args.output}", highlight=False)
    elif args.output:
        text = cohort_table.to_csv(rows)
        await asyncio.to_thread(Path(args.output).write_text, text, newline="")
        console.print(f"{len(rows)} rows in {args.output}", highlight=False)
    else:
        console.file.write(cohort_table.to_csv(rows))
    return 0


async def slides(client: SchedulerClient, args: argparse.Namespace, console: Console) -> int:
    """The slides under the slide roots (matching ``args.patterns``, if any)."""
    listed = [slide async for slide in client.iter_slides()]
    if args.patterns:
        wanted = set(cohort.expand(args.patterns, [s.name for s in listed]))
        listed = [s for s in listed if s.name in wanted]
    if args.json:
        _print_json(console, [to_json(s) for s in listed])
    else:
        for slide in listed:  # tab-separated, for `cut` and friends
            console.file.write(f"{slide.name}\t{slide.width}x{slide.height}\t{slide.error}\n")
    return 0


async def list_workflows(
    client: SchedulerClient, args: argparse.Namespace, console: Console
) -> int:
    workflows = []
    async for workflow in client.iter_workflows(page_size=min(args.limit or 100, 100)):
        workflows.append(workflow)
        if args.limit and len(workflows) >= args.limit:
            break
    if args.json:
        _print_json(console, [to_json(w) for w in workflows])
    elif workflows:
        console.print(workflows_table(workflows, time.time()))
    else:
        console.print("no workflows yet")
    return 0


async def status(client: SchedulerClient, args: argparse.Namespace, console: Console) -> int:
    """A workflow id, or failing that a job id (both are UUIDs)."""
    try:
        workflow = await client.get_workflow(args.id)
    except SchedulerError as exc:
        if exc.code is not grpc.StatusCode.NOT_FOUND:
            raise
        try:
            job = await client.get_job(args.id)
        except SchedulerError as job_exc:
            if job_exc.code is not grpc.StatusCode.NOT_FOUND:
                raise
            raise CommandError(f"no workflow or job {args.id!r} of user {client.user!r}") from None
        _show_job(console, args, job, f"job {job.job_id} of workflow {job.workflow_id}")
        return 0
    _show_workflow(console, args, workflow)
    return 0


async def watch(client: SchedulerClient, args: argparse.Namespace, console: Console) -> int:
    return await _follow(client, args, console, args.workflow_id, args.after)


async def _follow(
    client: SchedulerClient,
    args: argparse.Namespace,
    console: Console,
    workflow_id: str,
    after: int,
) -> int:
    if args.json:
        view = WorkflowView()
        async for event in client.watch(workflow_id, after):
            view.apply(event)
            console.file.write(json.dumps(to_json(event)) + "\n")
            console.file.flush()
        return view.exit_status()
    with WatchDisplay(console) as display:
        async for event in client.watch(workflow_id, after):
            display.update(event)
    display.summary()
    return display.view.exit_status()


async def cancel(client: SchedulerClient, args: argparse.Namespace, console: Console) -> int:
    if args.workflow:
        _show_workflow(console, args, await client.cancel_workflow(args.workflow))
    else:
        _show_job(console, args, await client.cancel_job(args.job_id))
    return 0


async def results(client: SchedulerClient, args: argparse.Namespace, console: Console) -> int:
    job = await client.get_job(args.job_id)
    files = dict(job.result.files)
    if not files:
        raise CommandError(f"job {job.job_id} has no results (it is {job_state_name(job.state)})")
    if args.name:
        missing = sorted(set(args.name) - set(files))
        if missing:
            raise CommandError(f"no result named {', '.join(missing)}; have {', '.join(files)}")
        files = {name: files[name] for name in args.name}
    if args.download:
        folder = Path(args.download)
        saved = {}
        for name in files:  # from the worker that holds them, through the scheduler
            saved[name] = await client.download_result(job.job_id, name, folder / Path(name).name)
        files = {name: str(path) for name, path in saved.items()}
    if args.json:
        _print_json(console, {"job_id": job.job_id, "files": files})
    else:
        for name, path in files.items():  # tab-separated, for `cut` and friends
            console.file.write(f"{name}\t{path}\n")
    return 0


async def stats(client: SchedulerClient, args: argparse.Namespace, console: Console) -> int:
    numbers = await client.stats()
    if args.json:
        _print_json(console, to_json(numbers))
    else:
        console.print(stats_table(numbers))
    return 0


Command = Callable[[SchedulerClient, argparse.Namespace, Console], Awaitable[int]]
COMMANDS: dict[str, Command] = {
    "submit": submit,
    "list": list_workflows,
    "status": status,
    "watch": watch,
    "cancel": cancel,
    "results": results,
    "stats": stats,
    "slides": slides,
    "table": table,
    "resubmit": resubmit,
}
