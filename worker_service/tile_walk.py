"""A job's tile loop: open the slide, pick the pyramid level, read every tile
of the grid, report progress, write the results. Runs in a worker thread,
never on the event loop; stops at the next tile once ``cancelled`` is set."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openslide

from worker_service.slide_access import SlideCache, SlideError, describe
from worker_service.tiling import choose_level, tile_grid, usable_mpp

DEFAULT_TILE_SIZE = 512
DEFAULT_OVERLAP = 64
DEFAULT_TARGET_MPP = 0.5
BACKGROUND_LEVEL = 220  # a pixel whose darkest channel is above this is glass/background


class JobCancelled(Exception):
    pass


class JobFailed(Exception):
    """The job cannot succeed; the message tells the user why."""


@dataclass(frozen=True)
class JobSpec:
    job_id: str
    job_type: str
    slide_path: str
    params: Mapping[str, str]


@dataclass(frozen=True)
class JobOutcome:
    files: dict[str, str]
    summary: dict[str, object]


def _int_param(params: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(params.get(name, default))
    except ValueError:
        raise JobFailed(f"param {name}={params[name]!r} is not an integer") from None


def _float_param(params: Mapping[str, str], name: str, default: float) -> float:
    try:
        return float(params.get(name, default))
    except ValueError:
        raise JobFailed(f"param {name}={params[name]!r} is not a number") from None


def run_tile_walk(
    spec: JobSpec,
    results_dir: Path,
    cancelled: Callable[[], bool],
    report: Callable[[int, int], None],
    slides: SlideCache,
) -> JobOutcome:
    started = time.perf_counter()
    tile_size = _int_param(spec.params, "tile_size", DEFAULT_TILE_SIZE)
    overlap = _int_param(spec.params, "overlap", DEFAULT_OVERLAP)
    target_mpp = _float_param(spec.params, "target_mpp", DEFAULT_TARGET_MPP)
    if tile_size < 16 or tile_size > 8192 or not 0 <= overlap < tile_size // 2:
        raise JobFailed("need 16 <= tile_size <= 8192 and 0 <= overlap < tile_size / 2")
    try:
        slide = slides.get(spec.slide_path)
    except SlideError as exc:
        raise JobFailed(str(exc)) from exc
    info = describe(slide)
    mpp = usable_mpp(info.mpp)
    level = choose_level(info.level_downsamples, mpp, target_mpp)
    downsample = info.level_downsamples[level]
    level_w, level_h = info.level_dimensions[level]
    tiles = tile_grid(level_w, level_h, tile_size, overlap)
    report(0, len(tiles))
    pixels = 0
    foreground = 0
    rgb_sum = np.zeros(3, dtype=np.float64)
    for done, tile in enumerate(tiles, start=1):
        if cancelled():
            raise JobCancelled()
        location = (int(tile.x * downsample), int(tile.y * downsample))
        try:
            region = slide.read_region(location, level, (tile.width, tile.height))
        except openslide.OpenSlideError as exc:
            raise JobFailed(
                f"cannot read tile at level-0 ({location[0]}, {location[1]}): {exc}"
            ) from exc
        rgba = np.asarray(region)
        opaque = rgba[..., 3] > 0
        rgb = rgba[..., :3][opaque]
        pixels += int(rgb.shape[0])
        foreground += int(np.count_nonzero(rgb.min(axis=1) < BACKGROUND_LEVEL))
        rgb_sum += rgb.sum(axis=0, dtype=np.float64)
        report(done, len(tiles))
    summary: dict[str, object] = {
        "job_id": spec.job_id,
        "job_type": spec.job_type,
        "analysis": "tile_walk",
        "slide": {
            "path": spec.slide_path,
            "vendor": info.vendor,
            "width": info.width,
            "height": info.height,
            "levels": info.level_count,
            "mpp": info.mpp,
        },
        "level": level,
        "downsample": downsample,
        "mpp_used": mpp * downsample if mpp else None,
        "mpp_note": "" if mpp else "slide has no usable pixel size metadata: read level 0",
        "tile_size": tile_size,
        "overlap": overlap,
        "tiles_total": len(tiles),
        "tiles_read": len(tiles),
        "pixels_read": pixels,
        "foreground_fraction": round(foreground / pixels, 4) if pixels else 0.0,
        "mean_rgb": [round(v, 2) for v in (rgb_sum / pixels).tolist()] if pixels else None,
        "elapsed_s": round(time.perf_counter() - started, 4),
    }
    summary_path = write_json_atomically(results_dir / spec.job_id / "summary.json", summary)
    return JobOutcome(files={"summary.json": str(summary_path)}, summary=summary)


def write_json_atomically(path: Path, document: object) -> Path:
    """Writes to a temporary file and renames it, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(document))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path.resolve()
