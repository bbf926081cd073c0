"""A segmentation job that stops part-way (cancelled here, as when its
stream breaks; a killed worker process is tested through the services)
continues from the tiles it recorded: the second run segments only the
rest, and its files hold the same nuclei as a run that never stopped."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from worker_service.errors import JobCancelled
from worker_service.pipeline.context import JobContext
from worker_service.pipeline.job import JobOutcome, JobSpec, run_job
from worker_service.pipeline.phases import JOURNAL
from worker_service.pipeline.tile_pool import TilePool
from worker_service.storage.slides import SlideCache
from wsi_protocol.job_types import JobType
from wsi_runtime.synthetic_slides import SyntheticSlide

PARAMS = {"tile_size": "128", "overlap": "16"}


def job(
    pool: TilePool, slide: SyntheticSlide, out: Path, stop_after: int = 0, **params: str
) -> JobOutcome:
    """The job "resumable" in ``out``; ``stop_after``: cancelled once that
    many tiles are reported done."""
    done = [0]

    def report(tiles: int, total: int) -> None:
        done[0] = tiles

    ctx = JobContext(cancelled=lambda: bool(stop_after) and done[0] >= stop_after, report=report)
    spec = JobSpec("resumable", JobType.CELL_SEGMENTATION, str(slide.path), {**PARAMS, **params})
    return run_job(spec, out, ctx, SlideCache(), pool)


def nuclei(outcome: JobOutcome) -> dict[str, object]:
    with open(outcome.files["cells.geojson"]) as handle:
        return {f["id"]: f["geometry"] for f in json.load(handle)["features"]}


@pytest.fixture(scope="module")
def uninterrupted(
    pool: TilePool, synthetic: SyntheticSlide, tmp_path_factory: pytest.TempPathFactory
) -> JobOutcome:
    return job(pool, synthetic, tmp_path_factory.mktemp("uninterrupted"))


def test_a_stopped_job_continues_from_its_recorded_tiles(
    pool: TilePool, synthetic: SyntheticSlide, uninterrupted: JobOutcome, tmp_path: Path
) -> None:
    total: int = uninterrupted.summary["tiles_processed"]  # type: ignore[assignment]
    assert total >= 40
    with pytest.raises(JobCancelled):
        job(pool, synthetic, tmp_path, stop_after=total // 2)
    folder = tmp_path / "resumable"
    assert (folder / JOURNAL).is_file() and not (folder / "cells.geojson").exists()
    again = job(pool, synthetic, tmp_path)
    summary: dict[str, Any] = again.summary
    assert summary["tiles_processed"] == total
    # Every tile reported done before the stop was recorded (a few more may
    # have finished in flight); none is taken twice.
    assert total // 2 <= summary["tiles_resumed"] < total
    assert summary["nuclei"] == uninterrupted.summary["nuclei"]
    assert nuclei(again) == nuclei(uninterrupted)
    table = pq.read_table(again.files["nuclei.parquet"]).to_pydict()
    assert sorted(table["id"]) == sorted(nuclei(uninterrupted))
    measured: dict[str, Any] = uninterrupted.summary["measurements"]  # type: ignore[assignment]
    for name, stats in measured.items():
        assert summary["measurements"][name] == pytest.approx(stats), name
    # Whole again: the journal and every partial file are gone.
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []


def test_a_journal_of_other_tiles_or_another_slide_file_is_not_taken(
    pool: TilePool, synthetic: SyntheticSlide, uninterrupted: JobOutcome, tmp_path: Path
) -> None:
    total: int = uninterrupted.summary["tiles_processed"]  # type: ignore[assignment]
    with pytest.raises(JobCancelled):
        job(pool, synthetic, tmp_path, stop_after=total // 2)
    # Other parameters give other tiles: nothing is taken.
    other = job(pool, synthetic, tmp_path, stop_after=0, min_tissue="0.5")
    assert other.summary["tiles_resumed"] == 0
    with pytest.raises(JobCancelled):
        job(pool, synthetic, tmp_path, stop_after=total // 2)
    # The slide file changed since (same name, new contents): nothing is taken.
    stat = synthetic.path.stat()
    os.utime(synthetic.path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    try:
        again = job(pool, synthetic, tmp_path)
    finally:
        os.utime(synthetic.path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert again.summary["tiles_resumed"] == 0
    assert nuclei(again) == nuclei(uninterrupted)
