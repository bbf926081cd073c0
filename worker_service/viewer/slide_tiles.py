"""A slide as Deep Zoom for a viewer: OpenSlide's generator over the slide's
bounds (the scanned region), tiles encoded as JPEG."""

from __future__ import annotations

import io
from dataclasses import dataclass

import openslide
from openslide.deepzoom import DeepZoomGenerator

TILE_SIZE = 254  # + 2 x OVERLAP = 256 px tiles, as OpenSeadragon likes
OVERLAP = 1
JPEG_QUALITY = 80


class NoSuchTile(LookupError):
    """A level, column or row outside the pyramid."""


@dataclass(frozen=True)
class DeepZoomShape:
    width: int
    height: int
    offset_x: int  # the region's level-0 origin in the slide
    offset_y: int
    levels: tuple[tuple[int, int, int, int], ...]  # width, height, columns, rows


def _generator(slide: openslide.AbstractSlide) -> DeepZoomGenerator:
    return DeepZoomGenerator(slide, tile_size=TILE_SIZE, overlap=OVERLAP, limit_bounds=True)


def shape(slide: openslide.AbstractSlide) -> DeepZoomShape:
    generator = _generator(slide)
    width, height = generator.level_dimensions[-1]
    props = slide.properties
    return DeepZoomShape(
        width,
        height,
        int(props.get(openslide.PROPERTY_NAME_BOUNDS_X, 0)),
        int(props.get(openslide.PROPERTY_NAME_BOUNDS_Y, 0)),
        tuple(
            (w, h, cols, rows)
            for (w, h), (cols, rows) in zip(
                generator.level_dimensions, generator.level_tiles, strict=True
            )
        ),
    )


def tile_jpeg(slide: openslide.AbstractSlide, level: int, col: int, row: int) -> bytes:
    generator = _generator(slide)
    if not 0 <= level < generator.level_count:
        raise NoSuchTile(f"no level {level}: the slide has levels 0 to {generator.level_count - 1}")
    columns, rows = generator.level_tiles[level]
    if not (0 <= col < columns and 0 <= row < rows):
        raise NoSuchTile(f"no tile {col}_{row} at level {level} ({columns} x {rows} tiles)")
    image = generator.get_tile(level, (col, row))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()
