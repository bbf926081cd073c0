"""The worker pipeline in-process (no gRPC): a real process pool, real slides,
synthetic slides with known nuclei."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pipeline.support import run
from worker_service.pipeline.job import JobOutcome
from worker_service.pipeline.tile_pool import TilePool
from wsi_runtime.synthetic_slides import SyntheticSlide, synthetic_he_slide


@pytest.fixture(scope="session")
def pool() -> Iterator[TilePool]:
    tile_pool = TilePool(2)
    tile_pool.warm_up()
    yield tile_pool
    tile_pool.close()


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSlide:
    return synthetic_he_slide(tmp_path_factory.mktemp("slides") / "synthetic.tiff", seed=7)


@pytest.fixture(scope="session")
def learned_whole(
    pool: TilePool, synthetic: SyntheticSlide, tmp_path_factory: pytest.TempPathFactory
) -> JobOutcome:
    """A learned job of the whole synthetic slide, for the tests that judge it
    and those that compare another job with it."""
    return run(pool, tmp_path_factory.mktemp("whole"), str(synthetic.path), backend="learned")
