"""Do two commits draw the same nuclei? One CELL_SEGMENTATION job on a slide
through the services of this checkout and of another commit (a worktree, as
``bench.pipeline_ab`` makes), then the outlines matched one to one at IoU >=
0.5: F1, and crops of the places where they disagree (baseline red, this
green) to look at.

    python -m bench.outline_agreement --baseline c584a48 [--slide PATH] [--crops 12]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import openslide
from PIL import Image, ImageDraw
from shapely import STRtree
from shapely.geometry import Polygon

from bench.pipeline_ab import worktree
from bench.pipeline_bench import OUT, through_services
from tests.harness import CMU, ROOT, SLIDES
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb

CROP = 96  # level-0 pixels around a disagreement


def outlines(path: Path) -> list[Polygon]:
    features = json.loads(path.read_text())["features"]
    return [Polygon(f["geometry"]["coordinates"][0]).buffer(0) for f in features]


def matches(a: list[Polygon], b: list[Polygon]) -> list[tuple[int, int, float]]:
    """One-to-one pairs (index in a, index in b, IoU) at IoU >= 0.5, best first."""
    tree = STRtree(b)
    pairs = []
    for i, polygon in enumerate(a):
        for j in tree.query(polygon, predicate="intersects").tolist():
            union = polygon.union(b[j]).area
            iou = polygon.intersection(b[j]).area / union if union else 0.0
            if iou >= 0.5:
                pairs.append((i, j, iou))
    pairs.sort(key=lambda p: -p[2])
    taken_a: set[int] = set()
    taken_b: set[int] = set()
    kept = []
    for i, j, iou in pairs:
        if i not in taken_a and j not in taken_b:
            taken_a.add(i)
            taken_b.add(j)
            kept.append((i, j, iou))
    return kept


def crops(
    slide: Path, old: list[Polygon], new: list[Polygon], where: list[Polygon], out: Path, limit: int
) -> list[str]:
    written = []
    with openslide.OpenSlide(str(slide)) as handle:
        for index, place in enumerate(where[:limit]):
            cx, cy = place.centroid.x, place.centroid.y
            x0, y0 = int(cx - CROP / 2), int(cy - CROP / 2)
            image = handle.read_region((x0, y0), 0, (CROP, CROP)).convert("RGB")
            image = image.resize((CROP * 4, CROP * 4), Image.Resampling.NEAREST)
            draw = ImageDraw.Draw(image)
            for polygons, colour in ((old, (220, 0, 0)), (new, (0, 170, 0))):
                for polygon in polygons:
                    if polygon.distance(place) < CROP and polygon.geom_type == "Polygon":
                        points = [((x - x0) * 4, (y - y0) * 4) for x, y in polygon.exterior.coords]
                        draw.line(points, fill=colour, width=2)
            path = out / f"disagreement-{index:02d}.png"
            image.save(path)
            written.append(str(path))
    return written


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--baseline", required=True)
    parser.add_argument("--slide", type=Path, default=SLIDES / CMU)
    parser.add_argument("--crops", type=int, default=12, help="disagreement crops to write")
    args = parser.parse_args()
    baseline_root, commit = worktree(args.baseline)
    out = OUT / f"outlines-{commit[:12]}"
    out.mkdir(parents=True, exist_ok=True)
    found: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        for side, root in (("baseline", baseline_root), ("this", ROOT)):
            run = through_services(
                args.slide.resolve(), pb.CELL_SEGMENTATION, Path(tmp) / side, root
            )
            found[side] = outlines(Path(run["files"]["cells.geojson"]))
    old, new = found["baseline"], found["this"]
    pairs = matches(old, new)
    matched_old = {i for i, _, _ in pairs}
    matched_new = {j for _, j, _ in pairs}
    unmatched = [p for i, p in enumerate(old) if i not in matched_old] + [
        p for j, p in enumerate(new) if j not in matched_new
    ]
    report = {
        "slide": args.slide.name,
        "baseline": commit[:12],
        "nuclei": {"baseline": len(old), "this": len(new)},
        "matched_at_iou_0.5": len(pairs),
        "f1": round(2 * len(pairs) / max(1, len(old) + len(new)), 4),
        "median_iou_of_matches": round(float(np.median([iou for _, _, iou in pairs])), 4)
        if pairs
        else None,
        "area_ratio_median": round(
            float(np.median([new[j].area / old[i].area for i, j, _ in pairs if old[i].area])), 4
        )
        if pairs
        else None,
        "crops": crops(args.slide, old, new, unmatched, out, args.crops),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
