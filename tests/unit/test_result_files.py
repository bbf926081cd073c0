"""Result files appear whole (written aside, then renamed) and readable by
the worker's group, not only its user."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from PIL import Image

from worker_service.storage.result_files import RESULT_FILE_MODE, AtomicFile, write_json, write_png


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
