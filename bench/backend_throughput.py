"""Segmentation throughput per core of each backend, on the same tiles: the
512 px tissue tiles (0.5 um/px) of CMU-1-Small-Region, one process, one
thread (as each of the worker's pool processes), tiles to nuclei with
outlines. Learned: ONNX Runtime, and PyTorch where installed, at several
batch sizes; on a GPU also PyTorch in float16.

    python -m bench.backend_throughput [--passes 3] [--batches 1,4,8]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

from bench.segmenter_profile import tissue_tiles
from worker_service.analysis.nuclei import NucleusParams, stain_reference
from worker_service.backends import learned
from worker_service.backends.classical import ClassicalSegmenter


def megapixels_per_second(
    find: Callable[[Sequence[np.ndarray]], Any], tiles: list[np.ndarray], batch: int, passes: int
) -> tuple[float, int]:
    pixels = sum(t.shape[0] * t.shape[1] for t in tiles)
    found = sum(len(n) for i in range(0, len(tiles), batch) for n in find(tiles[i : i + batch]))
    rates = []
    for _ in range(passes):
        started = time.perf_counter()
        for i in range(0, len(tiles), batch):
            find(tiles[i : i + batch])
        rates.append(pixels / 1e6 / (time.perf_counter() - started))
    return round(statistics.median(rates), 3), found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--batches", default="1,4,8")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    tiles = tissue_tiles()
    batches = [int(b) for b in args.batches.split(",")]
    report: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores",
        "tiles": f"{len(tiles)} x 512 px of CMU-1-Small-Region at 0.5 um/px",
        "mp_per_s_per_core": {},
    }
    rates = report["mp_per_s_per_core"]
    classical = ClassicalSegmenter(stain_reference(tiles[::3][:8]), NucleusParams(mpp=0.499))
    rates["classical"] = megapixels_per_second(classical.find, tiles, 1, args.passes)
    engines: list[tuple[str, str, str]] = [
        ("onnx-int8", "onnx-int8", "cpu"),
        ("onnx-float32", "onnx", "cpu"),
    ]
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(1)
        engines.append(("torch-cpu", "torch", "cpu"))
        if torch.cuda.is_available():
            engines.append(("torch-cuda-fp16", "torch", "cuda"))
    for name, engine, device in engines:
        segmenter = learned.LearnedSegmenter(engine, device)
        for batch in batches:
            rates[f"learned {name} batch {batch}"] = megapixels_per_second(
                segmenter.find, tiles, batch, args.passes
            )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
