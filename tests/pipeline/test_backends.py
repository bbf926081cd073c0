"""The InstanSeg backend: a clear failure without torch or the model file, and
the adapter itself on a tiny TorchScript module built here when torch exists."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from tests.harness import SLIDES
from tests.pipeline.support import run
from worker_service.backends import INSTANSEG_ENV, BackendSpec, build
from worker_service.errors import JobError
from worker_service.tile_pool import TilePool

HAS_TORCH = importlib.util.find_spec("torch") is not None


def test_instanseg_job_fails_saying_what_is_missing(
    pool: TilePool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(INSTANSEG_ENV, str(tmp_path / "nowhere" / "instanseg.pt"))
    with pytest.raises(JobError) as info:
        run(pool, tmp_path, str(SLIDES / "small.svs"), backend="instanseg")
    message = str(info.value)
    if HAS_TORCH:
        assert "nowhere/instanseg.pt" in message and INSTANSEG_ENV in message
    else:
        assert "pip install" in message and "torch" in message


def test_tissue_mask_job_does_not_need_the_model(pool: TilePool, tmp_path: Path) -> None:
    outcome = run(
        pool, tmp_path, str(SLIDES / "small.svs"), job_type="TISSUE_MASK", backend="instanseg"
    )
    assert "tissue.geojson" in outcome.files


@pytest.mark.skipif(not HAS_TORCH, reason="torch is an optional extra (pip install '.[instanseg]')")
def test_instanseg_adapter_runs_a_torchscript_model(tmp_path: Path) -> None:
    import torch

    class DarkBlobs(torch.nn.Module):  # type: ignore[misc]
        """Labels dark pixels 1: stands in for the real model's output layout."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x.mean(dim=1, keepdim=True) < 0.3).to(torch.int32)

    path = tmp_path / "tiny.pt"
    torch.jit.script(DarkBlobs()).save(str(path))
    image = np.full((64, 64, 3), 240, np.uint8)
    image[20:30, 20:30] = (60, 30, 110)
    labels = build(BackendSpec("instanseg", model_path=str(path)))(image)
    assert labels.shape == (64, 64) and labels.dtype == np.int32
    assert labels[25, 25] == 1 and labels[5, 5] == 0
