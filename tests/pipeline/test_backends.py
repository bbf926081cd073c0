"""The InstanSeg backend: a clear failure without torch or the model file, and
the adapter itself on a tiny TorchScript module built here when torch exists."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from tests.harness import SLIDES
from tests.pipeline.support import run
from worker_service.backends import (
    BATCH_ENV,
    DEVICE_ENV,
    ENGINE_ENV,
    INSTANSEG_ENV,
    BackendSpec,
    InstanSegSegmenter,
    build,
    model_settings,
)
from worker_service.errors import JobError
from worker_service.tile_pool import TilePool

HAS_TORCH = importlib.util.find_spec("torch") is not None


def test_instanseg_job_fails_saying_what_is_missing(
    pool: TilePool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv(INSTANSEG_ENV, str(tmp_path / "nowhere" / "instanseg.pt"))
    with pytest.raises(JobError) as info:
        run(pool, tmp_path, str(SLIDES / "small.svs"), backend="instanseg")
    message = str(info.value)
    if HAS_TORCH:
        # The user learns what is missing; the path on the worker is for its log.
        assert INSTANSEG_ENV in message and "nowhere" not in message
        assert "nowhere/instanseg.pt" in caplog.text
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


@pytest.mark.skipif(not HAS_TORCH, reason="torch is an optional extra (pip install '.[instanseg]')")
def test_batched_inference_gives_the_labels_of_one_tile_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the CPU, tiles stacked into one forward pass (edge tiles of another
    size in a pass of their own) come out as each alone would."""
    import torch

    class ConvBlobs(torch.nn.Module):  # type: ignore[misc]
        """A convolution, a threshold and a label per 8 px block: batch-sized
        work like the real model's, with labels that depend on every pixel."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 5, padding=2)
            torch.nn.init.normal_(
                self.conv.weight, std=0.2, generator=torch.Generator().manual_seed(1)
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            response = self.conv(x).sum(dim=1, keepdim=True)
            blocks = (
                torch.arange(x.shape[2] * x.shape[3]).view(1, 1, x.shape[2], x.shape[3]) // 8 + 1
            )
            return torch.where(response > 0.5, blocks, torch.zeros_like(blocks)).to(torch.float32)

    path = tmp_path / "conv.pt"
    torch.jit.script(ConvBlobs()).save(str(path))
    rng = np.random.default_rng(7)
    tiles = [rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) for _ in range(5)]
    tiles.insert(2, rng.integers(0, 256, (40, 96, 3), dtype=np.uint8))  # an edge tile
    segmenter = InstanSegSegmenter(str(path), "cpu")
    batched = segmenter.segment_batch(tiles)
    alone = [segmenter(tile) for tile in tiles]
    assert [labels.shape for labels in batched] == [tile.shape[:2] for tile in tiles]
    for together, single in zip(batched, alone, strict=True):
        assert together.dtype == np.int32
        assert np.array_equal(together, single)
    assert any(labels.any() for labels in batched) and not all(labels.all() for labels in batched)


@pytest.mark.skipif(not HAS_TORCH, reason="torch is an optional extra (pip install '.[instanseg]')")
def test_a_job_in_batches_finds_what_it_finds_tile_by_tile(
    pool: TilePool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the pool: tiles taken 3 at a time (read ahead by a thread,
    segmented in one pass) give the cells of one tile at a time."""
    import torch

    class DarkBlobs(torch.nn.Module):  # type: ignore[misc]
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x.mean(dim=1, keepdim=True) < 0.35).to(torch.float32)

    model = tmp_path / "dark.pt"
    torch.jit.script(DarkBlobs()).save(str(model))
    monkeypatch.setenv(INSTANSEG_ENV, str(model))
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    cells = {}
    for batch in ("1", "3"):
        monkeypatch.setenv(BATCH_ENV, batch)
        outcome = run(
            pool, tmp_path / batch, str(SLIDES / "CMU-1-Small-Region.svs"), backend="instanseg"
        )
        assert outcome.summary["backend_details"]["batch_size"] == int(batch)  # type: ignore[index]
        features = json.loads(Path(outcome.files["cells.geojson"]).read_text())["features"]
        # Sorted: tiles (and batches) are written in the order they finish.
        cells[batch] = sorted(json.dumps(feature, sort_keys=True) for feature in features)
    assert cells["1"] == cells["3"]
    assert len(cells["1"]) > 10


def test_model_settings_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DEVICE_ENV, "tpu")
    with pytest.raises(ValueError, match=DEVICE_ENV):
        model_settings()
    monkeypatch.setenv(DEVICE_ENV, "cuda:1")
    monkeypatch.setenv(BATCH_ENV, "0")
    with pytest.raises(ValueError, match=BATCH_ENV):
        model_settings()
    monkeypatch.setenv(BATCH_ENV, "16")
    monkeypatch.setenv(ENGINE_ENV, "tensorrt")
    with pytest.raises(ValueError, match=ENGINE_ENV):
        model_settings()
    monkeypatch.setenv(ENGINE_ENV, "onnx")
    assert model_settings() == ("cuda:1", 16, "onnx")
    for name in (DEVICE_ENV, BATCH_ENV, ENGINE_ENV):
        monkeypatch.delenv(name)
    assert model_settings() == ("auto", 8, "auto")
