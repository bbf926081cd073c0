"""A box in level-0 slide pixels, as a viewer asks for nuclei: parsed and
checked the same way by the gateway, the scheduler and the worker."""

from __future__ import annotations

import math

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in level-0 px


class BoxError(ValueError):
    """A box that is not x0 < x1, y0 < y1, four finite numbers."""


def parse_box(text: str) -> Box:
    """``x0,y0,x1,y1`` (level-0 pixels) as numbers, checked."""
    parts = text.split(",")
    if len(parts) != 4:
        raise BoxError(f"bbox must be x0,y0,x1,y1 (four numbers), not {text[:80]!r}")
    try:
        x0, y0, x1, y1 = (float(part) for part in parts)
    except ValueError:
        raise BoxError(f"bbox must be four numbers, not {text[:80]!r}") from None
    return check_box((x0, y0, x1, y1))


def check_box(box: Box) -> Box:
    x0, y0, x1, y1 = box
    if not all(math.isfinite(v) for v in box):
        raise BoxError("bbox values must be finite numbers")
    if not (x0 < x1 and y0 < y1):
        raise BoxError(f"bbox must have x0 < x1 and y0 < y1, got {x0:g},{y0:g},{x1:g},{y1:g}")
    return box
