"""CPU time of a service and of the processes it started (its session), read
from /proc, so a benchmark can say where the CPU of one job goes."""

from __future__ import annotations

import os
from pathlib import Path

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def _stat_fields(stat_path: Path) -> list[str] | None:
    try:
        text = stat_path.read_text()
    except OSError:  # the process ended between listing and reading
        return None
    # The command name may hold spaces; the fields after its closing parenthesis do not.
    return text[text.rindex(")") + 2 :].split()


def session_cpu_seconds(leader: int) -> dict[str, float]:
    """User + system CPU seconds of ``leader`` itself (``main``) and of the other
    live processes in its session (``children``, e.g. a process pool)."""
    main = children = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry / "stat")
        if fields is None or int(fields[3]) != leader:  # field 6 of stat: session id
            continue
        seconds = (int(fields[11]) + int(fields[12])) / TICKS_PER_SECOND  # utime, stime
        if int(entry.name) == leader:
            main += seconds
        else:
            children += seconds
    return {"main": main, "children": children}
