"""The life of one tile-pool process: its start (confined to the slide roots,
ending with its worker, one OpenCV thread), the slide handles it keeps for
every job it serves, and the cancellation board it polls."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import MutableSequence, Sequence
from multiprocessing.connection import Connection
from pathlib import Path

import cv2
import numpy as np

from worker_service.analysis.nuclei import NucleusParams, StainReference, segment_nuclei
from worker_service.pipeline import cancel_board
from worker_service.storage.slides import SlideCache

# One per pool process, for every job it serves; confined to the slide roots at start.
slides = SlideCache(per_thread=2)
_board: MutableSequence[int] | None = None  # the worker's CancelBoard array, set at start


def start_process(
    board: MutableSequence[int], slide_roots: Sequence[Path], worker_alive: Connection
) -> None:
    """Pool initializer: keeps the worker's cancellation board, opens slides
    only inside the slide roots, ends with the worker, and keeps OpenCV to one
    thread: the pool is the parallelism, and OpenCV's own threads in every
    process would only fight over the cores."""
    global _board
    _board = board
    slides.confine(slide_roots)
    cv2.setNumThreads(1)
    exit_with_worker(worker_alive)


def is_cancelled(token: int) -> bool:
    """Whether the worker cancelled the job holding ``token``."""
    return cancel_board.is_marked(_board, token)


def exit_with_worker(worker_alive: Connection) -> None:
    """A pool process ends when its worker dies, even by SIGKILL, instead of
    lingering as an orphan. Its parent is the worker's fork server, which
    outlives the worker while any pool process is left, so the process
    watches the worker itself: ``worker_alive`` is the read end of a pipe
    whose write end only the worker holds, and reads as ended when it dies."""

    def watch() -> None:
        with contextlib.suppress(OSError):
            worker_alive.poll(None)
        os._exit(0)

    threading.Thread(target=watch, name="worker-watch", daemon=True).start()


def warm_up() -> None:
    """Imports done and caches ready before the first real tile."""
    segment_nuclei(np.full((8, 8, 3), 255, np.uint8), StainReference(0.1, 0.3), NucleusParams())
