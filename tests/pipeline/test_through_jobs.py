"""The validation's whole-job scores (``bench.through_jobs``): an
annotated image run as a job and its outlines filled back score as the
model's own labels do, so the table's job rows measure the job, not the
way back from its files."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.through_jobs import job_scores, labels_from_cells
from worker_service.backends.learned import INT8_FILE, OnnxEngine
from worker_service.pipeline.tile_pool import TilePool
from wsi_runtime.synthetic_slides import generate_nuclei, render_he, render_labels
from wsi_training import data
from wsi_training.train import learned_scores

MPP = 0.25  # a 40x field of view, as MoNuSeg's


@pytest.fixture(scope="module")
def annotated(tmp_path_factory: pytest.TempPathFactory) -> data.Example:
    """A 1000 x 1000 px field of view (9 tiles) with its nuclei's labels, as
    an annotated folder holds it: NAME.jpg and NAME.png."""
    folder = tmp_path_factory.mktemp("annotated")
    box = (-300, -300, 1300, 1300)  # tissue over the whole field
    nuclei = generate_nuclei(1000, 1000, box, MPP, seed=3)
    nuclei = [n for n in nuclei if 20 < n.x < 980 and 20 < n.y < 980]
    rgb = render_he(1000, 1000, nuclei, box, seed=3)
    cv2.imwrite(str(folder / "field.jpg"), rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    cv2.imwrite(str(folder / "field.png"), render_labels(1000, 1000, nuclei).astype(np.uint16))
    return data.example(folder / "field.jpg", source_mpp=MPP)


def test_a_whole_job_scores_as_the_models_own_labels(
    pool: TilePool, annotated: data.Example
) -> None:
    direct = learned_scores(OnnxEngine(INT8_FILE), [annotated])
    job = job_scores([annotated], pool, {})
    assert job["backend"] == "learned"  # the worker's default
    assert direct["aji"] >= 0.9, direct
    assert abs(job["aji"] - direct["aji"]) <= 0.01, (job, direct)
    assert job["f1"] >= 0.95, job


def test_a_file_without_a_pixel_size_and_another_backend(
    pool: TilePool, annotated: data.Example
) -> None:
    guessed = job_scores([annotated], pool, {}, with_pixel_size=False)
    assert guessed["f1"] >= 0.95, guessed  # its nuclei say 40x
    classical = job_scores([annotated], pool, {"backend": "classical"})
    assert classical["backend"] == "classical" and classical["f1"] >= 0.9, classical


def test_overlapping_outlines_are_filled_the_same_whatever_the_files_order(
    tmp_path: Path,
) -> None:
    """cells.geojson lists nuclei as their tiles finished, which varies from
    run to run; two outlines that share pixels (nuclei of neighbouring tiles)
    must give the same labels either way: the shared ones to the nucleus
    whose centroid comes first."""

    def nucleus(x0: float, y0: float) -> dict[str, object]:
        ring = [[x0, y0], [x0 + 6, y0], [x0 + 6, y0 + 6], [x0, y0 + 6], [x0, y0]]
        centre = {"Centroid X px": x0 + 3, "Centroid Y px": y0 + 3}
        return {
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"measurements": centre},
        }

    upper, lower = nucleus(2, 2), nucleus(4, 5)  # overlapping in x 4-8, y 5-8
    filled = []
    for order in ([upper, lower], [lower, upper]):
        path = tmp_path / "cells.geojson"
        path.write_text(json.dumps({"type": "FeatureCollection", "features": order}))
        filled.append(labels_from_cells(path, (16, 16)))
    assert np.array_equal(filled[0], filled[1])
    assert filled[0][6, 6] == 1 and filled[0][10, 9] == 2  # shared -> the upper one
