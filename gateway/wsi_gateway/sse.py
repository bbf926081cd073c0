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


def resume_after(last_event_id: str | None, after: int | None) -> int:
    """The sequence to resume after: the Last-Event-ID header wins over ?after=."""
    if last_event_id:
        try:
            return max(0, int(last_event_id.strip()))
        except ValueError:
            pass
    return max(0, after or 0)
