"""``python -m worker_service.storage.parquet_writer SPOOL TARGET MODE``:
started with its job's segmentation, it waits for one line on stdin, the
number of rows the spool (``nucleus_table``) then holds, and writes them as
Parquet, a row group at a time, appearing under TARGET (with the octal file
MODE) only when whole; end of input without a number: the job has no table.
A process of its own, so that pyarrow's 60 MB are never the worker's; it
imports nothing but pyarrow."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROW_GROUP = 65_536
# Column name -> (Arrow type in the spool, bytes per value); the spool's
# order is the table's. Kept here as text so this process needs no numpy.
SPOOLED = {
    "id": (pa.binary(36), 36),
    "centroid_x": (pa.float64(), 8),
    "centroid_y": (pa.float64(), 8),
    "area_um2": (pa.float64(), 8),
    "perimeter_um": (pa.float64(), 8),
    "circularity": (pa.float64(), 8),
    "solidity": (pa.float64(), 8),
    "hematoxylin_od": (pa.float64(), 8),
    "tile_x": (pa.int64(), 8),
    "tile_y": (pa.int64(), 8),
}


def write(spool: Path, target: Path, rows: int, mode: int) -> None:
    schema = pa.schema(
        [(name, pa.string() if name == "id" else kind) for name, (kind, _) in SPOOLED.items()]
    )
    sources = {name: pa.memory_map(str(spool / name)) for name in SPOOLED}
    partial = target.with_name(f".tmp-{target.name}")
    try:
        with pq.ParquetWriter(partial, schema, compression="zstd") as writer:
            for start in range(0, max(rows, 1), ROW_GROUP):
                count = min(ROW_GROUP, rows - start)
                arrays = []
                for name, (kind, width) in SPOOLED.items():
                    sources[name].seek(start * width)
                    data = sources[name].read_buffer(count * width)
                    if name == "id":  # ASCII UUIDs: as text
                        ids = pa.FixedSizeBinaryArray.from_buffers(kind, count, [None, data])
                        arrays.append(ids.cast(pa.binary()).cast(pa.string()))
                    else:
                        arrays.append(pa.Array.from_buffers(kind, count, [None, data]))
                writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
        os.chmod(partial, mode)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
        for source in sources.values():
            source.close()


if __name__ == "__main__":
    told = sys.stdin.readline().strip()
    if told:
        write(Path(sys.argv[1]), Path(sys.argv[2]), int(told), int(sys.argv[3], 8))
