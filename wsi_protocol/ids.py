"""The scheduler's id format (lowercase UUID 4 text), checked wherever an id
arrives from outside: the worker names a job's results folder after it, so
anything else (a path) must never get that far."""

from __future__ import annotations

import re

_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def is_scheduler_id(text: str) -> bool:
    return _ID.fullmatch(text) is not None
