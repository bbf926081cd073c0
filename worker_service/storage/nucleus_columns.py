"""The columns of the per-nucleus table, in its order, with the raw type of
each in the spool (a numpy dtype string): one list for the worker that
spools them (``nucleus_table``) and the process that writes them as Parquet
(``parquet_writer``, which so needs none of the worker's result-file code)."""

from __future__ import annotations

ID_BYTES = 36  # a UUID's text
# The measures are wsi_protocol.measures' names, in micrometres: NaN on a
# slide without a pixel size.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", f"S{ID_BYTES}"),
    ("centroid_x", "<f8"),  # level-0 px
    ("centroid_y", "<f8"),
    ("area_um2", "<f8"),
    ("perimeter_um", "<f8"),
    ("circularity", "<f8"),
    ("solidity", "<f8"),
    ("hematoxylin_od", "<f8"),
    ("tile_x", "<i8"),  # the level-0 origin of the tile whose core holds the nucleus
    ("tile_y", "<i8"),
)
