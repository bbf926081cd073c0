"""Progress maths and workflow state: pure functions over job states and tile counts."""

from __future__ import annotations

from collections.abc import Mapping

from scheduler_service.policy import State


def job_fraction(state: State, tiles_done: int, tiles_total: int) -> float:
    """How much of a job was done, 0..1: all of a SUCCEEDED one, the tiles
    done of any other (a FAILED or CANCELLED job shows what it got through,
    so its workflow's bar stops short of 100%)."""
    return 1.0 if state is State.SUCCEEDED else _tile_share(tiles_done, tiles_total)


def _tile_share(tiles_done: int, tiles_total: int) -> float:
    return min(max(tiles_done / tiles_total, 0.0), 1.0) if tiles_total > 0 else 0.0


def job_percent(state: State, tiles_done: int, tiles_total: int) -> float:
    if state is State.SUCCEEDED:
        return 100.0
    return round(100.0 * _tile_share(tiles_done, tiles_total), 2)


def workflow_percent(fraction_sum: float, job_count: int) -> float:
    if job_count <= 0:
        return 0.0
    return round(min(100.0, 100.0 * fraction_sum / job_count), 2)


class WorkflowState:
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})


def workflow_state(counts: Mapping[State, int]) -> str:
    """PENDING until a job leaves PENDING; RUNNING while anything is unfinished;
    then FAILED if any job failed, CANCELLED if any was cancelled, else SUCCEEDED."""
    total = sum(counts.values())
    pending = counts.get(State.PENDING, 0)
    if pending == total:
        return WorkflowState.PENDING
    if pending or counts.get(State.RUNNING, 0):
        return WorkflowState.RUNNING
    if counts.get(State.FAILED, 0):
        return WorkflowState.FAILED
    if counts.get(State.CANCELLED, 0):
        return WorkflowState.CANCELLED
    return WorkflowState.SUCCEEDED
