"""How much closer than its own pixel size the learned model looks at a slide.

The model was trained on MoNuSeg's nuclei at 0.5 um/px; where a slide's nuclei
are much smaller (dense lymphocytes, small round cells) it merges them. A
first look at a few tissue tiles at the model's own pixel size gives the
median nucleus area; where it is under ``REFERENCE_AREA_UM2``, the model
looks at the slide magnified so that the median comes to it (at most
``MOST`` times). The measure is in um^2, so the same tissue gets about the
same magnification whatever the scan's own pixel size. Chosen on the
held-out images (the model card's "Nucleus size")."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

REFERENCE_AREA_UM2 = 36.0
MOST = 2.0  # at most twice as close: 0.25 um/px for a 0.5 um/px model
MIN_NUCLEI = 30  # fewer found: too few to judge, the model's own pixel size
# A smaller magnification is none: it would cost a job (more model pixels,
# every tile resampled) more than it gains. On CMU-1's tissue (median 24.5
# um^2) a 1.16x look made the bench's job 1.48x the classical one's time
# instead of 1.24x (bench.pipeline_ab) for a gain nothing here can measure.
LEAST = 1.25


def inner_areas(labels: npt.NDArray[np.integer]) -> npt.NDArray[np.int64]:
    """Pixel counts of the labelled nuclei that do not touch the image's
    edge (a nucleus cut by a tile's edge would count smaller than it is)."""
    counts = np.bincount(labels.ravel())
    cut = np.unique(
        np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]).astype(np.int64)
    )
    counts[cut] = 0
    counts[0] = 0
    areas: npt.NDArray[np.int64] = counts[counts > 0].astype(np.int64)
    return areas


def magnification(areas_um2: npt.NDArray[np.floating] | npt.NDArray[np.integer]) -> float:
    """1 where the median nucleus is at least ``REFERENCE_AREA_UM2`` (or too
    few nuclei were found to say), else the linear factor that brings the
    median to it, at most ``MOST``; under ``LEAST``, 1."""
    if len(areas_um2) < MIN_NUCLEI:
        return 1.0
    median = float(np.median(areas_um2))
    if median <= 0:
        return 1.0
    factor = min(MOST, math.sqrt(REFERENCE_AREA_UM2 / median))
    return factor if factor > LEAST else 1.0


def finer_scan(
    areas_um2: npt.NDArray[np.floating] | npt.NDArray[np.integer],
    areas_um2_at_half: npt.NDArray[np.floating] | npt.NDArray[np.integer],
) -> bool:
    """For a slide whose file gives no pixel size: whether it is better taken
    at half the pixel size assumed (a 40x scan, not a 20x one), from the
    nuclei a first look finds under each. Half it is where, at half, their
    median is still at least ``REFERENCE_AREA_UM2`` (the model then sees
    nuclei of at least the size it learned; a 20x scan's nuclei taken so
    measure about a quarter of their area, so this needs nuclei of some 140
    um^2 there, which the model, too, segments better at half their size);
    or where, at the size assumed, they look larger than the reference and,
    at half of it, their median comes nearer to it. A model shown nuclei at
    twice the size it learned splits them, so the larger median alone does
    not tell: on MoNuSeg's and CPM-15's images the two ranges overlap, and a
    40x scan of large nuclei (TCGA-G9-6363) is split into pieces smaller
    than the reference (the model card's "Seventh round")."""
    if min(len(areas_um2), len(areas_um2_at_half)) < MIN_NUCLEI:
        return False
    median = float(np.median(areas_um2))
    median_at_half = float(np.median(areas_um2_at_half))
    if median_at_half >= REFERENCE_AREA_UM2:
        return True
    if median <= REFERENCE_AREA_UM2 or median_at_half <= 0:
        return False
    distance = abs(math.log(median / REFERENCE_AREA_UM2))
    return abs(math.log(median_at_half / REFERENCE_AREA_UM2)) < distance
