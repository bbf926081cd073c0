"""Opening slides with OpenSlide and describing them."""

from __future__ import annotations

from dataclasses import dataclass

import openslide


class SlideError(RuntimeError):
    """The slide cannot be opened or read; the message is OpenSlide's."""


@dataclass(frozen=True)
class SlideInfo:
    width: int
    height: int
    level_count: int
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    vendor: str
    mpp: float | None


def open_slide(path: str) -> openslide.OpenSlide:
    try:
        return openslide.OpenSlide(path)
    except openslide.OpenSlideUnsupportedFormatError as exc:
        raise SlideError(f"unsupported slide format: {path}") from exc
    except (openslide.OpenSlideError, OSError) as exc:
        raise SlideError(f"cannot open slide {path}: {exc}") from exc


def describe(slide: openslide.OpenSlide) -> SlideInfo:
    props = slide.properties
    mpp: float | None = None
    try:
        mpp_x = float(props.get(openslide.PROPERTY_NAME_MPP_X, ""))
        mpp_y = float(props.get(openslide.PROPERTY_NAME_MPP_Y, mpp_x))
        mpp = (mpp_x + mpp_y) / 2 if mpp_x > 0 and mpp_y > 0 else None
    except ValueError:
        mpp = None
    width, height = slide.dimensions
    return SlideInfo(
        width=width,
        height=height,
        level_count=slide.level_count,
        level_dimensions=tuple(slide.level_dimensions),
        level_downsamples=tuple(float(d) for d in slide.level_downsamples),
        vendor=props.get(openslide.PROPERTY_NAME_VENDOR) or "unknown",
        mpp=mpp,
    )
