"""The CPUs a worker counts: a quota (a container's limit) caps the cores."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsi_runtime import cpus


@pytest.mark.parametrize(
    ("quota", "period", "expected"),
    [
        ("max", "100000", None),  # cgroup v2, no limit
        ("-1", "100000", None),  # cgroup v1, no limit
        ("200000", "100000\n", 2),
        ("150000", "100000", 2),  # 1.5 CPUs: two processes, not one
        ("50000", "100000", 1),
        ("0", "100000", None),
        ("junk", "100000", None),
        ("100000", "0", None),
    ],
)
def test_a_quota_gives_its_cpus_rounded_up(quota: str, period: str, expected: int | None) -> None:
    assert cpus.quota_cpus(quota, period) == expected


def test_the_quota_caps_the_cores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    limit = tmp_path / "cpu.max"
    monkeypatch.setattr(cpus, "CGROUP_V2", limit)
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0, 1, 2, 3, 4, 5, 6, 7})
    limit.write_text("300000 100000\n")
    assert cpus.available_cpus() == 3
    limit.write_text("max 100000\n")
    assert cpus.available_cpus() == 8
    limit.write_text("1600000 100000\n")  # a quota above the cores: the cores
    assert cpus.available_cpus() == 8
