"""The ``instanseg`` backend: the InstanSeg brightfield_nuclei TorchScript model
from a local file (``--instanseg-model``), when PyTorch is installed; batches
of tiles, on the GPU in half precision when PyTorch sees one."""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from worker_service.analysis.nuclei import RGB, Labels
from worker_service.backends import base
from worker_service.backends.base import Backend, BatchedModel, Prepared, Recipe
from worker_service.errors import BackendUnavailable

log = logging.getLogger("wsi.worker.backends")
INSTANSEG_MPP = 0.5  # um/px the brightfield_nuclei model was trained at
MODEL_SETTING = "--instanseg-model (WSI_INSTANSEG_MODEL)"
DEVICE_SETTING = "--model-device (WSI_MODEL_DEVICE)"


class InstanSegSegmenter(BatchedModel):
    """Percentile-normalised RGB (0.1-99.9 % per channel and tile) into the
    TorchScript model, tiles of one size stacked into one forward pass; the
    model's first output channel holds each tile's nucleus labels."""

    def __init__(self, model_path: str, device: str = "auto") -> None:
        import torch  # optional: present once the backend's check passed

        self._torch: Any = torch
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailable(
                f"{DEVICE_SETTING} is {device}, but PyTorch sees no CUDA device on this worker"
            )
        self.device = torch.device(device)
        self.half = self.device.type == "cuda"  # float16: twice the tiles per second on a GPU
        model = torch.jit.load(model_path, map_location=self.device).eval()
        self._model = model.half() if self.half else model

    def _segment_one_size(self, tiles: list[RGB]) -> list[Labels]:
        torch = self._torch
        batch = torch.from_numpy(np.stack(tiles)).to(self.device).permute(0, 3, 1, 2).float()
        flat = batch.reshape(len(tiles), 3, -1)
        low = torch.quantile(flat, 0.001, dim=2).view(-1, 3, 1, 1)
        high = torch.quantile(flat, 0.999, dim=2).view(-1, 3, 1, 1)
        batch = (batch - low) / torch.clamp(high - low, min=1e-3)
        if self.half:
            batch = batch.half()
        with torch.inference_mode():
            output = self._model(batch)
        found = output[:, 0].to(torch.int32).cpu().numpy()
        return [np.ascontiguousarray(labels) for labels in found]


@dataclass(frozen=True)
class InstanSegRecipe(Recipe):
    model_path: str = ""
    device: str = "auto"

    def build(self) -> InstanSegSegmenter:
        return InstanSegSegmenter(self.model_path, self.device)


class InstanSegBackend(Backend):
    name = "instanseg"
    mpp = INSTANSEG_MPP

    def check(self, settings: base.ModelSettings) -> None:
        if importlib.util.find_spec("torch") is None:
            raise BackendUnavailable(
                "backend 'instanseg' needs PyTorch on the worker: pip install"
                " 'wsi-scheduler[instanseg]' (or pip install torch), then restart the worker"
            )
        if not settings.instanseg_model.is_file():
            log.warning("InstanSeg model not found at %s", settings.instanseg_model)
            raise BackendUnavailable(
                "backend 'instanseg' needs its TorchScript model on the worker: the operator"
                " downloads instanseg.pt of the InstanSeg brightfield_nuclei release and points"
                f" {MODEL_SETTING} at it (the worker's log names the path it looked at)"
            )

    def prepare(self, slide: base.JobSlide, settings: base.ModelSettings) -> Prepared:
        model = str(settings.instanseg_model)
        device = settings.device
        if device == "auto":  # as the segmenter resolves it
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        batching = base.model_batching(settings, device)
        recipe = InstanSegRecipe(
            self.name,
            **batching,
            model_path=model,
            device=settings.device,
        )
        details: dict[str, object] = {
            "model": model,
            "model_mpp": INSTANSEG_MPP,
            "device": device,
            "batch_size": batching["tiles_per_pass"],
        }
        return Prepared(recipe, details)
