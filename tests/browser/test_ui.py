"""The web UI in real headless Chromium, in both identity modes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.browser.conftest import Ui, needs_chromium, screenshot, use_user, wait_until
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
    assert page.locator("#result-links [data-file='cells.geojson']").count() == 1
    screenshot(page, "result.png", tmp_path)


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


def test_job_parameters_from_the_form_bounded_as_the_api_bounds_them(
    page: Any, gateway: Ui
) -> None:
    use_user(page, gateway, "ui-carol")
    row = page.locator("#job-rows tbody tr").first
    row.locator("[name=key]").fill("tuned")
    row.locator("[name=wsi_path]").fill(CMU)
    tile = row.locator("[name=tile_size]")
    assert tile.get_attribute("placeholder") == "512"  # the schema's default
    assert row.locator("[name=backend] option").all_inner_texts()[1:] == [
        "classical",
        "learned",
        "instanseg",
    ]
    tile.fill("99999")  # above the schema's bound: the form is not sent
    assert not tile.evaluate("input => input.checkValidity()")
    tile.fill("256")
    row.locator("[name=target_mpp]").fill("0.5")
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
        "backend": "classical",
    }


def identity_headers(ui: Ui, user: str) -> dict[str, str]:
    credential = ui.credentials[user]
    return {"Authorization": f"Bearer {credential}"} if ui.mode == "token" else {"X-User-ID": user}
