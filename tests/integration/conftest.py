"""Fixtures of the integration tests (real services on loopback); the helpers
they share are in support.py. Every test here is marked ``integration`` by
tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Cluster, cluster


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One scheduler (cap 4, many active users) and one worker with 4 slots."""
    workdir = tmp_path_factory.mktemp("shared")
    with cluster(workdir, worker_slots=(4,), max_workers=4, max_active_users=50) as c:
        yield c


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
