"""Synthetic H&E slides with known nuclei, written as pyramidal tiled TIFFs that
OpenSlide reads (vendor generic-tiff, pixel size in the resolution tags).

Tests use them as ground truth (every nucleus's centre is known, some sit
exactly on tile seams), ``make run`` writes one as a demo slide, and the
benchmarks mosaic a real slide into large ones. Everything is procedural: no
downloaded data."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import tifffile

RGB = npt.NDArray[np.uint8]
Labels = npt.NDArray[np.int32]
BACKGROUND = (243, 243, 245)
EOSIN = (232, 158, 190)
HAEMATOXYLIN = (72, 42, 122)


@dataclass(frozen=True)
class SyntheticNucleus:
    x: float  # centre, level-0 pixels
    y: float
    rx: float  # semi-axes, pixels
    ry: float
    angle: float  # radians


@dataclass(frozen=True)
class SyntheticSlide:
    path: Path
    width: int
    height: int
    mpp: float
    nuclei: tuple[SyntheticNucleus, ...]
    tissue_box: tuple[int, int, int, int]  # x0, y0, x1, y1 of the tissue ellipse's box


def _ellipse_mask(
    shape: tuple[int, int], cx: float, cy: float, rx: float, ry: float, angle: float
) -> tuple[slice, slice, npt.NDArray[np.bool_]]:
    reach = math.ceil(max(rx, ry)) + 2
    y0, y1 = max(0, int(cy) - reach), min(shape[0], int(cy) + reach + 1)
    x0, x1 = max(0, int(cx) - reach), min(shape[1], int(cx) + reach + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    dx, dy = xx + 0.5 - cx, yy + 0.5 - cy
    cos, sin = math.cos(angle), math.sin(angle)
    u, v = dx * cos + dy * sin, -dx * sin + dy * cos
    return slice(y0, y1), slice(x0, x1), (u / rx) ** 2 + (v / ry) ** 2 <= 1.0


def render_he(
    width: int,
    height: int,
    nuclei: Sequence[SyntheticNucleus],
    tissue_box: tuple[int, int, int, int],
    seed: int = 0,
) -> RGB:
    """White glass, one eosin-pink tissue ellipse, dark haematoxylin nuclei."""
    rng = np.random.default_rng(seed)
    image = np.empty((height, width, 3), np.float32)
    image[:] = BACKGROUND
    x0, y0, x1, y1 = tissue_box
    rows, cols, inside = _ellipse_mask(
        (height, width), (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2, 0.0
    )
    region = image[rows, cols]
    texture = rng.normal(0, 9, (*region.shape[:2], 1)).astype(np.float32)
    region[inside] = (np.array(EOSIN, np.float32) + texture)[inside]
    for nucleus in nuclei:
        rows, cols, mask = _ellipse_mask(
            (height, width), nucleus.x, nucleus.y, nucleus.rx, nucleus.ry, nucleus.angle
        )
        shade = np.array(HAEMATOXYLIN, np.float32) + rng.normal(0, 6, 3).astype(np.float32)
        image[rows, cols][mask] = shade
    image += rng.normal(0, 3, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def render_labels(width: int, height: int, nuclei: Sequence[SyntheticNucleus]) -> Labels:
    """The nuclei's instance labels (1, 2, ... in order), the pixels
    ``render_he`` paints each one on: the truth a segmentation is scored by."""
    labels = np.zeros((height, width), np.int32)
    for number, nucleus in enumerate(nuclei, start=1):
        rows, cols, mask = _ellipse_mask(
            (height, width), nucleus.x, nucleus.y, nucleus.rx, nucleus.ry, nucleus.angle
        )
        labels[rows, cols][mask] = number
    return labels


def seam_positions(length: int, tile_size: int, overlap: int) -> list[int]:
    """Where neighbouring tile cores meet along one axis (the seams a nucleus
    can be cut by): the worker's tile grid (``worker_service.analysis.tiling``)
    restated, so that the runtime imports no service; a unit test holds the two
    to the same answer. Tiles start every ``tile_size - overlap`` pixels, the
    last one shifted back to end at the edge; a core ends halfway into the
    overlap with the next tile."""
    stride = tile_size - overlap
    count = 1 if length <= tile_size else math.ceil((length - tile_size) / stride) + 1
    starts = [min(i * stride, length - tile_size) for i in range(count)]
    return [
        (nxt + min(start + tile_size, length)) // 2 for start, nxt in itertools.pairwise(starts)
    ]


def generate_nuclei(
    width: int,
    height: int,
    tissue_box: tuple[int, int, int, int],
    mpp: float,
    seams_x: Sequence[int] = (),
    seams_y: Sequence[int] = (),
    spacing_um: float = 14.0,
    seed: int = 0,
) -> list[SyntheticNucleus]:
    """Nuclei on a jittered grid inside the tissue ellipse (never touching), and
    one centred exactly on each seam crossing inside the tissue."""
    rng = np.random.default_rng(seed)
    x0, y0, x1, y1 = tissue_box
    cx, cy, ax, ay = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    step = spacing_um / mpp
    radius = 3.5 / mpp  # ~7 um nuclei

    def inside(x: float, y: float) -> bool:
        return ((x - cx) / (ax - 2 * radius)) ** 2 + ((y - cy) / (ay - 2 * radius)) ** 2 <= 1

    # On every seam crossing, and along each seam at the tissue's middle.
    centres: list[tuple[float, float]] = [
        (float(s), float(t)) for s in seams_x for t in seams_y if inside(s, t)
    ]
    for s in seams_x:
        if inside(s, cy) and all(abs(cy - t) > 3 * radius for t in seams_y):
            centres.append((float(s), cy))
    for t in seams_y:
        if inside(cx, t) and all(abs(cx - s) > 3 * radius for s in seams_x):
            centres.append((cx, float(t)))
    jitter = step / 2 - radius * 1.3
    for gy in np.arange(y0 + step / 2, y1, step):
        for gx in np.arange(x0 + step / 2, x1, step):
            x = float(gx + rng.uniform(-jitter, jitter))
            y = float(gy + rng.uniform(-jitter, jitter))
            if inside(x, y) and all(math.hypot(x - a, y - b) > 2.6 * radius for a, b in centres):
                centres.append((x, y))
    return [
        SyntheticNucleus(
            x=x,
            y=y,
            rx=radius * float(rng.uniform(0.9, 1.3)),
            ry=radius * float(rng.uniform(0.7, 1.0)),
            angle=float(rng.uniform(0, math.pi)),
        )
        for x, y in centres
    ]


def write_pyramid(
    path: Path,
    width: int,
    height: int,
    read: Callable[[int, int, int, int, int], RGB],
    mpp: float,
    levels: int = 3,
    tile: int = 256,
    quality: int = 90,
    step: int = 2,
) -> None:
    """Writes a tiled, JPEG-compressed pyramid; level k is ``step``**k smaller
    (4: an Aperio scan's levels, whose 40x slides have no 20x level).
    ``read(level, x, y, w, h)`` returns the RGB pixels of one tile at that level,
    so slides larger than memory can be written tile by tile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    px_per_cm = 1e4 / mpp
    with tifffile.TiffWriter(path, bigtiff=width * height > 2**31) as tif:
        for level in range(levels):
            scale = step**level
            w, h = max(1, width // scale), max(1, height // scale)

            def tiles(level: int = level, w: int = w, h: int = h) -> Iterator[RGB]:
                for y in range(0, h, tile):
                    for x in range(0, w, tile):
                        block = np.full((tile, tile, 3), 255, np.uint8)
                        part = read(level, x, y, min(tile, w - x), min(tile, h - y))
                        block[: part.shape[0], : part.shape[1]] = part
                        yield block

            tif.write(
                tiles(),
                shape=(h, w, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": quality},
                resolution=(px_per_cm / scale, px_per_cm / scale),
                resolutionunit="CENTIMETER",
                subfiletype=0 if level == 0 else 1,
                metadata=None,
            )


def downsample(image: RGB, factor: int) -> RGB:
    """Area average by an integer factor."""
    if factor == 1:
        return image
    h, w = image.shape[0] // factor * factor, image.shape[1] // factor * factor
    blocks = image[:h, :w].reshape(h // factor, factor, w // factor, factor, 3)
    result: RGB = blocks.mean(axis=(1, 3)).astype(np.uint8)
    return result


def write_array_slide(path: Path, image: RGB, mpp: float, levels: int = 3, step: int = 2) -> None:
    pyramid = [downsample(image, step**k) for k in range(levels)]

    def read(level: int, x: int, y: int, w: int, h: int) -> RGB:
        return pyramid[level][y : y + h, x : x + w]

    write_pyramid(path, image.shape[1], image.shape[0], read, mpp, levels, step=step)


def synthetic_he_slide(
    path: Path,
    width: int = 2400,
    height: int = 1800,
    mpp: float = 0.5,
    tile_size: int = 512,
    overlap: int = 64,
    seed: int = 0,
    level_step: int = 2,
) -> SyntheticSlide:
    """A synthetic H&E slide with ground-truth nuclei, some on the seams of the
    worker's tile grid for (tile_size, overlap) at level 0; its levels each
    ``level_step`` times smaller (4: an Aperio scan's)."""
    margin_x, margin_y = width // 8, height // 8
    box = (margin_x, margin_y, width - margin_x, height - margin_y)
    nuclei = generate_nuclei(
        width,
        height,
        box,
        mpp,
        seams_x=seam_positions(width, tile_size, overlap),
        seams_y=seam_positions(height, tile_size, overlap),
        seed=seed,
    )
    image = render_he(width, height, nuclei, box, seed=seed)
    write_array_slide(path, image, mpp, step=level_step)
    return SyntheticSlide(path, width, height, mpp, tuple(nuclei), box)
