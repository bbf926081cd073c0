"""A tissue mask as bytes for the wire: a 1-bit PNG of the mask, a few KB,
with its scale and threshold beside it. A TISSUE_MASK job's worker returns it
and the scheduler hands it to a later job on the same slide (see
``scheduler_service/tissue_reuse.py``)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from worker_service.analysis.tissue import TissueMask

MAX_MASK_SIDE = 4096  # a reused mask larger than this is refused, not decoded


@dataclass(frozen=True)
class ReusedTissue:
    """A mask found by an earlier job, and that job's id (for the summary)."""

    mask: TissueMask
    source_job_id: str


def encode(mask: TissueMask) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(mask.mask).convert("1").save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def decode(png: bytes, downsample: float, threshold: float) -> TissueMask:
    """The mask back; ValueError when the bytes are not a sane 1-bit mask."""
    if not png:
        raise ValueError("no mask")
    try:
        with Image.open(io.BytesIO(png)) as image:
            if image.format != "PNG" or max(image.size) > MAX_MASK_SIDE:
                raise ValueError(f"not a PNG mask of at most {MAX_MASK_SIDE} px a side")
            pixels = np.asarray(image.convert("L")) > 0
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"unreadable mask: {exc}") from exc
    if not downsample > 0:
        raise ValueError(f"mask downsample must be positive, not {downsample}")
    return TissueMask(pixels, float(downsample), float(threshold))


def fits(mask: TissueMask, overview_shape: tuple[int, int], downsample: float) -> bool:
    """Whether a mask describes this job's overview: same size, same scale
    (a mask of another slide, or of another overview size, is not reused)."""
    return mask.mask.shape == overview_shape and abs(mask.downsample - downsample) <= 1e-6 * max(
        1.0, downsample
    )
