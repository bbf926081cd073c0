"""A segmentation job's finished tiles, recorded as they finish
(``.tiles-journal`` in the job's folder), so that a retry of the job on this
worker (its process killed and started again, the scheduler restarted)
continues from them instead of from tile 0. The records are the tiles'
results as the job writes them (``TileResult``): replayed through the same
writers, they give the same files as the tiles segmented again would.

Layout: a header line naming the format and the job's fingerprint (what the
records are valid for: slide, level, tiles, segmenter, worker version),
then one record per tile: payload length and CRC-32 (``<II``), then the
payload: a JSON line (tile index, counts, ids, origin), the features' JSON
joined by newlines, and the raw float64 arrays. A record cut short by a
kill, or damaged, ends the journal there: the tiles after it run again.

One run of a job holds the journal's lock (``flock``) while it runs: a
retry that arrives while the previous run is still stopping waits for it
(a stopping run lets go within a second or two). The lock goes with the
process, so a killed run never holds it; a run that holds it for longer (a
frozen worker sharing this results folder) leaves the retry to run without
a journal, from tile 0."""

from __future__ import annotations

import fcntl
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
import orjson

from worker_service.errors import JobCancelled

FORMAT = b"wsi-tiles-journal 1"
_RECORD = struct.Struct("<II")  # payload length, CRC-32 of the payload
LOCK_POLL_S = 0.1
LOCK_WAIT_S = 2.0  # for another run of the job to let go of the journal (it does in < 1 s)


@dataclass(frozen=True)
class TileResult:
    """A tile's nuclei as GeoJSON features ready to write (encoded in the
    pool, not in the worker's one main process), with the columns the other
    result files take from them."""

    features: list[str]
    centroids: npt.NDArray[np.float64]  # (n, 2) of level-0 (x, y), as the features write them
    seconds: float  # reading and segmenting it, in the pool process
    bounds: npt.NDArray[np.float64]  # (n, 4): x0, y0, x1, y1 of each outline
    ids: list[str]  # each nucleus's feature id
    measures: npt.NDArray[np.float64]  # (n, len(MEASURES)), as the features write them
    origin: tuple[int, int]  # the tile's level-0 origin


def encode(index: int, tile: TileResult) -> bytes:
    features = "\n".join(tile.features).encode()
    meta = {
        "tile": index,
        "n": len(tile.ids),
        "measures": tile.measures.shape[1] if tile.measures.ndim == 2 else 0,
        "ids": tile.ids,
        "origin": list(tile.origin),
        "seconds": tile.seconds,
        "features_bytes": len(features),
    }
    arrays = [np.ascontiguousarray(a, "<f8") for a in (tile.centroids, tile.bounds, tile.measures)]
    payload = b"".join([orjson.dumps(meta), b"\n", features, *(a.tobytes() for a in arrays)])
    return _RECORD.pack(len(payload), zlib.crc32(payload)) + payload


def decode(payload: bytes) -> tuple[int, TileResult]:
    """ValueError (or a KeyError, TypeError) if the payload is not a record."""
    line_end = payload.index(b"\n")
    meta = orjson.loads(payload[:line_end])
    count, columns = int(meta["n"]), int(meta["measures"])
    start = line_end + 1
    end = start + int(meta["features_bytes"])
    features = payload[start:end].decode().split("\n") if count else []
    floats = np.frombuffer(payload[end:], "<f8")
    if len(features) != count or len(meta["ids"]) != count:
        raise ValueError("record counts disagree")
    if len(floats) != count * (2 + 4 + columns):
        raise ValueError("record arrays are the wrong size")
    centroids = floats[: 2 * count].reshape(count, 2)
    bounds = floats[2 * count : 6 * count].reshape(count, 4)
    measures = floats[6 * count :].reshape(count, columns)
    origin = (int(meta["origin"][0]), int(meta["origin"][1]))
    tile = TileResult(
        features, centroids, float(meta["seconds"]), bounds, list(meta["ids"]), measures, origin
    )
    return int(meta["tile"]), tile


class TileJournal:
    """Opened with the job's ``fingerprint``: the records of an earlier run of
    the same job are offered by ``recorded`` (once), anything else in the file
    is dropped; then ``add`` records each tile as the job consumes it."""

    def __init__(
        self,
        path: Path,
        fingerprint: str,
        cancelled: Callable[[], bool],
        wait_s: float = LOCK_WAIT_S,
    ) -> None:
        self.path = path
        self._header = FORMAT + b" " + fingerprint.encode() + b"\n"
        self._valid_end = 0
        self._file: BinaryIO | None = None
        handle = open(path, "a+b")  # noqa: SIM115 (held until close or remove)
        try:
            if _lock(handle, cancelled, wait_s):
                self._valid_end = self._check_header(handle)
                self._file = handle
            else:  # another run holds it: this one records nothing
                handle.close()
        except BaseException:
            handle.close()
            raise

    @property
    def held(self) -> bool:
        """Whether this run holds the journal (False: another run of the job
        would not let go, and this one neither reads nor records tiles)."""
        return self._file is not None

    def _check_header(self, handle: BinaryIO) -> int:
        """Where the header ends if it is this job's; else the file starts over."""
        handle.seek(0)
        if handle.read(len(self._header)) != self._header:
            handle.truncate(0)
            handle.write(self._header)
            handle.flush()
        return len(self._header)

    def recorded(self) -> Iterator[tuple[int, TileResult]]:
        """The tiles an earlier run recorded, in its order; the journal is then
        cut after the last whole record, ready for ``add``."""
        handle = self._file
        if handle is None:
            return
        handle.seek(self._valid_end)
        while True:
            head = handle.read(_RECORD.size)
            if len(head) < _RECORD.size:
                break
            length, crc = _RECORD.unpack(head)
            payload = handle.read(length)
            if len(payload) < length or zlib.crc32(payload) != crc:
                break
            try:
                record = decode(payload)
            except (ValueError, KeyError, TypeError, IndexError):
                break
            self._valid_end += _RECORD.size + length
            yield record
        handle.truncate(self._valid_end)
        handle.seek(0, os.SEEK_END)

    def add(self, index: int, tile: TileResult) -> None:
        """Recorded and flushed to the OS: a killed worker process loses
        none of it (a machine that loses power may lose the last ones)."""
        if self._file is not None:
            self._file.write(encode(index, tile))
            self._file.flush()

    def close(self) -> None:
        """Kept for a retry (the job stopped before its end)."""
        if self._file is not None:
            self._file.close()

    def remove(self) -> None:
        """The job's files are whole: the records are not needed any more
        (nor another run's, if it held them: its files are these)."""
        self.path.unlink(missing_ok=True)
        self.close()


def _lock(handle: BinaryIO, cancelled: Callable[[], bool], wait_s: float) -> bool:
    """Whether the lock was had within ``wait_s``; JobCancelled on a cancel."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if cancelled():
                raise JobCancelled() from None
            if time.monotonic() >= deadline:
                return False
            time.sleep(LOCK_POLL_S)
