"""The worker's tile loop on real slides (no gRPC)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness import SLIDES
from worker_service.slide_access import SlideCache
from worker_service.tile_walk import JobCancelled, JobFailed, JobSpec, run_tile_walk


def run(tmp_path: Path, slide: str, **params: str):
    reports: list[tuple[int, int]] = []
    outcome = run_tile_walk(
        JobSpec("job-1", "TISSUE_MASK", str(SLIDES / slide), params),
        tmp_path,
        lambda: False,
        lambda d, t: reports.append((d, t)),
        SlideCache(),
    )
    return outcome, reports


def test_walks_every_tile_and_writes_summary(tmp_path: Path) -> None:
    outcome, reports = run(tmp_path, "CMU-1-Small-Region.svs", tile_size="512", overlap="64")
    summary = json.loads(Path(outcome.files["summary.json"]).read_text())
    assert summary["tiles_total"] == summary["tiles_read"] == len(reports) - 1 == 35
    assert reports[-1] == (35, 35)
    assert summary["level"] == 0 and summary["mpp_used"] == pytest.approx(0.499, abs=1e-3)
    assert 0.2 < summary["foreground_fraction"] < 0.95  # tissue and white background


def test_slide_without_mpp_falls_back_to_level_0(tmp_path: Path) -> None:
    outcome, _ = run(tmp_path, "boxes.tiff")
    assert outcome.summary["level"] == 0 and outcome.summary["mpp_used"] is None
    assert "level 0" in str(outcome.summary["mpp_note"])


@pytest.mark.parametrize(
    ("slide", "message"),
    [
        ("unreadable.svs", "Bogus marker length"),
        ("unopenable.tiff", "Unsupported TIFF compression"),
    ],
)
def test_broken_slides_fail_with_openslides_message(
    tmp_path: Path, slide: str, message: str
) -> None:
    with pytest.raises(JobFailed, match=message):
        run(tmp_path, slide)


def test_bad_params_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(JobFailed, match="tile_size"):
        run(tmp_path, "small.svs", tile_size="abc")
    with pytest.raises(JobFailed, match="overlap"):
        run(tmp_path, "small.svs", tile_size="64", overlap="40")


def test_cancellation_stops_between_tiles(tmp_path: Path) -> None:
    seen: list[int] = []
    with pytest.raises(JobCancelled):
        run_tile_walk(
            JobSpec(
                "job-2",
                "TISSUE_MASK",
                str(SLIDES / "CMU-1-Small-Region.svs"),
                {"tile_size": "64", "overlap": "0"},
            ),
            tmp_path,
            lambda: len(seen) > 3,
            lambda d, t: seen.append(d),
            SlideCache(),
        )
    assert seen[-1] == 3
