"""The per-nucleus table's spool and its writing process: what was spooled
is what the Parquet file holds, row for row; a discarded spool leaves
nothing; an empty job gets an empty table with every column."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from worker_service.storage.nucleus_columns import COLUMNS
from worker_service.storage.nucleus_table import NucleusSpool
from worker_service.storage.result_files import RESULT_FILE_MODE


def test_what_is_spooled_is_what_the_table_holds(tmp_path: Path) -> None:
    spool = NucleusSpool(tmp_path / ".spool", tmp_path / "nuclei.parquet")
    rng = np.random.default_rng(5)
    tiles = [(0, 0), (448, 0), (0, 448)]
    ids, values = [], []
    for origin, count in zip(tiles, (3, 0, 70_000), strict=True):
        batch_ids = [str(uuid.UUID(int=int(rng.integers(2**62)))) for _ in range(count)]
        batch = rng.random((count, 7))
        spool.add(batch_ids, batch[:, :2], batch[:, 2:], origin)
        ids += batch_ids
        values.append(np.column_stack([batch, np.tile(origin, (count, 1))]))
    target = spool.publish()
    table = pq.read_table(target)
    assert table.column_names == [name for name, _ in COLUMNS]
    assert table.num_rows == 70_003 and table.column("id").to_pylist() == ids
    expected = np.concatenate(values)
    for k, (name, _) in enumerate(COLUMNS[1:]):
        assert np.array_equal(table.column(name).to_numpy(), expected[:, k]), name
    assert stat.S_IMODE(target.stat().st_mode) == RESULT_FILE_MODE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nuclei.parquet"]


def test_a_discarded_spool_leaves_nothing(tmp_path: Path) -> None:
    spool = NucleusSpool(tmp_path / ".spool", tmp_path / "nuclei.parquet")
    spool.add([str(uuid.uuid4())], np.zeros((1, 2)), np.zeros((1, 5)), (0, 0))
    spool.discard()
    assert list(tmp_path.iterdir()) == []


def test_a_job_without_nuclei_gets_an_empty_table(tmp_path: Path) -> None:
    table = pq.read_table(NucleusSpool(tmp_path / ".spool", tmp_path / "n.parquet").publish())
    assert table.num_rows == 0 and table.column_names == [name for name, _ in COLUMNS]
