"""A service started by the launcher dies with it, whatever ends the launcher
(SIGKILL included), instead of lingering as an orphan that holds its port."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

LAUNCHER_PID_ENV = "WSI_LAUNCHER_PID"
_PR_SET_PDEATHSIG = 1


def follow_launcher() -> None:
    """Asks the kernel for SIGTERM (a graceful stop) when the parent process
    ends, if the launcher started this one. Linux only; elsewhere a no-op."""
    launcher = os.environ.pop(LAUNCHER_PID_ENV, "")
    if not launcher or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if str(os.getppid()) != launcher:  # the launcher was gone before we asked
        sys.exit("launcher gone: not starting")
