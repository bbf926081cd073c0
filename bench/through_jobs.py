"""Validation images scored as whole jobs: each one written as a lossless
PNG (with its pixel size in the file, or without one), segmented by the
worker's own CELL_SEGMENTATION pipeline on a worker's defaults (tissue,
tiles, first looks, the default backend or another), and its
``cells.geojson`` filled back into labels. The nearest this checkout comes
to a benchmark that sends its images through the services:
``wsi_training.validate`` scores the model on whole images and leaves out
the tiling, the first look on 8 tiles, the outlines and, for a file
without a pixel size, the guess its nuclei make.

    python -m bench.through_jobs --data DIR [DIR ...] [--outside CPM15_DIR]
        [--no-pixel-size] [--backends default,classical] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image

from worker_service.backends.base import ModelSettings
from worker_service.backends.registry import default_backend
from worker_service.pipeline.context import JobContext
from worker_service.pipeline.job import JobSpec, run_job
from worker_service.pipeline.tile_pool import TilePool
from worker_service.storage.slides import SlideCache
from wsi_protocol.job_types import JobType
from wsi_training import data
from wsi_training.train import Segment, evaluate
from wsi_training.validate import by_magnification, outside_examples, summary_line

SUBPIXEL_BITS = 4  # cv2.fillPoly's fixed point: outlines reach 0.4 px past pixel centres


def labels_from_cells(cells_geojson: str | Path, shape: tuple[int, int]) -> npt.NDArray[np.int32]:
    """Instance labels of a job's nuclei, each outline filled as nucleus-scoring
    code usually fills one (OpenCV's ``fillPoly``; the worker's outlines give
    back their nuclei's own pixels that way, ``analysis.shapes``). A pixel
    two outlines cover (nuclei of neighbouring tiles) keeps the one whose
    centroid comes first, top to bottom: the file's order is the order its
    tiles finished in, which varies from run to run, and so would the score."""
    labels = np.zeros(shape, np.int32)
    features = sorted(
        json.loads(Path(cells_geojson).read_text())["features"],
        key=lambda f: (
            f["properties"]["measurements"]["Centroid Y px"],
            f["properties"]["measurements"]["Centroid X px"],
        ),
    )
    scale = 1 << SUBPIXEL_BITS
    for number in range(len(features), 0, -1):  # last to first: the first filled last wins
        geometry = features[number - 1]["geometry"]
        polygons = (
            [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
        )
        outers = [np.rint(np.asarray(rings[0]) * scale).astype(np.int32) for rings in polygons]
        cv2.fillPoly(labels, outers, number, lineType=cv2.LINE_8, shift=SUBPIXEL_BITS)
    return labels


def job_scores(
    examples: list[data.Example],
    pool: TilePool,
    params: dict[str, str],
    with_pixel_size: bool = True,
) -> dict[str, Any]:
    """``evaluate``'s table, each image segmented as a job with ``params``
    (``{}``: the default job) on a PNG of its pixels that gives its pixel
    size (or none, as many crops do), on a worker's defaults (``auto``)."""
    models = ModelSettings()
    context = JobContext(models=models, default_backend=default_backend("auto", models))
    ran: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="through-jobs-") as folder:
        work = Path(folder)

        def segmenter_for(example: data.Example) -> Segment:
            def segment(rgb: np.ndarray) -> np.ndarray:
                slide = work / f"{example.name}.png"
                if with_pixel_size:
                    Image.fromarray(rgb).save(slide, dpi=(25_400 / example.source_mpp,) * 2)
                else:
                    Image.fromarray(rgb).save(slide)
                outcome = run_job(
                    JobSpec(example.name, JobType.CELL_SEGMENTATION, str(slide), params),
                    work / example.name,
                    context,
                    SlideCache(),
                    pool,
                )
                ran.add(str(outcome.summary["backend"]))
                return labels_from_cells(outcome.files["cells.geojson"], rgb.shape[:2])

            return segment

        return {**evaluate(examples, segmenter_for), "backend": ", ".join(sorted(ran))}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    data.add_data_argument(parser)
    parser.add_argument("--outside", type=Path, help="a folder never trained on (CPM-15)")
    parser.add_argument(
        "--no-pixel-size", action="store_true", help="the images' files give no pixel size"
    )
    parser.add_argument(
        "--backends",
        default="default,classical",
        help="comma-separated: default (a job that names none) or a backend's name",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    _, held_out = data.split(data.load(args.data))
    outside = outside_examples(args.outside) if args.outside else []
    with_pixel_size = not args.no_pixel_size
    report: dict[str, Any] = {}
    pool = TilePool(os.cpu_count() or 1)
    try:
        for backend in args.backends.split(","):
            params = {} if backend == "default" else {"backend": backend}
            entry: dict[str, Any] = {
                "held_out": job_scores(held_out, pool, params, with_pixel_size)
            }
            if outside:
                entry["outside"] = job_scores(outside, pool, params, with_pixel_size)
                entry["outside"]["magnifications"] = by_magnification(entry["outside"], outside)
            name = f"{backend} job ({entry['held_out']['backend']}; files "
            name += "with their pixel size)" if with_pixel_size else "without a pixel size)"
            report[name] = entry
            print(summary_line(name, entry), flush=True)
    finally:
        pool.close()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
