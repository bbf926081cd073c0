"""Hostile slides made by hand: tiled TIFFs that claim an enormous size while
every tile entry points at one small compressed tile, so a file of a few
hundred KB describes gigapixels (OpenSlide reads them as generic TIFFs); and
damaged scans, whose tiles are unreadable."""

from __future__ import annotations

import itertools
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import tifffile

# TIFF tag numbers and types
_SHORT, _LONG = 3, 4
_NEW_SUBFILE_TYPE, _REDUCED_RESOLUTION = 254, 1
_IMAGE_WIDTH, _IMAGE_LENGTH, _BITS, _COMPRESSION, _PHOTOMETRIC = 256, 257, 258, 259, 262
_SAMPLES, _PLANAR = 277, 284
_TILE_WIDTH, _TILE_LENGTH, _TILE_OFFSETS, _TILE_BYTE_COUNTS = 322, 323, 324, 325
_DEFLATE, _RGB = 8, 2


def crafted_tiff(
    path: Path,
    levels: Sequence[tuple[int, int]],
    tile: int = 4096,
    colour: tuple[int, int, int] = (255, 255, 255),
) -> Path:
    """A tiled RGB TIFF with one directory per entry of ``levels`` (width,
    height), largest first, every tile a copy of one deflated ``colour`` tile."""
    pixels = bytes(colour) * (tile * tile)
    data = zlib.compress(pixels, 9)
    out = bytearray(b"II*\x00\x00\x00\x00\x00")
    data_at = len(out)
    out += data
    bits_at = len(out)
    out += struct.pack("<3H", 8, 8, 8)
    ifd_offsets = []
    for index, (width, height) in enumerate(levels):
        count = -(-width // tile) * -(-height // tile)
        offsets_at = len(out)
        out += struct.pack(f"<{count}I", *([data_at] * count))
        counts_at = len(out)
        out += struct.pack(f"<{count}I", *([len(data)] * count))
        entries = [
            (_IMAGE_WIDTH, _LONG, 1, width),
            (_IMAGE_LENGTH, _LONG, 1, height),
            (_BITS, _SHORT, 3, bits_at),
            (_COMPRESSION, _SHORT, 1, _DEFLATE),
            (_PHOTOMETRIC, _SHORT, 1, _RGB),
            (_SAMPLES, _SHORT, 1, 3),
            (_PLANAR, _SHORT, 1, 1),
            (_TILE_WIDTH, _SHORT, 1, tile),
            (_TILE_LENGTH, _SHORT, 1, tile),
            (_TILE_OFFSETS, _LONG, count, offsets_at if count > 1 else data_at),
            (_TILE_BYTE_COUNTS, _LONG, count, counts_at if count > 1 else len(data)),
        ]
        if index:  # a pyramid level below the full-resolution image
            entries.insert(0, (_NEW_SUBFILE_TYPE, _LONG, 1, _REDUCED_RESOLUTION))
        if len(out) % 2:
            out += b"\x00"
        ifd_offsets.append(len(out))
        out += struct.pack("<H", len(entries))
        for tag, kind, n, value in entries:
            packed = struct.pack("<H", value) + b"\x00\x00" if kind == _SHORT and n == 1 else None
            out += struct.pack("<HHI", tag, kind, n) + (packed or struct.pack("<I", value))
        out += b"\x00\x00\x00\x00"  # next directory: patched below
    struct.pack_into("<I", out, 4, ifd_offsets[0])
    for here, following in itertools.pairwise(ifd_offsets):
        entry_count = struct.unpack_from("<H", out, here)[0]
        struct.pack_into("<I", out, here + 2 + 12 * entry_count, following)
    path.write_bytes(bytes(out))
    return path


def damaged(slide: Path) -> None:
    """A damaged scan: a TIFF by its header and directories, every tile of its
    full resolution overwritten (a slide OpenSlide opens and cannot read)."""
    with tifffile.TiffFile(slide) as tiff:
        page = tiff.pages[0]
        tiles = list(zip(page.dataoffsets, page.databytecounts, strict=True))
    with open(slide, "r+b") as out:
        for offset, count in tiles:
            out.seek(offset)
            out.write(b"\xff" * count)
