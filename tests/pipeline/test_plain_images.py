"""Jobs on plain images (JPEG, PNG): crops cut from scans, as annotated
benchmarks and labs hand them round, which OpenSlide does not read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
import pytest
from PIL import Image

from tests.pipeline.support import centroids, f1, match, run
from worker_service.errors import SlideError
from worker_service.pipeline.job import JobOutcome
from worker_service.pipeline.tile_pool import TilePool
from wsi_runtime.synthetic_slides import SyntheticSlide


def _level0(slide: SyntheticSlide) -> Image.Image:
    with openslide.OpenSlide(str(slide.path)) as opened:
        return opened.read_region((0, 0), 0, opened.dimensions).convert("RGB")


def test_a_png_with_its_pixel_size_gives_the_nuclei_of_the_slide_it_was_cut_from(
    pool: TilePool, synthetic: SyntheticSlide, learned_whole: JobOutcome, tmp_path: Path
) -> None:
    """Lossless pixels and the resolution the PNG carries: a learned job
    finds what it finds in the tiled TIFF of the same pixels, in microns
    (within a few nuclei at the tissue's edge: the TIFF's overview comes from
    its pyramid, the PNG's from its one level)."""
    png = tmp_path / "crop.png"
    _level0(synthetic).save(png, dpi=(25_400 / synthetic.mpp,) * 2)
    outcome = run(pool, tmp_path / "png", str(png), backend="learned")
    assert outcome.summary["mpp_used"] == pytest.approx(synthetic.mpp, rel=1e-3)
    nuclei, whole = outcome.summary["nuclei"], learned_whole.summary["nuclei"]
    assert isinstance(nuclei, int) and isinstance(whole, int) and abs(nuclei - whole) <= 10
    tp, fp, fn = match(
        centroids(outcome), np.array([[n.x, n.y] for n in synthetic.nuclei]), 3.0 / synthetic.mpp
    )
    assert f1(tp, fp, fn) >= 0.95, (tp, fp, fn)


def test_a_jpeg_without_a_pixel_size_is_segmented_and_says_so(
    pool: TilePool, synthetic: SyntheticSlide, tmp_path: Path
) -> None:
    jpeg = tmp_path / "crop.jpg"
    _level0(synthetic).save(jpeg, quality=90)
    outcome = run(pool, tmp_path / "jpeg", str(jpeg), backend="learned")
    assert outcome.summary["mpp_used"] is None
    details = outcome.summary["backend_details"]
    assert isinstance(details, dict) and details["slide_mpp_from_nuclei"] == 0.5
    assert "no usable pixel size" in str(outcome.summary["mpp_note"])
    tp, fp, fn = match(
        centroids(outcome), np.array([[n.x, n.y] for n in synthetic.nuclei]), 3.0 / synthetic.mpp
    )
    assert f1(tp, fp, fn) >= 0.9, (tp, fp, fn)


def test_a_label_map_is_refused_with_what_a_slide_is(pool: TilePool, tmp_path: Path) -> None:
    labels = tmp_path / "labels.png"
    Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)).save(labels)
    with pytest.raises(SlideError, match=r"mode I;16.*stained RGB image"):
        run(pool, tmp_path / "labels", str(labels))
