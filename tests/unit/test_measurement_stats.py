"""A slide's measurement statistics from fixed histograms: the same as
numpy's over all values, to within a bin, whichever way the nuclei arrive."""

from __future__ import annotations

import numpy as np
import pytest

from worker_service.analysis.measurement_stats import MEASURES, MeasureStats, measure_values
from wsi_protocol import measures


def nuclei(count: int, seed: int) -> np.ndarray:
    """Columns as MEASURES: log-normal sizes, ratios in (0, 1], stain in OD."""
    rng = np.random.default_rng(seed)
    area = rng.lognormal(np.log(40), 0.5, count)
    return np.column_stack(
        [
            area,
            np.sqrt(area) * rng.uniform(3.6, 4.4, count),
            rng.beta(8, 2, count),
            rng.beta(20, 1, count),
            rng.gamma(4, 0.15, count),
        ]
    )


@pytest.mark.parametrize("count", [1, 7, 1000, 100_000])
def test_mean_and_quantiles_are_numpys_to_within_a_bin(count: int) -> None:
    values = nuclei(count, seed=count)
    stats = MeasureStats()
    stats.add(values)
    summary = stats.summary()
    for column, measure in enumerate(MEASURES):
        got = summary[measure.name]
        exact = values[:, column]
        assert got["mean"] == pytest.approx(exact.mean(), rel=1e-3)
        assert set(got) == set(measures.STATISTICS)
        for statistic, q in measures.QUANTILES.items():
            want = float(np.quantile(exact, q))
            if measure.log:
                assert got[statistic] == pytest.approx(want, rel=0.012)
            else:
                step = (measure.high - measure.low) / measure.bins
                assert abs(got[statistic] - want) <= step + 1e-3 * abs(want)


def test_the_measures_are_the_protocol_s_in_its_order() -> None:
    assert tuple(m.name for m in MEASURES) == measures.MEASURES


def test_tile_by_tile_is_all_at_once_and_empty_tiles_change_nothing() -> None:
    values = nuclei(5000, seed=3)
    whole, pieces = MeasureStats(), MeasureStats()
    whole.add(values)
    for start in range(0, 5000, 333):
        pieces.add(values[start : start + 333])
        pieces.add(values[:0])
    assert pieces.summary() == whole.summary()


def test_a_slide_without_pixel_size_has_no_size_statistics() -> None:
    measured = {
        "Area px^2": [50.0], "Perimeter px": [25.0], "Circularity": [0.9], "Solidity": [0.95],
        "Hematoxylin OD mean": [0.4],
    }  # fmt: skip
    stats = MeasureStats()
    stats.add(measure_values(measured, 1))
    assert set(stats.summary()) == {"circularity", "solidity", "hematoxylin_od"}
    assert stats.summary()["circularity"] == {
        "mean": 0.9, "p05": 0.9, "p25": 0.9, "p50": 0.9, "p75": 0.9, "p95": 0.9
    }  # fmt: skip
    assert MeasureStats().summary() == {}


def test_values_beyond_the_histogram_are_bounded_by_the_extremes() -> None:
    stats = MeasureStats()
    values = nuclei(10, seed=1)
    values[:, 0] = [1e9] * 5 + [1e-6] * 5
    stats.add(values)
    area = stats.summary()["area_um2"]
    assert 1e-6 <= area["p05"] <= 1e-3 and 1e7 <= area["p95"] <= 1e9
    assert area["p05"] <= area["p25"] <= area["p50"] <= area["p75"] <= area["p95"]
