"""A slide's nucleus measurements summed up as they stream by: count, mean
and quantiles of each, from fixed histograms, so that the memory of a job's
statistics is the same for ten nuclei or ten million. A quantile is found
as numpy's default quantile is, between the two values around its rank,
each placed within its bin: sizes in bins 1.1 % wide (log-spaced from 0.001
to 10^7), ratios in bins of 0.001, stain in bins of 0.002 OD; the exact
minimum and maximum bound every answer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from wsi_protocol import measures as names


@dataclass(frozen=True)
class Measure:
    """One statistic's name (the summary's key), the per-nucleus measurement
    it reads (QuPath's name), and its histogram."""

    name: str
    source: str
    low: float
    high: float
    bins: int
    log: bool

    def edges(self) -> npt.NDArray[np.float64]:
        if self.log:
            return np.geomspace(self.low, self.high, self.bins + 1)
        return np.linspace(self.low, self.high, self.bins + 1)


# In the order of ``names.MEASURES``. A slide without a pixel size has no
# measurement in micrometres, and so no size statistics.
MEASURES = (
    Measure(names.AREA_UM2, "Area µm^2", 1e-3, 1e7, 2048, True),
    Measure(names.PERIMETER_UM, "Perimeter µm", 1e-3, 1e7, 2048, True),
    Measure(names.CIRCULARITY, "Circularity", 0.0, 1.0, 1000, False),
    Measure(names.SOLIDITY, "Solidity", 0.0, 1.0, 1000, False),
    Measure(names.HEMATOXYLIN_OD, "Hematoxylin OD mean", 0.0, 4.0, 2000, False),
)


def measure_values(columns: Mapping[str, Sequence[float]], count: int) -> npt.NDArray[np.float64]:
    """(count, len(MEASURES)) of measurement ``columns`` (``Measured.columns``);
    NaN where a column is missing (sizes, on a slide without a pixel size)."""
    values = np.full((count, len(MEASURES)), np.nan)
    for k, measure in enumerate(MEASURES):
        if measure.source in columns:
            values[:, k] = columns[measure.source]
    return values


class MeasureStats:
    """Counts, sums, extremes and histograms of every measure."""

    def __init__(self) -> None:
        self._edges = [measure.edges() for measure in MEASURES]
        self._counts = [np.zeros(measure.bins, dtype=np.int64) for measure in MEASURES]
        self._sum = np.zeros(len(MEASURES))
        self._n = np.zeros(len(MEASURES), dtype=np.int64)
        self._min = np.full(len(MEASURES), np.inf)
        self._max = np.full(len(MEASURES), -np.inf)

    def add(self, values: npt.NDArray[np.float64]) -> None:
        """``values``: (n, len(MEASURES)), as ``measure_values`` gives them."""
        for column, edges in enumerate(self._edges):
            present = values[:, column]
            present = present[np.isfinite(present)]
            if not len(present):
                continue
            where = np.searchsorted(edges, present, side="right") - 1
            np.clip(where, 0, len(edges) - 2, out=where)
            self._counts[column] += np.bincount(where, minlength=len(edges) - 1)
            self._sum[column] += float(present.sum())
            self._n[column] += len(present)
            self._min[column] = min(self._min[column], float(present.min()))
            self._max[column] = max(self._max[column], float(present.max()))

    def summary(self) -> dict[str, dict[str, float]]:
        """``{measure: {statistic: value}}`` (``names.STATISTICS``) of each
        measure some nucleus had, to 4 significant digits."""
        out: dict[str, dict[str, float]] = {}
        for column, measure in enumerate(MEASURES):
            count = int(self._n[column])
            if not count:
                continue
            stats = {"mean": self._sum[column] / count}
            for statistic, q in names.QUANTILES.items():
                stats[statistic] = self._quantile(column, q)
            out[measure.name] = {key: float(f"{value:.4g}") for key, value in stats.items()}
        return out

    def _quantile(self, column: int, q: float) -> float:
        """numpy's default ("linear") quantile: between the two values around
        rank q (n - 1), each placed within its bin."""
        rank = q * (int(self._n[column]) - 1)
        below = int(np.floor(rank))
        low = self._value_at(column, below)
        if rank == below:
            return low
        return low + (self._value_at(column, below + 1) - low) * (rank - below)

    def _value_at(self, column: int, k: int) -> float:
        """The k-th smallest value (from 0), the values of its bin taken as
        spread evenly over it; the outer bins reach out to the extremes."""
        counts, edges = self._counts[column], self._edges[column]
        cumulative = np.cumsum(counts)
        b = int(np.searchsorted(cumulative, k, side="right"))
        before = int(cumulative[b - 1]) if b else 0
        inside = (k - before + 0.5) / int(counts[b])
        smallest, largest = float(self._min[column]), float(self._max[column])
        low = float(edges[b]) if b else min(float(edges[0]), smallest)
        high = float(edges[b + 1]) if b < len(counts) - 1 else max(float(edges[-1]), largest)
        if MEASURES[column].log and low > 0:
            value = low * float((high / low) ** inside)
        else:
            value = low + (high - low) * inside
        return min(max(value, smallest), largest)
