"""Starting a program in a session of its own, its output to a log; a free
port for it; and reading a service's process tree from /proc (Linux):
which processes a service left, whether they live, how much memory and CPU
they used."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self


def started(
    command: Sequence[str], cwd: Path, env: Mapping[str, str], log: Path
) -> subprocess.Popen[bytes]:
    """``command`` running in a session of its own (its whole group can be
    killed), stdout and stderr to ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def pids_of(root: int) -> list[int]:
    """``root`` and every process below it (the worker and its tile pool)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def status_mb(pid: int, field: str) -> float:
    """A memory field of /proc/PID/status (``VmHWM``, ``VmRSS``) in MB; 0 for
    a process that is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def peak_rss_mb(root: int) -> float:
    """The sum of each living process's own peak (VmHWM) in ``root``'s tree."""
    return sum(status_mb(pid, "VmHWM") for pid in pids_of(root))


class Sampler:
    """Calls ``sample()`` every ``every_s`` in a thread while in the ``with``
    block (memory peaks read from /proc while a test drives its load)."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every_s)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


class TreeRssPeak(Sampler):
    """The largest sum of RSS over ``root`` and every process below it: the
    memory they held at once, counting processes that ended before the block
    did (a job's table writer), which a sum of each survivor's VmHWM misses."""

    def __init__(self, root: int, every_s: float = 0.05) -> None:
        super().__init__(every_s)
        self.root, self.peak_mb = root, 0.0

    def sample(self) -> None:
        total = sum(status_mb(pid, "VmRSS") for pid in pids_of(self.root))
        self.peak_mb = max(self.peak_mb, total)


class RssPeaks(Sampler):
    """Each named process's own largest RSS (not its children's)."""

    def __init__(self, pids: dict[str, int], every_s: float = 0.02) -> None:
        super().__init__(every_s)
        self.pids = pids
        self.peaks = {name: status_mb(pid, "VmRSS") for name, pid in pids.items()}

    def sample(self) -> None:
        for name, pid in self.pids.items():
            self.peaks[name] = max(self.peaks[name], status_mb(pid, "VmRSS"))


def cpu_seconds(root: int) -> float:
    ticks = 0
    for pid in pids_of(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")
