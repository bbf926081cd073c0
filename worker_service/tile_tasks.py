"""What a pool process does with one tile: read it with its own OpenSlide
handle, segment it, keep the nuclei its core owns. Functions here run in the
worker's process pool, so their arguments and results are small and picklable."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import openslide

from worker_service.backends import BackendSpec, build
from worker_service.errors import TileReadError
from worker_service.merge import SlideNucleus, keep_owned
from worker_service.nuclei import (
    RGB,
    NucleusParams,
    StainReference,
    nuclei_from_labels,
    segment_nuclei,
)
from worker_service.slide_access import SlideCache, rgb_over_white
from worker_service.tiling import Tile

_slides = SlideCache(per_thread=2)  # one cache per pool process
_cancel_board: Any = None  # the worker's CancelBoard array, set when the process starts


@dataclass(frozen=True)
class TileTask:
    slide_path: str
    level: int
    downsample: float
    tile: Tile


def read_tile(task: TileTask) -> RGB:
    """The tile as RGB; transparent areas (outside the scanned region) become white."""
    slide = _slides.get(task.slide_path)
    tile = task.tile
    location = (round(tile.x * task.downsample), round(tile.y * task.downsample))
    try:
        region = slide.read_region(location, task.level, (tile.width, tile.height))
    except openslide.OpenSlideError as exc:
        raise TileReadError(f"cannot read tile at level-0 {location}: {exc}") from exc
    return rgb_over_white(np.asarray(region))


@dataclass(frozen=True)
class TileResult:
    nuclei: list[SlideNucleus]
    seconds: float  # reading and segmenting it, in the pool process


def segment_tile(task: TileTask, backend: BackendSpec) -> TileResult:
    started = time.perf_counter()
    labels = build(backend)(read_tile(task))
    nuclei = keep_owned(task.tile, nuclei_from_labels(labels), task.downsample)
    return TileResult(nuclei, time.perf_counter() - started)


def start_process(parent_pid: int, cancel_board: Any) -> None:
    """Pool initializer: keeps the worker's cancellation board and ends with
    the worker."""
    global _cancel_board
    _cancel_board = cancel_board
    exit_with_parent(parent_pid)


def is_cancelled(token: int) -> bool:
    """Whether the worker cancelled the job holding ``token`` (a shared-memory
    read: cheap enough to poll between strips and phases)."""
    board = _cancel_board
    return board is not None and token > 0 and board[token % len(board)] == token


def exit_with_parent(parent_pid: int) -> None:
    """A pool process ends when its worker dies, even by SIGKILL, instead of
    lingering as an orphan."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def warm_up() -> None:
    """Imports done and caches ready before the first real tile."""
    segment_nuclei(np.full((8, 8, 3), 255, np.uint8), StainReference(0.1, 0.3), NucleusParams())
