"""Text a user sent, shown back within a bound. Pure."""

from __future__ import annotations


def clipped(text: str, limit: int) -> str:
    """``text``, or its first ``limit`` characters and how many more there were:
    an error message that echoes input must stay readable, and fit the 16 KB a
    gRPC status message may take (a longer one reaches the caller as
    RESOURCE_EXHAUSTED, not as the error it was)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters)"
