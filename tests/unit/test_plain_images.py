"""Which plain images are read whole, and what their headers say."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import openslide
import pytest
from PIL import Image

from wsi_runtime.plain_images import (
    PlainImageError,
    mpp_from_dpi,
    open_slide_or_image,
    read_header,
)

RGB = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("name", "options", "vendor"),
    [
        ("a.jpg", {"quality": 95}, "plain-jpeg"),
        ("a.png", {}, "plain-png"),
        ("a.tif", {"compression": "tiff_lzw"}, "plain-tiff"),
    ],
)
def test_plain_images_are_known_by_their_header(
    tmp_path: Path, name: str, options: dict[str, Any], vendor: str
) -> None:
    path = tmp_path / name
    Image.fromarray(RGB).save(path, **options)
    header = read_header(path, name)
    assert header is not None and (header.vendor, header.width, header.height) == (vendor, 60, 40)
    with open_slide_or_image(path, name) as slide:
        assert slide.properties[openslide.PROPERTY_NAME_VENDOR] == vendor
        assert slide.dimensions == (60, 40) and slide.level_count == 1
        region = np.asarray(slide.read_region((10, 5), 0, (20, 10)))
    if vendor != "plain-jpeg":
        assert np.array_equal(region[..., :3], RGB[5:15, 10:30])
        assert (region[..., 3] == 255).all()


def test_what_is_no_image_is_left_to_the_caller(tmp_path: Path) -> None:
    notes = tmp_path / "notes.svs"
    notes.write_text("not a slide")
    assert read_header(notes, "notes.svs") is None
    with pytest.raises(openslide.OpenSlideUnsupportedFormatError):
        open_slide_or_image(notes, "notes.svs")


def test_an_image_too_large_to_read_whole_is_refused_with_how_to_convert_it(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.fromarray(RGB).save(path)
    with pytest.raises(PlainImageError, match=r"60 x 40 px.*vips tiffsave"):
        read_header(path, "big.png", max_pixels=2_000)
    assert read_header(path, "big.png", max_pixels=2_400) is not None


@pytest.mark.parametrize("mode", ["I;16", "F"])
def test_label_maps_and_measurements_are_no_slides(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "labels.tif"
    Image.new(mode, (8, 8)).save(path)
    with pytest.raises(PlainImageError, match=f"mode {mode}"):
        read_header(path, "labels.tif")


@pytest.mark.parametrize(
    ("info", "mpp"),
    [
        ({"dpi": (101_600.0, 101_600.0)}, 0.25),
        ({"dpi": (50_800, 50_800)}, 0.5),
        ({"dpi": (72.0, 72.0)}, None),  # a screen's resolution: no pixel size
        ({"dpi": (0.0, 0.0)}, None),
        ({"dpi": "x"}, None),
        ({}, None),
    ],
)
def test_a_pixel_size_comes_from_the_resolution_where_it_is_a_microscopes(
    info: dict[str, object], mpp: float | None
) -> None:
    found = mpp_from_dpi(info)
    assert found == (pytest.approx(mpp) if mpp is not None else None)


def test_a_tiff_resolution_in_centimetres_becomes_the_slides_pixel_size(tmp_path: Path) -> None:
    path = tmp_path / "crop.tif"
    # 40,000 px/cm = 0.25 um/px, written as TIFF's ResolutionUnit 3 (cm)
    Image.fromarray(RGB).save(path, resolution=40_000.0, resolution_unit="cm")
    with open_slide_or_image(path, "crop.tif") as slide:
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.25)


def test_a_truncated_image_is_refused_when_it_is_decoded(tmp_path: Path) -> None:
    """Its header is whole, so it is listed and accepted at submit; its job
    fails with why, rather than reading a part of it as tissue."""
    whole = tmp_path / "whole.jpg"
    Image.fromarray(RGB).save(whole, quality=95)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole.read_bytes()[:1_000])
    assert read_header(cut, "cut.jpg") is not None
    with pytest.raises(
        PlainImageError, match=r"'cut.jpg' cannot be decoded: image file is truncated"
    ):
        open_slide_or_image(cut, "cut.jpg")


def test_a_transparent_part_is_white_as_outside_a_scan(tmp_path: Path) -> None:
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[..., :3] = RGB
    rgba[:, 30:, 3] = 255  # the left half transparent
    path = tmp_path / "cut-out.png"
    Image.fromarray(rgba).save(path)
    with open_slide_or_image(path, "cut-out.png") as slide:
        region = np.asarray(slide.read_region((0, 0), 0, (60, 40)))
    assert (region[:, :30, :3] == 255).all()
    assert np.array_equal(region[:, 30:, :3], RGB[:, 30:])


def test_a_replaced_image_is_read_afresh(tmp_path: Path) -> None:
    """Decoded images are kept for the next open (every pool thread opens the
    slide), by path, size and modification time: a file written again under
    the same name is decoded again."""
    path = tmp_path / "crop.png"
    Image.fromarray(RGB).save(path)
    first = open_slide_or_image(path, "crop.png")
    again = open_slide_or_image(path, "crop.png")
    assert np.array_equal(np.asarray(again.read_region((0, 0), 0, (60, 40)))[..., :3], RGB)
    first.close()  # one closed slide leaves the image others share whole
    assert np.array_equal(np.asarray(again.read_region((0, 0), 0, (60, 40)))[..., :3], RGB)
    Image.fromarray(255 - RGB[:, :50]).save(path)
    os.utime(path, ns=(1, 1))  # a new modification time even on a coarse clock
    with open_slide_or_image(path, "crop.png") as replaced:
        assert replaced.dimensions == (50, 40)
        region = np.asarray(replaced.read_region((0, 0), 0, (50, 40)))[..., :3]
        assert np.array_equal(region, 255 - RGB[:, :50])
    again.close()
