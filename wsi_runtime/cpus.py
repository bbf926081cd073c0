"""How many CPUs this process may use: the fewest of the cores it may run on
(its affinity: taskset, a cpuset) and its CPU quota (a container's
``--cpus``, a Kubernetes CPU limit), because ``os.cpu_count()`` counts every
core of the host, and a worker that forks one tile process per host core
under a 2-CPU limit only makes them wait for each other."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1 = (
    Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
    Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
)


def quota_cpus(quota: str, period: str) -> int | None:
    """CPUs a quota gives, rounded up; ``None`` for no quota (``max``, or -1
    in cgroup v1) or a value that does not parse."""
    try:
        if quota.strip() in ("max", "-1"):
            return None
        allowed, length = int(quota), int(period)
    except ValueError:
        return None
    if allowed <= 0 or length <= 0:
        return None
    return max(1, math.ceil(allowed / length))


def _read_quota() -> int | None:
    try:
        quota, _, period = CGROUP_V2.read_text().partition(" ")
        return quota_cpus(quota, period)
    except OSError:
        pass
    try:
        return quota_cpus(CGROUP_V1[0].read_text(), CGROUP_V1[1].read_text())
    except OSError:
        return None


def available_cpus() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _read_quota()
    return max(1, min(cores, quota) if quota else cores)
