"""``wsi``: the scheduler from a terminal or a script.

Exit status: 0 success; 1 a call failed or a watched job FAILED; 2 bad usage;
3 a watched workflow was CANCELLED (and nothing failed)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from rich.console import Console

from wsi_client.cli import commands
from wsi_client.client import DEFAULT_ADDRESS, SchedulerClient, SchedulerError
from wsi_client.cohort import CohortError
from wsi_client.workflow_file import WorkflowFileError

EXIT_ERROR = 1
EXIT_USAGE = 2
PIPE_WIDTH = 200


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsi",
        description="Submit, follow and manage WSI analysis workflows.",
        epilog="Exit status: 0 ok, 1 error or a FAILED job, 2 bad usage, 3 CANCELLED."
        " Global options go before or after the command (wsi --json list, wsi list --json).",
    )
    _global_options(parser, suppress=False)
    # The same options after the command; given there, they win.
    after = argparse.ArgumentParser(add_help=False)
    _global_options(after, suppress=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_submit(sub, after)
    _add_queries(sub, after)
    return parser


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """``suppress``: no defaults (a command's copy sets only what it is given)."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--address",
        default=default(os.environ.get("WSI_ADDRESS", DEFAULT_ADDRESS)),
        help=f"scheduler gRPC address (env WSI_ADDRESS; default {DEFAULT_ADDRESS})",
    )
    parser.add_argument(
        "--user",
        default=default(os.environ.get("WSI_USER", "")),
        help="your user id, sent as x-user-id (env WSI_USER)",
    )
    parser.add_argument(
        "--token",
        default=default(os.environ.get("WSI_TOKEN", "")),
        help="your API token, where the scheduler runs in token mode (env WSI_TOKEN)",
    )
    parser.add_argument(
        "--tls-ca",
        default=default(os.environ.get("WSI_TLS_CA", "")),
        help="PEM CA bundle: talk TLS to a scheduler and gateway it signed (env WSI_TLS_CA)",
    )
    parser.add_argument(
        "--json", action="store_true", default=default(False), help="machine-readable JSON output"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=default(10.0),
        help="deadline of each call, s (default 10)",
    )


def _add_submit(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], after: argparse.ArgumentParser
) -> None:
    submit = sub.add_parser(
        "submit",
        parents=[after],
        help="create a workflow",
        description="Create a workflow from a file (JSON or YAML) or from slides and flags. "
        "From flags, every slide gets its own branch running --type jobs in order; a cohort"
        " larger than one workflow may hold is split into several.",
    )
    submit.add_argument(
        "slides",
        nargs="*",
        metavar="SLIDE",
        help="slide paths (without --file); a glob ('cohort/*.svs', quoted) or a folder"
        " ('cohort/') takes every slide the scheduler lists that matches",
    )
    submit.add_argument("-f", "--file", help="workflow file, JSON or YAML ('-' for stdin)")
    submit.add_argument(
        "-t",
        "--type",
        dest="types",
        action="append",
        choices=commands.DEFAULT_TYPES,
        help="job type, repeatable, run in the order given (default: both)",
    )
    submit.add_argument("-b", "--branch", default="", help="one branch for all slides")
    submit.add_argument(
        "-p", "--param", action="append", default=[], metavar="NAME=VALUE", help="job parameter"
    )
    submit.add_argument("--name", default=None, help="workflow name")
    submit.add_argument("--request-id", default=None, help="idempotency key (default: random)")
    submit.add_argument("-w", "--watch", action="store_true", help="then follow it like watch")


def _add_queries(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], after: argparse.ArgumentParser
) -> None:
    """Every command but submit."""
    listing = sub.add_parser("list", parents=[after], help="your workflows, newest first")
    listing.add_argument("-n", "--limit", type=int, default=20, help="at most N (0: all)")

    status = sub.add_parser("status", parents=[after], help="one workflow (or job) with its jobs")
    status.add_argument("id", help="workflow id or job id")

    watch = sub.add_parser("watch", parents=[after], help="follow a workflow live until it ends")
    watch.add_argument("workflow_id")
    watch.add_argument("--after", type=int, default=0, help="resume after this sequence")

    cancel = sub.add_parser("cancel", parents=[after], help="cancel a job, or a whole workflow")
    target = cancel.add_mutually_exclusive_group(required=True)
    target.add_argument("job_id", nargs="?", help="the job to cancel")
    target.add_argument("--workflow", metavar="ID", help="cancel every unfinished job of it")

    results = sub.add_parser(
        "results", parents=[after], help="a job's result files: their paths, or download them"
    )
    results.add_argument("job_id")
    results.add_argument(
        "-d", "--download", metavar="DIR", help="save the files into DIR (over gRPC)"
    )
    results.add_argument("--name", action="append", help="only this file (repeatable)")

    sub.add_parser("stats", parents=[after], help="queue and capacity numbers")

    slides = sub.add_parser(
        "slides", parents=[after], help="the slides under the slide roots, as jobs name them"
    )
    slides.add_argument("patterns", nargs="*", metavar="PATTERN", help="only these (globs, DIR/)")

    table = sub.add_parser(
        "table",
        parents=[after],
        help="a workflow as CSV, one row per job: state, error, nuclei, density, measurements",
    )
    table.add_argument("workflow_id")
    table.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write it to FILE: FILE.csv, or FILE.parquet for Parquet",
    )

    again = sub.add_parser(
        "resubmit", parents=[after], help="run a workflow's failed and cancelled jobs again"
    )
    again.add_argument("workflow_id")
    again.add_argument("-w", "--watch", action="store_true", help="then follow it like watch")


async def run(args: argparse.Namespace, console: Console) -> int:
    async with SchedulerClient(
        args.address,
        user=args.user,
        token=args.token,
        tls_ca=args.tls_ca or None,
        timeout=args.timeout,
    ) as client:
        return await commands.COMMANDS[args.command](client, args, console)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Piped output is read by scripts and people alike: never cut ids short.
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=PIPE_WIDTH)
    errors = Console(stderr=True, highlight=False, soft_wrap=True)
    if not args.user and not args.token:
        errors.print(
            "wsi: error: who are you? pass --user (or set WSI_USER), or --token"
            " (or set WSI_TOKEN) where the scheduler needs API tokens"
        )
        return EXIT_USAGE
    try:
        return asyncio.run(run(args, console))
    except SchedulerError as exc:
        hint = f" (retry in {exc.retry_after} s)" if exc.retry_after else ""
        errors.print(f"wsi: {exc.code.name}: {exc.message}{hint}", markup=False)
    except (WorkflowFileError, CohortError, commands.CommandError) as exc:
        errors.print(f"wsi: error: {exc}", markup=False)
        usage = isinstance(exc, WorkflowFileError | CohortError)  # what the user wrote
        return EXIT_USAGE if usage else EXIT_ERROR
    except OSError as exc:  # a file it was told to read or write
        where = f"{exc.filename}: " if exc.filename else ""
        errors.print(f"wsi: error: {where}{exc.strerror or exc}", markup=False)
        return EXIT_ERROR
    except KeyboardInterrupt:
        errors.print("wsi: interrupted")
        return 130
    return EXIT_ERROR


def entry_point() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
