"""The per-nucleus table beside cells.geojson (``nuclei.parquet``): one row
per nucleus, the values of its GeoJSON feature (id, centroid, measurements)
and the level-0 origin of the tile it came from, for pandas, polars, R or
DuckDB. Written in two steps so that the worker's memory does not grow with
the nuclei, nor with the Parquet library: each column is spooled to a raw
file as tiles finish, then a short-lived process (``parquet_writer``) writes
the Parquet file from the spool in row groups, importing pyarrow there only
(60 MB the worker itself never holds), and the spool is removed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

from worker_service.storage.nucleus_columns import COLUMNS, ID_BYTES
from worker_service.storage.result_files import RESULT_FILE_MODE

WRITE_TIMEOUT_S = 600
PARQUET_WRITER = "worker_service.storage.parquet_writer"  # the module of the writing process


class NucleusSpool:
    """The table's columns, appended tile by tile to raw files in ``folder``;
    the process that will write ``target`` is started at once, so that its
    start (Python, pyarrow: about 0.3 s) overlaps the job's tiles."""

    def __init__(self, folder: Path, target: Path) -> None:
        self.folder, self.target = folder, target
        folder.mkdir(parents=True, exist_ok=True)
        self._files = {name: open(folder / name, "wb") for name, _ in COLUMNS}  # noqa: SIM115
        self.rows = 0
        self._writer = subprocess.Popen(
            [
                sys.executable,
                "-m",
                PARQUET_WRITER,
                str(folder),
                str(target),
                f"{RESULT_FILE_MODE:o}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def add(
        self,
        ids: list[str],
        centroids: npt.NDArray[np.float64],
        measures: npt.NDArray[np.float64],
        tile_origin: tuple[int, int],
    ) -> None:
        """One tile's nuclei: (n, 2) centroids, (n, 5) measures, as written."""
        count = len(ids)
        if not count:
            return
        columns = [np.array(ids, dtype=f"S{ID_BYTES}")]
        columns += [*centroids.T, *measures.T]
        columns += [np.full(count, origin) for origin in tile_origin]
        for (name, kind), column in zip(COLUMNS, columns, strict=True):
            self._files[name].write(np.ascontiguousarray(column, dtype=kind).tobytes())
        self.rows += count

    def _close_files(self) -> None:
        for handle in self._files.values():
            handle.close()

    def discard(self) -> None:
        """No table: the writer ended (it was waiting to be told the rows,
        or is done), the spool removed."""
        self._close_files()
        if self._writer.poll() is None:
            self._writer.kill()
        self._writer.wait()
        shutil.rmtree(self.folder, ignore_errors=True)

    def publish(self) -> Path:
        """The writer told how many rows the spool holds; returns once the
        table is whole under ``target`` (OSError if it could not be written).
        The spool is removed either way."""
        self._close_files()
        try:
            _, errors = self._writer.communicate(f"{self.rows}\n", timeout=WRITE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._writer.kill()
            self._writer.wait()
            raise OSError(f"the nucleus table was not written within {WRITE_TIMEOUT_S} s") from None
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
        if self._writer.returncode != 0:
            last = (errors.strip().splitlines() or ["no message"])[-1]
            raise OSError(f"the nucleus table was not written: {last}")
        return self.target
