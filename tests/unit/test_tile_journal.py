"""The tile journal on its own: records read back as written, a record cut
short or damaged ends it there, another job's journal is started over, and
a second run of the job waits for the first to let go."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from worker_service.errors import JobCancelled
from worker_service.storage.tile_journal import TileJournal, TileResult, decode, encode

NEVER = lambda: False  # noqa: E731


def tile(seed: int, count: int = 3) -> TileResult:
    rng = np.random.default_rng(seed)
    return TileResult(
        features=[f'{{"type":"Feature","id":"n{seed}-{k}"}}' for k in range(count)],
        centroids=rng.uniform(0, 1000, (count, 2)),
        seconds=0.25 + seed,
        bounds=rng.uniform(0, 1000, (count, 4)),
        ids=[f"n{seed}-{k}" for k in range(count)],
        measures=rng.uniform(0, 1, (count, 5)),
        origin=(512 * seed, 256),
    )


def same(a: TileResult, b: TileResult) -> bool:
    return (
        a.features == b.features
        and a.ids == b.ids
        and a.origin == b.origin
        and a.seconds == b.seconds
        and all(
            np.array_equal(x, y)
            for x, y in ((a.centroids, b.centroids), (a.bounds, b.bounds), (a.measures, b.measures))
        )
    )


def test_a_record_reads_back_as_written_empty_tiles_too() -> None:
    for index, found in ((7, tile(1)), (0, tile(2, count=0))):
        back_index, back = decode(encode(index, found)[8:])
        assert back_index == index and same(back, found)


def written(path: Path, tiles: dict[int, TileResult], fingerprint: str = "job-a") -> None:
    journal = TileJournal(path, fingerprint, NEVER)
    assert list(journal.recorded()) == []
    for index, found in tiles.items():
        journal.add(index, found)
    journal.close()


def test_the_records_of_the_same_job_are_offered_once_in_order(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    tiles = {4: tile(4), 1: tile(1), 9: tile(9)}
    written(path, tiles)
    journal = TileJournal(path, "job-a", NEVER)
    offered = list(journal.recorded())
    assert [i for i, _ in offered] == [4, 1, 9]
    assert all(same(found, tiles[i]) for i, found in offered)
    journal.add(2, tile(2))  # continues after them
    journal.close()
    again = TileJournal(path, "job-a", NEVER)
    assert [i for i, _ in again.recorded()] == [4, 1, 9, 2]
    again.remove()
    assert not path.exists()


def test_another_fingerprint_starts_the_journal_over(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    written(path, {1: tile(1)})
    journal = TileJournal(path, "job-b", NEVER)
    assert list(journal.recorded()) == []
    journal.close()
    assert list(TileJournal(path, "job-a", NEVER).recorded()) == []


@pytest.mark.parametrize("damage", ["cut", "flipped", "garbage"])
def test_a_damaged_or_cut_record_ends_the_journal_there(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "journal"
    written(path, {1: tile(1), 2: tile(2)})
    data = bytearray(path.read_bytes())
    if damage == "cut":  # a kill while the last record was written
        data = data[:-10]
    elif damage == "flipped":
        data[-5] ^= 0xFF
    else:
        data += b"\x05\x00\x00\x00junk!"
    path.write_bytes(bytes(data))
    journal = TileJournal(path, "job-a", NEVER)
    kept = [i for i, _ in journal.recorded()]
    assert kept == ([1, 2] if damage == "garbage" else [1])
    journal.add(3, tile(3))  # written where the whole records end
    journal.close()
    assert [i for i, _ in TileJournal(path, "job-a", NEVER).recorded()] == [*kept, 3]


def test_a_second_run_waits_for_the_first_or_its_cancel(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    first = TileJournal(path, "job-a", NEVER)
    opened: list[TileJournal] = []
    waiter = threading.Thread(target=lambda: opened.append(TileJournal(path, "job-a", NEVER)))
    waiter.start()
    time.sleep(0.3)
    assert opened == []  # still waiting
    first.add(1, tile(1))
    first.close()
    waiter.join(5)
    assert [i for i, _ in opened[0].recorded()] == [1]
    with pytest.raises(JobCancelled):
        TileJournal(path, "job-a", lambda: True)  # held by opened[0]: the cancel ends the wait
    opened[0].close()


def test_a_run_that_will_not_let_go_leaves_the_next_without_a_journal(tmp_path: Path) -> None:
    """A frozen worker sharing the results folder holds the journal: the
    retry elsewhere runs from tile 0, recording nothing, and when it ends
    whole the journal goes (its files are the job's)."""
    path = tmp_path / "journal"
    frozen = TileJournal(path, "job-a", NEVER)
    frozen.add(1, tile(1))
    started = time.monotonic()
    retry = TileJournal(path, "job-a", NEVER, wait_s=0.3)
    assert time.monotonic() - started >= 0.3
    assert not retry.held and list(retry.recorded()) == []
    size = path.stat().st_size
    retry.add(2, tile(2))
    assert path.stat().st_size == size  # nothing written
    retry.remove()
    assert not path.exists()
    frozen.close()
