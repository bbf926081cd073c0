"""What the pipeline tests share: running a job in-process, matching found
nuclei against known ones. Fixtures live in conftest.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy.spatial import cKDTree

from worker_service.backends.base import ModelSettings
from worker_service.pipeline.context import JobContext
from worker_service.pipeline.job import JobOutcome, JobSpec, run_job
from worker_service.pipeline.tile_pool import TilePool
from worker_service.storage.slides import SlideCache
from wsi_protocol.job_types import JobType


def run(
    pool: TilePool, out: Path, slide: str, job_type: str = "CELL_SEGMENTATION", **params: str
) -> JobOutcome:
    return run_with_models(ModelSettings(), pool, out, slide, job_type, **params)


def run_with_models(
    models: ModelSettings,
    pool: TilePool,
    out: Path,
    slide: str,
    job_type: str = "CELL_SEGMENTATION",
    **params: str,
) -> JobOutcome:
    """A job on a worker whose model flags are ``models``."""
    return run_job(
        JobSpec("job", JobType(job_type), slide, params),
        out,
        JobContext(models=models),
        SlideCache(),
        pool,
    )


def centroids(outcome: JobOutcome) -> npt.NDArray[np.float64]:
    with open(outcome.files["cells.geojson"]) as handle:
        features = json.load(handle)["features"]
    return np.array(
        [
            [
                f["properties"]["measurements"]["Centroid X px"],
                f["properties"]["measurements"]["Centroid Y px"],
            ]
            for f in features
        ]
    ).reshape(-1, 2)


def match(
    predicted: npt.NDArray[np.float64], truth: npt.NDArray[np.float64], radius: float
) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives), one-to-one, nearest first."""
    if len(predicted) == 0 or len(truth) == 0:
        return 0, len(predicted), len(truth)
    distances, indices = cKDTree(truth).query(predicted, k=1, distance_upper_bound=radius)
    taken: set[int] = set()
    tp = 0
    for p in np.argsort(distances):
        if np.isfinite(distances[p]) and indices[p] not in taken:
            taken.add(int(indices[p]))
            tp += 1
    return tp, len(predicted) - tp, len(truth) - tp


def f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0
