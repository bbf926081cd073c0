"""Segmentation backends behind one small interface: an RGB tile in, labelled
nuclei out (0 is background, each nucleus its own positive label).

``classical`` (default) is the H&E segmenter in ``nuclei.py``. ``instanseg``
runs the InstanSeg brightfield_nuclei TorchScript model from a local file when
PyTorch is installed; it works at the model's own pixel size. A backend is
described by a small picklable spec, and built once per pool process."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from worker_service.errors import BackendUnavailable
from worker_service.nuclei import RGB, Labels, NucleusParams, StainReference, segment_nuclei

INSTANSEG_MPP = 0.5  # um/px the brightfield_nuclei model was trained at
INSTANSEG_ENV = "WSI_INSTANSEG_MODEL"
INSTANSEG_DEFAULT = Path("models/instanseg.pt")


class Segmenter(Protocol):
    def __call__(self, rgb: RGB) -> Labels: ...


@dataclass(frozen=True)
class BackendSpec:
    name: str
    reference: StainReference | None = None
    params: NucleusParams | None = None
    model_path: str = ""


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
        raise BackendUnavailable(
            f"backend 'instanseg' needs the TorchScript model at {model_path}: download"
            f" instanseg.pt of the InstanSeg brightfield_nuclei release there, or point"
            f" {INSTANSEG_ENV} at it"
        )


class ClassicalSegmenter:
    def __init__(self, reference: StainReference, params: NucleusParams) -> None:
        self.reference, self.params = reference, params

    def __call__(self, rgb: RGB) -> Labels:
        return segment_nuclei(rgb, self.reference, self.params)


class InstanSegSegmenter:
    """Percentile-normalised RGB (0.1-99.9 % per channel) into the TorchScript
    model; its first output channel holds the nucleus labels."""

    def __init__(self, model_path: str) -> None:
        import torch  # optional: present once check_instanseg passed

        self._torch: Any = torch
        self._model = torch.jit.load(model_path, map_location="cpu").eval()

    def __call__(self, rgb: RGB) -> Labels:
        torch = self._torch
        image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float()
        flat = image.reshape(3, -1)
        low = torch.quantile(flat, 0.001, dim=1).view(3, 1, 1)
        high = torch.quantile(flat, 0.999, dim=1).view(3, 1, 1)
        image = (image - low) / torch.clamp(high - low, min=1e-3)
        with torch.no_grad():
            output = self._model(image.unsqueeze(0))
        labels: Labels = output[0, 0].cpu().numpy().astype(np.int32)
        return labels


_built: dict[BackendSpec, Segmenter] = {}


def build(spec: BackendSpec) -> Segmenter:
    """The segmenter for ``spec``, built once per process (a model loads once)."""
    segmenter = _built.get(spec)
    if segmenter is None:
        if spec.name == "classical":
            assert spec.reference is not None and spec.params is not None
            segmenter = ClassicalSegmenter(spec.reference, spec.params)
        elif spec.name == "instanseg":
            segmenter = InstanSegSegmenter(spec.model_path)
        else:
            raise BackendUnavailable(f"unknown segmentation backend {spec.name!r}")
        if len(_built) > 16:  # one entry per slide's reference: keep the cache small
            _built.clear()
        _built[spec] = segmenter
    return segmenter
