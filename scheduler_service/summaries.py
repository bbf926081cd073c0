"""A finished job's summary, taken in once when its worker reports it: the
public text (the slide as a name, never a server path) and the same document
as an object, kept on the job so no answer parses it again. Pure."""

from __future__ import annotations

import json
from pathlib import PurePath
from typing import Any


def take_summary(summary: str) -> tuple[str, dict[str, Any] | None]:
    """(public text, the document as an object if it is one), parsed once. A
    summary older workers wrote with the slide's absolute path gets its name;
    any other text is kept as it came."""
    try:
        document = json.loads(summary) if summary else None
    except ValueError:
        return summary, None
    if not isinstance(document, dict):
        return summary, None
    slide = document.get("slide")
    if isinstance(slide, dict):
        path = slide.get("path")
        if isinstance(path, str) and PurePath(path).is_absolute():
            slide["path"] = PurePath(path).name
            return json.dumps(document), document
    return summary, document


def public_summary(summary: str) -> str:
    return take_summary(summary)[0]
