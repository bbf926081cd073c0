"""Which pixel sizes a slide's metadata gives are real ones: one rule for the
worker, which reads slides by it, and the scheduler, which lists them."""

from __future__ import annotations

PLAUSIBLE_MPP = (0.01, 100.0)
"""Microscope pixel sizes in um/px. A TIFF that only carries a screen
resolution (72 dpi is 352.8 um/px) has no real pixel size."""


def usable_mpp(mpp: float | None) -> float | None:
    """``mpp`` where it is a microscope's pixel size, else None."""
    if mpp is None or not PLAUSIBLE_MPP[0] <= mpp <= PLAUSIBLE_MPP[1]:
        return None
    return mpp
