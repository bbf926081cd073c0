"""preview.png: the overview with the tissue outline and a dot per nucleus,
for the UI. Nuclei are marked in a mask as tiles arrive and drawn once at the
end: the worker's main process stays free for the pool's results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter
from shapely.geometry import Polygon

from worker_service.storage import result_files
from wsi_protocol import result_files as names


class Preview:
    DOT = (255, 220, 0)

    def __init__(
        self, overview: npt.NDArray[np.uint8], slide_width: int, polygons: list[Polygon]
    ) -> None:
        self.image = Image.fromarray(overview).copy()
        self.scale = self.image.width / slide_width  # preview px per level-0 px
        draw = ImageDraw.Draw(self.image)
        for polygon in polygons:
            for ring in (polygon.exterior, *polygon.interiors):
                points = [(x * self.scale, y * self.scale) for x, y in ring.coords]
                draw.line(points, fill=(0, 160, 0), width=2)
        self._dots = np.zeros((self.image.height, self.image.width), np.uint8)

    def nuclei(self, centroids: npt.NDArray[np.float64]) -> None:
        """``centroids``: (n, 2) of level-0 (x, y)."""
        if not len(centroids):
            return
        at = np.rint(centroids * self.scale).astype(np.int64)
        height, width = self._dots.shape
        inside = (at[:, 0] >= 0) & (at[:, 0] < width) & (at[:, 1] >= 0) & (at[:, 1] < height)
        self._dots[at[inside, 1], at[inside, 0]] = 255

    def write(self, out_dir: Path) -> str:
        dots = Image.fromarray(self._dots, mode="L").filter(ImageFilter.MaxFilter(3))
        self.image.paste(self.DOT, mask=dots)  # a 3 x 3 dot on each nucleus
        # Level 1: a third faster than the default on a 1024 px preview, 9 % larger.
        return str(result_files.write_png(out_dir / names.PREVIEW, self.image, 1))
