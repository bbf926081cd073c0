"""How long tests wait for things that are not what they test (a service to
start, a job to get going, a stream to close): scaled, so that a loaded CI
machine is not mistaken for a bug. Tests about time itself (a cancel seen
within 2 s) keep their own bounds."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

SCALE = float(os.environ.get("WSI_TEST_TIME_SCALE") or (2.0 if os.environ.get("CI") else 1.0))


def patience(seconds: float) -> float:
    """``seconds`` as the time to wait here: WSI_TEST_TIME_SCALE times it (2 on CI)."""
    return seconds * SCALE


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Polls ``check`` until it returns something true (returned), for
    ``patience(timeout)`` at most."""
    deadline = time.monotonic() + patience(timeout)
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {patience(timeout):g} s: {what}")
        time.sleep(0.05)
