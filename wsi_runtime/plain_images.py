"""Plain images (JPEG, PNG, TIFF in strips) as one-level slides.

OpenSlide reads tiled, pyramidal files only; an image cut from a scan (an
annotated crop, a benchmark's field of view) is usually a plain JPEG, PNG or
strip TIFF. Such a file is read whole with Pillow and served through
openslide-python's ``ImageSlide``, so the rest of the worker sees a slide
like any other. Whole means in memory, once per process that reads it: the
size is capped, and larger images must be converted to a pyramid."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openslide
from PIL import Image, UnidentifiedImageError

from wsi_runtime.pixel_size import usable_mpp

PLAIN_FORMATS = {"JPEG": "plain-jpeg", "PNG": "plain-png", "TIFF": "plain-tiff"}
"""Pillow's format name -> the vendor a plain image is listed with."""

MAX_PLAIN_PIXELS = 64_000_000
"""A plain image is decoded whole (3 bytes a pixel, in each process that reads
it): 64 MP (8000 x 8000) is about 190 MB."""

COLOUR_MODES = frozenset({"RGB", "RGBA", "RGBX", "L", "LA", "P", "PA", "CMYK", "YCbCr"})
"""Modes an H&E image comes in; 16-bit and float images are label maps or
measurements, not stained tissue."""

CONVERT_HINT = (
    "convert it to a tiled pyramidal TIFF (for example: vips tiffsave IN OUT.tiff --tile --pyramid)"
)


class PlainImageError(ValueError):
    """A file that is an image but not one this service reads whole."""


@dataclass(frozen=True)
class PlainImageHeader:
    vendor: str  # plain-jpeg, plain-png, plain-tiff
    width: int
    height: int
    mpp: float | None  # from its resolution, where that is a microscope's


def read_header(
    path: str | Path, shown: str, max_pixels: int = MAX_PLAIN_PIXELS
) -> PlainImageHeader | None:
    """What a plain image at ``path`` is, from its header alone (no pixels
    decoded: a listing of many stays fast); None where the file is no image
    Pillow knows. Raises PlainImageError, with what to do, for one that
    cannot be read whole."""
    with _opened(path, shown, max_pixels) as found:
        return found[1] if found else None


@contextmanager
def _opened(
    path: str | Path, shown: str, max_pixels: int
) -> Iterator[tuple[Image.Image, PlainImageHeader] | None]:
    """The plain image at ``path`` opened (its header read, no pixels) with
    what it is, or None where it is no image Pillow knows or a format that
    is not a plain image's."""
    try:
        image = Image.open(path)
    except UnidentifiedImageError:
        yield None
        return
    except Image.DecompressionBombError:
        raise PlainImageError(
            f"{shown!r} is a plain image too large to read whole: {CONVERT_HINT}"
        ) from None
    except OSError as exc:
        raise PlainImageError(f"{shown!r} cannot be read: {exc.strerror or exc}") from None
    with image:
        vendor = _checked(image, shown, max_pixels)
        size = image.size
        yield (image, PlainImageHeader(vendor, *size, mpp_from_dpi(image.info))) if vendor else None


def _checked(image: Image.Image, shown: str, max_pixels: int) -> str | None:
    """The vendor of a plain image that can be read whole; None for a format
    that is not a plain image's. Raises PlainImageError for one too large, or
    not a stained colour image."""
    vendor = PLAIN_FORMATS.get(image.format or "")
    if vendor is None:
        return None
    width, height = image.size
    if width * height > max_pixels:
        raise PlainImageError(
            f"{shown!r} is a plain {image.format} image of {width} x {height} px; one is read"
            f" whole, at most {max_pixels / 1e6:,.0f} MP: {CONVERT_HINT}"
        )
    if image.mode not in COLOUR_MODES:
        raise PlainImageError(
            f"{shown!r} is a {image.format} image of mode {image.mode} (not 8-bit colour: a"
            " label map or a measurement?); a slide is a stained RGB image"
        )
    return vendor


def mpp_from_dpi(info: Mapping[Any, Any]) -> float | None:
    """The pixel size a plain image's resolution gives (Pillow turns TIFF's
    centimetres and PNG's metres into dpi), where it is a microscope's."""
    dpi: Any = info.get("dpi")
    try:
        dots = float(dpi[0] if isinstance(dpi, tuple) else dpi)
    except (TypeError, ValueError, IndexError):
        return None
    return usable_mpp(25_400 / dots) if dots > 0 else None


def _over_white(image: Image.Image) -> Image.Image:
    """RGB, any transparent part white, as OpenSlide gives the area outside a
    scan (dropping the alpha would leave it black, which looks like tissue)."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        white = Image.new("RGBA", image.size, "white")
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


class PlainImageSlide(openslide.ImageSlide):
    """An ImageSlide that says what it is and, where its file gives one, its
    pixel size, as OpenSlide's properties do for a slide."""

    def __init__(self, image: Image.Image, header: PlainImageHeader) -> None:
        super().__init__(image)
        props = {openslide.PROPERTY_NAME_VENDOR: header.vendor}
        if header.mpp is not None:
            mpp = repr(header.mpp)
            props[openslide.PROPERTY_NAME_MPP_X] = props[openslide.PROPERTY_NAME_MPP_Y] = mpp
        self._plain_properties = props

    @property
    def properties(self) -> Mapping[str, str]:
        return self._plain_properties


# The image decoded last in this process (RGB, shared by every slide opened
# on it, never closed by one), by path, size and modification time, with what
# it is. A worker opens a slide once per thread (a pool process: its own
# thread and its tile reader's), so without this each would hold a copy (up
# to 190 MB) and decode it again: a learned job of a 59 MP JPEG took 5.7 s
# against 5.1 s with it (2 pool processes). Slides still open keep theirs.
DECODED_KEPT = 1
_decoded: OrderedDict[tuple[str, int, int, int], tuple[Image.Image, PlainImageHeader]] = (
    OrderedDict()
)
_decoded_lock = threading.Lock()


def open_plain_image(
    path: str | Path, shown: str, max_pixels: int = MAX_PLAIN_PIXELS
) -> PlainImageSlide | None:
    """``path`` decoded whole as a one-level slide, or None where it is no
    plain image (not an image at all, or a format OpenSlide should read)."""
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise PlainImageError(f"{shown!r} cannot be read: {exc.strerror}") from None
    key = (str(path), stat.st_size, stat.st_mtime_ns, max_pixels)
    with _decoded_lock:
        decoded = _decoded.get(key)
    if decoded is None:
        decoded = _decode(path, shown, max_pixels)
        if decoded is None:
            return None
        with _decoded_lock:
            _decoded[key] = decoded
            while len(_decoded) > DECODED_KEPT:
                _decoded.popitem(last=False)
    return PlainImageSlide(*decoded)


def _decode(
    path: str | Path, shown: str, max_pixels: int
) -> tuple[Image.Image, PlainImageHeader] | None:
    with _opened(path, shown, max_pixels) as found:
        if found is None:
            return None
        image, header = found
        try:
            return _over_white(image), header
        except OSError as exc:
            raise PlainImageError(f"{shown!r} cannot be decoded: {exc}") from None


def open_slide_or_image(path: str | Path, shown: str) -> openslide.AbstractSlide:
    """``path`` as OpenSlide reads it, else as a plain image. Raises
    OpenSlideUnsupportedFormatError where it is neither, PlainImageError for
    an image that cannot be read whole."""
    try:
        return openslide.OpenSlide(str(path))
    except openslide.OpenSlideUnsupportedFormatError:
        plain = open_plain_image(path, shown)
        if plain is None:
            raise
        return plain
