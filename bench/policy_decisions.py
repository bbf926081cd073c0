"""Cost of one scheduling decision as the queue grows.

One decision = a running job finishes and the policy picks the next one. The
queue holds N pending jobs from 10 users in workflows of 10 jobs over 5
branches, so most branch heads are ready to run: the worst case for a policy
that would scan the queue.

    python -m bench.policy_decisions [--sizes 1000 10000 100000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from scheduler_service.policy import NewJob, SchedulingPolicy, State

USERS = 10
JOBS_PER_WORKFLOW = 10
BRANCHES_PER_WORKFLOW = 5


def build(pending: int, max_workers: int) -> SchedulingPolicy:
    policy = SchedulingPolicy(max_workers=max_workers, max_active_users=3, max_attempts=3)
    for w in range(pending // JOBS_PER_WORKFLOW):
        user = f"user{w % USERS}"
        wf = f"wf{w}"
        policy.submit(
            [
                NewJob(f"{wf}-{j}", user, wf, f"b{j % BRANCHES_PER_WORKFLOW}")
                for j in range(JOBS_PER_WORKFLOW)
            ]
        )
    policy.next_dispatches(max_workers)
    return policy


def decisions_per_job(policy: SchedulingPolicy, decisions: int) -> float:
    """Mean seconds per (finish one job + pick the next) over ``decisions``."""
    running = list(policy.running_jobs())
    started = time.perf_counter()
    for _ in range(decisions):
        job = running.pop(0)
        policy.finish(job, State.SUCCEEDED)
        running.extend(policy.next_dispatches(1))
    return (time.perf_counter() - started) / decisions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--decisions", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--max-workers", type=int, default=4)
    args = parser.parse_args()
    decisions_per_job(build(args.sizes[0], args.max_workers), args.decisions)  # warm-up
    samples: dict[int, list[float]] = {size: [] for size in args.sizes}
    # Sizes interleave within each round, so the machine's noise hits them alike.
    for _ in range(args.rounds):
        for size in args.sizes:
            policy = build(size, args.max_workers)
            assert policy.pending_count >= size - args.max_workers
            samples[size].append(decisions_per_job(policy, args.decisions))
    results = {size: statistics.median(values) for size, values in samples.items()}
    base = results[args.sizes[0]]
    print(
        json.dumps(
            {
                "median_us_per_decision": {n: round(v * 1e6, 2) for n, v in results.items()},
                "ratio_to_smallest": {n: round(v / base, 3) for n, v in results.items()},
                "settings": vars(args),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
