"""The validation's whole-job scores (``wsi_training.through_jobs``): an
annotated image run as a job and its outlines filled back score as the
model's own labels do, so the table's job rows measure the job, not the
way back from its files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bench.through_jobs import job_scores
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
