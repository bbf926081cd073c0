"""Large test slides for benchmarks, generated, never stored: a mosaic of
CMU-1-Small-Region (a real H&E scan at about 0.5 um/px) over white glass, as a
pyramidal JPEG TIFF of any size, at 0.5 um/px (the scan as it is) or 0.25
um/px (upsampled 2x, a 40x scan's pixel size), its levels each 2x smaller or
(``--level-step 4``) 4x, as an Aperio scan's are: a 40x slide with no 20x level.

    python -m bench.slide_generator OUT.tiff --megapixels 320 [--mpp 0.5] [--level-step 4]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import openslide

from tests.harness import SLIDES
from wsi_runtime.synthetic_slides import RGB, downsample, write_pyramid

SOURCE = SLIDES / "CMU-1-Small-Region.svs"
SOURCE_MPP = 0.5
PIXEL_SIZES = (0.25, 0.5)
GAP_UM = 150  # glass between copies


def _source_levels(levels: int, mpp: float, step: int) -> list[RGB]:
    with openslide.OpenSlide(str(SOURCE)) as slide:
        rgba = np.asarray(slide.read_region((0, 0), 0, slide.dimensions))
    factor = round(SOURCE_MPP / mpp)
    base = rgba[..., :3].repeat(factor, axis=0).repeat(factor, axis=1)
    return [downsample(base, step**k) for k in range(levels)]


def mosaic_slide(path: Path, width: int, height: int, mpp: float = 0.25, step: int = 2) -> Path:
    """Levels down to 1/8 of the slide (2x steps) or 1/16 (4x, as Aperio's)."""
    if mpp not in PIXEL_SIZES:
        raise ValueError(f"mpp must be one of {PIXEL_SIZES}")
    levels = 4 if step == 2 else 3
    sources = _source_levels(levels, mpp, step)
    gap = round(GAP_UM / mpp)
    cell_h, cell_w = sources[0].shape[0] + gap, sources[0].shape[1] + gap

    def read(level: int, x: int, y: int, w: int, h: int) -> RGB:
        scale = step**level
        src = sources[level]
        out = np.full((h, w, 3), 243, np.uint8)
        ch, cw = cell_h // scale, cell_w // scale
        for row in range(y // ch, (y + h - 1) // ch + 1):
            for col in range(x // cw, (x + w - 1) // cw + 1):
                oy, ox = row * ch, col * cw  # where this copy starts, level pixels
                y0, y1 = max(y, oy), min(y + h, oy + src.shape[0])
                x0, x1 = max(x, ox), min(x + w, ox + src.shape[1])
                if y0 < y1 and x0 < x1:
                    out[y0 - y : y1 - y, x0 - x : x1 - x] = src[
                        y0 - oy : y1 - oy, x0 - ox : x1 - ox
                    ]
        return out

    write_pyramid(path, width, height, read, mpp, levels=levels, tile=512, step=step)
    return path


def size_for(megapixels: float, aspect: float = 4 / 3) -> tuple[int, int]:
    width = int(math.sqrt(megapixels * 1e6 * aspect))
    return width, int(megapixels * 1e6 / width)


def slide_path(folder: Path, megapixels: float, mpp: float = 0.25, step: int = 2) -> Path:
    """The generated slide of this size, pixel size and level step in
    ``folder``, made once."""
    width, height = size_for(megapixels)
    suffix = ("" if mpp == 0.25 else f"-{mpp}um") + ("" if step == 2 else f"-levels{step}x")
    path = folder / f"mosaic-{width}x{height}{suffix}.tiff"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.tiff")
        mosaic_slide(partial, width, height, mpp, step)
        partial.rename(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--megapixels", type=float, default=320)
    parser.add_argument("--mpp", type=float, default=0.25, choices=PIXEL_SIZES)
    parser.add_argument("--level-step", type=int, default=2, choices=(2, 4))
    args = parser.parse_args()
    width, height = size_for(args.megapixels)
    mosaic_slide(args.out, width, height, args.mpp, args.level_step)
    print(f"{args.out}: {width} x {height} px ({width * height / 1e6:.0f} MP) at {args.mpp} um/px")


if __name__ == "__main__":
    main()
