"""What QuPath measures of a detection, from its outline in level-0 pixels:
area, perimeter, circularity, solidity (pure arithmetic on the polygon; the
stain is measured where the pixels are, in the segmenter)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]


def nuclei_measurements(
    points: Floats,
    starts: npt.NDArray[np.int64],
    centroids: Floats,
    areas_px: npt.NDArray[np.floating],
    mpp: float | None,
    stains: Floats,
    pixel: float = 1.0,
) -> Measured:
    """QuPath-named measurements of n nuclei: outline k is ``points[starts[k]
    : starts[k + 1]]`` (closed rings laid end to end), ``centroids`` (n, 2).
    ``areas_px``: each nucleus's pixel count in level-0 pixels (what "Area"
    has always reported); perimeter, circularity and solidity come from the
    outline (4 pi area / perimeter^2, area / convex hull area; both 1 for a
    disc, in (0, 1]) simplified by half a ``pixel`` (the segmented image's
    pixel, in level-0 px): the half-pixel steps a pixel outline takes would
    add a fifth to a small nucleus's perimeter and make a disc look 0.74
    round."""
    count = len(centroids)
    traced = np.ascontiguousarray(points, dtype=np.float32)
    outline_area, perimeter, hull_area = np.zeros(count), np.zeros(count), np.zeros(count)
    for k, (start, stop) in enumerate(zip(starts[:-1].tolist(), starts[1:].tolist(), strict=True)):
        ring = cv2.approxPolyDP(traced[start:stop], 0.5 * pixel, True)
        outline_area[k] = cv2.contourArea(ring)
        perimeter[k] = cv2.arcLength(ring, True)
        hull_area[k] = cv2.contourArea(cv2.convexHull(ring))
    with np.errstate(divide="ignore", invalid="ignore"):
        circularity = np.where(perimeter > 0, 4 * math.pi * outline_area / perimeter**2, 0.0)
        solidity = np.where(hull_area > 0, outline_area / hull_area, 0.0)
    # name: (values, decimals); rounded by Python's round, which rounds the
    # decimal value of each float correctly (numpy's scales it first).
    columns: dict[str, tuple[npt.NDArray[np.floating], int]] = {
        "Centroid X px": (centroids[:, 0], 2),
        "Centroid Y px": (centroids[:, 1], 2),
        "Area px^2": (areas_px, 2),
        "Perimeter px": (perimeter, 2),
    }
    if mpp:
        columns["Area µm^2"] = (areas_px * mpp * mpp, 3)
        columns["Perimeter µm"] = (perimeter * mpp, 3)
    columns["Circularity"] = (np.minimum(circularity, 1.0), 4)
    columns["Solidity"] = (np.minimum(solidity, 1.0), 4)
    columns["Hematoxylin OD mean"] = (stains, 4)
    return Measured(
        {
            name: [round(v, places) for v in values.tolist()]
            for name, (values, places) in columns.items()
        }
    )


@dataclass(frozen=True)
class Measured:
    """n nuclei's measurements by QuPath's names, column by column, rounded
    as cells.geojson writes them: its features take the rows, the nucleus
    table and the slide's statistics the columns."""

    columns: dict[str, list[float]]

    def rows(self) -> list[dict[str, float]]:
        names = list(self.columns)
        return [
            dict(zip(names, row, strict=True)) for row in zip(*self.columns.values(), strict=True)
        ]
