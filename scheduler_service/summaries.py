"""A finished job's summary, taken in once when its worker reports it: the
public text (the slide as a name, never a server path) and the same document
as an object, kept on the job so no answer parses it again. Pure."""

from __future__ import annotations

import json
from pathlib import PurePath
from typing import Any


def summary_object(summary: str) -> dict[str, Any] | None:
    """The summary document as an object, if it is one."""
    try:
        document = json.loads(summary) if summary else None
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def public_summary(summary: str) -> str:
    """The summary with the slide as a name, for summaries older workers wrote
    with the slide's absolute path."""
    try:
        document = json.loads(summary)
        path = document["slide"]["path"]
    except (ValueError, KeyError, TypeError):
        return summary
    if not isinstance(path, str) or not PurePath(path).is_absolute():
        return summary
    document["slide"]["path"] = PurePath(path).name
    return json.dumps(document)
