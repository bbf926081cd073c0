"""Submit a tissue mask and a nucleus segmentation of one slide, then follow
the workflow's progress stream until it ends.

    python clients/examples/submit_and_watch.py CMU-1-Small-Region.svs \
        --address 127.0.0.1:50051 --user alice

(``--token TOKEN``, or ``WSI_TOKEN``, instead of ``--user`` where the
scheduler runs in token mode.)

Exits 0 when every job succeeded, 1 otherwise."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from wsi_client.client import SchedulerClient, SchedulerError, job
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb


async def main(slide: str, address: str, user: str, token: str) -> int:
    async with SchedulerClient(address, user=user, token=token) as wsi:
        workflow = await wsi.create_workflow(
            [
                job("main", "TISSUE_MASK", slide, key="mask"),
                job("main", "CELL_SEGMENTATION", slide, key="cells", depends_on=["mask"]),
            ],
            name=f"example: {slide}",
        )
        print(f"workflow {workflow.workflow_id}")
        # From the creation's sequence on: every change after it, none missed.
        async for event in wsi.watch(workflow.workflow_id, after_sequence=workflow.sequence):
            if event.kind == pb.WorkflowEvent.JOB_STATE:
                state = pb.JobState.Name(event.job.state).removeprefix("JOB_STATE_")
                print(f"  {event.job.key}: {state} {event.job.error}".rstrip())
            elif event.kind == pb.WorkflowEvent.JOB_PROGRESS:
                p = event.job.progress
                print(f"  {event.job.key}: {p.tiles_done}/{p.tiles_total} tiles")
        final = await wsi.get_workflow(workflow.workflow_id)
        for finished in final.jobs:
            found = json.loads(finished.result.summary or "{}").get("nuclei")
            if found is not None:
                print(f"{finished.key}: {found} nuclei")
        print(pb.WorkflowState.Name(final.state).removeprefix("WORKFLOW_STATE_"))
        return 0 if final.state == pb.WORKFLOW_STATE_SUCCEEDED else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("slide")
    parser.add_argument("--address", default="127.0.0.1:50051")
    parser.add_argument("--user", default="")
    parser.add_argument("--token", default=os.environ.get("WSI_TOKEN", ""))
    args = parser.parse_args()
    user = args.user or ("" if args.token else os.environ.get("WSI_USER", "alice"))
    try:
        sys.exit(asyncio.run(main(args.slide, args.address, user, args.token)))
    except SchedulerError as exc:
        sys.exit(f"error: {exc}")
