"""Conventions of the scheduler's error statuses shared by server and clients."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Trailing metadata of RESOURCE_EXHAUSTED: seconds until a retry can succeed.
RETRY_AFTER_METADATA = "retry-after-seconds"
DEFAULT_RETRY_AFTER_S = 1
# Trailing metadata of every error the scheduler itself answers (not the
# transport): its message is meant for users and may be shown as it is.
SERVER_ANSWER_METADATA = "wsi-answer"


def is_server_answer(trailing_metadata: Iterable[Any] | None) -> bool:
    return any(key == SERVER_ANSWER_METADATA for key, _ in trailing_metadata or ())


def retry_after_seconds(trailing_metadata: Iterable[Any] | None) -> int:
    """The retry hint of a RESOURCE_EXHAUSTED status: trailing metadata
    ``retry-after-seconds`` when the scheduler sends it, else 1 s."""
    for key, value in trailing_metadata or ():  # (key, value) pairs
        if key == RETRY_AFTER_METADATA:
            try:
                return max(1, round(float(value)))
            except (TypeError, ValueError):
                break
    return DEFAULT_RETRY_AFTER_S
