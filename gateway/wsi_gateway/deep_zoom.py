"""Deep Zoom as viewers read it: the DZI descriptor from the scheduler's
description of a slide, and tile names (COL_ROW.jpeg) read back."""

from __future__ import annotations

import re
from xml.sax.saxutils import quoteattr

from wsi_gateway.dependencies import NotFoundError
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb

DZI_NAMESPACE = "http://schemas.microsoft.com/deepzoom/2008"
MAX_LEVEL = 63  # a 2^63 px slide; anything above names no level (and no int32)
_TILE_NAME = re.compile(r"(\d{1,9})_(\d{1,9})\.jpe?g")


def descriptor(info: pb.DeepZoomInfo) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Image xmlns={quoteattr(DZI_NAMESPACE)} Format={quoteattr(info.format or 'jpeg')}"
        f' Overlap="{info.overlap}" TileSize="{info.tile_size}">'
        f'<Size Width="{info.width}" Height="{info.height}"/></Image>\n'
    )


def tile_address(name: str) -> tuple[int, int]:
    """``COL_ROW.jpeg`` as (col, row); anything else is no tile (404)."""
    match = _TILE_NAME.fullmatch(name)
    if match is None:
        raise NotFoundError(f"no tile {name[:40]!r}: tiles are named COL_ROW.jpeg")
    return int(match[1]), int(match[2])
