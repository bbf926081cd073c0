"""The parameters a job accepts, as a typed schema. Pure (only the job type
enum, no gRPC): the scheduler checks a submission against it
(INVALID_ARGUMENT before anything is queued) and the worker parses the same
strings with it at run time, so the two never disagree about a parameter.

Values travel as strings (the API's ``map<string, string>``); numbers are
accepted as people write them: ``"512"``, ``"512.0"``, ``" 0.25 "``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from wsi_protocol.job_types import JobType
from wsi_runtime import regions
from wsi_runtime.regions import Region

JOB_TYPES = tuple(JobType)  # the public API's job types
BACKENDS = ("classical", "learned", "instanseg")
# What each backend is for, what it finds and what it costs, as /job-params,
# the web UI and the README say it (figures: docs/benchmarks.md).
BACKEND_HELP = {
    "learned": "the project's nucleus model (the default wherever it can run, CPUs included):"
    " finds more nuclei and outlines them better (held-out AJI 0.55 against classical's 0.25);"
    " a job takes 1.1-1.3x the classical one's time on a CPU (0.9-1.7x on a 40x scan, which"
    " it reads at its own pixels; more where it looks closer at small nuclei)",
    "classical": "colour deconvolution and watershed, no model: the fast, lower-quality option",
    "instanseg": "InstanSeg (needs PyTorch and its model file on the worker)",
}
DEFAULT_BACKEND_HELP = "the worker's default: learned wherever it can run, else classical"

# Hard bounds of the schema; a deployment narrows the tile size further with
# its own minimum (the scheduler's --min-tile-size).
TILE_SIZE_RANGE = (64, 8192)
TARGET_MPP_RANGE = (0.05, 50.0)  # um/px: from oil immersion to a whole-slide overview


class InvalidParams(ValueError):
    """A parameter is unknown, malformed or out of range; the message says which."""


@dataclass(frozen=True)
class JobParams:
    tile_size: int = 512
    overlap: int = 64
    target_mpp: float = 0.5
    min_tissue: float = 0.05  # tiles with a smaller tissue share are skipped
    backend: str = ""  # empty: the worker's default backend (its --default-backend)
    region: Region | None = None  # level-0 box or polygon; None: the whole tissue
    slide_mpp: float = 0.0  # the slide's level-0 pixel size; 0: what its metadata says


@dataclass(frozen=True)
class _Field:
    kind: type
    low: float
    high: float
    help: str
    choices: tuple[str, ...] = ()


# Both job types take the same parameters: a mask tiles the slide for its
# summary and segments nothing, but takes (and checks) ``backend`` too, so that
# one set of workflow defaults fits both jobs of a slide.
FIELDS: dict[str, _Field] = {
    "tile_size": _Field(int, *TILE_SIZE_RANGE, "tile edge in pixels at the level read"),
    "overlap": _Field(int, 0, TILE_SIZE_RANGE[1] // 2, "pixels shared by neighbouring tiles"),
    "target_mpp": _Field(float, *TARGET_MPP_RANGE, "pixel size to work at, um/px"),
    "slide_mpp": _Field(
        float,
        *TARGET_MPP_RANGE,
        "the slide's level-0 pixel size, um/px, for a slide whose metadata has none or a"
        " wrong one (default: the metadata's)",
    ),
    "min_tissue": _Field(float, 0.0, 1.0, "tissue share below which a tile is skipped"),
    "backend": _Field(str, 0, 0, "segmentation backend", BACKENDS),
    "region": _Field(
        Region,
        0,
        0,
        "level-0 box 'x0,y0,x1,y1' or polygon 'x,y x,y x,y ...' to analyse instead of the"
        " whole tissue",
    ),
}
# Characters a value may have: a polygon region is long (see ``regions.MAX_TEXT``).
MAX_VALUE_LENGTH = {"region": regions.MAX_TEXT}


def parse(job_type: str, params: Mapping[str, str], min_tile_size: int = 0) -> JobParams:
    """The typed parameters of a job of ``job_type``; defaults fill what is not
    given (an empty string counts as not given)."""
    if job_type not in JOB_TYPES:
        raise InvalidParams(f"unknown job type {job_type!r}; use one of {', '.join(JOB_TYPES)}")
    unknown = sorted(set(params) - set(FIELDS))
    if unknown:
        raise InvalidParams(
            f"unknown param {unknown[0]!r} for {job_type}; known: {', '.join(sorted(FIELDS))}"
        )
    values: dict[str, object] = {}
    for name, raw in params.items():
        text = raw.strip()
        if text:
            values[name] = _value(name, text, FIELDS[name])
    tile_size = values.get("tile_size")
    if "overlap" not in values and isinstance(tile_size, int):
        # The default overlap, shrunk to fit a small tile: defaults are always
        # valid together, down to the smallest tile_size (tile_size=128 with
        # the default would break the rule below).
        values["overlap"] = min(JobParams.overlap, tile_size // 2 - 1)
    parsed = JobParams(**values)  # type: ignore[arg-type]
    if parsed.tile_size < min_tile_size:
        raise InvalidParams(
            f"param tile_size={parsed.tile_size} is below this deployment's minimum of"
            f" {min_tile_size} px"
        )
    if not parsed.overlap < parsed.tile_size // 2:
        raise InvalidParams(
            f"param overlap={parsed.overlap} must be less than half of tile_size"
            f" ({parsed.tile_size})"
        )
    return parsed


def _value(name: str, text: str, field: _Field) -> object:
    if field.kind is Region:
        try:
            return regions.parse(text)
        except regions.InvalidRegion as exc:
            raise InvalidParams(f"param {name}: {exc}") from None
    if field.choices:
        if text not in field.choices:
            raise InvalidParams(
                f"param {name}={text!r}: unknown {field.help}; use one of"
                f" {', '.join(field.choices)}"
            )
        return text
    try:
        number = float(text)
    except ValueError:
        raise InvalidParams(f"param {name}={text!r} is not a number ({field.help})") from None
    if not math.isfinite(number):
        raise InvalidParams(f"param {name}={text!r} must be a finite number")
    if field.kind is int:
        if not number.is_integer():
            raise InvalidParams(f"param {name}={text!r} must be a whole number")
        number = int(number)
    if not field.low <= number <= field.high:
        raise InvalidParams(
            f"param {name}={text!r} is out of range: {field.low:g} to {field.high:g} ({field.help})"
        )
    return number


def schema(min_tile_size: int = 0, backends: Sequence[str] = ()) -> dict[str, dict[str, object]]:
    """The parameters as the web UI builds its inputs from them: kind, bounds,
    default and choices, the same the scheduler checks against; narrowed, when
    a deployment says so, to its smallest tile size and to the ``backends``
    its workers offer (empty: every backend, not known yet)."""
    defaults = JobParams()
    described: dict[str, dict[str, object]] = {}
    for name, field in FIELDS.items():
        entry: dict[str, object] = {
            "type": field.kind.__name__,
            "help": field.help,
            "default": getattr(defaults, name),
        }
        if field.kind is Region:
            entry["type"], entry["default"] = "region", ""
        elif field.choices:
            offered = [c for c in field.choices if c in backends] if name == "backend" else []
            entry["choices"] = offered or list(field.choices)
            if name == "backend":
                entry["choice_help"] = dict(BACKEND_HELP)
                entry["default_help"] = DEFAULT_BACKEND_HELP
        else:
            low = max(field.low, min_tile_size) if name == "tile_size" else field.low
            entry["min"], entry["max"] = low, field.high
            if name == "slide_mpp":  # its default, 0, is no pixel size: what a form shows instead
                entry["default_shown"] = "from the slide"
        described[name] = entry
    return described
