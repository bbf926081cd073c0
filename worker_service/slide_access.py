"""Opening slides with OpenSlide and describing them."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
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


class SlideCache:
    """A few open slides per thread, reused across jobs: opening parses the
    whole TIFF directory, which costs more than reading a small slide. Keyed by
    path, size and modification time, so a replaced file is opened afresh."""

    def __init__(self, per_thread: int = 4) -> None:
        if per_thread < 1:
            raise ValueError("per_thread must be at least 1")
        self.per_thread = per_thread
        self._local = threading.local()

    def get(self, path: str) -> openslide.OpenSlide:
        try:
            stat = os.stat(path)
        except OSError as exc:
            raise SlideError(f"cannot open slide {path}: {exc.strerror}") from exc
        key = (path, stat.st_size, stat.st_mtime_ns)
        handles: OrderedDict[tuple[str, int, int], openslide.OpenSlide] = (
            getattr(self._local, "handles", None) or OrderedDict()
        )
        self._local.handles = handles
        slide = handles.get(key)
        if slide is None:
            slide = open_slide(path)
            handles[key] = slide
            while len(handles) > self.per_thread:
                handles.popitem(last=False)[1].close()
        handles.move_to_end(key)
        return slide


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
