"""Opening slides with OpenSlide and describing them."""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import openslide
from PIL import Image

from worker_service.errors import JobCancelled, SlideError, SlideOutsideRoots
from wsi_runtime.plain_images import PlainImageError, open_slide_or_image
from wsi_runtime.slide_paths import SlidePathError, resolve_slide, shown_path

log = logging.getLogger("wsi.worker.slides")

# A thumbnail is made from the smallest pyramid level that is still at least as
# large as the thumbnail, read in strips of at most STRIP_PIXELS; a slide whose
# every level is larger than THUMBNAIL_SOURCE_MAX_PIXELS is refused (reading
# it would take minutes: such a file needs a pyramid, or is crafted).
STRIP_PIXELS = 4 * 2**20
STRIP_MAX_PIXELS = 16 * 2**20  # a strip may grow to whole rows of tiles up to this
THUMBNAIL_SOURCE_MAX_PIXELS = 512 * 2**20


@dataclass(frozen=True)
class SlideInfo:
    width: int
    height: int
    level_count: int
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    vendor: str
    mpp: float | None


def open_slide(path: str, shown: str = "") -> openslide.AbstractSlide:
    """``shown``: the slide as the user named it, for messages (never a server path)."""
    shown = shown or Path(path).name
    try:
        return open_slide_or_image(path, shown)
    except openslide.OpenSlideUnsupportedFormatError as exc:
        raise SlideError(f"unsupported slide format: {shown!r}") from exc
    except PlainImageError as exc:
        raise SlideError(str(exc)) from exc
    except (openslide.OpenSlideError, OSError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) else str(exc).replace(path, shown)
        raise SlideError(f"cannot open slide {shown!r}: {detail}") from exc


# OpenSlide keeps 32 MB of decoded tiles per process by default. Tiles are read
# once each here (a job's tiles go round the pool's processes; an overview is
# read in strips of whole tile rows), so a small cache saves that memory in
# every process for nothing.
TILE_CACHE_BYTES = 8 * 2**20


class SlideCache:
    """A few open slides per thread, reused across jobs: opening parses the
    whole TIFF directory, which costs more than reading a small slide. Keyed by
    path, size and modification time, so a replaced file is opened afresh.
    Their decoded tiles share one OpenSlide cache of ``cache_bytes``."""

    def __init__(
        self,
        per_thread: int = 4,
        cache_bytes: int = TILE_CACHE_BYTES,
        roots: Sequence[Path] = (),
    ) -> None:
        if per_thread < 1:
            raise ValueError("per_thread must be at least 1")
        self.per_thread = per_thread
        self.roots = tuple(roots)
        self._local = threading.local()
        self._tile_cache = openslide.OpenSlideCache(cache_bytes)

    def confine(self, roots: Sequence[Path]) -> None:
        """From now on a slide opens only if its real path is inside ``roots``."""
        self.roots = tuple(roots)

    def _checked(self, path: str) -> str:
        """The real path to open, checked now (at open, not only at submit): a
        slide swapped for a link out of the roots since then is refused."""
        if not self.roots:
            return path
        try:
            return str(resolve_slide(path, self.roots))
        except SlidePathError as exc:
            shown = self._shown(path)
            log.warning("slide %s refused at open: %s", path, exc)
            if exc.permission:
                raise SlideOutsideRoots(
                    f"slide {shown!r} now leads outside the slide roots (it was changed after"
                    " it was checked); it was not opened"
                ) from None
            raise SlideError(f"slide {shown!r} cannot be opened: gone, or not a file") from None

    def _shown(self, path: str) -> str:
        """The slide as users name it, for a message (resolving it costs lstats:
        only when there is something to say, never per tile)."""
        return shown_path(path, self.roots) if self.roots else Path(path).name

    def get(self, path: str) -> openslide.AbstractSlide:
        try:
            stat = os.stat(path)
        except OSError as exc:
            raise SlideError(f"cannot open slide {self._shown(path)!r}: {exc.strerror}") from exc
        key = (path, stat.st_size, stat.st_mtime_ns)
        handles: OrderedDict[tuple[str, int, int], openslide.AbstractSlide] = (
            getattr(self._local, "handles", None) or OrderedDict()
        )
        self._local.handles = handles
        slide = handles.get(key)
        if slide is None:
            slide = open_slide(self._checked(path), self._shown(path))
            slide.set_cache(self._tile_cache)
            handles[key] = slide
            while len(handles) > self.per_thread:
                handles.popitem(last=False)[1].close()
        handles.move_to_end(key)
        return slide


def describe(slide: openslide.AbstractSlide) -> SlideInfo:
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


def read_thumbnail(
    slide: openslide.AbstractSlide,
    max_side: int,
    cancelled: Callable[[], bool] = lambda: False,
    max_source_pixels: int = THUMBNAIL_SOURCE_MAX_PIXELS,
) -> npt.NDArray[np.uint8]:
    """The whole slide as RGB, its longest side ``max_side`` at most, with
    transparent areas white. Memory stays bounded whatever the pyramid: the
    level is read in horizontal strips, each shrunk before the next is read,
    and ``cancelled`` is polled between strips."""
    width, height = slide.dimensions
    scale0 = min(1.0, max_side / max(width, height))
    out_w, out_h = max(1, round(width * scale0)), max(1, round(height * scale0))
    level = slide.get_best_level_for_downsample(1 / scale0)
    level_w, level_h = slide.level_dimensions[level]
    if level_w * level_h > max_source_pixels:
        raise SlideError(
            f"slide has no pyramid level small enough for an overview: its smallest usable"
            f" level is {level_w} x {level_h} px ({level_w * level_h / 1e6:,.0f} MP; at most"
            f" {max_source_pixels / 1e6:,.0f} MP are read). Convert it to a pyramidal"
            " format (for example: vips tiffsave IN OUT.tiff --tile --pyramid)"
        )
    downsample = slide.level_downsamples[level]
    thumbnail = Image.new("RGB", (out_w, out_h), "white")
    strip_rows = _strip_rows(slide, level, level_w)
    for y0 in range(0, level_h, strip_rows):
        if cancelled():
            raise JobCancelled()
        y1 = min(level_h, y0 + strip_rows)
        top, bottom = math.floor(y0 * out_h / level_h), math.floor(y1 * out_h / level_h)
        if y1 == level_h:
            bottom = out_h
        if bottom <= top:
            continue
        try:
            region = slide.read_region((0, round(y0 * downsample)), level, (level_w, y1 - y0))
        except openslide.OpenSlideError as exc:
            raise SlideError(f"cannot read the slide's overview: {exc}") from exc
        strip = Image.fromarray(rgb_over_white(np.asarray(region)))
        del region
        thumbnail.paste(strip.resize((out_w, bottom - top), Image.Resampling.BOX), (0, top))
    return np.asarray(thumbnail)


def _strip_rows(slide: openslide.AbstractSlide, level: int, level_w: int) -> int:
    """Rows per strip: whole rows of the level's tiles where they fit in
    STRIP_MAX_PIXELS (each tile is then decoded once), else STRIP_PIXELS worth."""
    rows = max(1, STRIP_PIXELS // level_w)
    try:
        tile_h = int(slide.properties.get(f"openslide.level[{level}].tile-height", "0"))
    except ValueError:
        tile_h = 0
    if tile_h > 0 and tile_h * level_w <= STRIP_MAX_PIXELS:
        rows = max(tile_h, rows // tile_h * tile_h)
    return rows


def rgb_over_white(rgba: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """RGB of an RGBA region read with OpenSlide, its transparent parts (outside
    the scanned area) white. Opaque regions, the usual case, cost one copy."""
    alpha = rgba[..., 3:4]
    if cv2.minMaxLoc(cv2.extractChannel(rgba, 3))[0] == 255:
        rgb: npt.NDArray[np.uint8] = cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB)
        return rgb
    a = alpha.astype(np.uint16)
    blended = (rgba[..., :3] * a + 255 * (255 - a) + 127) // 255
    return blended.astype(np.uint8)
