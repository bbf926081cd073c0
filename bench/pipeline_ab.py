"""A/B of one CELL_SEGMENTATION job through the real services: this checkout
against another commit (checked out once as a ``git worktree`` under
bench/out/worktrees/), or against the same checkout with other job
parameters, on a generated slide at 0.5 um/px, alternating which side goes
first each round, each run on a fresh scheduler and worker.

    python -m bench.pipeline_ab --baseline c584a48 [--megapixels 320] [--rounds 3]
    python -m bench.pipeline_ab --baseline-params backend=classical  # default job vs classical

Prints, per side, every run's seconds and CPU seconds (worker and pool),
their medians, the per-phase timings of the job's summary.json (where that
commit writes them) and the worker's peak RSS (with its pool), then the ratio
of the medians (baseline / this), of wall time and of CPU time (the steadier
of the two where other guests take CPU time from this machine).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from bench.pipeline_bench import OUT, through_services
from bench.slide_generator import slide_path
from tests.harness import ROOT
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb

WORKTREES = OUT / "worktrees"
T = TypeVar("T")


def alternating(sides: Sequence[T], rounds: int) -> Iterator[T]:
    """Each side once a round, the order reversed every other round, so that
    neither side always runs first (on a warmer or a quieter machine)."""
    for round_ in range(rounds):
        yield from (sides if round_ % 2 == 0 else sides[::-1])


def worktree(revision: str) -> tuple[Path, str]:
    """The commit's worktree (made on first use) and its full hash."""
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", f"{revision}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    path = WORKTREES / commit[:12]
    if not (path / ".git").exists():
        WORKTREES.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), commit],
            check=True,
            capture_output=True,
        )
    return path, commit


def _median_phases(runs: list[dict[str, Any]]) -> dict[str, float]:
    names = {name for run in runs for name in run["timings"]}
    return {
        name: round(
            statistics.median(run["timings"][name] for run in runs if name in run["timings"]), 3
        )
        for name in sorted(names)
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--baseline", default="HEAD", help="commit to compare with (hash, tag, branch)"
    )
    parser.add_argument(
        "--baseline-params",
        default="",
        help="the baseline job's parameters, KEY=VALUE,... (e.g. backend=classical)",
    )
    parser.add_argument("--params", default="", help="this side's job parameters, KEY=VALUE,...")
    parser.add_argument("--megapixels", type=float, default=320)
    parser.add_argument("--mpp", type=float, default=0.5, choices=(0.25, 0.5))
    parser.add_argument(
        "--level-step",
        type=int,
        default=2,
        choices=(2, 4),
        help="the slide's levels each 2x or 4x smaller (4, with --mpp 0.25: an"
        " Aperio 40x scan, no 0.5 um/px level, so tiles are read at 0.25)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--processes", type=int, default=0, help="worker pool processes (default: one per core)"
    )
    args = parser.parse_args()
    slide = slide_path(OUT, args.megapixels, args.mpp, args.level_step)
    same_commit = args.baseline == "HEAD"
    baseline_root, baseline_commit = (ROOT, "HEAD") if same_commit else worktree(args.baseline)
    job_params = {"baseline": _params(args.baseline_params), "this": _params(args.params)}
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    sides = {"baseline": baseline_root, "this": ROOT}
    flags = {"processes": str(args.processes)} if args.processes else {}
    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "this": []}
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        for round_ in range(args.rounds):
            order = ["baseline", "this"] if round_ % 2 == 0 else ["this", "baseline"]
            for side in order:
                run = through_services(
                    slide,
                    pb.CELL_SEGMENTATION,
                    Path(tmp) / f"{side}-{round_}",
                    sides[side],
                    job_params[side],
                    **flags,
                )
                runs[side].append(run)
                print(
                    f"round {round_ + 1} {side}: {run['seconds']:.1f} s,"
                    f" {run['cpu_seconds']:.1f} CPU s, {run['nuclei']} nuclei",
                    flush=True,
                )
    report: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.machine()}",
        "slide": f"{slide.name} at {args.mpp} um/px",
        "baseline": (head[:12] if same_commit else baseline_commit[:12])
        + _described(job_params["baseline"]),
        "this": head[:12]
        + (" (+ uncommitted changes)" if _dirty() else "")
        + _described(job_params["this"]),
    }
    for side, side_runs in runs.items():
        report[side + "_runs"] = {
            "seconds": [round(r["seconds"], 2) for r in side_runs],
            "median_s": round(statistics.median(r["seconds"] for r in side_runs), 2),
            "cpu_seconds": [round(r["cpu_seconds"], 1) for r in side_runs],
            "median_cpu_s": round(statistics.median(r["cpu_seconds"] for r in side_runs), 1),
            "nuclei": [r["nuclei"] for r in side_runs],
            "phases_median_s": _median_phases(side_runs),
            "worker_and_pool_peak_mb": max(r["worker_and_pool_mb"] for r in side_runs),
            "worker_tree_at_once_peak_mb": max(
                r.get("worker_tree_at_once_mb", 0.0) for r in side_runs
            ),
            "backend": side_runs[0]["backend"],
            "backend_details": side_runs[0]["backend_details"],
        }
    report["speedup_median"] = round(
        report["baseline_runs"]["median_s"] / report["this_runs"]["median_s"], 2
    )
    report["cpu_speedup_median"] = round(
        report["baseline_runs"]["median_cpu_s"] / report["this_runs"]["median_cpu_s"], 2
    )
    print(json.dumps(report, indent=2))


def _params(text: str) -> dict[str, str]:
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if any(len(pair) != 2 for pair in pairs):
        raise SystemExit(f"parameters are KEY=VALUE,...: {text!r}")
    return {key.strip(): value.strip() for key, value in pairs}


def _described(params: dict[str, str]) -> str:
    return " with " + ", ".join(f"{k}={v}" for k, v in params.items()) if params else ""


def _dirty() -> bool:
    status = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=True,
    )
    return bool(status.stdout.strip())


if __name__ == "__main__":
    main()
