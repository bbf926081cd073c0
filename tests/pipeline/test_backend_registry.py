"""Backends are objects in a registry: its names are the API's, and a new
backend is one module and one registry line, shown here with a toy one run
through the real pipeline and process pool."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.harness import CMU, SLIDES
from tests.pipeline.support import run
from worker_service.analysis.nuclei import RGB, Labels, Nucleus, nuclei_from_labels
from worker_service.backends import learned, registry
from worker_service.backends.base import Backend, JobSlide, ModelSettings, Prepared, Recipe
from worker_service.errors import BackendUnavailable, JobError
from worker_service.pipeline.tile_pool import TilePool
from wsi_runtime import job_params
from wsi_runtime.synthetic_slides import SyntheticSlide

DARK = 90  # mean RGB below which the toy calls a pixel nuclear


class DarkPixels:
    """Every dark 8-connected blob is a nucleus: crude, but its output is
    known from the tile alone."""

    def __call__(self, rgb: RGB) -> Labels:
        import cv2

        dark = (rgb.mean(axis=2) < DARK).astype(np.uint8)
        _, labels = cv2.connectedComponents(dark, connectivity=8, ltype=cv2.CV_32S)
        result: Labels = labels
        return result

    def find(self, tiles: Sequence[RGB]) -> list[list[Nucleus]]:
        return [nuclei_from_labels(self(tile), tile) for tile in tiles]


@dataclass(frozen=True)
class DarkPixelsRecipe(Recipe):
    def build(self) -> DarkPixels:
        return DarkPixels()


class ToyBackend(Backend):
    name = "toy"
    mpp = 1.0  # segments at its own pixel size: the level read follows it

    def __init__(self) -> None:
        self.prepared: list[JobSlide] = []

    def check(self, settings: ModelSettings) -> None:
        if settings.device.startswith("cuda"):
            raise BackendUnavailable("the toy runs on CPUs only")

    def prepare(self, slide: JobSlide, settings: ModelSettings) -> Prepared:
        self.prepared.append(slide)
        return Prepared(DarkPixelsRecipe(self.name, 2, 4), {"dark_below": DARK})


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> ToyBackend:
    """The toy in the registry and in the API's schema, for this test only."""
    backend = ToyBackend()
    monkeypatch.setitem(registry.BACKENDS, backend.name, backend)
    field = job_params.FIELDS["backend"]
    widened = job_params._Field(
        field.kind, field.low, field.high, field.help, (*field.choices, "toy")
    )
    monkeypatch.setitem(job_params.FIELDS, "backend", widened)
    return backend


def test_the_registry_names_the_apis_backends() -> None:
    assert set(registry.BACKENDS) == set(job_params.BACKENDS)
    assert job_params.schema()["backend"]["choices"] == list(job_params.BACKENDS)
    assert all(name == backend.name for name, backend in registry.BACKENDS.items())


def test_an_unknown_backend_is_unavailable_not_a_crash() -> None:
    with pytest.raises(BackendUnavailable, match="unknown segmentation backend 'nope'"):
        registry.get("nope")


def test_auto_picks_the_fallback_where_no_backend_prefers_the_machine(
    monkeypatch: pytest.MonkeyPatch, toy: ToyBackend
) -> None:
    settings = ModelSettings()
    assert registry.default_backend("classical", settings) == "classical"
    for backend in registry.BACKENDS.values():
        monkeypatch.setattr(type(backend), "preferred_here", lambda self, settings: False)
    assert registry.default_backend("auto", settings) == registry.FALLBACK == "classical"
    monkeypatch.setattr(ToyBackend, "preferred_here", lambda self, settings: True)
    assert registry.default_backend("auto", settings) == "toy"


def test_auto_picks_learned_on_a_cpu_only_worker_and_classical_without_a_runtime(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The learned backend is the default wherever it can run, GPU or not."""
    monkeypatch.setattr(learned, "cuda_present", lambda: False)
    assert registry.default_backend("auto", ModelSettings(device="cpu")) == "learned"
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "onnxruntime" else real_find_spec(name, *a),
    )
    assert registry.default_backend("auto", ModelSettings(device="cpu")) == "classical"


def test_a_toy_backend_runs_a_job_through_the_pipeline(
    toy: ToyBackend, pool: TilePool, synthetic: SyntheticSlide, tmp_path: Path
) -> None:
    outcome = run(pool, tmp_path, str(synthetic.path), backend="toy")
    summary = outcome.summary
    assert summary["backend"] == "toy"
    assert summary["backend_details"] == {"dark_below": DARK}
    assert summary["mpp_used"] == pytest.approx(1.0)  # its own pixel size: level 1 read
    (slide,) = toy.prepared
    assert slide.working_mpp == summary["mpp_used"]
    cells = json.loads(Path(outcome.files["cells.geojson"]).read_text())["features"]
    assert len(cells) == summary["nuclei"] and len(cells) > 20
    assert summary["tiles_processed"] == summary["tiles_tissue"] != 0


def test_a_backend_that_cannot_run_fails_the_job_with_its_own_words(
    toy: ToyBackend, pool: TilePool, tmp_path: Path
) -> None:
    from tests.pipeline.support import run_with_models

    with pytest.raises(JobError, match="CPUs only"):
        run_with_models(
            ModelSettings(device="cuda"), pool, tmp_path, str(SLIDES / CMU), backend="toy"
        )
    assert registry.available(ModelSettings(device="cuda")).get("toy") is None
    assert registry.available(ModelSettings())["toy"] == 1.0
