"""The slide viewer in real headless Chromium, on a synthetic slide whose
nuclei are known: outlines drawn where a nucleus is (read from the rendered
pixels), density when zoomed out, measurements on click, layer toggles, and
nothing fetched from anywhere but the gateway."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import shapely
from PIL import Image
from shapely.geometry import shape

from tests.browser.conftest import (
    Ui,
    collect_errors,
    needs_chromium,
    screenshot,
    use_user,
    wait_until,
)
from tests.browser.test_ui import identity_headers
from tests.harness import SLIDES, cluster_with_gateway
from tests.integration.support import succeeded_over_http
from wsi_runtime.synthetic_slides import SyntheticSlide, synthetic_he_slide
from wsi_runtime.token_file import add_token

pytestmark = needs_chromium


@pytest.fixture(scope="module", params=["header", "token"])
def viewer_ui(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Ui, SyntheticSlide]]:
    workdir = tmp_path_factory.mktemp(f"viewer-{request.param}")
    synthetic_root = workdir / "synthetic"
    synthetic_root.mkdir()
    slide = synthetic_he_slide(synthetic_root / "synthetic.tiff", seed=3)
    settings: dict[str, Any] = {"worker_slots": (2,), "slide_roots": f"{SLIDES}:{synthetic_root}"}
    credentials = {"ui-vera": "ui-vera"}
    if request.param == "token":
        tokens = workdir / "tokens.txt"
        credentials = {"ui-vera": add_token(tokens, "ui-vera")}
        settings["auth_tokens"] = str(tokens)
    with cluster_with_gateway(workdir, **settings) as (_, service):
        yield Ui(service, request.param, credentials), slide


@pytest.fixture
def viewer_page(browser: Any, viewer_ui: tuple[Ui, SyntheticSlide]) -> Iterator[Any]:
    ui, _ = viewer_ui
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors = collect_errors(page)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(ui.address + "/")
    page.requests = requests
    yield page
    context.close()
    assert errors == [], errors
    # Everything the page asked for went to the gateway on loopback.
    hosts = {urlsplit(url).hostname for url in requests if not url.startswith(("blob:", "data:"))}
    assert hosts == {"127.0.0.1"}, hosts


def _pixels(page: Any) -> np.ndarray:
    shot = page.locator("#viewer").screenshot()
    return np.asarray(Image.open(io.BytesIO(shot)).convert("RGB")).astype(int)


def _to_screen(page: Any, points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Slide (level-0) pixels to pixels of the #viewer element's screenshot."""
    placed: list[tuple[float, float]] = page.evaluate(
        """(points) => {
            const v = window.wsiViewer, OSD = window.OpenSeadragon;
            return points.map(([x, y]) => {
                const p = v.osd.viewport.imageToViewerElementCoordinates(
                    new OSD.Point(x - (v.info.offset_x || 0), y - (v.info.offset_y || 0)));
                return [p.x, p.y];
            });
        }""",
        points,
    )
    return placed


def _cyan_near(pixels: np.ndarray, x: float, y: float, radius: int = 2) -> bool:
    """Whether some pixel within ``radius`` of (x, y) is the outline's cyan (an
    H&E slide has none: its green channel stays under its red)."""
    x0, y0 = round(x), round(y)
    patch = pixels[max(0, y0 - radius) : y0 + radius + 1, max(0, x0 - radius) : x0 + radius + 1]
    r, g, b = patch[..., 0], patch[..., 1], patch[..., 2]
    return bool(((g > 170) & (b > 170) & (r < 110)).any())


def _fit(page: Any, box: tuple[float, float, float, float]) -> None:
    """Shows ``box`` (slide pixels) at once and waits for the view to settle."""
    page.evaluate(
        """([x0, y0, x1, y1]) => {
            const v = window.wsiViewer, OSD = window.OpenSeadragon;
            const ox = v.info.offset_x || 0, oy = v.info.offset_y || 0;
            v.osd.viewport.fitBounds(
                v.osd.viewport.imageToViewportRectangle(x0 - ox, y0 - oy, x1 - x0, y1 - y0), true);
            v.osd.raiseEvent("animation-finish");
        }""",
        list(box),
    )
    wait_until(page, "window.wsiViewer.osd.world.getItemAt(0).getFullyLoaded()", 20)


def test_the_viewer_draws_each_nucleus_and_measures_it(
    viewer_page: Any, viewer_ui: tuple[Ui, SyntheticSlide], tmp_path: Path
) -> None:
    ui, slide = viewer_ui
    page = viewer_page
    use_user(page, ui, "ui-vera")
    name = slide.path.name
    # The slide picker offers the synthetic slide; the job runs on it.
    wait_until(page, f"!!document.querySelector('#slide-list option[value=\"{name}\"]')")
    row = page.locator("#job-rows tbody tr").first
    row.locator("[name=key]").fill("cells")
    offered = page.locator(f"#slide-list option[value='{name}']").inner_text()
    assert f"{slide.width} x {slide.height} px" in offered  # described where it is offered
    # The picker fills the form: a second row, then the slide clicked in the list.
    page.click("#add-row")
    second = page.locator("#job-rows tbody tr").nth(1)
    row.locator("[name=wsi_path]").click()
    page.click("#slide-picker summary")
    page.click(f"#slide-picker-list [data-slide='{name}']")
    assert row.locator("[name=wsi_path]").input_value() == name
    assert second.locator("[name=wsi_path]").input_value() == ""
    second.locator(".remove-row").click()
    page.click("#submit-workflow")
    page.wait_for_selector(".workflow[data-state=SUCCEEDED]", timeout=90_000)
    page.locator("tr[data-job=cells] .show-result").click()
    wait_until(page, "document.querySelector('#result-preview').naturalWidth > 0")
    page.click("#open-viewer")
    wait_until(page, "!!window.wsiViewer && !!window.wsiViewer.osd", 20)
    wait_until(page, "window.wsiViewer.osd.world.getItemCount() === 1", 20)
    wait_until(page, "window.wsiViewer.osd.world.getItemAt(0).getFullyLoaded()", 20)
    # Zoom goes to the slide's full resolution and on to 4 screen px per slide px.
    most = page.evaluate(
        """() => { const v = window.wsiViewer.osd.viewport;
                   return v.viewportToImageZoom(v.getMaxZoom()); }"""
    )
    assert most == pytest.approx(4.0, rel=0.01)

    # Zoomed out (the whole slide): density, no outlines.
    wait_until(page, "document.querySelector('#viewer').dataset.mode === 'density'")
    job_id = page.evaluate("window.wsiViewer.job.job_id")
    headers = identity_headers(ui, "ui-vera")
    density = httpx.get(
        f"{ui.address}/jobs/{job_id}/cells/density?cell_px=0", headers=headers
    ).json()
    counts = np.array([int(c) for c in density["counts"]]).reshape(
        density["rows"], density["columns"]
    )
    row_max, col_max = np.unravel_index(counts.argmax(), counts.shape)
    cell = density["cell_px"]
    busy = ((col_max + 0.5) * cell, (row_max + 0.5) * cell)
    empty = (slide.width * 0.03, slide.height * 0.03)  # glass: no nuclei there
    assert counts[int(empty[1] // cell), int(empty[0] // cell)] == 0
    (busy_xy, empty_xy) = _to_screen(page, [busy, empty])
    with_density = _pixels(page)
    screenshot(page, "viewer-density.png", tmp_path)
    page.uncheck("#layer-density")
    without = _pixels(page)
    bx, by = (int(v) for v in busy_xy)
    ex, ey = (int(v) for v in empty_xy)
    assert np.abs(with_density[by, bx] - without[by, bx]).sum() > 60  # the density is drawn there
    assert np.abs(with_density[ey, ex] - without[ey, ex]).sum() < 10  # and not on empty glass
    # A square of the grid with nuclei that reaches past the tissue's edge is
    # drawn over the tissue only: not on the glass beside it.
    tissue = shapely.unary_union(
        [
            shape(f["geometry"])
            for f in httpx.get(
                f"{ui.address}/jobs/{job_id}/results/tissue.geojson", headers=headers
            ).json()["features"]
        ]
    )
    beside = [
        (x, y)
        for row, col in zip(*np.nonzero(counts), strict=True)
        for x in np.linspace(col * cell + 2, (col + 1) * cell - 2, 9)
        for y in np.linspace(row * cell + 2, (row + 1) * cell - 2, 9)
        if tissue.distance(shapely.Point(x, y)) > 0.05 * cell
    ]
    assert beside, "no square of the density grid reaches past the tissue"
    (glass_xy,) = _to_screen(page, [beside[len(beside) // 2]])
    gx, gy = (int(v) for v in glass_xy)
    assert np.abs(with_density[gy, gx] - without[gy, gx]).sum() < 10, (gx, gy)
    legend = page.locator("#density-legend").inner_text()
    assert legend.startswith(f"Density: nuclei per {cell:g} x {cell:g} px square of tissue"), legend
    page.check("#layer-density")

    # Zoom onto a known nucleus: its outline is drawn around it.
    truth = min(
        slide.nuclei, key=lambda n: (n.x - slide.width / 2) ** 2 + (n.y - slide.height / 2) ** 2
    )
    _fit(page, (truth.x - 40, truth.y - 40, truth.x + 40, truth.y + 40))
    wait_until(page, "document.querySelector('#viewer').dataset.mode === 'nuclei'")
    wait_until(page, "Number(document.querySelector('#viewer').dataset.nuclei) > 0")
    cells = httpx.get(
        f"{ui.address}/jobs/{job_id}/cells",
        params={"bbox": f"{truth.x - 1},{truth.y - 1},{truth.x + 1},{truth.y + 1}"},
        headers=headers,
    ).json()["features"]
    assert cells, "the nucleus at the known place was segmented"
    feature = cells[0]
    ring = feature["geometry"]["coordinates"][0]
    pixels = _pixels(page)
    screenshot(page, "viewer-nuclei.png", tmp_path)
    on_outline = _to_screen(page, [tuple(p) for p in ring])
    drawn = [_cyan_near(pixels, x, y) for x, y in on_outline]
    assert np.mean(drawn) > 0.9, f"{sum(drawn)} of {len(drawn)} outline points drawn"
    (centre,) = _to_screen(page, [(truth.x, truth.y)])
    assert not _cyan_near(pixels, *centre, radius=3)  # an outline, not a filled blob

    # Click the nucleus: its measurements are shown.
    page.locator("#viewer").click(position={"x": centre[0], "y": centre[1]})
    page.wait_for_selector("#cell-info [data-measure='Area µm^2']")
    shown = float(page.locator("#cell-info [data-measure='Area µm^2']").inner_text())
    assert shown == feature["properties"]["measurements"]["Area µm^2"]
    assert page.locator("#cell-info [data-measure=id]").inner_text() == feature["id"]
    for name in ("Perimeter µm", "Circularity", "Solidity", "Hematoxylin OD mean"):
        assert page.locator(f"#cell-info [data-measure='{name}']").count() == 1
    screenshot(page, "viewer-measurements.png", tmp_path)

    # Toggle the nuclei off: the outline goes; on again: it is back.
    page.uncheck("#layer-nuclei")
    hidden = _pixels(page)
    assert np.mean([_cyan_near(hidden, x, y) for x, y in on_outline]) < 0.2
    page.check("#layer-nuclei")
    shown_again = _pixels(page)
    assert np.mean([_cyan_near(shown_again, x, y) for x, y in on_outline]) > 0.9

    # Slide tiles went through the gateway with the caller's identity.
    tiles = [url for url in page.requests if "/slide_files/" in url]
    assert tiles and all(f"/jobs/{job_id}/" in url for url in tiles)


def _finished_workflow(ui: Ui, user: str, slide: SyntheticSlide, **params: str) -> dict[str, Any]:
    job = {"key": "cells", "branch": "a", "job_type": "CELL_SEGMENTATION"}
    body = {"name": "region test", "jobs": [{**job, "wsi_path": slide.path.name, "params": params}]}
    with httpx.Client(base_url=ui.address, timeout=60) as http:
        made = http.post("/workflows", json=body, headers=identity_headers(ui, user)).json()
        return succeeded_over_http(http, made["workflow_id"], identity_headers(ui, user))


@pytest.mark.parametrize("viewer_ui", ["header"], indirect=True)
def test_a_box_drawn_in_the_viewer_is_analysed_as_a_new_job(
    viewer_page: Any, viewer_ui: tuple[Ui, SyntheticSlide], tmp_path: Path
) -> None:
    """Drawing a box offers "Analyse this region"; the new job has the first
    one's type and parameters, limited to the box, and finds only the nuclei
    inside it. (One identity mode: the page sends its identity the same way
    for this call as for every other, which test_ui checks in both.)"""
    ui, slide = viewer_ui
    page = viewer_page
    done = _finished_workflow(ui, "ui-vera", slide, tile_size="384")
    first = done["jobs"][0]
    assert first["state"] == "SUCCEEDED", first
    use_user(page, ui, "ui-vera")
    page.locator(f".workflow[data-workflow='{done['workflow_id']}'] .show-result").click()
    wait_until(page, "document.querySelector('#result-preview').naturalWidth > 0")
    page.click("#open-viewer")
    wait_until(page, "!!window.wsiViewer && !!window.wsiViewer.osd", 20)
    wait_until(page, "window.wsiViewer.osd.world.getItemAt(0).getFullyLoaded()", 20)
    # Drag over the upper-left quarter of the tissue, after "Select a region".
    x0, y0, x1, y1 = slide.tissue_box
    wanted = (x0, y0, (x0 + x1) / 2, (y0 + y1) / 2)
    (start, end) = _to_screen(page, [wanted[:2], wanted[2:]])
    origin = page.locator("#viewer").bounding_box()
    page.click("#draw-region")
    page.mouse.move(origin["x"] + start[0], origin["y"] + start[1])
    page.mouse.down()
    page.mouse.move(origin["x"] + end[0], origin["y"] + end[1], steps=8)
    page.mouse.up()
    page.wait_for_selector("#analyse-region", state="visible")
    box = page.evaluate("window.wsiViewer.region")
    assert box == pytest.approx(list(wanted), abs=0.02 * slide.width), (box, wanted)
    screenshot(page, "viewer-region.png", tmp_path)
    shown = page.locator("#region-size").inner_text()
    assert shown.startswith(f"{box[2] - box[0]} x {box[3] - box[1]} px from ({box[0]}, {box[1]})")
    page.click("#analyse-region")
    wait_until(page, "!!document.querySelector('#region-status').dataset.workflow")
    workflow_id = page.evaluate("document.querySelector('#region-status').dataset.workflow")
    with httpx.Client(base_url=ui.address, timeout=60) as http:
        workflow = succeeded_over_http(http, workflow_id, identity_headers(ui, "ui-vera"))
    (job,) = workflow["jobs"]
    assert job["state"] == "SUCCEEDED", job
    assert (job["job_type"], job["wsi_path"]) == (first["job_type"], first["wsi_path"])
    assert job["params"] == {**first["params"], "region": ",".join(map(str, box))}
    # Only nuclei inside the box, and fewer than the whole slide's.
    headers = identity_headers(ui, "ui-vera")
    cells = httpx.get(
        f"{ui.address}/jobs/{job['job_id']}/results/cells.geojson", headers=headers
    ).json()["features"]
    inside = [
        box[0] <= m["Centroid X px"] <= box[2] and box[1] <= m["Centroid Y px"] <= box[3]
        for m in (f["properties"]["measurements"] for f in cells)
    ]
    assert cells and all(inside)
    assert 0 < job["result"]["summary"]["nuclei"] < first["result"]["summary"]["nuclei"]
    # The new workflow is in the list, followed live like any other.
    page.wait_for_selector(f".workflow[data-workflow='{workflow_id}'][data-state=SUCCEEDED]")
