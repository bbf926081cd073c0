"""Where a slide is opened (the worker, and every pool process) its real path
is checked against the slide roots again: a slide swapped for a link out of
them after it was checked is refused, PERMISSION_DENIED, and never opened."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.harness import CMU, SLIDES
from tests.integration.test_slide_swap import watched_fifo
from worker_service.analysis.tiling import tile_grid
from worker_service.errors import SlideError, SlideOutsideRoots
from worker_service.pipeline import tile_work
from worker_service.pipeline.tile_pool import TilePool
from worker_service.storage.slides import SlideCache


def test_the_slide_cache_refuses_a_slide_swapped_out_of_the_roots(tmp_path: Path) -> None:
    root, outside = tmp_path / "slides", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    slide = root / "victim.svs"
    shutil.copy(SLIDES / CMU, slide)
    cache = SlideCache(roots=[root])
    assert cache.get(str(slide)).dimensions[0] > 0  # inside: opens
    with watched_fifo(outside / "secret.svs") as opened:
        slide.unlink()
        slide.symlink_to(outside / "secret.svs")
        with pytest.raises(SlideOutsideRoots) as refused:
            cache.get(str(slide))
        assert refused.value.code == "PERMISSION_DENIED"
        assert str(tmp_path) not in str(refused.value)
        assert "victim.svs" in str(refused.value)
    assert opened == []
    slide.unlink()
    with pytest.raises(SlideError, match=r"victim\.svs"):
        cache.get(str(slide))


def test_pool_processes_open_only_inside_the_roots(tmp_path: Path) -> None:
    """The pool hands its processes the roots at start (their initializer)."""
    root, outside = tmp_path / "slides", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    shutil.copy(SLIDES / CMU, root / "inside.svs")
    shutil.copy(SLIDES / CMU, outside / "elsewhere.svs")
    (root / "link.svs").symlink_to(outside / "elsewhere.svs")
    pool = TilePool(1, slide_roots=[root])
    try:
        tile = tile_grid(64, 64, 64, 0)[0]
        inside = tile_work.TileTask(str(root / "inside.svs"), 0, 1.0, tile)
        assert pool._executor.submit(tile_work.read_tile, inside).result().shape == (64, 64, 3)
        linked = tile_work.TileTask(str(root / "link.svs"), 0, 1.0, tile)
        with pytest.raises(SlideOutsideRoots):
            pool._executor.submit(tile_work.read_tile, linked).result()
    finally:
        pool.close()
