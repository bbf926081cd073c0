"""Which dependency's tissue mask a job takes, the scheduler's bounded memory
of masks, and the mask's wire form."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from scheduler_service.tissue_reuse import RecentMasks, mask_source
from worker_service.analysis import tissue_codec
from worker_service.analysis.tissue import TissueMask


@dataclass
class Job:
    job_id: str
    job_type: str = "CELL_SEGMENTATION"
    slide_file: str = "/slides/a.svs"
    state: str = "SUCCEEDED"


def test_a_segmentation_job_takes_the_mask_of_a_finished_tissue_job_on_its_slide() -> None:
    job = Job("cells")
    other_slide = Job("m1", "TISSUE_MASK", slide_file="/slides/b.svs")
    unfinished = Job("m2", "TISSUE_MASK", state="RUNNING")
    not_a_mask = Job("c0")
    good = Job("m3", "TISSUE_MASK")
    assert mask_source(job, [other_slide, unfinished, not_a_mask, good], "SUCCEEDED") == "m3"
    assert mask_source(job, [other_slide, unfinished, not_a_mask], "SUCCEEDED") is None
    assert mask_source(job, [], "SUCCEEDED") is None


def test_a_tissue_job_takes_no_mask() -> None:
    """It is the job that finds one: asked again, it finds it again."""
    assert mask_source(Job("m", "TISSUE_MASK"), [Job("m0", "TISSUE_MASK")], "SUCCEEDED") is None


def test_recent_masks_keep_the_most_recently_used() -> None:
    masks: RecentMasks[str] = RecentMasks(capacity=2)
    masks.put("a", "A")
    masks.put("b", "B")
    assert masks.get("a") == "A"  # a is now the most recent
    masks.put("c", "C")
    assert masks.get("b") is None and masks.get("a") == "A" and masks.get("c") == "C"
    assert len(masks) == 2
    none: RecentMasks[str] = RecentMasks(capacity=0)
    none.put("a", "A")
    assert none.get("a") is None


def test_a_mask_goes_over_the_wire_and_back_unchanged() -> None:
    rng = np.random.default_rng(3)
    pixels = rng.random((96, 130)) > 0.6
    mask = TissueMask(pixels, 21.5, 0.125)
    png = tissue_codec.encode(mask)
    back = tissue_codec.decode(png, mask.downsample, mask.threshold)
    assert np.array_equal(back.mask, pixels)
    assert (back.downsample, back.threshold) == (21.5, 0.125)
    assert tissue_codec.fits(back, (96, 130), 21.5)
    assert not tissue_codec.fits(back, (130, 96), 21.5)
    assert not tissue_codec.fits(back, (96, 130), 20.0)


@pytest.mark.parametrize("png", [b"", b"not a png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_a_mask_that_cannot_be_read_is_refused(png: bytes) -> None:
    with pytest.raises(ValueError):
        tissue_codec.decode(png, 4.0, 0.1)


def test_a_mask_of_absurd_size_is_refused_before_it_is_decoded() -> None:
    huge = tissue_codec.encode(TissueMask(np.zeros((10, 5000), bool), 4.0, 0.1))
    with pytest.raises(ValueError, match="at most"):
        tissue_codec.decode(huge, 4.0, 0.1)
