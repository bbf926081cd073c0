"""Large test slides for benchmarks, generated, never stored: a mosaic of
CMU-1-Small-Region (a real H&E scan) over white glass, upsampled 2x to a 40x
pixel size (0.25 um/px), as a pyramidal JPEG TIFF of any size.

    python -m bench.slide_generator OUT.tiff --megapixels 320
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
MPP = 0.25
GAP = 600  # level-0 pixels of glass between copies


def _source_levels(levels: int) -> list[RGB]:
    with openslide.OpenSlide(str(SOURCE)) as slide:
        rgba = np.asarray(slide.read_region((0, 0), 0, slide.dimensions))
    base = rgba[..., :3].repeat(2, axis=0).repeat(2, axis=1)  # 0.5 -> 0.25 um/px
    return [downsample(base, 2**k) for k in range(levels)]


def mosaic_slide(path: Path, width: int, height: int, levels: int = 4) -> Path:
    sources = _source_levels(levels)
    cell_h, cell_w = sources[0].shape[0] + GAP, sources[0].shape[1] + GAP

    def read(level: int, x: int, y: int, w: int, h: int) -> RGB:
        scale = 2**level
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

    write_pyramid(path, width, height, read, MPP, levels=levels, tile=512)
    return path


def size_for(megapixels: float, aspect: float = 4 / 3) -> tuple[int, int]:
    width = int(math.sqrt(megapixels * 1e6 * aspect))
    return width, int(megapixels * 1e6 / width)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--megapixels", type=float, default=320)
    args = parser.parse_args()
    width, height = size_for(args.megapixels)
    mosaic_slide(args.out, width, height)
    print(f"{args.out}: {width} x {height} px ({width * height / 1e6:.0f} MP) at {MPP} um/px")


if __name__ == "__main__":
    main()
