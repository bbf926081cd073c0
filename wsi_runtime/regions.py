"""A job's region of interest, in level-0 slide pixels: a box ``"x0,y0,x1,y1"``
(the form of the viewer's ``/cells?bbox=``) or a polygon ``"x,y x,y x,y ..."``
(three or more vertices, in order, the ring closed by itself). The
scheduler checks a submission's region with ``parse`` and the worker parses
the same text again at run time; whether the region meets the slide only the
worker can tell (it alone opens the slide).

Pure: no gRPC, OpenSlide or clock. A polygon's simplicity is checked by
shapely (GEOS), imported only when a polygon is given."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

MAX_VERTICES = 1000
MAX_TEXT = 20_000  # characters: 1,000 vertices as "12345.5,67890.5 "
MAX_COORDINATE = 10_000_000  # level-0 px: larger than any slide scanned today

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_PAIR = re.compile(rf"^\s*({_NUMBER})\s*,\s*({_NUMBER})\s*$")


class InvalidRegion(ValueError):
    """The region is malformed or degenerate; the message says how."""


@dataclass(frozen=True)
class Region:
    """The outline as an open ring of (x, y) level-0 pixels; a box is its four corners."""

    vertices: tuple[tuple[float, float], ...]
    is_box: bool

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        xs = [x for x, _ in self.vertices]
        ys = [y for _, y in self.vertices]
        return min(xs), min(ys), max(xs), max(ys)

    @property
    def area(self) -> float:
        """In level-0 px^2 (shoelace)."""
        ring = self.vertices
        doubled = sum(
            x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, ring[1:] + ring[:1], strict=True)
        )
        return abs(doubled) / 2

    def text(self) -> str:
        """The canonical form, which ``parse`` reads back to an equal region."""
        if self.is_box:
            return ",".join(_number(v) for v in self.bounds)
        return " ".join(f"{_number(x)},{_number(y)}" for x, y in self.vertices)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def parse(text: str) -> Region:
    """``text`` as a region: a box of four comma-separated numbers, or a
    polygon of comma-separated pairs separated by spaces."""
    text = text.strip()
    if len(text) > MAX_TEXT:
        raise InvalidRegion(f"is {len(text):,} characters long; at most {MAX_TEXT:,}")
    if not text:
        raise InvalidRegion("is empty")
    parts = text.split()
    if len(parts) == 1:
        return _box(parts[0])
    return _polygon(parts)


def _coordinate(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or not 0 <= value <= MAX_COORDINATE:
        raise InvalidRegion(
            f"coordinate {text} is out of range: level-0 pixels, 0 to {MAX_COORDINATE:,}"
        )
    return value


def _box(text: str) -> Region:
    fields = text.split(",")
    try:
        if len(fields) != 4:
            raise ValueError
        x0, y0, x1, y1 = (_coordinate(f) for f in fields)
    except ValueError as exc:
        if isinstance(exc, InvalidRegion):
            raise
        raise InvalidRegion(
            f"{text!r} is neither a box 'x0,y0,x1,y1' nor a polygon 'x,y x,y x,y ...'"
            " (level-0 pixels)"
        ) from None
    if not (x0 < x1 and y0 < y1):
        raise InvalidRegion(f"box {text!r} is empty: need x0 < x1 and y0 < y1")
    return Region(((x0, y0), (x1, y0), (x1, y1), (x0, y1)), is_box=True)


def _polygon(parts: list[str]) -> Region:
    if len(parts) > MAX_VERTICES + 1:
        raise InvalidRegion(
            f"polygon has {len(parts):,} vertices; at most {MAX_VERTICES:,} (simplify it)"
        )
    vertices: list[tuple[float, float]] = []
    for k, part in enumerate(parts, 1):
        match = _PAIR.match(part)
        if not match:
            raise InvalidRegion(f"polygon vertex {k} ({part!r}) is not 'x,y'")
        vertices.append((_coordinate(match[1]), _coordinate(match[2])))
    if len(vertices) > 3 and vertices[0] == vertices[-1]:
        vertices.pop()  # a ring written closed
    if len(set(vertices)) < 3:
        raise InvalidRegion("polygon needs at least three distinct vertices")
    region = Region(tuple(vertices), is_box=False)
    if region.area <= 0:
        raise InvalidRegion("polygon encloses no area")
    _check_simple(region)
    return region


def _check_simple(region: Region) -> None:
    from shapely.geometry import Polygon  # here: only polygons need it
    from shapely.validation import explain_validity

    polygon = Polygon(region.vertices)
    if not polygon.is_valid:
        why = explain_validity(polygon)
        raise InvalidRegion(f"polygon is not simple ({why}): its edges must not cross")
