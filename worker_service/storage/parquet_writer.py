"""``python -m worker_service.storage.parquet_writer SPOOL TARGET MODE``:
started with its job's segmentation, it waits for one line on stdin, the
number of rows the spool (``nucleus_table``) then holds, and writes them as
Parquet, a row group at a time, appearing under TARGET (with the octal file
MODE) only when whole; end of input without a number: the job has no table.
A process of its own, so that pyarrow's 60 MB are never the worker's, and
pyarrow imported only once told (0.1 s), so that while the job's tiles run
it holds 10 MB, not 60, beside the worker and its pool. Its peak, about
85 MB, does not grow with the rows."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from worker_service.storage.nucleus_columns import COLUMNS

# Rows per row group: what the writer holds at once (16,384 rows: +25 MB over
# the imports; 65,536: +45 MB); readers still get a few dozen groups per
# million nuclei.
ROW_GROUP = 16_384


def write(spool: Path, target: Path, rows: int, mode: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    kinds = {name: np.dtype(kind) for name, kind in COLUMNS}
    schema = pa.schema(
        [
            (name, pa.string() if name == "id" else pa.from_numpy_dtype(kinds[name]))
            for name in kinds
        ]
    )
    # Read, not memory-mapped: a mapping's pages stay in this process's RSS as
    # they are read, so its peak grew with the nuclei (137 MB at 126,000 rows,
    # 421 MB at 3,000,000); read buffers are freed with each row group.
    sources = {name: pa.OSFile(str(spool / name), "rb") for name, _ in COLUMNS}
    partial = target.with_name(f".tmp-{target.name}")
    try:
        with pq.ParquetWriter(partial, schema, compression="zstd") as writer:
            for start in range(0, max(rows, 1), ROW_GROUP):
                count = min(ROW_GROUP, rows - start)
                arrays = []
                for name, kind in kinds.items():
                    sources[name].seek(start * kind.itemsize)
                    data = sources[name].read_buffer(count * kind.itemsize)
                    if name == "id":  # ASCII UUIDs: as text
                        ids = pa.FixedSizeBinaryArray.from_buffers(
                            pa.binary(kind.itemsize), count, [None, data]
                        )
                        arrays.append(ids.cast(pa.binary()).cast(pa.string()))
                    else:
                        arrays.append(
                            pa.Array.from_buffers(schema.field(name).type, count, [None, data])
                        )
                writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
        os.chmod(partial, mode)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
        for source in sources.values():
            source.close()


if __name__ == "__main__":
    # The system allocator, chosen before pyarrow starts: its default
    # (mimalloc) holds about 20 MB more than the writing needs (85 MB peak,
    # not 103). This process's own library setting, not a worker setting.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    told = sys.stdin.readline().strip()
    if told:
        write(Path(sys.argv[1]), Path(sys.argv[2]), int(told), int(sys.argv[3], 8))
