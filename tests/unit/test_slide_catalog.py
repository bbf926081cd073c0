"""The slide list: names as jobs give them, one per name across the roots,
nothing outside them, pages that cover it all once, and each slide described
without a server path in sight."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scheduler_service.slide_catalog import (
    InvalidSlideToken,
    describe,
    nearest_names,
    page,
    slide_names,
)
from tests.harness import CMU, SLIDES


def test_names_are_root_relative_first_root_wins_and_nothing_escapes(tmp_path: Path) -> None:
    first, second, outside = tmp_path / "a", tmp_path / "b", tmp_path / "outside"
    for folder in (first / "lab", second, outside):
        folder.mkdir(parents=True)
    (first / "lab" / "x.svs").write_bytes(b"1")
    (first / "notes.txt").write_text("not a slide")
    (second / "lab").mkdir()
    (second / "lab" / "x.svs").write_bytes(b"2")  # the same name: the first root's is listed
    (second / "y.TIFF").write_bytes(b"3")
    (outside / "secret.svs").write_bytes(b"4")
    (second / "link.svs").symlink_to(outside / "secret.svs")
    (second / "inside.svs").symlink_to(second / "y.TIFF")
    names = slide_names([first, second])
    assert [name for name, _ in names] == ["inside.svs", "lab/x.svs", "y.TIFF"]
    assert dict(names)["lab/x.svs"] == Path(os.path.realpath(first / "lab" / "x.svs"))


def test_a_file_name_that_is_not_utf8_is_skipped_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "good.svs").write_bytes(b"1")
    with open(os.fsencode(tmp_path) + b"/bad\xff.svs", "wb") as bad:
        bad.write(b"2")
    names = slide_names([tmp_path])
    assert [name for name, _ in names] == ["good.svs"]
    assert "not UTF-8" in caplog.text and "bad\\udcff.svs" in caplog.text


def test_pages_cover_every_name_once() -> None:
    names = [(f"s{i:02}.svs", Path(f"/r/s{i:02}.svs")) for i in range(7)]
    seen, token = [], ""
    while True:
        chosen, token = page(names, 3, token)
        seen += [name for name, _ in chosen]
        if not token:
            break
    assert seen == [name for name, _ in names]
    for bad in ("nope", "c2xpZGVzOi0x"):  # not base64 of ours / a negative offset
        with pytest.raises(InvalidSlideToken):
            page(names, 3, bad)


def test_slides_are_described_and_broken_ones_say_why(tmp_path: Path) -> None:
    cmu = describe(CMU, SLIDES / CMU)
    assert (cmu.width, cmu.height, cmu.vendor) == (2220, 2967, "aperio")
    assert 0.4 < cmu.mpp < 0.6 and cmu.size_bytes == (SLIDES / CMU).stat().st_size
    # Its TIFF gives only a 72 dpi screen resolution (352.8 um/px): listed as
    # none, as a job takes it.
    assert describe("boxes.tiff", SLIDES / "boxes.tiff").mpp == 0.0
    shutil.copy(SLIDES / "unopenable.tiff", tmp_path / "broken.tiff")
    broken = describe("lab/broken.tiff", tmp_path / "broken.tiff")
    assert broken.error.startswith("cannot be read") and str(tmp_path) not in broken.error


def test_plain_images_are_listed_with_the_pixel_size_their_resolution_gives(
    tmp_path: Path,
) -> None:
    """A crop as a lab or a benchmark hands it round: a JPEG or PNG next to
    its label map (16-bit, listed with why no job can take it)."""
    rgb = np.full((30, 50, 3), 200, np.uint8)
    Image.fromarray(rgb).save(tmp_path / "crop.png", dpi=(101_600, 101_600))
    Image.fromarray(rgb).save(tmp_path / "crop.jpg")
    Image.new("I;16", (50, 30)).save(tmp_path / "crop_labels.png")
    assert [name for name, _ in slide_names([tmp_path])] == [
        "crop.jpg",
        "crop.png",
        "crop_labels.png",
    ]
    png = describe("crop.png", tmp_path / "crop.png")
    assert (png.width, png.height, png.vendor) == (50, 30, "plain-png")
    assert png.mpp == pytest.approx(0.25)
    jpeg = describe("crop.jpg", tmp_path / "crop.jpg")
    assert (jpeg.vendor, jpeg.mpp, jpeg.error) == ("plain-jpeg", 0.0, "")
    labels = describe("crop_labels.png", tmp_path / "crop_labels.png")
    assert "mode I;16" in labels.error and str(tmp_path) not in labels.error


def test_the_names_nearest_a_slide_not_found() -> None:
    names = ["CMU-1-Small-Region.svs", "boxes.tiff", "cohort/TCGA-A1-A0SB.svs", "small.svs"]
    assert nearest_names("CMU-1-Small-Regoin.svs", names) == ["CMU-1-Small-Region.svs"]
    assert nearest_names("tcga-a1-a0sb.svs", names) == ["cohort/TCGA-A1-A0SB.svs"]  # folder, case
    assert nearest_names("other/boxes.tif", names) == ["boxes.tiff"]
    assert nearest_names("zzzz.svs", names) == []
