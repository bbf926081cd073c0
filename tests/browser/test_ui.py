"""The web UI in real headless Chromium: the main flow in both identity
modes, the rest (layout, forms) in the header mode."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import (
    Ui,
    header_mode_only,
    needs_chromium,
    screenshot,
    use_user,
    wait_until,
)
from tests.harness import CMU

pytestmark = needs_chromium


def test_create_watch_to_100_percent_and_open_the_result(
    page: Any, gateway: Ui, tmp_path: Path
) -> None:
    use_user(page, gateway, "ui-alice")
    # The slide picker offers the slides under the roots, described.
    wait_until(page, f"!!document.querySelector('#slide-list option[value=\"{CMU}\"]')")
    offered = page.locator(f"#slide-list option[value='{CMU}']").inner_text()
    assert "2220 x 2967 px" in offered and "aperio" in offered
    page.fill("#wf-name", "skin sample")
    row = page.locator("#job-rows tbody tr").first
    row.locator("[name=key]").fill("cells")
    row.locator("[name=wsi_path]").fill(CMU)
    row.locator("[name=backend]").select_option("learned")
    row.locator("[name=target_mpp]").fill("1.0")  # which the model, at its own 0.5, does not use
    page.click("#submit-workflow")
    workflow = page.locator(".workflow").first
    workflow.wait_for()
    # Progress moves without a reload, up to 100 %.
    page.wait_for_selector(".workflow[data-state=RUNNING]", timeout=30_000)
    screenshot(page, "running.png", tmp_path)
    page.wait_for_selector(".workflow[data-state=SUCCEEDED]", timeout=60_000)
    assert workflow.locator(".workflow-percent").inner_text() == "100%"
    assert "tiles" in workflow.locator("tr[data-job=cells] .tiles").inner_text()
    assert workflow.locator("tr[data-job=cells] .slide").inner_text() == CMU  # each row its slide
    workflow.locator("tr[data-job=cells] .show-result").click()
    wait_until(page, "document.querySelector('#result-preview').naturalWidth > 0")
    nuclei = int(page.locator("[data-fact=nuclei]").inner_text())
    assert nuclei > 1000
    # What ran, and why the pixel size asked for was not used (the summary's mpp_note).
    assert re.fullmatch(
        r"learned \(onnx-\w+, cpu\)", page.locator("[data-fact=backend]").inner_text()
    )
    note = page.locator("[data-fact='pixel size note']").inner_text()
    assert "target_mpp=1 not used" in note, note
    # Rounded as people read it ("2.0 s", not "1.9983 s").
    assert re.fullmatch(
        r"\d+\.\d s|\d+ s|\d+ min( \d+ s)?", page.locator("[data-fact=time]").inner_text()
    )
    # The card says what a person compares between runs: slide, backend, nuclei, time, age.
    facts = workflow.locator(".workflow-facts").inner_text()
    assert facts.startswith(CMU) and f"{nuclei:,} nuclei" in facts and "took " in facts, facts
    assert (
        "created " in facts and f"{nuclei:,} nuclei" in workflow.locator(".job-facts").inner_text()
    )
    assert page.locator("#result-links [data-file='cells.geojson']").count() == 1
    screenshot(page, "result.png", tmp_path)
    # The workflow's table, downloaded from its card: the job's row with its nuclei.
    page.keyboard.press("Escape")
    with page.expect_download() as download:
        workflow.locator(".workflow-table").click()
    saved = Path(download.value.path())
    rows = list(csv.DictReader(saved.open(newline="")))
    assert download.value.suggested_filename.endswith(".csv")
    assert [(r["key"], r["state"], r["nuclei"]) for r in rows] == [
        ("cells", "SUCCEEDED", str(nuclei))
    ]


@header_mode_only
def test_cancel_a_pending_job(page: Any, gateway: Ui, tmp_path: Path) -> None:
    use_user(page, gateway, "ui-bob")
    page.click("#add-row")
    rows = page.locator("#job-rows tbody tr")
    for index, key in enumerate(("first", "second")):
        rows.nth(index).locator("[name=key]").fill(key)
        rows.nth(index).locator("[name=branch]").fill("lane")
        rows.nth(index).locator("[name=wsi_path]").fill(CMU)
    page.click("#submit-workflow")
    second = page.locator("tr[data-job=second]")
    second.wait_for()
    assert second.get_attribute("data-state") == "PENDING"
    assert "branch 'lane' busy" in second.locator(".reason").inner_text()
    screenshot(page, "pending.png", tmp_path)
    second.locator(".cancel-job").click()
    page.wait_for_selector("tr[data-job=second][data-state=CANCELLED]", timeout=15_000)
    page.wait_for_selector("tr[data-job=first][data-state=SUCCEEDED]", timeout=60_000)
    assert page.locator(".workflow").first.get_attribute("data-state") == "CANCELLED"


@header_mode_only
def test_job_parameters_from_the_form_bounded_as_the_api_bounds_them(
    page: Any, gateway: Ui
) -> None:
    use_user(page, gateway, "ui-carol")
    row = page.locator("#job-rows tbody tr").first
    row.locator("[name=key]").fill("tuned")
    row.locator("[name=wsi_path]").fill(CMU)
    tile = row.locator("[name=tile_size]")
    assert tile.get_attribute("placeholder") == "512"  # the schema's default
    # A slide's own pixel size defaults to what its file says, not to a number.
    assert row.locator("[name=slide_mpp]").get_attribute("placeholder") == "from the slide"
    # The backends this deployment's workers offer (no InstanSeg model file here),
    # and its own smallest tile size (the scheduler's --min-tile-size).
    assert row.locator("[name=backend] option").all_inner_texts()[1:] == ["classical", "learned"]
    assert tile.get_attribute("min") == "128"
    tile.fill("99999")  # above the schema's bound: the form is not sent
    assert not tile.evaluate("input => input.checkValidity()")
    tile.fill("256")
    row.locator("[name=target_mpp]").fill("0.5")
    slide_mpp = row.locator("[name=slide_mpp]")
    slide_mpp.fill("0.01")  # below the schema's bound
    assert not slide_mpp.evaluate("input => input.checkValidity()")
    slide_mpp.fill("0.25")
    row.locator("[name=backend]").select_option("classical")
    page.click("#submit-workflow")
    page.wait_for_selector("tr[data-job=tuned]")
    job_id = page.evaluate(
        "document.querySelector('.workflow').dataset.workflow"
    )  # the workflow: its job's params as the API stored them
    workflow = page.evaluate(
        """async ([id, headers]) => (await fetch(`/workflows/${id}`, { headers })).json()""",
        [job_id, identity_headers(gateway, "ui-carol")],
    )
    assert workflow["jobs"][0]["params"] == {
        "tile_size": "256",
        "target_mpp": "0.5",
        "slide_mpp": "0.25",
        "backend": "classical",
    }


def identity_headers(ui: Ui, user: str) -> dict[str, str]:
    credential = ui.credentials[user]
    return {"Authorization": f"Bearer {credential}"} if ui.mode == "token" else {"X-User-ID": user}


SLIDE = "cohort-2024/site-b/TCGA-A1-A0SB-01Z-00-DX1.8AB1C3E7-2C4A-4F9B.svs"  # a realistic name


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (1920, 1080)])
@header_mode_only
def test_every_form_field_is_labelled_and_shows_its_whole_text(
    page: Any, gateway: Ui, tmp_path: Path, width: int, height: int
) -> None:
    """At common screen sizes, a job's fields show all they hold (a long slide
    path included) and each has a name a screen reader reads out."""
    page.set_viewport_size({"width": width, "height": height})
    use_user(page, gateway, "ui-carol")
    page.click("#add-row")
    first, second = (
        page.locator("#job-rows tbody tr").nth(0),
        page.locator("#job-rows tbody tr").nth(1),
    )
    first.locator("[name=key]").fill("mask")
    first.locator("[name=job_type]").select_option("TISSUE_MASK")
    first.locator("[name=wsi_path]").fill(SLIDE)
    second.locator("[name=key]").fill("cells")
    second.locator("[name=wsi_path]").fill(SLIDE)
    second.locator("[name=depends_on]").fill("mask")
    second.locator("[name=tile_size]").fill("1024")
    second.locator("[name=target_mpp]").fill("0.25")
    second.locator("[name=slide_mpp]").fill("0.2527")
    second.locator("[name=backend]").select_option("classical")
    # The text a field shows (its value, else its placeholder; a select's
    # chosen option) measured in its own font, against the room inside it
    # (less a select's arrow).
    fields = page.evaluate(
        """() => {
            const pen = document.createElement('canvas').getContext('2d');
            const fields = document.querySelectorAll('#create-form input, #create-form select');
            return [...fields].map((e) => {
                const style = getComputedStyle(e);
                pen.font = style.font;
                const select = e.tagName === 'SELECT';
                const shown = select ? e.selectedOptions[0].text : e.value || e.placeholder;
                const padding = parseFloat(style.paddingLeft) + parseFloat(style.paddingRight);
                const room = e.clientWidth - padding - (select ? 20 : 0);
                return {name: e.name || e.id, shown, room,
                        needs: pen.measureText(shown).width,
                        labelled: e.labels.length > 0 || !!e.ariaLabel,
                        label: [...e.labels].map((l) => l.textContent.trim()).join(' ')};
            });
        }"""
    )
    for field in fields:
        field["fits"] = field["needs"] <= field["room"]
    assert len(fields) == 1 + 2 * 9, fields  # the name, and 9 fields per job
    assert all(f["labelled"] for f in fields), [f for f in fields if not f["labelled"]]
    assert all(f["fits"] for f in fields), [f for f in fields if not f["fits"]]
    labels = {f["name"]: f["label"] for f in fields}
    assert labels["tile_size"].startswith("Tile size, px") and "µm/px" in labels["target_mpp"]
    assert labels["slide_mpp"].startswith("Slide's pixel size")
    screenshot(page, f"form-{width}.png", tmp_path)


@header_mode_only
def test_on_a_narrow_window_the_form_stacks_and_nothing_spills(
    page: Any, gateway: Ui, tmp_path: Path
) -> None:
    """A window 400 px wide (a phone, a window beside another): the page never
    scrolls sideways, every field is labelled and shows all it holds, but a
    long slide path, which gets the row's width and scrolls inside its field."""
    page.set_viewport_size({"width": 400, "height": 800})
    use_user(page, gateway, "ui-carol")
    row = page.locator("#job-rows tbody tr").first
    row.locator("[name=wsi_path]").fill(SLIDE)
    row.locator("[name=job_type]").select_option("CELL_SEGMENTATION")
    layout = page.evaluate(
        """() => {
            const pen = document.createElement('canvas').getContext('2d');
            const fields = [...document.querySelectorAll(
                '#create-form input, #create-form select')];
            return {
                page: document.documentElement.scrollWidth,
                window: document.documentElement.clientWidth,
                fields: fields.map((e) => {
                    const style = getComputedStyle(e);
                    pen.font = style.font;
                    const select = e.tagName === 'SELECT';
                    const shown = select ? e.selectedOptions[0].text : e.value || e.placeholder;
                    const padding = parseFloat(style.paddingLeft) + parseFloat(style.paddingRight);
                    const box = e.getBoundingClientRect();
                    return {name: e.name || e.id, left: box.left, right: box.right,
                            width: box.width, shown,
                            room: e.clientWidth - padding - (select ? 20 : 0),
                            needs: pen.measureText(shown).width,
                            labelled: e.labels.length > 0 || !!e.ariaLabel};
                }),
            };
        }"""
    )
    assert layout["page"] <= layout["window"], layout
    for field in layout["fields"]:
        assert field["labelled"], field
        assert field["left"] >= 0 and field["right"] <= layout["window"], field
        if field["name"] != "wsi_path":  # a long path scrolls inside its field
            assert field["needs"] <= field["room"], field
    path = next(f for f in layout["fields"] if f["name"] == "wsi_path")
    assert path["width"] >= 0.7 * layout["window"], path  # the slide path gets the row
    screenshot(page, "form-400.png", tmp_path)  # with the workflows of the tests before


@header_mode_only
def test_a_folder_of_slides_becomes_a_job_row_each(page: Any, gateway: Ui) -> None:
    """The slide picker offers each folder of the listed slides; adding one
    fills the row in use, then adds a row per slide, each in its own branch,
    with that row's job type and parameters."""
    use_user(page, gateway, "ui-carol")
    row = page.locator("#job-rows tbody tr").first
    row.locator("[name=job_type]").select_option("CELL_SEGMENTATION")
    row.locator("[name=tile_size]").fill("1024")
    names = ["a.svs", "cohort/x.svs", "cohort/y.svs", "cohort/sub/z.svs"]
    offered = page.evaluate(
        "(names) => folderButtons(names).map((item) => item.textContent)", names
    )
    assert offered == ["Add all 2 slides of cohort/", "Add all 1 slide of cohort/sub/"]
    page.evaluate("() => addFolder(['cohort/x.svs', 'cohort/y.svs'])")
    rows = page.evaluate(
        """() => [...document.querySelectorAll('#job-rows tbody tr')].map((row) =>
            ['wsi_path', 'branch', 'job_type', 'tile_size'].map(
                (name) => row.querySelector(`[name=${name}]`).value))"""
    )
    assert rows == [
        ["cohort/x.svs", "x.svs", "CELL_SEGMENTATION", "1024"],
        ["cohort/y.svs", "y.svs", "CELL_SEGMENTATION", "1024"],
    ]


@header_mode_only
def test_a_running_job_before_its_first_tile_says_what_it_is_doing(page: Any, gateway: Ui) -> None:
    """While it reads the slide and loads its model a job shows a phase, not a bare 0 %."""
    use_user(page, gateway, "ui-bob")
    phases = page.evaluate(
        """() => [0, 3].map((done) => jobRow({
            key: 'cells', branch: 'main', job_type: 'CELL_SEGMENTATION', wsi_path: 'a.svs',
            state: 'RUNNING', attempt: 1, progress: {tiles_done: done, tiles_total: 26},
        }).querySelector('.phase')?.textContent || '')"""
    )
    assert phases[0].startswith("preparing: reading the slide") and phases[1] == ""
