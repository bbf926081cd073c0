"""Segmentation backends behind one small interface: an RGB tile in, labelled
nuclei out (0 is background, each nucleus its own positive label).

``classical`` (default) is the H&E segmenter in ``nuclei.py``. ``instanseg``
runs the InstanSeg brightfield_nuclei TorchScript model from a local file when
PyTorch is installed; ``learned`` runs the project's own U-Net (``learned.py``).
Both model backends work at their model's pixel size, on batches of tiles, on
the GPU in half precision when PyTorch sees one (settings: ``WSI_MODEL_DEVICE``,
``WSI_MODEL_BATCH``). A backend is described by a small picklable spec, and
built once per pool process."""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from worker_service.errors import BackendUnavailable
from worker_service.instances import BatchedModel
from worker_service.learned import ENGINES, LEARNED_MPP, LearnedSegmenter
from worker_service.nuclei import (
    RGB,
    Labels,
    Nucleus,
    NucleusParams,
    StainReference,
    find_nuclei,
    segment_nuclei,
)

log = logging.getLogger("wsi.worker.backends")
INSTANSEG_MPP = 0.5  # um/px the brightfield_nuclei model was trained at
INSTANSEG_ENV = "WSI_INSTANSEG_MODEL"
INSTANSEG_DEFAULT = Path("models/instanseg.pt")
DEVICE_ENV = "WSI_MODEL_DEVICE"  # auto (cuda when PyTorch sees one), cpu, cuda, cuda:N
BATCH_ENV = "WSI_MODEL_BATCH"  # tiles per forward pass
ENGINE_ENV = "WSI_LEARNED_ENGINE"  # auto (ONNX Runtime on a CPU, PyTorch on a GPU), onnx, torch
DEFAULT_BATCH = 8


class Segmenter(Protocol):
    def __call__(self, rgb: RGB) -> Labels: ...

    def find(self, tiles: Sequence[RGB]) -> list[list[Nucleus]]:
        """Each tile's nuclei, with outlines, in tile coordinates."""
        ...


@dataclass(frozen=True)
class BackendSpec:
    name: str
    reference: StainReference | None = None
    params: NucleusParams | None = None
    model_path: str = ""
    device: str = "auto"
    engine: str = "auto"
    tile_mpp: float = 0.0  # um per pixel of the tiles, when known
    batch_size: int = 1  # tiles per pass of the segmenter
    tiles_per_task: int = 1  # tiles a pool process takes at once (whole batches)


def model_settings() -> tuple[str, int, str]:
    """(device, batch size, learned engine) from the environment, for the model
    backends; ValueError names a bad one."""
    device = (os.environ.get(DEVICE_ENV) or "auto").strip().lower()
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ValueError(f"{DEVICE_ENV} must be auto, cpu, cuda or cuda:N, not {device!r}")
    raw = os.environ.get(BATCH_ENV) or str(DEFAULT_BATCH)
    if not raw.isdigit() or not 1 <= int(raw) <= 256:
        raise ValueError(f"{BATCH_ENV} must be a whole number from 1 to 256, not {raw!r}")
    engine = (os.environ.get(ENGINE_ENV) or "auto").strip().lower()
    if engine not in ENGINES:
        raise ValueError(f"{ENGINE_ENV} must be one of {', '.join(ENGINES)}, not {engine!r}")
    return device, int(raw), engine


def instanseg_model_path() -> Path:
    return Path(os.environ.get(INSTANSEG_ENV) or INSTANSEG_DEFAULT).expanduser().resolve()


def check_instanseg(model_path: Path) -> None:
    """Fails with an actionable message when torch or the model file is missing."""
    if importlib.util.find_spec("torch") is None:
        raise BackendUnavailable(
            "backend 'instanseg' needs PyTorch on the worker: pip install"
            " 'wsi-scheduler[instanseg]' (or pip install torch), then restart the worker"
        )
    if not model_path.is_file():
        log.warning("InstanSeg model not found at %s (%s)", model_path, INSTANSEG_ENV)
        raise BackendUnavailable(
            "backend 'instanseg' needs its TorchScript model on the worker: the operator"
            " downloads instanseg.pt of the InstanSeg brightfield_nuclei release and points"
            f" {INSTANSEG_ENV} at it (the worker's log names the path it looked at)"
        )


class ClassicalSegmenter:
    def __init__(self, reference: StainReference, params: NucleusParams) -> None:
        self.reference, self.params = reference, params

    def __call__(self, rgb: RGB) -> Labels:
        return segment_nuclei(rgb, self.reference, self.params)

    def find(self, tiles: Sequence[RGB]) -> list[list[Nucleus]]:
        return [find_nuclei(tile, self.reference, self.params) for tile in tiles]


class InstanSegSegmenter(BatchedModel):
    """Percentile-normalised RGB (0.1-99.9 % per channel and tile) into the
    TorchScript model, tiles of one size stacked into one forward pass; the
    model's first output channel holds each tile's nucleus labels."""

    def __init__(self, model_path: str, device: str = "auto") -> None:
        import torch  # optional: present once check_instanseg passed

        self._torch: Any = torch
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailable(
                f"{DEVICE_ENV}={device}, but PyTorch sees no CUDA device on this worker"
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


_built: dict[BackendSpec, Segmenter] = {}


def build(spec: BackendSpec) -> Segmenter:
    """The segmenter for ``spec``, built once per process (a model loads once)."""
    segmenter = _built.get(spec)
    if segmenter is None:
        if spec.name == "classical":
            assert spec.reference is not None and spec.params is not None
            segmenter = ClassicalSegmenter(spec.reference, spec.params)
        elif spec.name == "instanseg":
            segmenter = InstanSegSegmenter(spec.model_path, spec.device)
        elif spec.name == "learned":
            segmenter = LearnedSegmenter(spec.engine, spec.device, spec.tile_mpp or LEARNED_MPP)
        else:
            raise BackendUnavailable(f"unknown segmentation backend {spec.name!r}")
        if len(_built) > 16:  # one entry per slide's reference: keep the cache small
            _built.clear()
        _built[spec] = segmenter
    return segmenter
