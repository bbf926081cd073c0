"""Do nuclei move with changes the eye cannot see? Each 512 px tissue tile of
CMU-1-Small-Region (0.5 um/px) is enlarged 2x (bicubic), as a slide scanned
at 40x, and segmented two ways: the 2x copy shrunk back (area averaging,
the round trip), and the 2x copy itself at its own pixel size (0.25 um/px,
its nuclei shrunk back by nearest pixel). Per backend, the F1 (IoU > 0.5) of
each copy's nuclei against the original's, and the mean grey-level
difference the round trip made. 1.0 is a segmenter that sees the same
nuclei in all three.

    python -m bench.stability [--backends learned,classical]
"""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Callable

import cv2
import numpy as np

from bench.segmenter_profile import tissue_tiles
from worker_service.analysis.nuclei import NucleusParams, stain_reference
from worker_service.analysis.nucleus_scale import inner_areas
from worker_service.backends.classical import ClassicalSegmenter
from worker_service.backends.learned import LEARNED_MPP, LearnedSegmenter, looking_mpp
from wsi_training.metrics import score


def enlarged(rgb: np.ndarray) -> np.ndarray:
    height, width = rgb.shape[:2]
    large: np.ndarray = cv2.resize(rgb, (2 * width, 2 * height), interpolation=cv2.INTER_CUBIC)
    return large


def shrunk(image: np.ndarray, like: np.ndarray, method: int = cv2.INTER_AREA) -> np.ndarray:
    small: np.ndarray = cv2.resize(image, like.shape[1::-1], interpolation=method)
    return small


def learned_as_in_a_job(tile_mpp: float, sample: list[np.ndarray]) -> LearnedSegmenter:
    """The learned segmenter as a job prepares it: a first look at the
    tiles at the model's own pixel size, a closer one where their nuclei are
    small (``learned.looking_mpp``)."""
    first = LearnedSegmenter("onnx-int8", "cpu", tile_mpp=tile_mpp)
    areas = np.concatenate([inner_areas(first(tile)) for tile in sample])
    looking = looking_mpp(areas, tile_mpp, LEARNED_MPP)
    return LearnedSegmenter("onnx-int8", "cpu", tile_mpp=tile_mpp, model_mpp=looking)


def f1(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Of all nuclei of all tiles: 2 matched / (first's + second's)."""
    matched = total = 0
    for first, second in pairs:
        scores = score(first, second)
        matched += scores.matched
        total += scores.true + scores.predicted
    return round(2 * matched / total, 4)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--backends", default="learned,classical")
    args = parser.parse_args()
    tiles = tissue_tiles()
    large = [enlarged(t) for t in tiles]
    round_trip = [shrunk(big, t) for big, t in zip(large, tiles, strict=True)]
    difference = np.mean(
        [np.abs(a.astype(int) - b).mean() for a, b in zip(tiles, round_trip, strict=True)]
    )
    reference = stain_reference(tiles)
    # Each copy's segmenter prepared as a job on that copy would prepare it.
    Segment = Callable[[np.ndarray], np.ndarray]
    segmenters: dict[str, Callable[[float, list[np.ndarray]], Segment]] = {
        "learned": learned_as_in_a_job,
        "classical": lambda mpp, _: ClassicalSegmenter(reference, NucleusParams(mpp=mpp)),
    }
    report: dict[str, object] = {
        "machine": f"{platform.node()} {platform.machine()}",
        "tiles": f"{len(tiles)} x 512 px of CMU-1-Small-Region at 0.5 um/px",
        "round_trip_mean_grey_level_difference": round(float(difference), 3),
    }
    for name in args.backends.split(","):
        segment = segmenters[name](0.5, tiles)
        segment_back = segmenters[name](0.5, round_trip)
        segment_large = segmenters[name](0.25, large)
        original = [segment(t) for t in tiles]
        report[name] = {
            "nuclei": int(sum(labels.max() for labels in original)),
            "f1_round_trip": f1(list(zip(original, map(segment_back, round_trip), strict=True))),
            "f1_2x_copy": f1(
                [
                    (labels, shrunk(segment_large(big), labels, cv2.INTER_NEAREST))
                    for labels, big in zip(original, large, strict=True)
                ]
            ),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
