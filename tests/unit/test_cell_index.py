"""The cell index answers a box exactly as filtering the whole collection by
it would, and its density grid counts every nucleus once."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
from shapely.geometry import shape

from worker_service.analysis import cell_index
from worker_service.analysis.cell_index import IndexBuilder
from worker_service.storage.result_files import FeatureCollectionWriter, nuclei_feature_texts
from worker_service.viewer.cell_queries import CellQueries, TooManyNuclei
from wsi_runtime.boxes import BoxError, parse_box


def _nuclei(count: int, seed: int, extent: float = 3000.0) -> list[np.ndarray]:
    """Star-shaped outlines (not boxes: their corners lie off their outlines)."""
    rng = np.random.default_rng(seed)
    rings = []
    for _ in range(count):
        cx, cy = rng.uniform(0, extent, 2)
        angles = np.sort(rng.uniform(0, 2 * math.pi, int(rng.integers(5, 12))))
        radii = rng.uniform(3, 15, len(angles))
        ring = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
        rings.append(np.concatenate([ring, ring[:1]]))
    return rings


AREA = {"Area px^2": 1.0}


def features(
    queries: CellQueries, cells: Path, box: tuple[float, float, float, float]
) -> list[bytes]:
    """Every feature whose outline meets ``box``, in one read."""
    selection = queries.select(cells, box)
    return queries.read(selection, 0, len(selection))


def _write(path: Path, rings: list[np.ndarray]) -> cell_index.CellIndex:
    writer = FeatureCollectionWriter(path)
    builder = IndexBuilder()
    for k, ring in enumerate(rings):
        (text,) = nuclei_feature_texts([f"id-{k}"], ring, np.array([0, len(ring)]), [AREA])
        rounded = np.round(ring, 2)
        box = np.concatenate([rounded.min(0) - 0.01, rounded.max(0) + 0.01])
        builder.add([writer.add_text(text)], [len(text)], box)
    writer.close()
    return builder.build()


def _outlines(path: Path) -> list[tuple[str, Any]]:
    """Every feature of the file, parsed whole: (id, outline)."""
    features = json.loads(path.read_text())["features"]
    return [(f["id"], shape(f["geometry"])) for f in features]


def _brute_force(
    outlines: list[tuple[str, Any]], box: tuple[float, float, float, float]
) -> list[str]:
    area = shapely.box(*box)
    return [feature_id for feature_id, outline in outlines if outline.intersects(area)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_box_gives_what_filtering_the_whole_file_gives(tmp_path: Path, seed: int) -> None:
    cells = tmp_path / "cells.geojson"
    index = _write(cells, _nuclei(3000, seed))
    cell_index.save(index, (tmp_path / cell_index.INDEX_NAME).open("wb"))
    queries = CellQueries()
    outlines = _outlines(cells)
    rng = np.random.default_rng(seed + 10)
    for _ in range(40):
        x0, y0 = rng.uniform(-50, 2900, 2)
        box = (x0, y0, x0 + rng.uniform(0.5, 800), y0 + rng.uniform(0.5, 800))
        found = [json.loads(f)["id"] for f in features(queries, cells, box)]
        assert found == _brute_force(outlines, box)


def test_an_outline_box_corner_in_the_box_is_not_enough(tmp_path: Path) -> None:
    """A diamond whose box reaches into the query box but whose outline does not."""
    cells = tmp_path / "cells.geojson"
    diamond = np.array([(10.0, 0.0), (20.0, 10.0), (10.0, 20.0), (0.0, 10.0), (10.0, 0.0)])
    _write(cells, [diamond])
    assert features(CellQueries(), cells, (17.0, 17.0, 30.0, 30.0)) == []
    assert len(features(CellQueries(), cells, (14.0, 14.0, 30.0, 30.0))) == 1


def test_the_index_of_an_old_file_is_built_from_its_lines(tmp_path: Path) -> None:
    cells = tmp_path / "cells.geojson"
    written = _write(cells, _nuclei(200, 7))
    rebuilt = cell_index.from_collection(cells.read_bytes())
    assert np.array_equal(rebuilt.offsets, written.offsets)
    assert np.array_equal(rebuilt.lengths, written.lengths)
    assert np.allclose(rebuilt.bounds, written.bounds)
    # Without a saved index the query builds one, saves it, and answers the same.
    box = (100.0, 100.0, 900.0, 900.0)
    found = [json.loads(f)["id"] for f in features(CellQueries(), cells, box)]
    assert found == _brute_force(_outlines(cells), box)
    assert (tmp_path / cell_index.INDEX_NAME).is_file()


def test_density_counts_each_nucleus_once(tmp_path: Path) -> None:
    rings = _nuclei(1000, 4, extent=10_000)
    index = _write(tmp_path / "cells.geojson", rings)
    cell, columns, rows, counts = index.density(100.0)
    assert cell == 100.0 and counts.sum() == 1000 and len(counts) == columns * rows
    centre = (index.bounds[0, :2] + index.bounds[0, 2:]) / 2
    assert counts[int(centre[1] // 100) * columns + int(centre[0] // 100)] >= 1
    # Asked for too fine a grid, the cell grows to keep it at most 512 across.
    cell, columns, rows, _ = index.density(1.0)
    assert max(columns, rows) <= cell_index.MAX_DENSITY_CELLS and cell > 1.0
    assert IndexBuilder().build().density(50.0)[1:3] == (0, 0)


def test_a_box_with_too_many_nuclei_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cells = tmp_path / "cells.geojson"
    _write(cells, _nuclei(300, 5, extent=500))
    monkeypatch.setattr("worker_service.viewer.cell_queries.MAX_NUCLEI_PER_BOX", 100)
    with pytest.raises(TooManyNuclei, match="smaller box"):
        features(CellQueries(), cells, (0.0, 0.0, 600.0, 600.0))


@pytest.mark.parametrize(
    "text", ["1,2,3", "a,b,c,d", "0,0,0,10", "5,0,1,10", "nan,0,1,1", "0,0,inf,1", ""]
)
def test_bad_boxes_are_refused(text: str) -> None:
    with pytest.raises(BoxError):
        parse_box(text)


def test_a_good_box_parses() -> None:
    assert parse_box("0,1.5,20,30") == (0.0, 1.5, 20.0, 30.0)


def test_density_picks_a_cell_when_asked_for_none(tmp_path: Path) -> None:
    index = _write(tmp_path / "cells.geojson", _nuclei(500, 6, extent=3000))
    cell, columns, rows, counts = index.density(0)
    assert cell == cell_index.DEFAULT_DENSITY_CELL_PX and counts.sum() == 500
    assert columns == rows == 12  # 3000 px / 256


def test_results_deleted_under_a_query_say_so(tmp_path: Path) -> None:
    """Retention may delete a job's folder between two boxes: the query ends
    with FileNotFoundError (the worker answers NOT_FOUND), not a stale answer."""
    cells = tmp_path / "cells.geojson"
    _write(cells, _nuclei(50, 8))
    queries = CellQueries()
    assert features(queries, cells, (0.0, 0.0, 3000.0, 3000.0))
    cells.unlink()
    with pytest.raises(FileNotFoundError):
        features(queries, cells, (0.0, 0.0, 3000.0, 3000.0))
