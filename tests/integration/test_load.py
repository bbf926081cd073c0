"""Sustained load from 50 clients of 10 users for 60 s (bench/load_test.py):
no error but RESOURCE_EXHAUSTED, the scheduling invariants hold at every
instant of every workflow's event stream, and the scheduler's memory is flat
over the second half."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.load_test import run


@pytest.mark.timeout(300)
def test_sixty_seconds_of_mixed_load(tmp_path: Path) -> None:
    report = run(seconds=60, clients=50, users=10, workdir=tmp_path)
    assert report.unexpected_errors() == {}
    assert report.violations == []
    assert report.workflows > 500 and report.audited_events > 2 * report.workflows
    assert report.cancelled > 0 and set(report.ops) == {"create", "get", "list", "watch", "cancel"}
    growth = report.rss_growth_second_half()
    assert growth < 0.10, [round(mb, 1) for _, mb in report.rss_mb]
