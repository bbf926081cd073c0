"""Writing a job's results: QuPath-importable GeoJSON streamed feature by
feature (memory does not grow with the number of nuclei), PNG images and the
JSON summary. Every file appears atomically (written aside, then renamed)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np
import numpy.typing as npt
import orjson
from PIL import Image

from worker_service.analysis import cell_index

NUCLEUS_COLOR = [200, 0, 0]


def job_folder(results_dir: Path, job_id: str) -> Path:
    """The job's own folder, directly inside the results root whatever
    ``job_id`` holds (the service checks its format; this is the last line)."""
    root = results_dir.resolve()
    folder = (root / job_id).resolve()
    if folder.parent != root:
        raise ValueError(f"job id {job_id!r} does not name a folder inside the results root")
    return folder


TISSUE_COLOR = [0, 160, 0]
# Result files: the worker's user writes, its group (the lab's readers, a
# backup, a viewer) reads; mkstemp alone would leave them 0600.
RESULT_FILE_MODE = 0o640


class AtomicFile:
    """A text file that appears under its name only when closed without error."""

    def __init__(self, path: Path, mode: str = "w") -> None:
        self.path = path
        try:
            fd, self._tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        except FileNotFoundError:  # the job's first file: its folder is made once
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, self._tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        os.fchmod(fd, RESULT_FILE_MODE)
        self.handle: IO[Any] = os.fdopen(fd, mode)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.handle.close()  # flushes: a full disk may show only here
            if kind is None:
                os.replace(self._tmp, self.path)
        finally:
            Path(self._tmp).unlink(missing_ok=True)  # gone after the rename, or discarded


def write_json(path: Path, document: object) -> Path:
    with AtomicFile(path) as out:
        out.handle.write(json.dumps(document, indent=1))
    return path


def write_cell_index(path: Path, index: cell_index.CellIndex) -> Path:
    with AtomicFile(path, "wb") as file:
        cell_index.save(index, file.handle)
    return path


def write_png(path: Path, image: Image.Image, compress_level: int = 6) -> Path:
    with AtomicFile(path, "wb") as out:
        image.save(out.handle, format="PNG", compress_level=compress_level)
    return path


def mask_image(mask: npt.NDArray[np.bool_]) -> Image.Image:
    return Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L")


class FeatureCollectionWriter:
    """Streams a GeoJSON FeatureCollection to disk one feature at a time, one
    per line."""

    _HEAD = '{"type": "FeatureCollection", "features": [\n'

    def __init__(self, path: Path) -> None:
        self._file = AtomicFile(path)
        self._file.handle.write(self._HEAD)
        self._position = len(self._HEAD)
        self.count = 0

    @property
    def path(self) -> Path:
        return self._file.path

    def add(self, feature: dict[str, object]) -> None:
        self.add_text(json.dumps(feature, separators=(",", ":")))

    def add_text(self, feature: str) -> int:
        """A feature already encoded as (ASCII) JSON; returns its byte offset."""
        if self.count:
            self._file.handle.write(",\n")
            self._position += 2
        offset = self._position
        self._file.handle.write(feature)
        self._position += len(feature)
        self.count += 1
        return offset

    def close(self, ok: bool = True) -> Path:
        """Publishes the file, or (``ok`` False, or the last write fails)
        discards it: no temporary file is ever left behind."""
        try:
            if ok:
                self._file.handle.write("\n]}\n")
        except BaseException as exc:
            self._file.__exit__(type(exc), exc, None)
            raise
        self._file.__exit__(None if ok else RuntimeError, None, None)
        return self._file.path


def _ring(points: Iterable[Sequence[float]]) -> list[list[float]]:
    ring = [[round(float(x), 2), round(float(y), 2)] for x, y in points]
    if ring and ring[0] != ring[-1]:
        ring.append(ring[0])
    return ring


def nucleus_feature(
    feature_id: str, polygon: npt.NDArray[np.float64], measurements: dict[str, float]
) -> dict[str, object]:
    """A QuPath detection: id, objectType, classification and measurements.
    ``polygon``: a closed ring, (n, 2) of (x, y)."""
    return _detection(feature_id, np.round(polygon, 2).tolist(), measurements)


def _detection(feature_id: str, ring: object, measurements: dict[str, float]) -> dict[str, object]:
    return {
        "type": "Feature",
        "id": feature_id,
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {
            "objectType": "detection",
            "classification": {"name": "Nucleus", "color": NUCLEUS_COLOR},
            "measurements": measurements,
        },
    }


MICRO = "\N{MICRO SIGN}"  # in two measurement names; orjson writes it as UTF-8


def nuclei_feature_texts(
    feature_ids: Sequence[str],
    points: npt.NDArray[np.float64],
    starts: npt.NDArray[np.int64],
    measurements: Sequence[dict[str, float]],
) -> list[str]:
    """``nucleus_feature`` of each nucleus (outline k: ``points[starts[k] :
    starts[k + 1]]``, rounded here all at once) as the compact JSON that
    cells.geojson holds: the bytes ``json.dumps`` gives (ASCII: byte offsets
    into the file are character offsets), from orjson, which encodes each
    rounded array as it is (about 5x faster; a nucleus's JSON was a fifth of
    a learned tile's work). orjson writes UTF-8: the micro sign of two
    measurement names is escaped here; any other character json.dumps would
    escape sends the feature through json.dumps itself."""
    rounded = np.round(points, 2)
    bounds = starts.tolist()
    texts = []
    for k, (feature_id, measured) in enumerate(zip(feature_ids, measurements, strict=True)):
        ring = rounded[bounds[k] : bounds[k + 1]]
        text = orjson.dumps(
            _detection(feature_id, ring, measured), option=orjson.OPT_SERIALIZE_NUMPY
        ).decode()
        text = text.replace(MICRO, "\\u00b5")
        if not text.isascii() or "\x7f" in text:
            feature = nucleus_feature(feature_id, points[bounds[k] : bounds[k + 1]], measured)
            text = json.dumps(feature, separators=(",", ":"))
        texts.append(text)
    return texts


def tissue_feature(
    exterior: Sequence[Sequence[float]],
    holes: Sequence[Sequence[Sequence[float]]],
    area_um2: float | None,
) -> dict[str, object]:
    measurements = {"Area µm^2": round(area_um2, 1)} if area_um2 is not None else {}
    return {
        "type": "Feature",
        "geometry": {
            "type": "Polygon",
            "coordinates": [_ring(exterior), *(_ring(h) for h in holes)],
        },
        "properties": {
            "objectType": "annotation",
            "classification": {"name": "Tissue", "color": TISSUE_COLOR},
            "measurements": measurements,
        },
    }
