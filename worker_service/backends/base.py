"""What every segmentation backend is: a ``Backend`` object that owns its
facts (name, pixel size, what it needs, how it prepares a job) and hands the
pool a small ``Recipe`` from which each pool process builds its ``Segmenter``
once. The pipeline knows backends only through this module and the registry,
so adding one is one module and one registry line."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from worker_service.analysis.nuclei import RGB, Labels, Nucleus, nuclei_from_labels
from worker_service.analysis.tiling import per_size

DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?"
ENGINES = ("auto", "onnx-int8", "onnx", "torch")
BATCH_RANGE = (1, 256)
# Tiles per forward pass where --model-batch is auto: one on a CPU (ONNX
# Runtime's 8-bit model segments 5.8 MP/s per core one tile at a time, 4.9
# eight at a time: docs/benchmarks.md), eight on a GPU (it is fed in bulk).
CPU_BATCH, GPU_BATCH = 1, 8
# Batches per pool task for the model backends: a reader thread decodes each
# next batch while the model runs on one.
BATCHES_PER_TASK = 4
INSTANSEG_DEFAULT = Path("models/instanseg.pt")


class Segmenter(Protocol):
    def __call__(self, rgb: RGB) -> Labels: ...

    def find(self, tiles: Sequence[RGB]) -> list[list[Nucleus]]:
        """Each tile's nuclei, with outlines, in tile coordinates."""
        ...


@dataclass(frozen=True)
class ModelSettings:
    """The worker's model flags (``--model-device``, ``--model-batch``,
    ``--learned-engine``, ``--instanseg-model``), checked when the worker
    starts and handed to every job in its context: job code reads no
    environment."""

    device: str = "auto"  # auto (cuda when PyTorch sees one), cpu, cuda, cuda:N
    batch_size: int | None = None  # tiles per forward pass of a model; None: by device
    learned_engine: str = "auto"  # auto (ONNX Runtime on a CPU, PyTorch on a GPU), ...
    instanseg_model: Path = INSTANSEG_DEFAULT  # the InstanSeg TorchScript file

    def __post_init__(self) -> None:
        if not re.fullmatch(DEVICE_PATTERN, self.device):
            raise ValueError(f"model device must be auto, cpu, cuda or cuda:N, not {self.device!r}")
        low, high = BATCH_RANGE
        if self.batch_size is not None and not low <= self.batch_size <= high:
            raise ValueError(
                f"model batch must be a whole number from {low} to {high}, not {self.batch_size}"
            )
        if self.learned_engine not in ENGINES:
            raise ValueError(
                f"learned engine must be one of {', '.join(ENGINES)}, not {self.learned_engine!r}"
            )


@dataclass(frozen=True)
class Recipe(ABC):
    """How a pool process builds a job's segmenter: small, picklable and
    hashable, so that each process builds it once (a model loads once)."""

    backend: str  # the backend's name, part of every nucleus id
    tiles_per_pass: int  # tiles the segmenter takes at once
    tiles_per_task: int  # tiles a pool process takes at once (whole passes)

    @abstractmethod
    def build(self) -> Segmenter: ...


def model_batching(settings: ModelSettings, device: str) -> dict[str, int]:
    """A model backend's Recipe sizes on ``device`` (where it runs, resolved):
    ``--model-batch`` tiles per pass (auto: by device), whole batches per
    pool task."""
    batch = settings.batch_size or (GPU_BATCH if device.startswith("cuda") else CPU_BATCH)
    return {"tiles_per_pass": batch, "tiles_per_task": BATCHES_PER_TASK * batch}


@dataclass(frozen=True)
class JobSlide:
    """What a backend sees of a job when it prepares it."""

    working_mpp: float | None  # pixel size of the tiles, when the slide says
    pixel_um: float  # the same, or the default pixel size where the slide says none
    sample_tiles: Callable[[int], list[RGB]]  # up to n tissue tiles spread over the slide
    # The pixel areas of the nuclei a recipe's segmenter finds on up to n such
    # tiles (segmented in the pool), those cut by a tile's edge left out.
    sample_areas: Callable[[Recipe, int], npt.NDArray[np.int64]]


@dataclass(frozen=True)
class SizeLook:
    """The pixel size a model looks at a slide at, chosen from a first look
    at its nuclei: what the summary's ``mpp_note`` explains to the user."""

    model_mpp: float  # the pixel size the model looked at
    trained_mpp: float  # the one it was trained at
    sample_nucleus_um2: float | None  # the first look's median nucleus
    # A slide without a pixel size: the one its nuclei said (taken as), and
    # each first look's median nucleus (um^2) by the pixel size it assumed.
    slide_mpp_from_nuclei: float | None = None
    first_looks_um2: dict[str, float | None] = field(default_factory=dict)

    def details(self) -> dict[str, object]:
        """As the summary's ``backend_details`` give it."""
        shown: dict[str, object] = {
            "model_mpp": self.model_mpp,
            "sample_nucleus_um2": self.sample_nucleus_um2,
        }
        if self.slide_mpp_from_nuclei is not None:
            shown["slide_mpp_from_nuclei"] = self.slide_mpp_from_nuclei
            shown["first_looks_um2"] = dict(self.first_looks_um2)
        return shown


@dataclass(frozen=True)
class Prepared:
    recipe: Recipe
    details: dict[str, object]  # the summary's backend_details
    look: SizeLook | None = None  # a model's choice of pixel size, where it made one


class Backend(ABC):
    """One segmentation backend. ``mpp``: the pixel size it segments at
    (a model's training resolution), or None to work at the job's target_mpp;
    ``outline_mpp``: the finest pixels worth reading for it, where a slide
    has them (a model that segments at ``mpp`` and outlines its nuclei on
    the tile's finer pixels), or None: the level nearest ``mpp``."""

    name: ClassVar[str]
    mpp: ClassVar[float | None] = None
    outline_mpp: ClassVar[float | None] = None

    @abstractmethod
    def check(self, settings: ModelSettings) -> None:
        """Raises BackendUnavailable, saying what to install or set, when it
        cannot run on this worker."""

    @abstractmethod
    def prepare(self, slide: JobSlide, settings: ModelSettings) -> Prepared:
        """The recipe of a job's segmenter, and what the summary says of it."""

    def preferred_here(self, settings: ModelSettings) -> bool:
        """Whether ``--default-backend auto`` picks it on this worker."""
        return False


class BatchedModel(ABC):
    """What the model backends share: tiles of one size go through the model
    together, one forward pass per size; a subclass says how one such batch
    becomes label images."""

    @abstractmethod
    def _segment_one_size(self, tiles: list[RGB]) -> list[Labels]:
        """Label images of tiles that all have the same size."""

    def segment_batch(self, tiles: Sequence[RGB]) -> list[Labels]:
        return per_size(tiles, self._segment_one_size)

    def __call__(self, rgb: RGB) -> Labels:
        return self.segment_batch([rgb])[0]

    def find(self, tiles: Sequence[RGB]) -> list[list[Nucleus]]:
        found = self.segment_batch(tiles)
        return [nuclei_from_labels(labels, rgb) for labels, rgb in zip(found, tiles, strict=True)]
