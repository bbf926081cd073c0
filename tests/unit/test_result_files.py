"""Result files appear whole (written aside, then renamed) and readable by
the worker's group, not only its user."""

from __future__ import annotations

import json
import stat
import uuid
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from worker_service.analysis.tiling import Tile
from worker_service.pipeline.tile_work import TileTask, nucleus_ids
from worker_service.storage.result_files import (
    RESULT_FILE_MODE,
    AtomicFile,
    nuclei_feature_texts,
    nucleus_feature,
    write_json,
    write_png,
)


def test_result_files_are_group_readable(tmp_path: Path) -> None:
    made = [
        write_json(tmp_path / "job" / "summary.json", {"a": 1}),
        write_png(tmp_path / "job" / "preview.png", Image.new("RGB", (2, 2))),
    ]
    for path in made:
        assert stat.S_IMODE(path.stat().st_mode) == RESULT_FILE_MODE == 0o640


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), AtomicFile(tmp_path / "cells.geojson") as out:
        out.handle.write("{")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


@settings(max_examples=300, deadline=None)
@given(
    points=st.lists(
        st.tuples(st.floats(-1e7, 1e7, allow_nan=False), st.floats(-1e7, 1e7, allow_nan=False)),
        min_size=1,
        max_size=30,
    ),
    values=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=4, max_size=4),
    decimals=st.sampled_from([0, 2, 3, 4]),
    name=st.text(max_size=8),
)
def test_a_nucleus_s_text_is_the_json_of_its_feature_byte_for_byte(
    points: list[tuple[float, float]], values: list[float], decimals: int, name: str
) -> None:
    """Measurements are rounded to at most 4 decimals; below 1e-4 the two
    encoders would spell a number differently (1e-05 against 0.00001)."""
    polygon = np.array(points, np.float64)
    measured = {
        "Area µm^2": round(values[0], decimals),
        f"{name} px": round(values[1], decimals),
        "Circularity": round(values[2], 4),
        "Solidity": round(values[3] / 1e6, 4),
    }
    (text,) = nuclei_feature_texts(["id-1"], polygon, np.array([0, len(polygon)]), [measured])
    expected = json.dumps(nucleus_feature("id-1", polygon, measured), separators=(",", ":"))
    assert text == expected and text.isascii()


def test_nucleus_ids_are_the_uuid5_of_their_tile_backend_and_place() -> None:
    tile = Tile(0, 0, 448, 896, 512, 512, 480, 928, 928, 1376)
    for slide in ("a/slide.svs", "lab/é 🔬.svs"):
        task = TileTask(slide, 1, 4.0, tile)
        name = f"{slide}|1|448,896,512,512|learned"
        expected = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"{name}|{k}")) for k in range(12)]
        assert nucleus_ids(task, "learned", 12) == expected
    assert nucleus_ids(task, "learned", 0) == []
