"""Server-Sent Events framing, pure."""

from __future__ import annotations

import json


def event(data: object, event_id: int | None = None, name: str | None = None) -> str:
    """One SSE event; ``id:`` lets the browser resume with Last-Event-ID."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if name:
        lines.append(f"event: {name}")
    lines.extend(f"data: {line}" for line in json.dumps(data).splitlines() or [""])
    return "\n".join(lines) + "\n\n"


def comment(text: str) -> str:
    """A comment line: keeps proxies and browsers from timing the stream out."""
    return f": {text}\n\n"


LAST_SEQUENCE = 2**64 - 1  # the largest a sequence (uint64) can be


def resume_after(last_event_id: str | None, after: int | None) -> int:
    """The sequence to resume after: the Last-Event-ID header wins over ?after=.
    One past any sequence there can be means "after everything": a fresh
    snapshot, as for any sequence the scheduler never issued."""
    if last_event_id:
        try:
            return min(max(0, int(last_event_id.strip())), LAST_SEQUENCE)
        except ValueError:
            pass
    return min(max(0, after or 0), LAST_SEQUENCE)
