"""One coroutine per ``wsi`` command: it calls the scheduler and prints either
for a person (rich) or, with ``--json``, one JSON document (``watch``: one per
event, a line each). Each returns the process's exit status."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from rich.console import Console

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
    else:
        types = args.types or DEFAULT_TYPES
        jobs, request_id = jobs_from_flags(args.slides, types, args.branch, params), ""
        name = Path(args.slides[0]).name + (f" +{len(args.slides) - 1}" if args.slides[1:] else "")
    workflow = await client.create_workflow(
        jobs,
        name=args.name if args.name is not None else name,
        request_id=args.request_id or request_id or None,
    )
    if args.watch:
        if not args.json:
            console.print(f"created workflow {workflow.workflow_id}", highlight=False)
        return await _follow(client, args, console, workflow.workflow_id, 0)
    _show_workflow(console, args, workflow)
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
}
