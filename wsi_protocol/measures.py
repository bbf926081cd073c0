"""The per-slide statistics of nucleus measurements that a segmentation
job's summary carries (``summary["measurements"][MEASURE][STATISTIC]``) and
the cohort table lays out as ``MEASURE_STATISTIC`` columns: one owner for the
worker that computes them and the gateway and CLI that tabulate them."""

from __future__ import annotations

# Sizes in micrometres: a slide without a pixel size has no size statistics.
AREA_UM2 = "area_um2"
PERIMETER_UM = "perimeter_um"
CIRCULARITY = "circularity"
SOLIDITY = "solidity"
HEMATOXYLIN_OD = "hematoxylin_od"
MEASURES = (AREA_UM2, PERIMETER_UM, CIRCULARITY, SOLIDITY, HEMATOXYLIN_OD)

# numpy's default ("linear") quantiles, by name.
QUANTILES = {"p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95}
STATISTICS = ("mean", *QUANTILES)
