"""The ``classical`` backend: colour deconvolution, one haematoxylin threshold
per slide, distance-transform watershed (``analysis.nuclei``). Fast on CPUs;
works at the job's target_mpp."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from worker_service.analysis.nuclei import (
    RGB,
    Labels,
    Nucleus,
    NucleusParams,
    StainReference,
    find_nuclei,
    segment_nuclei,
    stain_reference,
)
from worker_service.backends.base import Backend, JobSlide, ModelSettings, Prepared, Recipe

REFERENCE_TILES = 8  # tissue tiles sampled for the slide's stain reference
# Four row neighbours in one pool task share decoded slide tiles in one process's cache.
TILES_PER_TASK = 4


class ClassicalSegmenter:
    def __init__(self, reference: StainReference, params: NucleusParams) -> None:
        self.reference, self.params = reference, params

    def __call__(self, rgb: RGB) -> Labels:
        return segment_nuclei(rgb, self.reference, self.params)

    def find(self, tiles: Sequence[RGB]) -> list[list[Nucleus]]:
        return [find_nuclei(tile, self.reference, self.params) for tile in tiles]


@dataclass(frozen=True)
class ClassicalRecipe(Recipe):
    reference: StainReference
    params: NucleusParams

    def build(self) -> ClassicalSegmenter:
        return ClassicalSegmenter(self.reference, self.params)


class ClassicalBackend(Backend):
    name = "classical"

    def check(self, settings: ModelSettings) -> None:
        """Needs nothing beyond the worker's own packages."""

    def prepare(self, slide: JobSlide, settings: ModelSettings) -> Prepared:
        """One haematoxylin threshold for the whole slide, from tissue tiles
        spread over it: a per-tile threshold would stretch an empty tile."""
        reference = stain_reference(slide.sample_tiles(REFERENCE_TILES))
        recipe = ClassicalRecipe(
            self.name,
            tiles_per_pass=TILES_PER_TASK,
            tiles_per_task=TILES_PER_TASK,
            reference=reference,
            params=NucleusParams(mpp=slide.pixel_um),
        )
        details: dict[str, object] = {
            "threshold": round(reference.threshold, 4),
            "h_p99": round(reference.h_high, 4),
        }
        return Prepared(recipe, details)
