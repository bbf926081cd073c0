"""The pure parts of bench.gpu_check, the script a session lent a GPU runs
once: a misread there costs that session's device time."""

from __future__ import annotations

import numpy as np
import pytest

from bench.gpu_check import ids_are_one_to_n, mosaic, parse_sample, utilisation_summary


@pytest.mark.parametrize(
    ("line", "sample"),
    [
        ("87, 10240\n", (87.0, 10240.0)),
        ("0, 3", (0.0, 3.0)),
        ("[N/A], 10240", None),
        ("[Not Supported], [Not Supported]", None),
        ("87", None),
        ("87, 10240, 5", None),
        ("", None),
    ],
)
def test_an_nvidia_smi_line_is_a_reading_or_nothing(
    line: str, sample: tuple[float, float] | None
) -> None:
    assert parse_sample(line) == sample


def test_the_utilisation_summary_says_how_busy_the_gpu_was() -> None:
    summary = utilisation_summary([(100.0, 500.0), (20.0, 900.0), (80.0, 700.0), (10.0, 600.0)])
    assert summary == {
        "samples": 4,
        "median_pct": 50.0,
        "mean_pct": 52.5,
        "share_over_50_pct": 0.5,
        "peak_memory_mib": 900.0,
    }
    assert utilisation_summary([]) is None


def test_label_ids_must_run_one_to_n() -> None:
    labels = np.zeros((4, 4), np.int32)
    labels[0, :3] = [1, 2, 3]
    assert ids_are_one_to_n(labels)
    labels[0, 1] = 4  # a gap: id 2 gone
    assert not ids_are_one_to_n(labels)
    assert ids_are_one_to_n(np.zeros((2, 2), np.int32))


def test_the_large_tile_is_the_tiles_side_by_side_repeated() -> None:
    tiles = [np.full((4, 4, 3), value, np.uint8) for value in (1, 2, 3)]
    image = mosaic(tiles, 8)
    assert image.shape == (8, 8, 3)
    assert [image[0, 0, 0], image[0, 4, 0], image[4, 0, 0], image[4, 4, 0]] == [1, 2, 3, 1]
