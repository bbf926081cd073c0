"""Where the classical segmenter's time goes: the tissue tiles (512 px, 0.5
um/px) of CMU-1-Small-Region through ``segment_nuclei`` and
``nuclei_from_labels`` in one process, timed (median of passes) and profiled.

    python -m bench.segmenter_profile [--root bench/out/worktrees/<commit>] [--top 15]

``--root``: profile the segmenter of another checkout (a worktree made by
``bench.pipeline_ab``), for a before/after on the same machine and tiles.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import io
import pstats
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import openslide

from tests.harness import CMU, SLIDES

TILE = 512
STEP = 448  # the pipeline's default 64 px overlap


def tissue_tiles() -> list[np.ndarray]:
    with openslide.OpenSlide(str(SLIDES / CMU)) as slide:
        image = np.asarray(slide.read_region((0, 0), 0, slide.dimensions))[..., :3].copy()
    height, width = image.shape[:2]
    tiles = [
        image[y : y + TILE, x : x + TILE]
        for y in range(0, height - TILE, STEP)
        for x in range(0, width - TILE, STEP)
    ]
    density = [(-np.log((t.astype(np.float32) + 1) / 256).sum(axis=2) > 0.25).mean() for t in tiles]
    return [t for t, d in zip(tiles, density, strict=True) if d > 0.3]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--root", type=Path, help="checkout whose worker_service to profile")
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    cv2.setNumThreads(1)  # as in the worker's pool processes: one core each
    if args.root:
        sys.path.insert(0, str(args.root.resolve()))
        for name in [m for m in sys.modules if m.startswith("worker_service")]:
            del sys.modules[name]
    nuclei = importlib.import_module("worker_service.analysis.nuclei")
    print(f"segmenter: {Path(str(nuclei.__file__)).resolve()}")
    tiles = tissue_tiles()
    reference = nuclei.stain_reference(tiles[::3][:8])
    params = nuclei.NucleusParams(mpp=0.499)

    def segment_all() -> int:
        return sum(
            len(nuclei.nuclei_from_labels(nuclei.segment_nuclei(t, reference, params)))
            for t in tiles
        )

    found = segment_all()  # warm: imports, caches
    passes = []
    for _ in range(args.passes):
        started = time.perf_counter()
        segment_all()
        passes.append((time.perf_counter() - started) / len(tiles) * 1000)
    print(f"{len(tiles)} tiles, {found} nuclei")
    print(
        f"ms per tile: median {statistics.median(passes):.1f} (passes: "
        + ", ".join(f"{p:.1f}" for p in passes)
        + ")"
    )
    profile = cProfile.Profile()
    profile.runcall(segment_all)
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(args.top)
    print(text.getvalue())


if __name__ == "__main__":
    main()
