"""The InstanSeg backend: a clear failure without torch or the model file, and
the adapter itself on a tiny TorchScript module built here when torch exists."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from tests.harness import CMU, SLIDES
from tests.pipeline.support import run, run_with_models
from worker_service.backends.base import ModelSettings
from worker_service.backends.instanseg import InstanSegRecipe, InstanSegSegmenter
from worker_service.errors import JobError
from worker_service.pipeline.tile_pool import TilePool
from worker_service.server.main import model_settings, parse_args

HAS_TORCH = importlib.util.find_spec("torch") is not None


def test_instanseg_job_fails_saying_what_is_missing(
    pool: TilePool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    models = ModelSettings(instanseg_model=tmp_path / "nowhere" / "instanseg.pt")
    with pytest.raises(JobError) as info:
        run_with_models(models, pool, tmp_path, str(SLIDES / "small.svs"), backend="instanseg")
    message = str(info.value)
    if HAS_TORCH:
        # The user learns what is missing; the path on the worker is for its log.
        assert "--instanseg-model" in message and "nowhere" not in message
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
    labels = InstanSegRecipe("instanseg", 1, 1, model_path=str(path)).build()(image)
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
    cells = {}
    for batch in ("1", "3"):
        models = ModelSettings(device="cpu", batch_size=int(batch), instanseg_model=model)
        outcome = run_with_models(
            models, pool, tmp_path / batch, str(SLIDES / CMU), backend="instanseg"
        )
        assert outcome.summary["backend_details"]["batch_size"] == int(batch)  # type: ignore[index]
        features = json.loads(Path(outcome.files["cells.geojson"]).read_text())["features"]
        # Sorted: tiles (and batches) are written in the order they finish.
        cells[batch] = sorted(json.dumps(feature, sort_keys=True) for feature in features)
    assert cells["1"] == cells["3"]
    assert len(cells["1"]) > 10


def test_model_settings_are_checked_when_the_worker_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Typed worker flags (or their WSI_* environment), refused at start-up."""
    for flags in (
        ["--model-device", "tpu"],
        ["--model-batch", "0"],
        ["--model-batch", "many"],
        ["--learned-engine", "tensorrt"],
    ):
        with pytest.raises(SystemExit):
            parse_args(flags)
        assert flags[0] in capsys.readouterr().err
    monkeypatch.setenv("WSI_MODEL_DEVICE", "cuda:1")
    monkeypatch.setenv("WSI_MODEL_BATCH", "16")
    chosen = model_settings(parse_args(["--learned-engine", "onnx"]))
    assert (chosen.device, chosen.batch_size, chosen.learned_engine) == ("cuda:1", 16, "onnx")
    for name in ("WSI_MODEL_DEVICE", "WSI_MODEL_BATCH"):
        monkeypatch.delenv(name)
    chosen = model_settings(parse_args([]))
    assert (chosen.device, chosen.batch_size, chosen.learned_engine) == ("auto", None, "auto")
    assert chosen.instanseg_model.is_absolute()
    with pytest.raises(ValueError, match="batch"):
        ModelSettings(batch_size=257)
