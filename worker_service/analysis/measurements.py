"""What QuPath measures of a detection, from its outline in level-0 pixels:
area, perimeter, circularity, solidity (pure arithmetic on the polygon; the
stain is measured where the pixels are, in the segmenter)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from worker_service.analysis.shapes import Ring


def nucleus_measurements(
    polygon: Ring,
    centroid: tuple[float, float],
    area_px: float,
    mpp: float | None,
    mean_haematoxylin: float,
    pixel: float = 1.0,
) -> dict[str, float]:
    """QuPath-named measurements. ``area_px``: the nucleus's pixel count in
    level-0 pixels (what "Area" has always reported); perimeter, circularity
    and solidity come from the outline (4 pi area / perimeter^2, area /
    convex hull area; both 1 for a disc, in (0, 1]) simplified by half a
    ``pixel`` (the segmented image's pixel, in level-0 px): the half-pixel
    steps a pixel outline takes would add a fifth to a small nucleus's
    perimeter and make a disc look 0.74 round."""
    traced = np.ascontiguousarray(polygon, dtype=np.float32).reshape(-1, 1, 2)
    ring = cv2.approxPolyDP(traced, 0.5 * pixel, True)
    outline_area = float(cv2.contourArea(ring))
    perimeter = float(cv2.arcLength(ring, True))
    hull_area = float(cv2.contourArea(cv2.convexHull(ring)))
    circularity = 4 * math.pi * outline_area / (perimeter * perimeter) if perimeter else 0.0
    solidity = outline_area / hull_area if hull_area else 0.0
    measured = {
        "Centroid X px": round(centroid[0], 2),
        "Centroid Y px": round(centroid[1], 2),
        "Area px^2": round(area_px, 2),
        "Perimeter px": round(perimeter, 2),
    }
    if mpp:
        measured["Area µm^2"] = round(area_px * mpp * mpp, 3)
        measured["Perimeter µm"] = round(perimeter * mpp, 3)
    measured["Circularity"] = round(min(circularity, 1.0), 4)
    measured["Solidity"] = round(min(solidity, 1.0), 4)
    measured["Hematoxylin OD mean"] = round(mean_haematoxylin, 4)
    return measured
