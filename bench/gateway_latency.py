"""Latency of the HTTP gateway's small answers, as a browser or a script
meets them: N requests one after another on one keep-alive connection, and N
on a new connection each, per route, against one scheduler and worker; this
checkout against another commit (a worktree, as ``pipeline_ab`` makes them),
alternating which side goes first each round.

    python -m bench.gateway_latency --baseline 17b039b [--requests 50] [--rounds 3]

Prints the median milliseconds per route and connection kind, each side, and
the ratio (baseline / this).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.pipeline_ab import alternating, worktree
from tests.harness import ROOT, start_gateway, start_scheduler, start_worker

ROUTES = ("/healthz", "/auth", "/workflows", "/job-params", "/stats")
WHO = {"X-User-ID": "bench"}


def milliseconds(root: Path, requests: int) -> dict[str, float]:
    """``route kind`` -> median ms, on a fresh scheduler, worker and gateway of ``root``."""
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        worker = start_worker(workdir, root=str(root))
        scheduler = start_scheduler(workdir, [worker], root=root)
        gateway = start_gateway(workdir, scheduler, root=root)
        try:
            with httpx.Client(base_url=gateway.address, headers=WHO) as kept:
                for route in ROUTES:
                    kept.get(route)  # the connection open, the route warm
                    out[f"{route} keep-alive"] = _median(lambda r=route: kept.get(r), requests)
            for route in ROUTES:
                out[f"{route} new connection"] = _median(
                    lambda r=route: httpx.get(gateway.address + r, headers=WHO), requests
                )
        finally:
            gateway.stop()
            scheduler.stop()
            worker.stop()
    return out


def _median(call: object, count: int) -> float:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        reply = call()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
        assert reply.status_code == 200, reply.text
    return round(1000 * statistics.median(times), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, help="the commit to compare with")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    baseline_root, commit = worktree(args.baseline)
    sides: dict[str, list[dict[str, float]]] = {"this": [], "baseline": []}
    for side, root in alternating([("this", ROOT), ("baseline", baseline_root)], args.rounds):
        sides[side].append(milliseconds(root, args.requests))
    print(f"{platform.node()}: this checkout against {commit[:12]}, {args.rounds} rounds,")
    print(f"{args.requests} requests per route and kind; median ms of the rounds' medians")
    print(f"{'route':34} {'baseline':>9} {'this':>9} {'ratio':>7}")
    for key in sides["this"][0]:
        this = statistics.median(run[key] for run in sides["this"])
        base = statistics.median(run[key] for run in sides["baseline"])
        print(f"{key:34} {base:9.2f} {this:9.2f} {base / this:7.1f}x")


if __name__ == "__main__":
    main()
